"""Maintenance the daemon must do itself because only it knows what is in
flight: ``POST /v1/admin/gc`` (operator) is what ``medvault gc`` calls when
a daemon is running."""
from __future__ import annotations

import math

from aiohttp import web

from daemon.errors import BadRequest

from .auth import scope
from .keys import VAULT

routes = web.RouteTableDef()
_MAX_GRACE = 10 * 365 * 86400.0


def _grace(request: web.Request, default: float) -> float:
    text = request.query.get("grace")
    if text is None:
        return default
    try:
        grace = float(text)
    except ValueError:
        grace = math.nan
    if not 0 <= grace <= _MAX_GRACE:  # also refuses nan and inf
        raise BadRequest("grace must be a number of seconds, 0 or more", "bad_grace")
    return grace


@routes.post("/v1/admin/gc")
@scope("operator")
async def collect_garbage(request: web.Request) -> web.Response:
    vault = request.app[VAULT]
    force = request.query.get("force", "false")
    if force not in ("true", "false"):
        raise BadRequest("force must be true or false", "bad_force")
    result = await vault.garbage.collect(_grace(request, vault.config.gc_grace_seconds), force=force == "true")
    return web.json_response(result)
