"""Health, Prometheus metrics and the OpenAPI document."""
from __future__ import annotations

from aiohttp import web

from .auth import scope
from .keys import VAULT
from .openapi import document

routes = web.RouteTableDef()


@routes.get("/v1/health")
@scope(None)
async def health(request: web.Request) -> web.Response:
    report = await request.app[VAULT].health()
    return web.json_response(report, status=200 if report["status"] == "ok" else 503)


@routes.get("/metrics")
@scope("operator")
async def metrics(request: web.Request) -> web.Response:
    vault = request.app[VAULT]
    await vault.refresh_gauges()
    return web.Response(body=vault.metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@routes.get("/openapi.json")
@scope(None)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
