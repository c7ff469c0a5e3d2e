"""Reading a request into a typed input class (api/inputs.py) and describing
that class as OpenAPI parameters or a request-body schema.

An input class is a frozen dataclass whose fields are declared with ``arg``;
the same declaration parses the request and writes the document, so a rule
cannot be checked in one place and documented differently in another.
"""
from __future__ import annotations

import dataclasses
import json
import re

from aiohttp import web

from daemon.errors import BadRequest, TooLarge, UnsupportedMediaType

from .fields import Invalid, ListOf, bad

JSON_TYPES = ("application/json", "application/octet-stream")
MAX_JSON_BYTES = 64 * 1024
MAX_DEPTH = 32  # our bodies nest two deep; json.loads recurses and 100,000 '[' would overflow the stack
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


@dataclasses.dataclass(frozen=True)
class Arg:
    kind: object
    required: bool = False
    code: str | None = None  # the error code when it is wrong (default bad_<name>)
    description: str = ""


def arg(kind, description: str = "", *, required: bool = False, default=None, code: str | None = None):
    """Declares one input field: its kind, whether it must be present, its default."""
    extra = {"default_factory": list} if isinstance(kind, ListOf) and default is None else {"default": default}
    return dataclasses.field(metadata={"arg": Arg(kind, required, code, description)}, **extra)


def _args(cls):
    return [(f.name, f.metadata["arg"]) for f in dataclasses.fields(cls)]


def _parse_value(name: str, spec: Arg, value, from_text: bool):
    try:
        return spec.kind.parse(value, from_text)
    except Invalid as problem:
        raise bad(name, spec.code, str(problem)) from None


def parse_query(cls, request: web.Request):
    """The query string as ``cls``: each known parameter parsed, a repeated one
    refused unless it is a list, a missing required one refused, and an
    unknown one refused by name (a misspelt filter silently ignored would
    answer a different question than the one asked)."""
    query = request.query
    known = {name for name, _ in _args(cls)}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0][:64]!r}; this endpoint takes "
                         f"{', '.join(sorted(known)) or 'none'}", "unknown_parameter")
    values = {}
    for name, spec in _args(cls):
        given = query.getall(name, [])
        if isinstance(spec.kind, ListOf):
            values[name] = _parse_value(name, spec, given, True)
        elif len(given) > 1:
            raise bad(name, spec.code, "may be given once")
        elif given:
            values[name] = _parse_value(name, spec, given[0], True)
        elif spec.required:
            raise bad(name, spec.code, "is required")
    return cls(**values)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, however many TCP segments it came in; 413 past ``max_bytes``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"the body is larger than {max_bytes} bytes")
    body = bytearray()
    async for piece in request.content.iter_any():
        body += piece
        if len(body) > max_bytes:
            raise TooLarge(f"the body is larger than {max_bytes} bytes")
    return bytes(body)


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuses JSON nested deeper than ``limit`` before ``json.loads`` recurses into it."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > limit:
            raise BadRequest(f"the JSON body nests deeper than {limit} levels", "bad_json")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, max_bytes: int = MAX_JSON_BYTES):
    if request.body_exists and request.content_type not in JSON_TYPES:
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    raw = await read_body(request, max_bytes)
    try:
        text = raw.decode("utf-8")
        check_depth(text)
        return json.loads(text or "null", parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError, NaN, ints past Python's digit limit
        raise BadRequest("the body is not valid JSON", "bad_json") from None


async def parse_body(cls, request: web.Request):
    """The JSON body as ``cls``: an object with only known fields, each parsed;
    ``null`` counts as absent."""
    doc = await read_json(request, getattr(cls, "MAX_BYTES", MAX_JSON_BYTES))
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object", "bad_json")
    specs = dict(_args(cls))
    unknown = sorted(set(doc) - set(specs))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(k[:40] for k in unknown[:5])}", "unknown_field")
    values = {}
    for name, spec in specs.items():
        if doc.get(name) is not None:
            values[name] = _parse_value(name, spec, doc[name], False)
        elif spec.required:
            raise bad(name, spec.code, "is required")
    return cls(**values)


# ---- the OpenAPI side ----------------------------------------------------

def query_parameters(cls) -> list[dict]:
    out = []
    for name, spec in _args(cls):
        param = {"name": name, "in": "query", "required": spec.required, "description": spec.description,
                 "schema": spec.kind.schema()}
        if isinstance(spec.kind, ListOf):
            param.update(style="form", explode=True)
        out.append(param)
    return out


def body_schema(cls) -> dict:
    props, required = {}, []
    for name, spec in _args(cls):
        props[name] = {**spec.kind.schema(), "description": spec.description}
        if spec.required:
            required.append(name)
        else:
            props[name]["nullable"] = True
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema
