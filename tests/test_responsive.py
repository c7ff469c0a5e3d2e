"""The event loop stays free (issue 9): while a daemon reads 64 MiB, opens
a 4,096-link manifest, parses a 16 MiB FHIR body and collects garbage,
another client's small requests keep being answered promptly."""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

from .process import Daemon, run, run_json

SMALL_REQUEST_BUDGET = 0.05  # seconds each small request may take while the heavy work runs


class Prober(threading.Thread):
    """Asks for one small record's metadata every 10 ms, on its own thread and
    connection, and keeps every latency."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        self.latencies: list[float] = []
        self.phase = "start"
        self.slow: list[tuple[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self.request, timeout=10) as resp:
                resp.read()
                assert resp.status == 200
            self.latencies.append(time.perf_counter() - started)
            if self.latencies[-1] >= SMALL_REQUEST_BUDGET:
                self.slow.append((self.phase, round(self.latencies[-1] * 1000)))
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


def _set_chunk_size(data_dir: str, size: int) -> None:
    path = os.path.join(data_dir, "config.json")
    config = json.load(open(path))
    config["chunk_size"] = size
    with open(path, "w") as handle:
        json.dump(config, handle)


def test_small_requests_stay_fast_while_heavy_work_runs(tmp_path):
    data_dir, log = str(tmp_path / "node"), str(tmp_path / "daemon.log")
    run_json("init", "--data-dir", data_dir)
    token = open(os.path.join(data_dir, "owner.token")).read().strip()
    _set_chunk_size(data_dir, 1024)  # 4 MiB of content is then one 4,096-link manifest
    daemon = Daemon(data_dir, log).start()
    api = open(os.path.join(data_dir, "api")).read().strip()
    wide = _upload(api, token, os.urandom(4096 * 1024), "application/octet-stream")
    daemon.stop()
    _set_chunk_size(data_dir, 256 * 1024)
    daemon = Daemon(data_dir, log).start()
    try:
        api = open(os.path.join(data_dir, "api")).read().strip()
        small = _upload(api, token, b"a small note", "text/plain")
        big = _upload(api, token, os.urandom(64 * 1024 * 1024), "application/octet-stream")
        fhir = json.dumps({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                           "note": [{"text": "n" * 1024} for _ in range(15 * 1024)]}).encode()
        prober = Prober(f"{api}/v1/records/{small['id']}", token)
        prober.start()
        try:
            time.sleep(0.2)
            prober.phase = "64 MiB read"
            assert _download(api, token, big["id"]) == 64 * 1024 * 1024
            prober.phase = "4,096-link read"
            assert _download(api, token, wide["id"]) == 4096 * 1024
            prober.phase = "16 MiB FHIR"
            assert _upload(api, token, fhir, "application/fhir+json")["type"] == "Observation"
            prober.phase = "gc"
            run("gc", "--data-dir", data_dir, "--grace", "0")
        finally:
            prober.stop.set()
            prober.join(15)
        assert len(prober.latencies) > 20
        assert prober.slow == [], f"small requests waited (phase, ms): {prober.slow}"
        metrics = urllib.request.Request(f"{api}/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(metrics) as resp:
            assert "medvault_event_loop_lag_seconds_bucket" in resp.read().decode()
    finally:
        daemon.stop()
