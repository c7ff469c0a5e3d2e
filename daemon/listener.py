"""The daemon's listening socket, with a cap on open connections.

aiohttp has no connection limit of its own (its ``TCPSite`` hands every
accepted socket to the app), so the socket is opened here with a protocol
factory that counts the app server's live connections: past
``max_connections`` a new one gets a short 503 and is closed at once,
instead of holding a file descriptor and a parser for a client we cannot
serve. Header read time is bounded by aiohttp itself (its keep-alive timer
is armed when a connection opens and closes it if no complete request has
arrived); body read time by ``api.limits``.
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

_BUSY_BODY = json.dumps({"error": {"code": "too_many_connections",
                                   "message": "the node is serving its maximum number of connections; retry"}})
BUSY_RESPONSE = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                 f"Connection: close\r\nContent-Length: {len(_BUSY_BODY)}\r\n\r\n{_BUSY_BODY}").encode()


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(BUSY_RESPONSE)
        transport.close()


async def listen(runner: web.AppRunner, host: str, port: int, max_connections: int) -> asyncio.AbstractServer:
    """Serves ``runner``'s app on host:port; close the returned server before ``runner.cleanup()``."""
    app_server = runner.server

    def protocol():
        return _Busy() if len(app_server.connections) >= max_connections else app_server()

    return await asyncio.get_running_loop().create_server(protocol, host, port, reuse_address=True)
