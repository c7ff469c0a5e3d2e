"""``/fhir``: FHIR R4 REST over the same Vault, tokens and scopes as ``/v1``
(read → read, vread, history, search; write → create, update, delete;
share → Consent). Handlers only parse the request and shape the answer;
the interactions live in the sibling modules, the decisions in the engine.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import format_datetime
from importlib.metadata import version
from urllib.parse import parse_qsl

from aiohttp import web

from daemon.auth import Caller
from daemon.errors import BadRequest, NotFound, UnsupportedMediaType
from daemon.views import new_record_id

from ..auth import caller_of, scope
from ..keys import VAULT
from ..params import read_body
from . import audit, bundles, capability, consent, history, query, resources, transaction
from .outcome import BASE, fhir_json, is_json_body, negotiate
from .resources import Write, check_target, etag, if_match, need, with_meta
from .search import lenient, link
from .validation import check_type, parse_json

routes = web.RouteTableDef()
_MAX_FORM = 64 * 1024


_HOST = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.){0,8}[A-Za-z0-9-]{1,63}(?::\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::\d{1,5})?")


def base_of(request: web.Request) -> str:
    """The absolute base for Bundle links: the Host the client used when it is
    a plain host[:port], else the address it reached (a malformed or hostile
    Host is neither reflected into links nor a 500)."""
    host = request.headers.get("Host", "")
    if not _HOST.fullmatch(host):
        address = request.transport.get_extra_info("sockname") if request.transport else None
        host = "localhost"
        if isinstance(address, tuple) and len(address) >= 2:
            host = f"[{address[0]}]:{address[1]}" if ":" in str(address[0]) else f"{address[0]}:{address[1]}"
    return f"{request.scheme}://{host}{BASE}"


async def body_of(request: web.Request) -> bytes:
    """The request's FHIR JSON bytes (``application/json`` counts as FHIR
    here), bounded by the node's FHIR size limit before it is all read."""
    if not is_json_body(request.headers.get("Content-Type")):
        raise UnsupportedMediaType("send application/fhir+json (or application/json)")
    body = await read_body(request, request.app[VAULT].config.max_fhir_bytes)
    if not body:
        raise BadRequest("the request body is empty", "empty_body")
    return body


def _http_date(rfc3339: str) -> str:
    moment = datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).astimezone(timezone.utc)
    return format_datetime(moment, usegmt=True)


def _instance(resource: dict, record: dict, status: int = 200, location: str | None = None) -> web.Response:
    headers = {"ETag": etag(record["version"]), "Last-Modified": _http_date(record["updated"])}
    if location:
        headers["Location"] = f"{location}/{resource['resourceType']}/{record['id']}/_history/{record['version']}"
    return fhir_json(resource, status, headers)


@routes.get("/fhir/metadata")
@scope(None)
async def metadata(request: web.Request) -> web.Response:
    negotiate(request)
    return fhir_json(capability.statement(base_of(request), version("medvault")))


async def _instance_of(vault, caller: Caller, rtype: str, rid: str, vid: str | None) -> tuple[dict, dict | None]:
    """read or vread: (the resource, its record row; None for a derived resource)."""
    if rtype == "Provenance" and vid is None:
        return await history.read_provenance(vault, caller, rid), None
    if rtype in ("AuditEvent", "Provenance"):
        raise NotFound("AuditEvents are found by search (entity, agent), and Provenance has one version",
                       "read_not_supported")
    version = resources.version_of(vid) if vid is not None else None
    return await resources.read(vault, caller, rtype, rid, version)


async def _get(request: web.Request, caller: Caller, rtype: str, rid: str | None, vid: str | None,
               params: list[tuple[str, str]] | None) -> dict:
    """A GET of a batch entry: read, vread or search."""
    need(caller, "read")
    if rid is None:
        return await _search(request, caller, rtype, params or [])
    return (await _instance_of(request.app[VAULT], caller, rtype, rid, vid))[0]


async def _search(request: web.Request, caller: Caller, rtype: str, params: list[tuple[str, str]]) -> dict:
    vault, base = request.app[VAULT], base_of(request)
    is_lenient = lenient(request.headers.get("Prefer"))
    if rtype == "AuditEvent":
        return await audit.search(vault, caller, base, params, is_lenient)
    if rtype == "Provenance":
        targets = [v for n, v in params if n == "target"]
        unknown = [n for n, _ in params if n not in ("target", "_format", "_pretty")]
        if len(targets) != 1 or (unknown and not is_lenient):
            raise BadRequest("Provenance is searched by one target=Type/id", "unknown_parameter")
        found = await history.provenances(vault, caller, targets[0])
        return bundles.searchset(base, found, link(base, "Provenance", [("target", targets[0])]), total=len(found))
    return await query.search(vault, caller, base, rtype, params, is_lenient)


