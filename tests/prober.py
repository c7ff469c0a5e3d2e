"""A latency prober that runs in a process of its own (issue 9).

The responsiveness test measures how long the daemon keeps a small request
waiting while heavy work runs. A prober thread inside the test process would
share that process's GIL with the client doing the heavy download, so part of
what it measured was its own wait (CI saw 54-59 ms that way). Here the prober
and the heavy client are separate processes: each latency is the daemon's
(plus the kernel's scheduling on a busy machine), not a neighbour thread's.
"""
from __future__ import annotations

import http.client
import multiprocessing
import time
import urllib.parse

INTERVAL = 0.01  # seconds between the end of one small request and the start of the next


def probe(url: str, token: str, stop, results) -> None:
    """Asks for ``url`` every ``INTERVAL`` on one keep-alive connection until
    ``stop`` is set; sends back [(start time, latency seconds, status)].
    Times are ``time.monotonic()`` (the same clock in every process)."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Authorization": f"Bearer {token}"}
    samples: list[tuple[float, float, int]] = []
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                conn.request("GET", parts.path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()  # the server closed an idle connection: reconnect (counted in this sample)
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                conn.request("GET", parts.path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            samples.append((started, time.monotonic() - started, status))
            time.sleep(INTERVAL)
    finally:
        conn.close()
        results.put(samples)


class Prober:
    """Starts ``probe`` in a spawned process; ``finish()`` returns its samples."""

    def __init__(self, url: str, token: str):
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._process = ctx.Process(target=probe, args=(url, token, self._stop, self._results), daemon=True)

    def start(self) -> "Prober":
        self._process.start()
        return self

    def finish(self, timeout: float = 30) -> list[tuple[float, float, int]]:
        self._stop.set()
        samples = self._results.get(timeout=timeout)
        self._process.join(timeout)
        return samples
