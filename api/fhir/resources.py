"""FHIR instances over medvault records: read, vread, create, update,
delete. Each goes through the engine's Records component, so access is
decided by the one access rule and every version is sealed, chunked and
pinned exactly as through ``/v1``: the two APIs see the same records.

- FHIR id = the record id (26 base32 characters fit FHIR's id pattern);
  versionId = the record version. ``id`` is set in the stored body;
  ``meta.versionId`` and ``meta.lastUpdated`` are the server's and are
  filled in on every read from the index, never trusted from a client.
- The record's patient (who gets an envelope and controls grants) is a
  did:key: a Patient names its own with an identifier of system
  ``urn:ietf:rfc:3986``; any other resource takes the one its
  subject/patient reference names that way, or the patient of the Patient
  record it references (when the caller can read it).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from daemon import fhir as indexed
from daemon.auth import Caller
from daemon.errors import BadRequest, Forbidden, NotFound
from daemon.identity import InvalidDid, check_did
from daemon.metadata import RECORD_ID
from daemon.record_input import RecordInput
from daemon.record_service import Change

from .validation import DERIVED, parse_json, validate

DID_SYSTEM = "urn:ietf:rfc:3986"
_REFERENCE_FIELDS = ("subject", "patient", "beneficiary")
_PATIENT_REF = re.compile(r"Patient/([a-z2-7]{26})")
_ETAG = re.compile(r'(?:W/)?"(\d{1,9})"')
_IN_PROCESS_ABOVE = 1024 * 1024  # bigger bodies are checked in the worker process (the loop stays free)


def need(caller: Caller, scope: str) -> None:
    """The scope an interaction needs (batch entries have no route to declare it)."""
    if not caller.has(scope):
        raise Forbidden(f"this token lacks the {scope} scope", "missing_scope")


def record_id(text: str) -> str:
    """A FHIR id in a URL; one that cannot be a medvault record id does not exist here."""
    if not isinstance(text, str) or not RECORD_ID.fullmatch(text):
        raise NotFound("no such resource", "record_not_found")
    return text


def version_of(text: str) -> int:
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise NotFound("no such version", "version_not_found")
    return int(text)


def if_match(header: str | None) -> int | None:
    """``If-Match: W/"3"`` → 3; anything else given is a 400 (FHIR: a weak ETag of the versionId)."""
    if header is None:
        return None
    match = _ETAG.fullmatch(header.strip())
    if not match:
        raise BadRequest('If-Match must be a version ETag such as W/"1"', "bad_if_match")
    return int(match[1])


def etag(version: int) -> str:
    return f'W/"{version}"'


def check_resource(body: bytes) -> dict:
    """Bytes → a validated resource (runs in a worker for big bodies)."""
    resource = parse_json(body)
    validate(resource)
    return resource


async def parsed(services, body: bytes) -> dict:
    run = services.off_process if len(body) > _IN_PROCESS_ABOVE else services.off_loop
    return await run(check_resource, body)


def with_meta(resource: dict, row: dict) -> dict:
    """The resource as served: the record's id, version and time of that version."""
    meta = resource.get("meta")
    # A stored body need not have passed FHIR validation (a /v1 upload, an
    # import): a "meta" that is not an object is replaced, never a 500.
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(row["version"])
    meta["lastUpdated"] = row["updated"]
    return {**resource, "id": row["id"], "meta": meta}


def served(data: bytes, row: dict, rtype: str | None = None) -> dict:
    """A stored FHIR body as served; 404 when it is not a resource of ``rtype``."""
    if not indexed.is_fhir(row["content_type"]):
        raise NotFound("no such resource (the record is not a FHIR resource)", "not_fhir")
    try:
        resource = json.loads(data)
    except ValueError:
        raise NotFound("no such resource (the record is not a FHIR resource)", "not_fhir") from None
    if not isinstance(resource, dict) or (rtype is not None and resource.get("resourceType") != rtype):
        raise NotFound("no such resource", "record_not_found")
    return with_meta(resource, row)