@routes.post("/fhir")
@routes.post("/fhir/")  # clients that join the base and an empty path (fhirpy's execute)
@scope("read", "write")
async def bundle(request: web.Request) -> web.Response:
    """batch / transaction: the Bundle's own type decides."""
    negotiate(request)
    caller, vault = caller_of(request), request.app[VAULT]
    body = parse_json(await body_of(request))
    kind = body.get("type")
    if body.get("resourceType") != "Bundle" or kind not in ("batch", "transaction"):
        raise BadRequest("POST to the base takes a Bundle of type batch or transaction", "bad_bundle")
    if kind == "transaction":
        return fhir_json(await transaction.transaction(vault, caller, base_of(request), body))

    async def run_get(rtype, rid, vid, params):
        return await _get(request, caller, rtype, rid, vid, params)

    return fhir_json(await transaction.batch(vault, caller, base_of(request), body, run_get))


@routes.get("/fhir/Patient/{id}/$everything")
@scope("read")
async def everything(request: web.Request) -> web.Response:
    negotiate(request)
    caller, vault = caller_of(request), request.app[VAULT]
    patient, row = await resources.read(vault, caller, "Patient", request.match_info["id"])
    return fhir_json(await query.everything(vault, caller, base_of(request), patient, row["patient"]))


@routes.get("/fhir/{type}")
@scope("read")
async def search_get(request: web.Request) -> web.Response:
    negotiate(request)
    rtype = check_type(request.match_info["type"])
    return fhir_json(await _search(request, caller_of(request), rtype, list(request.query.items())))


@routes.post("/fhir/{type}/_search")
@scope("read")
async def search_post(request: web.Request) -> web.Response:
    negotiate(request)
    rtype = check_type(request.match_info["type"])
    if (request.headers.get("Content-Type") or "").split(";")[0].strip().lower() != \
            "application/x-www-form-urlencoded" and request.can_read_body:
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    raw = await read_body(request, _MAX_FORM)  # every segment of it, not only the first read
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("the search parameters are not UTF-8", "bad_form") from None
    params = list(request.query.items()) + form
    return fhir_json(await _search(request, caller_of(request), rtype, params))


@routes.post("/fhir/{type}")
@scope("write")
async def create(request: web.Request) -> web.Response:
    negotiate(request)
    caller, vault = caller_of(request), request.app[VAULT]
    rtype = check_type(request.match_info["type"])
    resource = await resources.parsed(vault.services, await body_of(request))
    resource = {k: v for k, v in resource.items() if k != "id"}  # the server names what it creates
    check_target(rtype, resource, None)
    if rtype == "Consent":
        record, resource = await consent.create(vault, caller, resource)
    else:
        record = (await resources.write_all(vault, caller, [Write(rtype, new_record_id(), True, resource)]))[0]
    return _instance(with_meta({**resource, "id": record["id"]}, record), record, 201, location=base_of(request))


@routes.get("/fhir/{type}/{id}")
@scope("read")
async def read(request: web.Request) -> web.Response:
    negotiate(request)
    rtype = check_type(request.match_info["type"])
    resource, row = await _instance_of(request.app[VAULT], caller_of(request), rtype, request.match_info["id"], None)
    return _instance(resource, row) if row is not None else fhir_json(resource)


@routes.get("/fhir/{type}/{id}/_history")
@scope("read")
async def instance_history(request: web.Request) -> web.Response:
    negotiate(request)
    rtype = check_type(request.match_info["type"])
    return fhir_json(await history.instance_history(request.app[VAULT], caller_of(request), base_of(request), rtype,
                                                    request.match_info["id"]))


@routes.get("/fhir/{type}/{id}/_history/{vid}")
@scope("read")
async def vread(request: web.Request) -> web.Response:
    negotiate(request)
    rtype = check_type(request.match_info["type"])
    resource, row = await _instance_of(request.app[VAULT], caller_of(request), rtype, request.match_info["id"],
                                       request.match_info["vid"])
    return _instance(resource, row)


@routes.put("/fhir/{type}/{id}")
@scope("write")
async def update(request: web.Request) -> web.Response:
    negotiate(request)
    caller, vault = caller_of(request), request.app[VAULT]
    rtype, rid = check_type(request.match_info["type"]), resources.record_id(request.match_info["id"])
    expect = if_match(request.headers.get("If-Match"))
    resource = await resources.parsed(vault.services, await body_of(request))
    check_target(rtype, resource, rid)
    record = (await resources.write_all(vault, caller, [Write(rtype, rid, False, resource, expect)]))[0]
    return _instance(with_meta(resource, record), record)


@routes.delete("/fhir/{type}/{id}")
@scope("write")
async def delete(request: web.Request) -> web.Response:
    negotiate(request)
    rtype = check_type(request.match_info["type"])
    await transaction.run_delete(request.app[VAULT], caller_of(request), rtype, request.match_info["id"])
    return web.Response(status=204)
