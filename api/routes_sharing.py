"""Sharing between nodes: grants, revocation, break-glass, share imports and
CAR export/import."""
from __future__ import annotations

from aiohttp import web

from daemon.errors import BadRequest, UnsupportedMediaType

from .auth import caller_of, scope
from .keys import VAULT
from .params import json_object
from .streaming import send

routes = web.RouteTableDef()
CAR_TYPE = "application/vnd.ipld.car"


@routes.post("/v1/records/{id}/grants")
@scope("share")
async def grant(request: web.Request) -> web.Response:
    body = await json_object(request)
    result = await request.app[VAULT].sharing.grant(caller_of(request), request.match_info["id"],
                                                    body.get("recipient"), body.get("expires"),
                                                    body.get("write", False))
    return web.json_response(result, status=201)


@routes.get("/v1/records/{id}/grants")
@scope("share")
async def list_grants(request: web.Request) -> web.Response:
    items = await request.app[VAULT].sharing.grants(caller_of(request), request.match_info["id"])
    return web.json_response({"items": items})


@routes.delete("/v1/records/{id}/grants/{did}")
@scope("share")
async def revoke(request: web.Request) -> web.Response:
    rotate = request.query.get("rotate", "true")
    if rotate not in ("true", "false"):
        raise BadRequest("rotate must be true or false", "bad_rotate")
    result = await request.app[VAULT].sharing.revoke(caller_of(request), request.match_info["id"],
                                             request.match_info["did"], rotate == "true")
    return web.json_response(result)


@routes.post("/v1/grants")
@scope("share")
async def grant_many(request: web.Request) -> web.Response:
    body = await json_object(request, max_bytes=256 * 1024)
    result = await request.app[VAULT].sharing.grant_many(caller_of(request), body.get("records"), body.get("recipient"),
                                                 body.get("expires"))
    return web.json_response(result, status=201)


@routes.post("/v1/records/{id}/emergency")
@scope("emergency")
async def emergency(request: web.Request) -> web.Response:
    body = await json_object(request)
    result = await request.app[VAULT].sharing.emergency_open(caller_of(request), request.match_info["id"],
                                                     body.get("reason"))
    return web.json_response(result, status=201)


@routes.post("/v1/imports")
@scope("write")
async def import_share(request: web.Request) -> web.Response:
    body = await json_object(request)
    record = await request.app[VAULT].imports.import_share(caller_of(request), body.get("share"))
    return web.json_response(record, status=201)


@routes.get("/v1/exports")
@scope("read")
async def export_car(request: web.Request) -> web.StreamResponse:
    count, stream = await request.app[VAULT].imports.export_car(caller_of(request), request.query.get("patient"))
    response = web.StreamResponse(headers={"Content-Type": CAR_TYPE, "Cache-Control": "no-store",
                                           "X-Medvault-Records": str(count)})
    await response.prepare(request)
    return await send(request, response, stream)  # a missing block cuts the connection


@routes.post("/v1/imports/car")
@scope("write")
async def import_car(request: web.Request) -> web.Response:
    if request.content_type not in (CAR_TYPE, "application/octet-stream"):
        raise UnsupportedMediaType(f"send the archive as {CAR_TYPE}")
    result = await request.app[VAULT].imports.import_car(caller_of(request), request.content.iter_chunked(256 * 1024))
    return web.json_response(result, status=201)