def stored_body(resource: dict, rid: str) -> bytes:
    """What is sealed: the resource with its id, without server-kept meta."""
    body = {**resource, "id": rid}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def own_did(value) -> str | None:
    """The did:key in a list of identifiers (or a Reference's identifier), if any."""
    for ident in value if isinstance(value, list) else [value]:
        if isinstance(ident, dict) and ident.get("system") == DID_SYSTEM:
            try:
                return check_did(ident.get("value"))
            except (InvalidDid, TypeError):
                raise BadRequest(f"an identifier of system {DID_SYSTEM} must be an Ed25519 did:key",
                                 "bad_patient") from None
    return None


async def patient_did(vault, caller: Caller, resource: dict, known: dict[str, str | None] | None = None) -> str | None:
    """The patient did:key the record belongs to (module doc); ``known``
    maps references inside a transaction (``Patient/<new id>``) to theirs."""
    if resource.get("resourceType") == "Patient":
        return own_did(resource.get("identifier"))
    for key in _REFERENCE_FIELDS:
        ref = resource.get(key)
        if not isinstance(ref, dict):
            continue
        did = own_did(ref.get("identifier"))
        if did:
            return did
        reference = ref.get("reference")
        if not isinstance(reference, str):
            continue
        if known is not None and reference in known:
            return known[reference]
        match = _PATIENT_REF.fullmatch(reference)
        if not match:
            return None
        try:
            did = (await vault.records.get(caller, match[1]))["patient"]
        except NotFound:
            did = None  # a reference the caller cannot follow gives no patient
        if known is not None:
            known[reference] = did  # one look-up per Patient in a transaction
        return did
    return None


@dataclass
class Write:
    """One resource to write, checked and with its record id."""

    rtype: str
    rid: str
    new: bool
    resource: dict
    expect_version: int | None = None


def change_of(write: Write, patient: str | None) -> Change:
    return Change(write.rid, write.new, stored_body(write.resource, write.rid), indexed.MEDIA_TYPE,
                  RecordInput(patient=patient if write.new else None, type=write.rtype), write.expect_version)


def check_target(rtype: str, resource: dict, rid: str | None) -> None:
    """The body agrees with the URL: same type; on update, the same id."""
    if resource.get("resourceType") != rtype:
        raise BadRequest("the resource's resourceType does not match the URL", "type_mismatch")
    if rtype in DERIVED:
        raise BadRequest(f"{rtype} resources are written by this server, not by clients", "read_only_type")
    if rid is not None and resource.get("id") != rid:
        raise BadRequest("the resource's id must match the id in the URL", "id_mismatch")
    if rid is not None and rtype == "Consent":
        raise BadRequest("a Consent is not updated: delete it (revoking its grants) and create another",
                         "consent_update")


async def read(vault, caller: Caller, rtype: str, rid: str, version: int | None = None) -> tuple[dict, dict]:
    """(resource, its row); 404 for another type, 410 for a version no longer held."""
    whole = await vault.records.read_whole(caller, record_id(rid), vault.config.max_fhir_bytes, version,
                                           indexed.MEDIA_TYPE)
    return served(whole.data, whole.row, rtype), whole.row


async def write_all(vault, caller: Caller, writes: list[Write], known: dict[str, str | None] | None = None
                    ) -> list[dict]:
    """Commits every write, all or nothing (one index transaction)."""
    need(caller, "write")
    known = {} if known is None else known
    for write in writes:
        if not write.new:
            await view(vault, caller, write.rtype, write.rid)  # a record of another type is not this resource
    changes = []
    for write in writes:
        patient = await patient_did(vault, caller, write.resource, known) if write.new else None
        changes.append(change_of(write, patient))
    return await vault.records.write_many(caller, changes)


def is_resource(record: dict) -> bool:
    """Whether a record holds a FHIR resource (a /v1 upload may hold anything)."""
    return bool(record["type"]) and indexed.is_fhir(record["content_type"])


async def view(vault, caller: Caller, rtype: str | None, rid: str) -> dict:
    """The record (not its content) behind ``rtype/rid`` (any type when None);
    404 unless the caller may read it and it is a FHIR resource of that type."""
    record = await vault.records.get(caller, record_id(rid))
    if not is_resource(record) or (rtype is not None and record["type"] != rtype):
        raise NotFound("no such resource", "record_not_found")
    return record


async def delete(vault, caller: Caller, rtype: str, rid: str) -> None:
    """FHIR delete is medvault's erase (every version, crypto-shredded)."""
    need(caller, "write")
    await view(vault, caller, rtype, rid)
    await vault.records.erase(caller, rid)
