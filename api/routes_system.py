"""Health, Prometheus metrics and the OpenAPI document."""
from __future__ import annotations

from aiohttp import web

from daemon.auth import authenticate
from daemon.errors import Unauthorized

from .auth import scope
from .keys import VAULT
from .openapi import document

routes = web.RouteTableDef()


@routes.get("/v1/health")
@scope(None)
async def health(request: web.Request) -> web.Response:
    """Anyone may ask whether the node is ok; which backend it runs, its
    peers and its dependencies' details are for operators only."""
    vault = request.app[VAULT]
    detail = False
    if request.headers.get("Authorization"):
        try:
            detail = (await authenticate(vault.db, request.headers["Authorization"])).has("operator")
        except Unauthorized:
            detail = False
    report = await vault.health(detail)
    return web.json_response(report, status=200 if report["status"] == "ok" else 503)


@routes.get("/metrics")
@scope("operator")
async def metrics(request: web.Request) -> web.Response:
    vault = request.app[VAULT]
    await vault.pins.refresh_gauges()
    return web.Response(body=vault.metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@routes.get("/openapi.json")
@scope(None)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
