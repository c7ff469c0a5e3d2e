"""How long the event loop was kept from running: every ``interval`` the
monitor asks to wake and measures how late it woke. Anything CPU-heavy left
on the loop (a big JSON parse, a manifest decode) shows up here as lag, and
every other request waited that long. Exported in /metrics as a histogram."""
from __future__ import annotations

import asyncio
import time


async def watch_loop_lag(histogram, interval: float = 0.05) -> None:
    while True:
        started = time.perf_counter()
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, time.perf_counter() - started - interval))
