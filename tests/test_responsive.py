"""The event loop stays free (issue 9): while a daemon reads 64 MiB, opens a
4,096-link manifest, parses a 16 MiB FHIR body and collects garbage, another
client's small requests are each answered within 50 ms.

The one timed assertion in the suite, and the issue asks for it. The prober
runs in a process of its own (``tests/prober.py``), so what it measures is
the daemon, not a thread of this process waiting for the GIL behind the
heavy download; the heavy client is this process.

Not robust on a machine other work shares, so it runs only with
MEDVAULT_TIMED=1. Until 2026-12-05 each slow small request spent its time
in its durable audit commit (the WAL fsync: 50-550 ms while other
processes wrote to the disk); read audits are relaxed commits now
(indexer/db.py), and the test passed 4 runs of 4 at load 2 on this 2-core
VM. With two busy-loop processes beside it, it failed (66-247 ms during
the 4,096-link read and gc): the daemon then gets half the CPU it needs.
(bench/README.md, "Where a request's time goes".)"""
from __future__ import annotations

import json
import os
import time

import pytest

from .process import Daemon, download, run, run_json, set_chunk_size, upload
from .prober import Prober

SMALL_REQUEST_BUDGET = 0.05  # seconds each small request may take while the heavy work runs

pytestmark = pytest.mark.skipif(os.environ.get("MEDVAULT_TIMED") != "1",
                                reason="timed test: run with MEDVAULT_TIMED=1 on a machine no other run shares")


def test_small_requests_answer_within_50ms_during_heavy_work(tmp_path):
    data_dir, log = str(tmp_path / "node"), str(tmp_path / "daemon.log")
    run_json("init", "--data-dir", data_dir)
    token = open(os.path.join(data_dir, "owner.token")).read().strip()
    set_chunk_size(data_dir, 1024)  # 4 MiB of content is then one 4,096-link manifest
    daemon = Daemon(data_dir, log).start()
    try:
        api = open(os.path.join(data_dir, "api")).read().strip()
        wide = upload(api, token, os.urandom(4096 * 1024), "application/octet-stream")
    finally:
        daemon.stop()
    set_chunk_size(data_dir, 256 * 1024)
    daemon = Daemon(data_dir, log).start()
    try:
        api = open(os.path.join(data_dir, "api")).read().strip()
        small = upload(api, token, b"a small note", "text/plain")
        big = upload(api, token, os.urandom(64 * 1024 * 1024), "application/octet-stream")
        fhir = json.dumps({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                           "note": [{"text": "n" * 1024} for _ in range(15 * 1024)]}).encode()
        prober = Prober(f"{api}/v1/records/{small['id']}", token).start()
        phases: list[tuple[str, float, float]] = []

        def phase(name: str, work) -> None:
            started = time.monotonic()
            work()
            phases.append((name, started, time.monotonic()))

        try:
            time.sleep(0.5)  # the prober's process is up and answering before the heavy work starts
            phase("64 MiB read", lambda: download(api, token, big["id"]) == 64 * 1024 * 1024 or 1 / 0)
            phase("4,096-link read", lambda: download(api, token, wide["id"]) == 4096 * 1024 or 1 / 0)
            phase("16 MiB FHIR", lambda: upload(api, token, fhir, "application/fhir+json"))
            phase("gc", lambda: run("gc", "--data-dir", data_dir, "--grace", "0"))
        finally:
            samples = prober.finish()
    finally:
        daemon.stop()

    def phase_of(started: float) -> str:
        return next((name for name, begin, end in phases if begin <= started <= end), "between")

    assert all(status == 200 for _, _, status in samples)
    during = [(phase_of(started), latency) for started, latency, _ in samples
              if phases[0][1] <= started <= phases[-1][2]]
    assert len(during) >= 10, f"the prober answered only {len(during)} times while the heavy work ran"
    slow = [(name, round(latency * 1000, 1)) for name, latency in during if latency > SMALL_REQUEST_BUDGET]
    assert not slow, f"small requests over {SMALL_REQUEST_BUDGET * 1000:.0f} ms (phase, ms): {slow}"
