"""Sharing between nodes: grants, revocation, break-glass, share imports and
CAR export/import."""
from __future__ import annotations

from aiohttp import web

from daemon.errors import UnsupportedMediaType

from .auth import caller_of, scope
from .inputs import BatchGrantBody, EmergencyBody, ExportQuery, GrantBody, ImportBody, RevokeQuery
from .keys import VAULT
from .params import parse_body, parse_query
from .streaming import send

routes = web.RouteTableDef()
CAR_TYPE = "application/vnd.ipld.car"


@routes.post("/v1/records/{id}/grants")
@scope("share")
async def grant(request: web.Request) -> web.Response:
    body = await parse_body(GrantBody, request)
    result = await request.app[VAULT].sharing.grant(caller_of(request), request.match_info["id"],
                                                    body.recipient, body.expires,
                                                    body.write)
    return web.json_response(result, status=201)


@routes.get("/v1/records/{id}/grants")
@scope("share")
async def list_grants(request: web.Request) -> web.Response:
    items = await request.app[VAULT].sharing.grants(caller_of(request), request.match_info["id"])
    return web.json_response({"items": items, "next": None})  # one page: lists share one shape


@routes.delete("/v1/records/{id}/grants/{did}")
@scope("share")
async def revoke(request: web.Request) -> web.Response:
    rotate = parse_query(RevokeQuery, request).rotate
    result = await request.app[VAULT].sharing.revoke(caller_of(request), request.match_info["id"],
                                             request.match_info["did"], rotate == "true")
    return web.json_response(result)


@routes.post("/v1/grants")
@scope("share")
async def grant_many(request: web.Request) -> web.Response:
    body = await parse_body(BatchGrantBody, request)
    result = await request.app[VAULT].sharing.grant_many(caller_of(request), body.records, body.recipient,
                                                 body.expires)
    return web.json_response(result, status=201)


@routes.post("/v1/records/{id}/emergency")
@scope("emergency")
async def emergency(request: web.Request) -> web.Response:
    body = await parse_body(EmergencyBody, request)
    result = await request.app[VAULT].sharing.emergency_open(caller_of(request), request.match_info["id"],
                                                     body.reason)
    return web.json_response(result, status=201)


@routes.post("/v1/imports")
@scope("write")
async def import_share(request: web.Request) -> web.Response:
    body = await parse_body(ImportBody, request)
    record = await request.app[VAULT].imports.import_share(caller_of(request), body.share)
    return web.json_response(record, status=201)


@routes.get("/v1/exports")
@scope("read")
async def export_car(request: web.Request) -> web.StreamResponse:
    patient = parse_query(ExportQuery, request).patient
    count, stream = await request.app[VAULT].imports.export_car(caller_of(request), patient)
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
