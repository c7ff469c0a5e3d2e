"""``POST [base]`` with a ``batch`` or ``transaction`` Bundle.

A **transaction** is all or nothing: every entry is parsed and validated
first (a fault anywhere is one OperationOutcome naming the entry and
element, and nothing is stored), ``urn:uuid`` references between entries
are rewritten to the records' ``Type/id``, and every record is written by
the engine in ONE index commit with one durability wait
(``Records.write_many``). Entries may be POST (create) and PUT (update,
with ``ifMatch``); a transaction refuses GET, DELETE, conditional create and
Consent entries (each of those is its own interaction; use a batch).

A **batch** runs each entry as its own interaction (GET read/vread/search,
POST, PUT, DELETE) and reports each entry's own status.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from daemon.auth import Caller
from daemon.errors import BadRequest, VaultError
from daemon.views import new_record_id

from ..errors import status_of
from . import bundles, consent, resources
from .outcome import InvalidResource, outcome
from .resources import Write, check_target, if_match, need
from .validation import check_type, validate

MAX_ENTRIES = 1000
_URL = re.compile(r"([A-Z][A-Za-z]{1,63})(?:/([A-Za-z0-9.-]{1,64})(?:/_history/([0-9]{1,9}))?)?(?:\?(.*))?")


@dataclass
class Entry:
    index: int
    method: str
    rtype: str
    rid: str | None
    version: str | None
    query: str | None
    resource: dict | None
    full_url: str | None
    if_match: str | None


def _bad(index: int, text: str, code: str = "bad_entry") -> BadRequest:
    return BadRequest(f"Bundle.entry[{index}]: {text}", code)


def entries(bundle: dict, kind: str) -> list[Entry]:
    """The Bundle's entries, each request checked for shape (not yet for content)."""
    items = bundle.get("entry", [])
    if not isinstance(items, list) or len(items) > MAX_ENTRIES:
        raise BadRequest(f"Bundle.entry must be a list of at most {MAX_ENTRIES} entries", "bad_bundle")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            raise _bad(i, "each entry needs a request")
        request = item["request"]
        method, url = request.get("method"), request.get("url")
        if method not in ("GET", "POST", "PUT", "DELETE") or not isinstance(url, str):
            raise _bad(i, "request.method must be GET, POST, PUT or DELETE and request.url a string")
        match = _URL.fullmatch(url.lstrip("/"))
        if not match:
            raise _bad(i, "request.url must be Type, Type/id, Type/id/_history/n or Type?query")
        resource = item.get("resource")
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise _bad(i, f"a {method} entry carries a resource")
        if method == "POST" and (match[2] or match[4] is not None):
            raise _bad(i, "a POST entry's url is the resource type")
        if method in ("PUT", "DELETE") and (not match[2] or match[3] or match[4] is not None):
            raise _bad(i, f"a {method} entry's url is Type/id")
        if kind == "transaction" and (method not in ("POST", "PUT") or request.get("ifNoneExist")
                                      or match[1] == "Consent"):
            raise _bad(i, "a transaction takes POST and PUT entries (no conditional create, no Consent); "
                          "use a batch for the rest", "unsupported_in_transaction")
        if not isinstance(request.get("ifMatch", ""), str):
            raise _bad(i, "request.ifMatch must be a version ETag such as W/\"1\"")
        full_url = item.get("fullUrl")
        out.append(Entry(i, method, match[1], match[2], match[3], match[4], resource,
                         full_url if isinstance(full_url, str) else None, request.get("ifMatch")))
    return out


def _rewrite(value, references: dict[str, str]):
    """Every ``reference`` naming a fullUrl of this Bundle, as ``Type/id``."""
    if isinstance(value, dict):
        return {k: (references.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, references))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, references) for v in value]
    return value


