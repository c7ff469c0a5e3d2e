"""What each route accepts, as typed classes: one class per query string or
JSON body (search's richer FHIR-style parameters are parsed, in one place, by
daemon/search_params.py), parsed at the boundary (``parse_query`` / ``parse_body`` in
api/params.py) before the Vault is called, and written into /openapi.json
from the same declarations. A value that breaks a rule here is a 400 (413 for
a body past its size) and reaches nothing behind the API.
"""
from __future__ import annotations

from dataclasses import dataclass

from daemon.auth import SCOPES
from daemon.pin_admin import PIN_STATUSES
from daemon.record_input import MAX_TAGS, RecordInput
from daemon.sharing import MAX_BATCH, parse_share

from .fields import CLINICAL_DATE, LIMIT, RECORD_ID, Boolean, Choice, Did, Integer, Invalid, ListOf, Number, Text, Time
from .params import arg

TAG = Text(1, 64, printable=True)
RECORD_TYPE = Text(1, 64, r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
EXPIRES = Time(future=True)
CID = Text(2, 200, r"^b[a-z2-7]+$")


@dataclass(frozen=True)
class Share(Text):
    """A share token, ``mv1.<manifest CID>.<envelope CID>``."""

    max_len: int = 400
    pattern: str = r"^mv1\.b[a-z2-7]+\.b[a-z2-7]+$"

    def parse(self, value, from_text: bool = False) -> str:
        try:
            value = super().parse(value)
        except Invalid:
            value = None  # parse_share words the 400 for every malformed token alike
        parse_share(value)
        return value


# ---- query strings -------------------------------------------------------

@dataclass(frozen=True)
class RecordFields:
    """PUT /v1/records/{id}: what the client says about the record it uploads."""

    patient: str | None = arg(Did(), "the patient's did:key")
    type: str | None = arg(RECORD_TYPE, "resource type, e.g. Observation")
    title: str | None = arg(Text(1, 500), "a title for search")
    tag: list[str] = arg(ListOf(TAG, 0, MAX_TAGS), "a tag (repeatable)")
    date: str | None = arg(CLINICAL_DATE, "clinical date (ISO 8601, partial dates allowed)")

    def record_input(self) -> RecordInput:
        return RecordInput(patient=self.patient, type=self.type, title=self.title, tags=list(self.tag),
                           date=self.date)


@dataclass(frozen=True)
class RecordUploadQuery(RecordFields):
    """POST /v1/records: the record's fields and whether to wait for its pin."""

    wait: str | None = arg(Choice(("pinned",)), "'pinned' answers once the record is pinned")


@dataclass(frozen=True)
class AuditQuery:
    """GET /v1/audit."""

    record: str | None = arg(RECORD_ID, "record id")
    principal: str | None = arg(Did(), "the actor's did:key")
    since: str | None = arg(Time(), "RFC 3339 time")
    after: int = arg(Integer(), "seq to continue after (the previous page's next)", default=0)
    limit: int = arg(LIMIT, "page size (1-1000)", default=100)
    format: str = arg(Choice(("json", "fhir")), "'fhir' for a Bundle of FHIR R4 AuditEvent resources",
                      default="json")


@dataclass(frozen=True)
class PinsQuery:
    """GET /v1/pins."""

    status: str | None = arg(Choice(PIN_STATUSES), "only pins with this status")
    after: str | None = arg(CID, "CID to continue after (the previous page's next)")
    limit: int = arg(LIMIT, "page size (1-1000)", default=100)


@dataclass(frozen=True)
class RevokeQuery:
    """DELETE /v1/records/{id}/grants/{did}."""

    rotate: str = arg(Choice(("true", "false")), "re-encrypt as a new version (default true)", default="true")


@dataclass(frozen=True)
class GcQuery:
    """POST /v1/admin/gc."""

    grace: float | None = arg(Number(0, 10 * 365 * 86400), "seconds a new block is spared (default: config)")
    force: str = arg(Choice(("true", "false")), "collect even when the index pins nothing", default="false")


@dataclass(frozen=True)
class ExportQuery:
    """GET /v1/exports."""

    patient: str = arg(Did(), "the patient's did:key", required=True)


# ---- JSON bodies ---------------------------------------------------------

@dataclass(frozen=True)
class TokenBody:
    """POST /v1/tokens."""

    principal: str = arg(Did(), "the principal the token stands for", required=True)
    scopes: list[str] = arg(ListOf(Choice(SCOPES), 1, len(SCOPES)), "scopes granted", required=True)
    expires: str | None = arg(EXPIRES, "when the token stops working (future)")


@dataclass(frozen=True)
class GrantBody:
    """POST /v1/records/{id}/grants."""

    recipient: str = arg(Did(), "who may read the record", required=True)
    expires: str | None = arg(EXPIRES, "when the grant stops working (future)")
    write: bool = arg(Boolean(), "also let the recipient store new versions", default=False)


@dataclass(frozen=True)
class BatchGrantBody:
    """POST /v1/grants: one recipient, many records."""

    MAX_BYTES = 256 * 1024
    records: list[str] = arg(ListOf(RECORD_ID, 1, MAX_BATCH), "record ids", required=True)
    recipient: str = arg(Did(), "who may read the records", required=True)
    expires: str | None = arg(EXPIRES, "when the grants stop working (future)")


@dataclass(frozen=True)
class PrincipalBody:
    """POST /v1/principals."""

    name: str = arg(Text(1, 100, printable=True), "a name for people", required=True)


@dataclass(frozen=True)
class EmergencyBody:
    """POST /v1/records/{id}/emergency: break-glass needs a reason."""

    reason: str = arg(Text(10, 1000, r"^\s*\S[\s\S]*$"), "why (10 to 1000 characters)", required=True,
                      code="reason_required")


@dataclass(frozen=True)
class ImportBody:
    """POST /v1/imports."""

    share: str = arg(Share(), "a share token mv1.<manifest>.<envelope>", required=True, code="bad_share")
