"""How records, ids and cursors look from outside (API.md), shared by the
Vault and its sharing and recovery parts."""
from __future__ import annotations

import base64
import secrets

from . import timeutil
from .errors import BadRequest
from .identity import InvalidDid, check_did
from .metadata import RECORD_ID

MAX_PAGE = 1000  # the most items one list response carries (API.md: limit ≤ 1000)
MAX_SQL_INT = 2**63 - 1  # SQLite's INTEGER: a larger Python int raises OverflowError at bind time


def new_record_id() -> str:
    return base64.b32encode(secrets.token_bytes(16)).decode().lower().rstrip("=")


def check_record_id(record_id: str) -> str:
    if not isinstance(record_id, str) or not RECORD_ID.fullmatch(record_id):
        raise BadRequest("a record id is 26 base32 characters", "bad_id")
    return record_id


def record_view(row: dict) -> dict:
    """A record as API.md defines it."""
    return {
        "id": row["id"], "version": row["version"], "cid": row["cid"], "patient": row["patient"],
        "type": row["type"], "content_type": row["content_type"], "title": row["title"],
        "tags": row["tags"], "size": row["size"], "date": row["date"], "created": row["created"],
        "updated": row["updated"], "author": row["author"],
        "pin": {"status": row.get("pin_status") or "queued", "replicas": row.get("pin_replicas") or 0},
    }


def future_time(text, field: str = "expires") -> str:
    """A client-given expiry: RFC 3339 with offset, in the future; else 400."""
    try:
        value = timeutil.parse_time(text)
    except (ValueError, TypeError):
        raise BadRequest(f"{field} must be an RFC 3339 time with offset", f"bad_{field}") from None
    if value <= timeutil.now():
        raise BadRequest(f"{field} must be in the future", f"bad_{field}")
    return value


def did_param(text, field: str) -> str:
    try:
        return check_did(text)
    except (InvalidDid, TypeError):
        raise BadRequest(f"{field} must be an Ed25519 did:key", f"bad_{field}") from None


def row_from_metadata(body: dict, manifest_cid: str, created: str | None = None) -> dict:
    """The index row a verified manifest's metadata describes (imports, reindex)."""
    return {"id": body["record"], "version": body["version"], "cid": manifest_cid, "patient": body.get("patient"),
            "type": body.get("type"), "content_type": body["content_type"], "title": body.get("title"),
            "text": body.get("text"), "subject": body.get("subject"), "date": body.get("date"),
            "tags": body.get("tags") or [], "identifiers": body.get("identifiers") or [], "size": body["size"],
            "created": created or body["created"],
            "updated": body["created"], "author": body["author"]}


def role_of(principal: str, body: dict) -> str:
    """How a principal comes to hold a record version's envelope."""
    if principal == body.get("patient"):
        return "patient"
    return "author" if principal == body["author"] else "grant"


def page_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}", "bad_limit")
    return limit
