"""/v1/records: upload, search, read (with Range), versions, update, erase."""
from __future__ import annotations

import re

from aiohttp import web

from .auth import caller_of, scope
from .errors import error_response
from .inputs import RecordFields, RecordUploadQuery
from .keys import VAULT
from .params import parse_query
from .streaming import send

routes = web.RouteTableDef()
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_BIG = 19  # digits beyond any record size; int() of longer strings is refused by Python
_BODY_PIECE = 256 * 1024


@routes.post("/v1/records")
@scope("write")
async def create_record(request: web.Request) -> web.Response:
    query = parse_query(RecordUploadQuery, request)
    vault = request.app[VAULT]
    record = await vault.records.create(caller_of(request), request.content.iter_chunked(_BODY_PIECE),
                                request.headers.get("Content-Type"), query.record_input(),
                                request.content_length)
    if query.wait == "pinned":
        record = await vault.pins.wait_pinned(caller_of(request), record)
    return web.json_response(record, status=201, headers={"Location": f"/v1/records/{record['id']}"})


@routes.get("/v1/records")
@scope("read")
async def search_records(request: web.Request) -> web.Response:
    result = await request.app[VAULT].records.browse(caller_of(request), list(request.query.items()))
    return web.json_response(result)


@routes.get("/v1/records/{id}")
@scope("read")
async def get_record(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VAULT].records.get(caller_of(request), request.match_info["id"]))


# Media types a browser shows without running anything from the record;
# everything else is served as a download, in a sandbox.
SAFE_INLINE = frozenset({"text/plain", "application/json", "application/fhir+json", "application/octet-stream",
                         "image/png", "image/jpeg", "image/gif", "image/webp", "application/dicom"})


def content_headers(content_type: str) -> dict:
    """Headers that keep a record's bytes from being run as a page in the
    API's origin (a stored HTML or SVG file would otherwise be script)."""
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}
    if content_type.split(";", 1)[0].strip().lower() not in SAFE_INLINE:
        headers["Content-Disposition"] = "attachment"
    return headers


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _BIG else 10**_BIG


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range → inclusive (start, end); None = whole body; ValueError = 416."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # multi-range or malformed: RFC 9110 lets us serve the whole body
    if size <= 0:
        raise ValueError("no range of an empty record is satisfiable")
    first, last = match.groups()
    if first == "":
        length = _position(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError("range outside the record")
    return start, end


@routes.get("/v1/records/{id}/content")
@scope("read")
async def get_content(request: web.Request) -> web.StreamResponse:
    opened = await request.app[VAULT].records.open(caller_of(request), request.match_info["id"])
    try:
        span = parse_range(request.headers.get("Range"), opened.size)
    except ValueError:
        return error_response(416, "range_not_satisfiable", "the requested range is outside the record",
                              {"Content-Range": f"bytes */{opened.size}"})
    start, end = span if span else (0, opened.size - 1)
    pieces = opened.stream(start, end)
    first = await pieces.__anext__()  # verified before any header goes out: errors still get JSON
    response = web.StreamResponse(status=206 if span else 200, headers={
        "Content-Type": opened.content_type, "Content-Length": str(end - start + 1),
        "Accept-Ranges": "bytes", "ETag": f'"{opened.row["cid"]}"', "Cache-Control": "no-store",
        **content_headers(opened.content_type),
        **({"Content-Range": f"bytes {start}-{end}/{opened.size}"} if span else {}),
    })
    await response.prepare(request)
    return await send(request, response, pieces, first)


@routes.put("/v1/records/{id}")
@scope("write")
async def update_record(request: web.Request) -> web.Response:
    fields = parse_query(RecordFields, request).record_input()
    record = await request.app[VAULT].records.update(
        caller_of(request), request.match_info["id"], request.content.iter_chunked(_BODY_PIECE),
        request.headers.get("Content-Type"), fields, request.content_length)
    return web.json_response(record)


@routes.delete("/v1/records/{id}")
@scope("write")
async def erase_record(request: web.Request) -> web.Response:
    await request.app[VAULT].records.erase(caller_of(request), request.match_info["id"])
    return web.Response(status=204)


@routes.get("/v1/records/{id}/versions")
@scope("read")
async def list_versions(request: web.Request) -> web.Response:
    items = await request.app[VAULT].records.versions(caller_of(request), request.match_info["id"])
    return web.json_response({"items": items, "next": None})  # one page: lists share one shape
