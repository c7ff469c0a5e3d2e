"""The daemon's listening socket, with a cap on open connections.

aiohttp has no connection limit of its own (its ``TCPSite`` hands every
accepted socket to the app), so the socket is opened here with a protocol
factory that counts the app server's live connections: past
``max_connections`` a new one gets a short 503 and is closed at once,
instead of holding a file descriptor and a parser for a client we cannot
serve.

Header read time: aiohttp's keep-alive timer closes a connection that has
not sent complete headers ``keepalive_timeout`` after its last response,
but only recent releases (aio-libs/aiohttp#13681) arm it when a connection
opens; so the first request's deadline is set here, whatever the version.
Body read time is bounded by ``api.limits``.
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from api.errors import JsonErrorRequestHandler
from api.limits import STARTED

_BUSY_BODY = json.dumps({"error": {"code": "too_many_connections",
                                   "message": "the node is serving its maximum number of connections; retry"}})
BUSY_RESPONSE = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                 f"Connection: close\r\nContent-Length: {len(_BUSY_BODY)}\r\n\r\n{_BUSY_BODY}").encode()


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(BUSY_RESPONSE)
        transport.close()


async def listen(runner: web.AppRunner, host: str, port: int, max_connections: int,
                 header_timeout: float) -> asyncio.AbstractServer:
    """Serves ``runner``'s app on host:port; close the returned server before ``runner.cleanup()``."""
    app_server = runner.server
    loop = asyncio.get_running_loop()

    def expire_if_silent(handler) -> None:
        transport = handler.transport
        if transport is not None and transport not in STARTED:
            transport.close()  # no complete request headers in time

    def protocol():
        if len(app_server.connections) >= max_connections:
            return _Busy()
        handler = app_server()
        handler.__class__ = JsonErrorRequestHandler  # same layout (no new slots): JSON errors from the parser too
        loop.call_later(header_timeout, expire_if_silent, handler)
        return handler

    return await loop.create_server(protocol, host, port, reuse_address=True)
