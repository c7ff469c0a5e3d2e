"""Bulk work runs below the event loop's CPU priority.

On a busy 2-core machine every runnable thread of every process shares the
cores. The event loop answers small requests in well under a millisecond of
CPU each, but when the threads sealing, opening, hashing or writing blocks
(and the process parsing big FHIR bodies) are runnable beside it, the kernel
gives the loop only its fair share and a small request waits tens of
milliseconds for a core. Those threads lower their own priority (Linux
``nice`` is per thread), so the loop wins the core whenever it has work and
bulk work still gets every cycle the loop leaves. The index threads keep the
normal priority: small requests wait on them.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

BULK_NICE = 10  # CFS weight 110 against the loop's 1024: the loop gets a core ~9 times out of 10


def lower_priority() -> None:
    """Lowers the calling thread's (on Linux; elsewhere the process's) CPU priority by ``BULK_NICE``."""
    try:
        os.nice(BULK_NICE)
    except (AttributeError, OSError):  # not permitted or not supported: run at the normal priority
        pass


def bulk_pool(max_workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool for bulk CPU or disk work, its threads below the loop's priority."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name, initializer=lower_priority)
