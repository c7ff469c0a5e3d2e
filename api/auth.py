"""Bearer-token authentication and per-route scopes.

Every route declares its scope with ``@scope(...)`` (``None`` = public);
a route without a declaration is refused, so a forgotten check fails closed.
"""
from __future__ import annotations

from aiohttp import web

from daemon.auth import Caller, authenticate
from daemon.errors import Forbidden, Unauthorized

from .keys import CALLER

_UNSET = object()


def scope(*alternatives: str | None):
    """Declares which scopes may call a handler (any one of them suffices)."""
    def mark(handler):
        handler.medvault_scopes = None if alternatives == (None,) else frozenset(alternatives)
        return handler
    return mark


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]


def auth_middleware(vault):
    @web.middleware
    async def middleware(request: web.Request, handler):
        route_handler = getattr(request.match_info, "handler", None)
        scopes = getattr(route_handler, "medvault_scopes", _UNSET)
        if scopes is _UNSET:  # unknown route or undeclared handler: let routing answer 404/405
            if request.match_info.http_exception is not None:
                return await handler(request)
            raise Forbidden("this route declares no scope", "no_scope")
        if scopes is None:
            return await handler(request)
        try:
            caller = await authenticate(vault.db, request.headers.get("Authorization"))
        except Unauthorized as exc:
            await vault.admin.auth_failed(exc.code, None)
            raise
        if not scopes & caller.scopes:
            await vault.admin.auth_failed("missing_scope", caller.did)
            raise Forbidden(f"this token lacks the {' or '.join(sorted(scopes))} scope", "missing_scope")
        request[CALLER] = caller
        return await handler(request)
    return middleware
