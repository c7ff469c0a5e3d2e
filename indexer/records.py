"""Record rows, versions, envelopes, record roles and search.

A record row describes the current version; ``versions`` keeps every version,
``envelopes`` every key envelope (who may read which manifest) and
``record_roles`` who this node recorded as the record's creator, patient and
authorised writers. Read access is one rule, the ``LIVE_ENVELOPE`` predicate:
a principal sees a record when it holds a live (not revoked, not expired)
envelope naming the record's *current manifest CID*; an ``emergency``
(break-glass) envelope counts only for a caller holding that scope. The
engine's access policy (daemon/access.py) builds every decision on it.
"""
from __future__ import annotations

import json

from . import dates
from .sql import sqlite3

LIVE_ENVELOPE = (
    "SELECT 1 FROM envelopes e WHERE e.manifest = r.cid AND e.record_id = r.id"
    " AND e.recipient = :caller AND e.revoked IS NULL AND (e.expires IS NULL OR e.expires > :now)"
    " AND (e.role != 'emergency' OR :emergency)"
)
_ENVELOPE_FIELDS = "cid, record_id, version, manifest, recipient, granter, role, granted, expires"


_SELECT = ("SELECT r.*, p.status AS pin_status, p.replicas AS pin_replicas"
           " FROM records r LEFT JOIN pins p ON p.cid = r.cid")


def row_of(row: sqlite3.Row | None) -> dict | None:
    """A record row as a dict, tags decoded."""
    if row is None:
        return None
    record = dict(row)
    record["tags"] = json.loads(record["tags"] or "[]")
    return record


def save_version(conn: sqlite3.Connection, record: dict, envelopes: list[dict], codes: list[tuple[str, str]],
                 *, prev_cid: str | None = None, roles: list[tuple[str, str]] = (),
                 content: bytes | None = None) -> None:
    """Inserts a new record (``prev_cid`` None) or advances it from exactly
    the version whose manifest is ``prev_cid``, with its version row,
    envelopes, tags, codes and any new ``roles`` ((principal, role) pairs).
    The copy of an earlier version's content goes; ``content`` (a small FHIR
    resource, already validated) is kept as this version's.
    Raises sqlite3.IntegrityError when the record moved on meanwhile, so the
    caller's savepoint rolls back and nothing of this version is kept."""
    fields = ("id", "version", "cid", "patient", "type", "content_type", "title", "text", "subject",
              "date", "size", "created", "updated", "author")
    values = {k: record.get(k) for k in fields}
    values["tags"] = json.dumps(record.get("tags") or [])
    values["date_lo"], values["date_hi"] = _date_range(record.get("date"))
    if prev_cid is None:
        conn.execute(
            f"INSERT INTO records ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})", values)
    else:
        updated = conn.execute(
            f"UPDATE records SET {', '.join(k + ' = :' + k for k in values if k not in ('id', 'created'))}"
            " WHERE id = :id AND cid = :prev AND version < :version", {**values, "prev": prev_cid})
        if updated.rowcount != 1:
            raise sqlite3.IntegrityError("record changed concurrently")
    conn.execute(
        "INSERT INTO versions (record_id, version, cid, size, content_type, created, author)"
        " VALUES (:id, :version, :cid, :size, :content_type, :updated, :author)", values)
    add_envelopes(conn, envelopes, strict=True)
    seq = conn.execute("SELECT seq FROM records WHERE id = ?", (record["id"],)).fetchone()[0]
    conn.execute("DELETE FROM search_terms WHERE seq = ?", (seq,))
    conn.executemany("INSERT OR IGNORE INTO search_terms (seq, kind, system, value, date_lo) VALUES (?, ?, ?, ?, ?)",
                     [(seq, kind, system, value, values["date_lo"]) for kind, system, value in _terms(record, codes)])
    conn.executemany("INSERT OR IGNORE INTO record_roles (record_id, principal, role) VALUES (?, ?, ?)",
                     [(record["id"], principal, role) for principal, role in roles if principal])
    conn.execute("DELETE FROM resource_copies WHERE record_id = ? AND cid != ?", (record["id"], record["cid"]))
    if content is not None:
        conn.execute("INSERT OR REPLACE INTO resource_copies (cid, record_id, body) VALUES (?, ?, ?)",
                     (record["cid"], record["id"], content))