def _checked(entry: Entry, resource: dict) -> None:
    """The entry's resource: valid R4, and matching its request."""
    try:
        check_type(entry.rtype)
        check_target(entry.rtype, resource, entry.rid if entry.method == "PUT" else None)
        validate(resource)
    except InvalidResource as error:
        for issue in error.issues or []:
            issue["expression"] = [f"Bundle.entry[{entry.index}].resource.{e.partition('.')[2] or e}"
                                   for e in issue.get("expression", [])]
        raise
    except VaultError as error:
        raise type(error)(f"Bundle.entry[{entry.index}]: {error.message}", error.code) from None


async def transaction(vault, caller: Caller, base: str, bundle: dict) -> dict:
    need(caller, "write")
    items = entries(bundle, "transaction")
    references: dict[str, str] = {}
    writes = []
    for entry in items:
        rid = entry.rid if entry.method == "PUT" else new_record_id()
        if entry.full_url:
            if entry.full_url in references:
                raise _bad(entry.index, "fullUrl repeats another entry's", "duplicate_full_url")
            references[entry.full_url] = f"{entry.rtype}/{rid}"
        writes.append((entry, rid))
    checked = []
    for entry, rid in writes:
        resource = _rewrite(entry.resource, references)
        if entry.method == "POST":
            resource = {k: v for k, v in resource.items() if k != "id"}  # the server names what it creates
        await vault.services.off_loop(_checked, entry, resource)
        checked.append(Write(entry.rtype, rid, entry.method == "POST", resource,
                             if_match(entry.if_match) if entry.method == "PUT" else None))
    known = {}  # Patient/<new id> → its did, for the entries that reference a new Patient
    for write in checked:
        if write.new and write.rtype == "Patient":
            known[f"Patient/{write.rid}"] = resources.own_did(write.resource.get("identifier"))
    records = await resources.write_all(vault, caller, checked, known)
    return bundles.response("transaction", [
        bundles.response_entry("201 Created" if w.new else "200 OK", r, w.rtype) for w, r in zip(checked, records)])


async def batch(vault, caller: Caller, base: str, bundle: dict, run_get) -> dict:
    """Each entry on its own; ``run_get(rtype, rid, version, query)`` answers GETs."""
    answers = []
    for entry in entries(bundle, "batch"):
        try:
            answers.append(await _one(vault, caller, base, entry, run_get))
        except VaultError as error:
            status = status_of(error)
            answers.append(bundles.response_entry(
                str(status), outcome=outcome(status, error.code, error.message,
                                             issues=getattr(error, "issues", None))))
    return bundles.response("batch", answers)


async def _one(vault, caller: Caller, base: str, entry: Entry, run_get) -> dict:
    check_type(entry.rtype)
    if entry.method == "GET":
        query = parse_qsl(entry.query or "", keep_blank_values=True) if entry.query is not None else None
        return bundles.response_entry("200 OK", resource=await run_get(entry.rtype, entry.rid, entry.version, query))
    if entry.method == "DELETE":
        await run_delete(vault, caller, entry.rtype, entry.rid)
        return bundles.response_entry("204 No Content")
    resource = entry.resource if entry.method == "PUT" else {k: v for k, v in entry.resource.items() if k != "id"}
    _checked(entry, resource)
    if entry.method == "POST" and entry.rtype == "Consent":
        record, _ = await consent.create(vault, caller, resource)
    else:
        write = Write(entry.rtype, entry.rid if entry.method == "PUT" else new_record_id(), entry.method == "POST",
                      resource, if_match(entry.if_match) if entry.method == "PUT" else None)
        record = (await resources.write_all(vault, caller, [write]))[0]
    return bundles.response_entry("201 Created" if entry.method == "POST" else "200 OK", record, entry.rtype)


async def run_delete(vault, caller: Caller, rtype: str, rid: str) -> None:
    if rtype == "Consent":
        await consent.delete(vault, caller, resources.record_id(rid))
    else:
        await resources.delete(vault, caller, rtype, rid)
