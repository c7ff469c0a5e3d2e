"""Patient control in FHIR terms: a ``Consent`` is a set of medvault grants.

Creating a Consent (``provision.type`` permit) grants every actor in
``provision.actor`` (a did:key, as a Reference's identifier of system
``urn:ietf:rfc:3986`` or as the reference itself) read access to the
records ``provision.data`` names, or, without data, to every record of the
consent's patient the caller can read, until ``provision.period.end``.
The grants go through the Sharing component (so whether the caller may
share is the one access rule's answer) in one commit; the Consent itself is
then stored as a record of the patient, its ``provision.data`` filled with
what was granted, so ``Consent?patient=`` lists it like any resource.
Deleting the Consent revokes those grants with key rotation, then erases it.
"""
from __future__ import annotations

import re
from datetime import datetime, time, timezone

from daemon import timeutil
from daemon.auth import Caller
from daemon.errors import BadRequest, NotFound
from daemon.identity import InvalidDid, check_did
from daemon.views import MAX_PAGE, new_record_id

from .outcome import InvalidResource
from .resources import DID_SYSTEM, Write, need, patient_did, read, write_all

_DATA_REF = re.compile(r"([A-Z][A-Za-z]{1,63})/([a-z2-7]{26})")


def _invalid(path: str, text: str) -> InvalidResource:
    return InvalidResource(text, [{"severity": "error", "code": "business-rule", "diagnostics": text,
                                   "expression": [path]}])


def actors(resource: dict) -> list[str]:
    """The recipients' did:keys (``Consent.provision.actor``)."""
    provision = resource.get("provision") or {}
    found = []
    for i, actor in enumerate(provision.get("actor") or []):
        ref = actor.get("reference") or {}
        ident = ref.get("identifier") or {}
        value = ident.get("value") if ident.get("system") == DID_SYSTEM else ref.get("reference")
        try:
            found.append(check_did(value))
        except (InvalidDid, TypeError):
            raise _invalid(f"Consent.provision.actor[{i}].reference",
                           "each actor must name a did:key (identifier system urn:ietf:rfc:3986)") from None
    if not found:
        raise _invalid("Consent.provision.actor", "a Consent names at least one actor (the recipient's did:key)")
    return list(dict.fromkeys(found))


def expiry(resource: dict) -> str | None:
    """``provision.period.end`` as the grants' expiry (a date ends at the end of its day, UTC)."""
    end = ((resource.get("provision") or {}).get("period") or {}).get("end")
    if end is None:
        return None
    try:
        if len(end) == 10:
            day = datetime.fromisoformat(end).date()
            return timeutil.format_time(datetime.combine(day, time(23, 59, 59, 999000), timezone.utc))
        return timeutil.parse_time(end)
    except (ValueError, TypeError):
        raise _invalid("Consent.provision.period.end", "the period's end must be a full date or a date-time "
                                                       "with offset") from None


def data_records(resource: dict) -> list[tuple[str, str]]:
    """(type, id) of each ``provision.data`` reference."""
    found = []
    for i, item in enumerate((resource.get("provision") or {}).get("data") or []):
        match = _DATA_REF.fullmatch(((item.get("reference") or {}).get("reference")) or "")
        if not match:
            raise _invalid(f"Consent.provision.data[{i}].reference", "data must reference Type/id of this server")
        found.append((match[1], match[2]))
    return found


async def _patient_records(vault, caller: Caller, did: str) -> list[tuple[str, str]]:
    page = await vault.records.search(caller, [("patient", did), ("_count", str(MAX_PAGE))])
    if page["next"]:
        raise BadRequest(f"the patient has more than {MAX_PAGE} records: name them in provision.data",
                         "too_many_records")
    return [(r["type"] or "Binary", r["id"]) for r in page["items"] if r["type"] != "Consent"]


async def create(vault, caller: Caller, resource: dict) -> tuple[dict, dict]:
    """Grants, then the Consent record; returns (the record, the Consent as stored)."""
    need(caller, "share")
    if (resource.get("provision") or {}).get("type", "permit") != "permit":
        raise _invalid("Consent.provision.type", "only permit provisions are enforced here")
    if resource.get("status") != "active":
        raise _invalid("Consent.status", "a Consent that grants access is active")
    recipients, expires = actors(resource), expiry(resource)
    did = await patient_did(vault, caller, resource)
    if did is None:
        raise _invalid("Consent.patient", "the patient must be a Patient resource here with a did:key identifier, "
                                          "or name the did:key as its identifier")
    data = data_records(resource) or await _patient_records(vault, caller, did)
    if not data:
        raise _invalid("Consent.provision.data", "the patient has no records to share")
    for recipient in recipients:
        await vault.sharing.grant_many(caller, [rid for _, rid in data], recipient, expires)
    provision = {**resource.get("provision", {}), "type": "permit",
                 "data": [{"meaning": "instance", "reference": {"reference": f"{t}/{rid}"}} for t, rid in data]}
    stored = {**resource, "provision": provision}
    return (await write_all(vault, caller, [Write("Consent", new_record_id(), True, stored)]))[0], stored


async def delete(vault, caller: Caller, rid: str) -> None:
    """Revokes the Consent's grants (with rotation), then erases the Consent."""
    need(caller, "share")
    resource, _ = await read(vault, caller, "Consent", rid)
    for recipient in actors(resource):
        for _, record in data_records(resource):
            try:
                await vault.sharing.revoke(caller, record, recipient)
            except NotFound:
                continue  # already revoked, expired or the record erased
    await vault.records.erase(caller, rid)