def keep_contents(conn: sqlite3.Connection, contents: list[tuple[str, str, bytes]]) -> None:
    """Keeps (record id, manifest CID, content) copies of resources opened
    for a read, for the versions still current (one replaced meanwhile is
    left out)."""
    conn.executemany(
        "INSERT OR IGNORE INTO resource_copies (cid, record_id, body)"
        " SELECT :cid, :id, :body WHERE EXISTS (SELECT 1 FROM records WHERE id = :id AND cid = :cid)",
        [{"id": rid, "cid": cid, "body": body} for rid, cid, body in contents])


def drop_contents(conn: sqlite3.Connection, manifests: list[str]) -> None:
    """Drops the copies of these manifests (kept under a larger index_copy_max_bytes)."""
    conn.executemany("DELETE FROM resource_copies WHERE cid = ?", [(m,) for m in manifests])


def live_contents(conn: sqlite3.Connection, manifests: list[str], caller: str, now: str,
                  emergency: bool = False) -> tuple[dict[str, dict], dict[str, bytes]]:
    """For a page of manifests, in one query: the caller's newest live
    envelope of each (manifest → envelope, as ``live_envelope``) and the kept
    content copies of exactly those manifests (a manifest the caller holds
    no live envelope for gets no content)."""
    envelopes: dict[str, dict] = {}
    copies: dict[str, bytes] = {}
    for start in range(0, len(manifests), 500):
        batch = list(dict.fromkeys(manifests[start:start + 500]))
        for row in conn.execute(
                f"SELECT {', '.join('e.' + f for f in _ENVELOPE_FIELDS.split(', '))}, c.body"
                " FROM envelopes e LEFT JOIN resource_copies c ON c.cid = e.manifest"
                f" WHERE e.recipient = ? AND e.manifest IN ({','.join('?' * len(batch))})"
                " AND e.revoked IS NULL AND (e.expires IS NULL OR e.expires > ?) AND (e.role != 'emergency' OR ?)"
                " ORDER BY e.granted DESC", (caller, *batch, now, emergency)):
            envelope = dict(row)
            body = envelope.pop("body")
            envelopes.setdefault(envelope["manifest"], envelope)
            if body is not None:
                copies[envelope["manifest"]] = body
    return envelopes, copies


def _date_range(text: str | None) -> tuple[int | None, int | None]:
    try:
        return dates.date_range(text) if text else (None, None)
    except ValueError:
        return None, None


def _terms(record: dict, codes) -> list[tuple[str, str, str]]:
    """What a record is found by besides its columns: tags, codes
    (system, code), references (the patient's did, the FHIR subject) and
    identifiers (system, value)."""
    terms = [("tag", "", tag) for tag in record.get("tags") or []]
    terms += [("code", system or "", code) for system, code in codes]
    terms += [("ref", "", ref) for ref in (record.get("patient"), record.get("subject")) if ref]
    terms += [("ident", system or "", value) for system, value in record.get("identifiers") or []]
    return terms


def readable(conn: sqlite3.Connection, record_id: str, caller: str, now: str, emergency: bool = False) -> dict | None:
    """The record row if ``caller`` holds a live envelope for its current manifest."""
    row = conn.execute(f"{_SELECT} WHERE r.id = :id AND EXISTS ({LIVE_ENVELOPE})",
                       {"id": record_id, "caller": caller, "now": now, "emergency": emergency}).fetchone()
    return row_of(row)


def roles(conn: sqlite3.Connection, record_id: str) -> dict[str, set[str]]:
    """principal -> the roles this node recorded for it on the record."""
    found: dict[str, set[str]] = {}
    for r in conn.execute("SELECT principal, role FROM record_roles WHERE record_id = ?", (record_id,)):
        found.setdefault(r["principal"], set()).add(r["role"])
    return found


def add_role(conn: sqlite3.Connection, record_id: str, principal: str, role: str) -> None:
    conn.execute("INSERT OR IGNORE INTO record_roles (record_id, principal, role) VALUES (?, ?, ?)",
                 (record_id, principal, role))


def revoked_envelopes(conn: sqlite3.Connection, cids: list[str]) -> set[str]:
    """Those of ``cids`` this node holds as revoked (a revoked grant stays revoked)."""
    found: set[str] = set()
    for start in range(0, len(cids), 500):
        batch = cids[start:start + 500]
        found.update(r["cid"] for r in conn.execute(
            f"SELECT cid FROM envelopes WHERE revoked IS NOT NULL AND cid IN ({','.join('?' * len(batch))})", batch))
    return found


