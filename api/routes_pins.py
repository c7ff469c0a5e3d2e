"""/v1/pins (operator scope): desired vs actual pin state, and recovery."""
from __future__ import annotations

from aiohttp import web

from .auth import caller_of, scope
from .keys import VAULT
from .inputs import PinsQuery
from .params import parse_query

routes = web.RouteTableDef()


@routes.get("/v1/pins")
@scope("operator")
async def list_pins(request: web.Request) -> web.Response:
    q = parse_query(PinsQuery, request)
    return web.json_response(await request.app[VAULT].pins.list_pins(q.status, q.after,
                                                                q.limit))


@routes.get("/v1/pins/{cid}")
@scope("operator")
async def pin_detail(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VAULT].pins.pin_detail(request.match_info["cid"]))


@routes.post("/v1/pins/{cid}/recover")
@scope("operator")
async def recover_pin(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VAULT].pins.recover_pin(caller_of(request), request.match_info["cid"]))
