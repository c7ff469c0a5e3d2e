"""Sending a body whose bytes are verified as they are produced (record
content, CAR exports). Once the status line is out, an error can no longer
become a JSON answer; cutting the connection is the only honest signal
left, and it must be cut, never left open: a client waiting on a chunked
body that will not end would hang until its own timeout."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from daemon.errors import VaultError

from .errors import status_of

log = logging.getLogger("medvault.api")


async def send(request: web.Request, response: web.StreamResponse, pieces: AsyncIterator[bytes],
               first: bytes | None = None) -> web.StreamResponse:
    """Writes ``first`` and then every piece to a prepared response."""
    try:
        if first is not None:
            await response.write(first)
        async for piece in pieces:
            await response.write(piece)
    except Exception as error:  # noqa: BLE001 - whatever it is, the headers are gone
        extra = ({"status": status_of(error), "code": error.code} if isinstance(error, VaultError)
                 else {"error_type": type(error).__name__})
        log.warning("response cut mid-stream", extra=extra)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
