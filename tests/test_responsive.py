"""The event loop stays free (issue 9): while a daemon reads 64 MiB, opens
a 4,096-link manifest, parses a 16 MiB FHIR body and collects garbage,
another client's small requests keep being answered promptly."""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

import pytest

from .process import Daemon, run, run_json

SMALL_REQUEST_BUDGET = 0.05  # seconds each small request may take while the heavy work runs


class Prober(threading.Thread):
    """Asks for one small record's metadata every 10 ms, on its own thread and
    connection, and keeps every latency."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self.request, timeout=10) as resp:
                resp.read()
                assert resp.status == 200
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.01)


def _upload(api: str, token: str, data: bytes, content_type: str) -> dict:
    request = urllib.request.Request(f"{api}/v1/records", data=data, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=300) as resp:
        return json.loads(resp.read())


def _download(api: str, token: str, record_id: str) -> int:
    request = urllib.request.Request(f"{api}/v1/records/{record_id}/content",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=300) as resp:
        return len(resp.read())


@pytest.fixture
def busy_node(tmp_path):
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir)
    config_path = os.path.join(data_dir, "config.json")
    config = json.load(open(config_path))
    config["chunk_size"] = 1024  # 4 MiB of content is a 4,096-link manifest
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    daemon = Daemon(data_dir, str(tmp_path / "daemon.log")).start()
    api = open(os.path.join(data_dir, "api")).read().strip()
    token = open(os.path.join(data_dir, "owner.token")).read().strip()
    yield data_dir, api, token
    daemon.stop()


def test_small_requests_stay_fast_while_heavy_work_runs(busy_node):
    data_dir, api, token = busy_node
    small = _upload(api, token, b"a small note", "text/plain")
    wide = _upload(api, token, os.urandom(4096 * 1024), "application/octet-stream")  # 4,096 links
    big = _upload(api, token, os.urandom(64 * 1024 * 1024), "application/octet-stream")
    fhir = json.dumps({"resourceType": "Observation", "status": "final",
                       "code": {"text": "x"}, "note": [{"text": "n" * 1024} for _ in range(15 * 1024)]}).encode()
    prober = Prober(f"{api}/v1/records/{small['id']}", token)
    prober.start()
    try:
        time.sleep(0.2)
        assert _download(api, token, big["id"]) == 64 * 1024 * 1024
        assert _download(api, token, wide["id"]) == 4096 * 1024
        assert _upload(api, token, fhir, "application/fhir+json")["type"] == "Observation"
        run("gc", "--data-dir", data_dir, "--grace", "0")
    finally:
        prober.stop.set()
        prober.join(15)
    assert len(prober.latencies) > 20
    slowest = max(prober.latencies)
    assert slowest < SMALL_REQUEST_BUDGET, f"a small request waited {slowest * 1000:.0f} ms"
    metrics = urllib.request.Request(f"{api}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(metrics) as resp:
        assert "medvault_event_loop_lag_seconds_bucket" in resp.read().decode()
