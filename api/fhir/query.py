"""FHIR search-type: translate the parameters (search.py), run medvault's
one search through the Records component (so only records the caller can
read are found), open the page's resources and answer a searchset Bundle.
"""
from __future__ import annotations

from daemon.auth import Caller
from daemon.errors import NotFound
from daemon.views import MAX_PAGE

from . import bundles
from .outcome import outcome
from .resources import served
from .search import link, translate

MAX_EVERYTHING = MAX_PAGE  # $everything answers at most this many resources, in one Bundle


def _served(found: list[tuple[dict, bytes]], rtype: str | None) -> list[dict]:
    """The resources as served (a record that is not a FHIR resource of the type is left out)."""
    out = []
    for record, data in found:
        try:
            out.append(served(data, record, rtype))
        except NotFound:
            continue
    return out


async def count(vault, caller: Caller, items: list[tuple[str, str]]) -> int:
    """How many records match (pages of the largest size: FHIR's _summary=count)."""
    items = [(n, v) for n, v in items if n not in ("_count", "cursor")] + [("_count", str(MAX_PAGE))]
    total, cursor = 0, None
    while True:
        page = await vault.records.search(caller, items + ([("cursor", cursor)] if cursor else []))
        total += len(page["items"])
        cursor = page["next"]
        if cursor is None:
            return total


async def search(vault, caller: Caller, base: str, rtype: str, params: list[tuple[str, str]],
                 is_lenient: bool) -> dict:
    """A searchset Bundle of one page; ``total`` when the page is the whole result."""
    query = translate(rtype, params, is_lenient)
    self_link = link(base, rtype, query.used)
    if query.summary_count:
        return bundles.searchset(base, [], self_link, total=await count(vault, caller, query.items))
    first_page = not any(name == "_cursor" for name, _ in query.used)

    def render(page: dict, found: list[tuple[dict, bytes]]) -> dict:
        resources = _served(found, rtype)
        total = len(resources) if page["next"] is None and first_page else None
        next_link = link(base, rtype, query.used, page["next"]) if page["next"] else None
        return bundles.searchset(base, resources, self_link, next_link, total)

    return await vault.records.search_resources(caller, query.items, vault.config.max_fhir_bytes, render)


async def everything(vault, caller: Caller, base: str, patient: dict, did: str | None) -> dict:
    """``Patient/{id}/$everything``: the Patient and what the caller can read
    that references it or belongs to its patient did, up to MAX_EVERYTHING."""
    found: dict[str, dict] = {}
    searches = [[("subject", f"Patient/{patient['id']}")]]
    if did:
        searches.append([("patient", did)])
    truncated = False
    for items in searches:
        cursor = None
        while True:
            page = await vault.records.search(caller, items + [("_count", str(MAX_PAGE))]
                                              + ([("cursor", cursor)] if cursor else []))
            for record in page["items"]:
                if record["id"] != patient["id"]:
                    found.setdefault(record["id"], record)
            cursor = page["next"]
            if cursor is None:
                break
            if len(found) >= MAX_EVERYTHING:
                truncated = True
                break
    truncated = truncated or len(found) > MAX_EVERYTHING
    records = list(found.values())[:MAX_EVERYTHING]
    resources = [patient, *await vault.records.read_resources(caller, records, vault.config.max_fhir_bytes,
                                                              lambda found: _served(found, None))]
    self_link = f"{base}/Patient/{patient['id']}/$everything"
    bundle = bundles.searchset(base, resources, self_link, total=None if truncated else len(resources))
    if truncated:  # FHIR's way to say so inside a searchset: an OperationOutcome entry
        note = outcome(200, "truncated", f"only the first {MAX_EVERYTHING} resources are included")
        note["issue"][0].update(severity="warning", code="too-costly")
        bundle["entry"].append({"resource": note, "search": {"mode": "outcome"}})
    return bundle
