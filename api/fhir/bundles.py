"""The Bundles this server answers with: searchset (with self/next links),
history, and batch-/transaction-response. Builders only: no I/O."""
from __future__ import annotations

from daemon import timeutil

from .resources import etag


def full_url(base: str, resource: dict) -> str:
    return f"{base}/{resource['resourceType']}/{resource['id']}"


def searchset(base: str, resources: list[dict], self_link: str, next_link: str | None = None,
              total: int | None = None) -> dict:
    """``total`` only where it is known without more work (FHIR makes it optional)."""
    bundle = {"resourceType": "Bundle", "type": "searchset", "timestamp": timeutil.now()}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": "self", "url": self_link}]
    if next_link:
        bundle["link"].append({"relation": "next", "url": next_link})
    bundle["entry"] = [{"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "match"}}
                       for r in resources]
    if not bundle["entry"]:
        del bundle["entry"]
    return bundle


def history(base: str, rtype: str, rid: str, versions: list[tuple[dict, dict | None]], self_link: str) -> dict:
    """A resource's versions, newest first: (version row, the resource or None
    when that version's key is no longer held)."""
    entries = []
    for row, resource in versions:
        entry: dict = {"fullUrl": f"{base}/{rtype}/{rid}"}
        if resource is not None:
            entry["resource"] = resource
        entry["request"] = {"method": "POST" if row["version"] == 1 else "PUT",
                            "url": rtype if row["version"] == 1 else f"{rtype}/{rid}"}
        entry["response"] = {"status": "201 Created" if row["version"] == 1 else "200 OK",
                             "etag": etag(row["version"]), "lastModified": row["created"]}
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": "history", "timestamp": timeutil.now(), "total": len(entries),
              "link": [{"relation": "self", "url": self_link}]}
    if entries:
        bundle["entry"] = entries
    return bundle


def response_entry(status: str, record: dict | None = None, rtype: str | None = None,
                   resource: dict | None = None, outcome: dict | None = None) -> dict:
    """One entry of a batch-/transaction-response."""
    response: dict = {"status": status}
    if record is not None:
        response["location"] = f"{rtype}/{record['id']}/_history/{record['version']}"
        response["etag"] = etag(record["version"])
        response["lastModified"] = record["updated"]
    if outcome is not None:
        response["outcome"] = outcome
    entry: dict = {}
    if resource is not None:
        entry["resource"] = resource
    entry["response"] = response
    return entry


def response(kind: str, entries: list[dict]) -> dict:
    bundle = {"resourceType": "Bundle", "type": f"{kind}-response", "timestamp": timeutil.now()}
    if entries:
        bundle["entry"] = entries
    return bundle
