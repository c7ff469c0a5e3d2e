"""The search parameters of ``GET /v1/records``, parsed into an index query.

Every parameter is known here or refused (400 naming it): nothing is
silently ignored. As in FHIR, a repeated parameter means AND and a comma
inside one means OR (``code=A,B&code=C`` is (A or B) and C). Dates are FHIR
dates with optional prefixes (eq ne gt lt ge le sa eb), compared as UTC
instant ranges; ``since``/``until`` are ``ge``/``le``. Tokens are
``system|value`` or a bare value (any system).

| name | repeat | value |
|---|---|---|
| patient, subject | AND, comma OR | a did:key or a reference such as ``Patient/123`` |
| type | AND, comma OR | a resource type |
| tag | AND, comma OR | a tag |
| code, identifier | AND, comma OR | ``system|value`` or ``value`` |
| date | AND | ``[prefix]date`` |
| since, until | once | a date |
| q | once | free text over title and indexed text |
| limit, _count | once | 1..1000 (page size) |
| _sort | once | ``date`` or ``-date`` (default: newest first) |
| cursor | once | the previous page's ``next`` |
"""
from __future__ import annotations

import base64
import binascii
import json
import re

from indexer import dates
from indexer.search import Query, Term, cursor_position

from .errors import BadRequest
from .views import MAX_PAGE

_LIST = {"patient", "subject", "type", "tag", "code", "identifier"}
_REPEAT = _LIST | {"date"}
_ONCE = {"since", "until", "q", "limit", "_count", "_sort", "cursor"}
KNOWN = _REPEAT | _ONCE
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_REFERENCE = re.compile(r"^(did:key:z[1-9A-HJ-NP-Za-km-z]{40,60}|[A-Z][A-Za-z]{1,63}/[A-Za-z0-9.-]{1,64})$")
_MAX_VALUE = 500


def _bad(name: str, why: str) -> BadRequest:
    return BadRequest(f"search parameter {name}: {why}", f"bad_{name.lstrip('_')}")


def _token(name: str, text: str) -> Term:
    system, sep, value = text.rpartition("|")
    if not value:
        raise _bad(name, "a value is required (system|value or value)")
    return Term(value, system if sep else None)


def _date(name: str, text: str) -> tuple[int, int]:
    try:
        return dates.date_range(text)
    except ValueError:
        raise _bad(name, "not a valid date (YYYY, YYYY-MM, YYYY-MM-DD or an RFC 3339 date-time)") from None


def encode_cursor(position: dict, sort: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({**position, "o": sort}).encode()).decode().rstrip("=")


def _cursor(text: str, sort: str) -> dict:
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(doc, dict) or doc.pop("o", None) != sort:
            raise ValueError
        return cursor_position(json.dumps(doc))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise BadRequest("the cursor is not one this server issued for this sort", "bad_cursor") from None


def parse(items: list[tuple[str, str]], caller: str, now: str, emergency: bool) -> Query:
    """Query-string items → a Query; any unknown, repeated-once or malformed
    parameter is a 400 that names it."""
    seen: dict[str, list[str]] = {}
    for name, value in items:
        if name not in KNOWN:
            raise BadRequest(f"unknown search parameter: {name[:40]}", "unknown_parameter")
        if "\x00" in value or len(value) > _MAX_VALUE:
            raise _bad(name, f"must be at most {_MAX_VALUE} characters without NUL")
        if name in _ONCE and name in seen:
            raise _bad(name, "may be given only once")
        seen.setdefault(name, []).append(value)
    if "limit" in seen and "_count" in seen:
        raise _bad("_count", "give limit or _count, not both")
    one = {name: values[0] for name, values in seen.items() if name in _ONCE}
    query = Query(caller, now, emergency)
    for name, values in seen.items():
        if name not in _LIST:
            continue
        for value in values:
            alternatives = [v for v in value.split(",")]
            if any(not v for v in alternatives):
                raise _bad(name, "empty value")
            if name in ("patient", "subject"):
                if not all(_REFERENCE.match(v) and (name == "subject" or not v[0].isupper() or
                                                    v.startswith("Patient/")) for v in alternatives):
                    raise _bad(name, "a did:key or a reference such as Patient/123")
                query.refs.append([Term(v) for v in alternatives])
            elif name == "type":
                if not all(_TYPE.match(v) for v in alternatives):
                    raise _bad(name, "a resource type such as Observation")
                query.types.append(alternatives)
            elif name == "tag":
                query.tags.append([Term(v) for v in alternatives])
            elif name == "code":
                query.codes.append([_token(name, v) for v in alternatives])
            else:
                query.identifiers.append([_token(name, v) for v in alternatives])
    for value in seen.get("date", []):
        prefix, text = dates.split_prefix(value)
        query.dates.append((prefix, *_date("date", text)))
    for name, prefix in (("since", "ge"), ("until", "le")):
        if name in one:
            query.dates.append((prefix, *_date(name, one[name])))
    query.text = one.get("q") or None
    size = one.get("limit", one.get("_count"))
    if size is not None:
        if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE:
            raise _bad("limit" if "limit" in one else "_count", f"a whole number from 1 to {MAX_PAGE}")
        query.limit = int(size)
    sort = one.get("_sort")
    if sort is not None and sort not in ("date", "-date"):
        raise _bad("_sort", "date or -date")
    query.sort = sort or "-seq"
    if "cursor" in one:
        query.after = _cursor(one["cursor"], query.sort)
    return query
