"""Is the event loop free (issue 9)? While a daemon reads 64 MiB, opens a
4,096-link manifest, parses a 16 MiB FHIR body and collects garbage, another
client asks for a small record every 10 ms; prints the slowest answer of
each phase and every one over 50 ms. ``python bench/responsive.py``

(It was a test; on CI it saw 54-59 ms during the 64 MiB read. The prober
thread shares the test process's GIL with the 64 MiB download, so part of
that is the client's own wait: a prober in its own process is the next step.)"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.process import Daemon, run, run_json  # noqa: E402

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


def main() -> int:
    tmp_path = tempfile.mkdtemp(prefix="medvault-responsive-")
    data_dir, log = os.path.join(tmp_path, "node"), os.path.join(tmp_path, "daemon.log")
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
        print(f"small requests: {len(prober.latencies)}, slowest {max(prober.latencies) * 1000:.1f} ms")
        print(f"over {SMALL_REQUEST_BUDGET * 1000:.0f} ms (phase, ms): {prober.slow or 'none'}")
    finally:
        daemon.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
