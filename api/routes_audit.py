"""/v1/audit: entries (own records with read, everything with operator) and chain verification."""
from __future__ import annotations

from aiohttp import web

from daemon.errors import BadRequest
from daemon.fhir_audit import bundle

from .auth import caller_of, scope
from .keys import VAULT
from .params import int_param

routes = web.RouteTableDef()


@routes.get("/v1/audit")
@scope("read", "operator")
async def list_audit(request: web.Request) -> web.Response:
    q = request.query
    fmt = q.get("format")
    if fmt not in (None, "json", "fhir"):
        raise BadRequest("format may be json or fhir", "bad_format")
    result = await request.app[VAULT].admin.audit_entries(
        caller_of(request), record=q.get("record"), principal=q.get("principal"), since=q.get("since"),
        after=int_param(request, "after", 0), limit=int_param(request, "limit", 100))
    if fmt == "fhir":
        return web.json_response(bundle(result["items"]), content_type="application/fhir+json")
    return web.json_response(result)


@routes.get("/v1/audit/verify")
@scope("operator")
async def verify_audit(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VAULT].admin.verify_audit())
