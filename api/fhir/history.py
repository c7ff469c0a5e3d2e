"""A resource's versions in FHIR terms: the instance ``_history`` Bundle and
one ``Provenance`` per version (who wrote it, when it was signed). Both come
from the Records component's version list, so access is the record's."""
from __future__ import annotations

import re

from daemon.auth import Caller
from daemon.errors import Gone, NotFound

from . import bundles
from .resources import read, view

_PROVENANCE_ID = re.compile(r"([a-z2-7]{26})-(\d{1,9})")
_TARGET = re.compile(r"(?:.*/)?([A-Z][A-Za-z]{1,63})/([a-z2-7]{26})(?:/_history/\d{1,9})?")
_SIGNATURE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1",
              "display": "Author's Signature"}
_AUTHOR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                       "code": "author", "display": "Author"}]}
DID_SYSTEM = "urn:ietf:rfc:3986"


async def instance_history(vault, caller: Caller, base: str, rtype: str, rid: str) -> dict:
    await view(vault, caller, rtype, rid)
    versions = await vault.records.versions(caller, rid)
    out = []
    for version in reversed(versions):
        try:
            resource, _ = await read(vault, caller, rtype, rid, version["version"])
        except Gone:
            resource = None  # rotated away: listed, without content
        out.append((version, resource))
    return bundles.history(base, rtype, rid, out, f"{base}/{rtype}/{rid}/_history")


def provenance(rtype: str, rid: str, version: dict) -> dict:
    """The Provenance of one version: its author signed the manifest at ``created``."""
    who = {"identifier": {"system": DID_SYSTEM, "value": version["author"]}}
    return {"resourceType": "Provenance", "id": f"{rid}-{version['version']}",
            "target": [{"reference": f"{rtype}/{rid}/_history/{version['version']}"}],
            "recorded": version["created"],
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                     "code": "CREATE" if version["version"] == 1 else "UPDATE"}]},
            "agent": [{"type": _AUTHOR, "who": who}],
            "signature": [{"type": [_SIGNATURE], "when": version["created"], "who": who}]}


async def provenances(vault, caller: Caller, target: str) -> list[dict]:
    """Every version's Provenance for ``target`` (``Type/id``)."""
    match = _TARGET.fullmatch(target)
    if not match:
        raise NotFound("no such target", "record_not_found")
    rtype, rid = match[1], match[2]
    await view(vault, caller, rtype, rid)
    return [provenance(rtype, rid, v) for v in await vault.records.versions(caller, rid)]


async def read_provenance(vault, caller: Caller, pid: str) -> dict:
    match = _PROVENANCE_ID.fullmatch(pid)
    if not match:
        raise NotFound("no such Provenance", "record_not_found")
    record = await view(vault, caller, None, match[1])
    for version in await vault.records.versions(caller, record["id"]):
        if version["version"] == int(match[2]):
            return provenance(record["type"], record["id"], version)
    raise NotFound("no such Provenance", "record_not_found")
