"""Bounded waits on slow clients: which connections have sent a complete
request (the listener closes those that have not in time), and a watchdog
while a request body is read.

aiohttp bounds header reading (see daemon/listener.py) but not the body: a
client that announces a large Content-Length and then sends nothing holds
its handler, its upload slot and its connection for ever. This middleware
watches the body while the handler waits for it: if no byte arrives for
``body_timeout`` seconds while the handler is waiting, the client gets 408
and the connection is closed.

It reads one private attribute of aiohttp's StreamReader (``_waiter``: set
while a reader awaits more data), because nothing public tells "the handler
is waiting for the client" from "the handler is busy and the client is
waiting for it". If aiohttp renames it, the watchdog never fires (it fails
open); tests/test_slow_clients.py notices.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref

from aiohttp import web

log = logging.getLogger("medvault.api")
STARTED: weakref.WeakSet = weakref.WeakSet()  # transports that have carried a complete request
_TIMEOUT_BODY = json.dumps({"error": {"code": "request_timeout",
                                      "message": "the request body arrived too slowly"}})
_TIMEOUT_RESPONSE = (f"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     f"Content-Length: {len(_TIMEOUT_BODY)}\r\n\r\n{_TIMEOUT_BODY}").encode()


async def _watch(request: web.Request, timeout: float) -> None:
    content = request.content
    seen, since = content.total_bytes, time.monotonic()
    while not content.is_eof():
        await asyncio.sleep(min(1.0, timeout / 4))
        waiting = getattr(content, "_waiter", None) is not None
        if content.total_bytes != seen or not waiting:
            seen, since = content.total_bytes, time.monotonic()  # progress, or the handler is busy
        elif time.monotonic() - since >= timeout:
            log.warning("request body timed out", extra={"after_bytes": seen})
            transport = request.transport
            if transport is not None and not transport.is_closing():
                transport.write(_TIMEOUT_RESPONSE)
                transport.close()
            return


def slow_client_middleware(timeout: float):
    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.transport is not None:
            STARTED.add(request.transport)
        if not request.body_exists:
            return await handler(request)
        watchdog = asyncio.create_task(_watch(request, timeout))
        try:
            return await handler(request)
        finally:
            watchdog.cancel()
    return middleware
