"""/v1/principals and /v1/tokens (admin scope)."""
from __future__ import annotations

from aiohttp import web

from .auth import caller_of, scope
from .keys import VAULT
from .inputs import PrincipalBody, TokenBody
from .params import parse_body

routes = web.RouteTableDef()


@routes.post("/v1/principals")
@scope("admin")
async def add_principal(request: web.Request) -> web.Response:
    body = await parse_body(PrincipalBody, request)
    created = await request.app[VAULT].admin.add_principal(caller_of(request), body.name)
    return web.json_response(created, status=201)


@routes.get("/v1/principals")
@scope("admin")
async def list_principals(request: web.Request) -> web.Response:
    items = await request.app[VAULT].admin.list_principals()
    return web.json_response({"items": items, "next": None})  # one page: lists share one shape


@routes.post("/v1/tokens")
@scope("admin")
async def create_token(request: web.Request) -> web.Response:
    body = await parse_body(TokenBody, request)
    token = await request.app[VAULT].admin.create_token(caller_of(request), body.principal,
                                                    body.scopes, body.expires)
    return web.json_response(token, status=201, headers={"Cache-Control": "no-store"})


@routes.delete("/v1/tokens/{token_id}")
@scope("admin")
async def revoke_token(request: web.Request) -> web.Response:
    await request.app[VAULT].admin.revoke_token(caller_of(request), request.match_info["token_id"])
    return web.Response(status=204)
