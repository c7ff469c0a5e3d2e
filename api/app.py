"""Builds the aiohttp application around a Vault."""
from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from . import (routes_admin, routes_audit, routes_maintenance, routes_pins, routes_records, routes_sharing,
               routes_system)
from .auth import auth_middleware
from .fhir import routes as fhir_routes
from .errors import CLIENT_CLOSED, client_gone, error_middleware
from .keys import VAULT
from .limits import slow_client_middleware

log = logging.getLogger("medvault.api")


def _observe_middleware(vault):
    """Request latency by route template and one JSON access-log line (no query
    strings: they carry patient ids)."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except asyncio.CancelledError:
            if client_gone(request):
                status = CLIENT_CLOSED
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            elapsed = time.perf_counter() - started
            vault.metrics.requests.labels(request.method, route, str(status)).observe(elapsed)
            log.info("request", extra={"method": request.method, "route": route, "status": status,
                                       "ms": round(elapsed * 1000, 2)})
    return middleware


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer (streamed ones too: this runs as headers go out) is served
    as exactly the type it says it is."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


# The longest query string the input classes allow (32 tags of 64 characters, a 500-character
# title or q, all percent-encoded UTF-8) is about 36 KiB; aiohttp's default 8 KiB request line
# would refuse a valid request with a plain-text 400 before our JSON errors could answer.
MAX_REQUEST_LINE = 64 * 1024


ROUTE_MODULES = (routes_system, routes_records, routes_sharing, routes_admin, routes_audit, routes_pins,
                 routes_maintenance)


def make_app(vault) -> web.Application:
    app = web.Application(middlewares=[_observe_middleware(vault), error_middleware,
                                       slow_client_middleware(vault.config.body_timeout), auth_middleware(vault)],
                          handler_args={"max_line_size": MAX_REQUEST_LINE})
    app.on_response_prepare.append(_nosniff)
    app[VAULT] = vault
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
    app.add_routes(fhir_routes.routes)  # FHIR R4 REST: specified by FHIR and /fhir/metadata, not openapi.json
    return app
