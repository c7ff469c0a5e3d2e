"""Waiting on a condition instead of sleeping "long enough": a test asks for
what it needs, returns as soon as it holds (fast), and fails with a message
naming it when it does not hold within the deadline (never hangs)."""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable


async def poll(predicate: Callable, timeout: float, interval: float = 0.01):
    """The predicate's first truthy value (it may be a coroutine function), or
    None once ``timeout`` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval)


async def until(predicate: Callable, timeout: float = 10.0, what: str = "the condition", interval: float = 0.01):
    """Like :func:`poll`, but a timeout fails the test."""
    value = await poll(predicate, timeout, interval)
    assert value, f"timed out after {timeout} s waiting for {what}"
    return value