def drop_role(conn: sqlite3.Connection, record_id: str, principal: str, role: str) -> None:
    conn.execute("DELETE FROM record_roles WHERE record_id = ? AND principal = ? AND role = ?",
                 (record_id, principal, role))


def live_envelope(conn: sqlite3.Connection, manifest: str, caller: str, now: str,
                  emergency: bool = False) -> dict | None:
    """The caller's newest live envelope naming exactly this manifest."""
    row = conn.execute(
        f"SELECT {_ENVELOPE_FIELDS} FROM envelopes WHERE manifest = ? AND recipient = ?"
        " AND revoked IS NULL AND (expires IS NULL OR expires > ?) AND (role != 'emergency' OR ?)"
        " ORDER BY granted DESC LIMIT 1", (manifest, caller, now, emergency)).fetchone()
    return dict(row) if row else None


def live_envelopes(conn: sqlite3.Connection, manifests: list[str], caller: str, now: str,
                   emergency: bool = False) -> dict[str, dict]:
    """``live_envelope`` for many manifests at once: manifest → the caller's newest live envelope."""
    return {m: e for m in dict.fromkeys(manifests) if (e := live_envelope(conn, m, caller, now, emergency))}


def versions(conn: sqlite3.Connection, record_id: str) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT * FROM versions WHERE record_id = ? ORDER BY version", (record_id,))]


def all_cids(conn: sqlite3.Connection, record_id: str) -> dict[str, list[str]]:
    """Every manifest and envelope CID the index knows for a record (for erase)."""
    return {
        "manifests": [r["cid"] for r in conn.execute("SELECT cid FROM versions WHERE record_id = ?", (record_id,))],
        "envelopes": [r["cid"] for r in conn.execute("SELECT cid FROM envelopes WHERE record_id = ?", (record_id,))],
    }


def delete(conn: sqlite3.Connection, record_id: str) -> None:
    conn.execute("DELETE FROM search_terms WHERE seq = (SELECT seq FROM records WHERE id = ?)", (record_id,))
    for table, column in (("envelopes", "record_id"), ("versions", "record_id"), ("record_roles", "record_id"),
                          ("resource_copies", "record_id"), ("records", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (record_id,))


def find(conn: sqlite3.Connection, record_id: str) -> dict | None:
    """The record row whoever may read it (for imports and emergency access)."""
    return row_of(conn.execute(f"{_SELECT} WHERE r.id = ?", (record_id,)).fetchone())


def live_grants(conn: sqlite3.Connection, manifest: str, now: str) -> list[dict]:
    """Every live envelope naming this manifest (the readers of that version)."""
    return [dict(r) for r in conn.execute(
        f"SELECT {_ENVELOPE_FIELDS} FROM envelopes WHERE manifest = ? AND revoked IS NULL"
        " AND (expires IS NULL OR expires > ?) ORDER BY granted", (manifest, now))]


def revoke_envelopes(conn: sqlite3.Connection, record_id: str, recipient: str, when: str) -> list[str]:
    """Marks every live envelope of ``recipient`` for the record revoked; returns their CIDs."""
    cids = [r["cid"] for r in conn.execute(
        "SELECT cid FROM envelopes WHERE record_id = ? AND recipient = ? AND revoked IS NULL",
        (record_id, recipient))]
    conn.executemany("UPDATE envelopes SET revoked = ? WHERE cid = ?", [(when, c) for c in cids])
    return cids


def version_cids(conn: sqlite3.Connection, record_id: str, version: int) -> list[str]:
    """A version's manifest and every envelope for it (to retire a rotated-away version)."""
    manifest = conn.execute("SELECT cid FROM versions WHERE record_id = ? AND version = ?",
                            (record_id, version)).fetchone()
    if manifest is None:
        return []
    envelopes = [r["cid"] for r in conn.execute("SELECT cid FROM envelopes WHERE manifest = ?", (manifest["cid"],))]
    return [manifest["cid"], *envelopes]


def add_envelopes(conn: sqlite3.Connection, envelopes: list[dict], strict: bool = False) -> None:
    """Stores envelope rows; each names the manifest it seals. ``strict``
    refuses a CID already present instead of ignoring it."""
    verb = "INSERT" if strict else "INSERT OR IGNORE"
    conn.executemany(
        f"{verb} INTO envelopes ({_ENVELOPE_FIELDS})"
        " VALUES (:cid, :record_id, :version, :manifest, :recipient, :granter, :role, :granted, :expires)", envelopes)
