"""/v1/audit: entries (own records with read, everything with operator) and chain verification."""
from __future__ import annotations

from aiohttp import web

from daemon.fhir_audit import bundle

from .auth import caller_of, scope
from .inputs import AuditQuery
from .keys import VAULT
from .params import parse_query

routes = web.RouteTableDef()


@routes.get("/v1/audit")
@scope("read", "operator")
async def list_audit(request: web.Request) -> web.Response:
    q = parse_query(AuditQuery, request)
    result = await request.app[VAULT].admin.audit_entries(
        caller_of(request), record=q.record, principal=q.principal, since=q.since,
        after=q.after, limit=q.limit)
    if q.format == "fhir":
        return web.json_response(bundle(result["items"]), content_type="application/fhir+json")
    return web.json_response(result)


@routes.get("/v1/audit/verify")
@scope("operator")
async def verify_audit(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VAULT].anchors.verify())
