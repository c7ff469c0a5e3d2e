"""``AuditEvent?entity=…&agent=…``: the audit chain as FHIR AuditEvents
(daemon.fhir_audit renders them; break-glass entries carry the ETREAT
purpose). Who sees what is the Admin component's rule, as on /v1/audit."""
from __future__ import annotations

import re

from daemon.auth import Caller
from daemon.errors import BadRequest
from daemon.fhir_audit import audit_event

from . import bundles
from .search import DEFAULT_COUNT, link

_ENTITY = re.compile(r"(?:.*/)?(?:[A-Z][A-Za-z]{1,63}/)?([a-z2-7]{26})(?:/_history/\d{1,9})?")
_KNOWN = {"entity", "agent", "_count", "_cursor", "_format", "_pretty"}


async def search(vault, caller: Caller, base: str, params: list[tuple[str, str]], is_lenient: bool) -> dict:
    given: dict[str, str] = {}
    used = []
    for name, value in params:
        if name not in _KNOWN:
            if is_lenient:
                continue
            raise BadRequest(f"unknown or unsupported search parameter: {name[:40]}", "unknown_parameter")
        if name in given:
            raise BadRequest(f"search parameter {name} may be given only once", f"bad_{name.lstrip('_')}")
        given[name] = value
        if name not in ("_format", "_pretty"):
            used.append((name, value))
    record = None
    if "entity" in given:
        match = _ENTITY.fullmatch(given["entity"])
        if not match:
            raise BadRequest("entity must name a record: Type/id or id", "bad_entity")
        record = match[1]
    limit, after = DEFAULT_COUNT, 0
    if "_count" in given:
        if not given["_count"].isdigit() or not 1 <= int(given["_count"]) <= 1000:
            raise BadRequest("search parameter _count: a whole number from 1 to 1000", "bad_count")
        limit = int(given["_count"])
    if "_cursor" in given:
        if not given["_cursor"].isdigit() or len(given["_cursor"]) > 18:
            raise BadRequest("the cursor is not one this server issued", "bad_cursor")
        after = int(given["_cursor"])
    result = await vault.admin.audit_entries(caller, record=record, principal=given.get("agent"), after=after,
                                             limit=limit)
    events = [audit_event(entry) for entry in result["items"]]
    nxt = link(base, "AuditEvent", used, str(result["next"])) if result["next"] is not None else None
    return bundles.searchset(base, events, link(base, "AuditEvent", used), nxt,
                             total=len(events) if nxt is None and after == 0 else None)
