"""Small parsers for query strings and JSON bodies that answer bad input with 400/415."""
from __future__ import annotations

import json

from aiohttp import web

from daemon.errors import BadRequest, UnsupportedMediaType


def int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number", f"bad_{name}") from None


async def json_object(request: web.Request, max_bytes: int = 64 * 1024) -> dict:
    if request.content_type not in ("application/json", "application/octet-stream") and request.body_exists:
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise BadRequest("the JSON body is too large", "body_too_large")
    try:
        doc = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the body is not valid JSON", "bad_json") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object", "bad_json")
    return doc
