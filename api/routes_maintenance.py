"""Maintenance the daemon must do itself because only it knows what is in
flight: ``POST /v1/admin/gc`` (operator) is what ``medvault gc`` calls when
a daemon is running."""
from __future__ import annotations

from aiohttp import web

from .auth import scope
from .inputs import GcQuery
from .keys import VAULT
from .params import parse_query

routes = web.RouteTableDef()


@routes.post("/v1/admin/gc")
@scope("operator")
async def collect_garbage(request: web.Request) -> web.Response:
    vault = request.app[VAULT]
    q = parse_query(GcQuery, request)
    grace = vault.config.gc_grace_seconds if q.grace is None else q.grace
    result = await vault.garbage.collect(grace, force=q.force == "true")
    return web.json_response(result)
