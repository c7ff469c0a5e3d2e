"""The append-only, hash-chained audit log.

Entry n's hash is SHA-256 over entry n-1's hash and the canonical JSON of
entry n's fields, so editing, deleting or reordering any entry breaks every
hash after it; ``verify`` recomputes the chain and names the first broken
entry. Entries name actors by did and records by their opaque id, never by
content, and carry no tokens or keys.
"""
from __future__ import annotations

import hashlib
import json

from .sql import sqlite3

GENESIS = "0" * 64
_FIELDS = ("seq", "time", "actor", "action", "record", "outcome", "detail")


def _text(name: str, value) -> str | None:
    """Audit fields are stored and hashed as exactly what they are: text or
    null. Anything else is a caller bug refused before it can reach the
    chain (SQLite would store a number in a TEXT column as text, and the
    chain would then never verify again)."""
    if value is not None and type(value) is not str:
        raise TypeError(f"audit field {name} must be text or null")
    return value


def entry_hash(prev: str, entry: dict) -> str:
    """The chain hash of ``entry`` (its seven fields) after the hash ``prev``."""
    canonical = json.dumps({k: entry[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(bytes.fromhex(prev) + canonical.encode()).hexdigest()


def append(conn: sqlite3.Connection, time: str, actor: str | None, action: str, record: str | None,
           outcome: str, detail: dict | None = None) -> int:
    """Appends one entry (inside the caller's transaction); returns its seq."""
    return append_many(conn, [(time, actor, action, record, outcome, detail)])


def append_many(conn: sqlite3.Connection, entries: list[tuple]) -> int:
    """Appends (time, actor, action, record, outcome, detail) entries in
    order, chained, with one look-up of the head (a searchset's reads);
    returns the last seq."""
    seq, prev = head(conn)
    rows_ = []
    for time, actor, action, record, outcome, detail in entries:
        seq += 1
        entry = {"seq": seq, "time": _text("time", time), "actor": _text("actor", actor),
                 "action": _text("action", action), "record": _text("record", record),
                 "outcome": _text("outcome", outcome), "detail": json.dumps(detail or {}, sort_keys=True)}
        digest = entry_hash(prev, entry)
        rows_.append({**entry, "prev": prev, "hash": digest})
        prev = digest
    conn.executemany(
        "INSERT INTO audit (seq, time, actor, action, record, outcome, detail, prev, hash)"
        " VALUES (:seq, :time, :actor, :action, :record, :outcome, :detail, :prev, :hash)", rows_)
    return seq


def moved_upto(conn: sqlite3.Connection, generation: str) -> int:
    """The last read audit already chained from the staging file of this
    ``generation`` (indexer/audit_stage.py); 0 for another file."""
    row = conn.execute("SELECT id FROM audit_moved WHERE generation = ?", (generation,)).fetchone()
    return row[0] if row else 0


def moved_generation(conn: sqlite3.Connection) -> str | None:
    """The generation of the staging file the index last chained from (None: never)."""
    row = conn.execute("SELECT generation FROM audit_moved").fetchone()
    return row[0] if row else None


def set_moved_upto(conn: sqlite3.Connection, generation: str, upto: int) -> None:
    conn.execute("DELETE FROM audit_moved")
    conn.execute("INSERT INTO audit_moved (generation, id) VALUES (?, ?)", (generation, upto))


def rows(conn: sqlite3.Connection, first: int, last: int) -> list[dict]:
    """Entries ``first``..``last`` as stored (detail as its JSON text), in order."""
    return [dict(r) for r in conn.execute("SELECT * FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last))]


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """(seq, hash) of the last entry; (0, GENESIS) for an empty chain."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (last["seq"], last["hash"]) if last else (0, GENESIS)


def restore(conn: sqlite3.Connection, entries: list[tuple]) -> None:
    """Writes back entries recovered from anchors, exactly as they were
    (seq, time, actor, action, record, outcome, detail, hash), onto an empty
    chain; ``prev`` is each one's predecessor's hash."""
    prev, rows_ = GENESIS, []
    for seq, time, actor, action, record, outcome, detail, digest in entries:
        rows_.append((seq, time, actor, action, record, outcome, detail, prev, digest))
        prev = digest
    conn.executemany("INSERT INTO audit (seq, time, actor, action, record, outcome, detail, prev, hash)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows_)


def verify(conn: sqlite3.Connection) -> dict:
    """Recomputes the whole chain: ``{"ok", "count", "head", "broken_at"}``."""
    state = verify_page(conn, None)
    while not state["done"]:
        state = verify_page(conn, state)
    return verification(state)


def verify_page(conn: sqlite3.Connection, state: dict | None, limit: int = 10_000) -> dict:
    """Checks up to ``limit`` more entries, continuing from ``state`` (None:
    from the start). Each page can be its own short read transaction, so a
    long chain never pins one snapshot (or a reader) for the whole check;
    the chain is append-only, so pages taken at different moments agree.
    Returns the state to continue from; ``done`` at the end or at a break."""
    prev, count, last = (GENESIS, 0, None) if state is None else (state["head"], state["count"], state["last"])
    rows = conn.execute("SELECT * FROM audit WHERE :last IS NULL OR seq > :last ORDER BY seq LIMIT :limit",
                        {"last": last, "limit": limit}).fetchall()
    for row in rows:
        entry, expected_seq = dict(row), count + 1
        if entry["seq"] != expected_seq or entry["prev"] != prev or entry_hash(prev, entry) != entry["hash"]:
            return {"done": True, "count": count, "head": prev, "last": last, "broken_at": expected_seq}
        prev, count, last = entry["hash"], count + 1, entry["seq"]
    return {"done": len(rows) < limit, "count": count, "head": prev, "last": last, "broken_at": None}


def verification(state: dict) -> dict:
    """The answer of ``verify`` from a final page state."""
    broken = state["broken_at"]
    return {"ok": broken is None, "count": state["count"], "head": state["head"], "broken_at": broken}


def entries(conn: sqlite3.Connection, *, record: str | None = None, principal: str | None = None,
            since: str | None = None, readable_by: str | None = None, after_seq: int = 0,
            limit: int = 100) -> list[dict]:
    """Entries in order, filtered. ``readable_by`` limits a principal to the
    entries it made, every entry of records this node records it as creator
    or patient of, and a grantee's entries of a record only from the moment
    its grant was made until it was revoked or expired."""
    where, params = ["seq > :after"], {"after": after_seq, "limit": limit}
    if record:
        where.append("record = :record")
        params["record"] = record
    if principal:
        where.append("actor = :principal")
        params["principal"] = principal
    if since:
        where.append("time >= :since")
        params["since"] = since
    if readable_by:
        where.append(
            "(actor = :me"
            " OR record IN (SELECT record_id FROM record_roles WHERE principal = :me AND role IN ('creator', 'patient'))"
            " OR EXISTS (SELECT 1 FROM envelopes e WHERE e.record_id = audit.record AND e.recipient = :me"
            " AND e.granted <= audit.time AND (e.revoked IS NULL OR audit.time <= e.revoked)"
            " AND (e.expires IS NULL OR audit.time <= e.expires)))")
        params["me"] = readable_by
    sql = f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT :limit"
    out = []
    for row in conn.execute(sql, params):
        entry = dict(row)
        entry["detail"] = json.loads(entry["detail"])
        out.append(entry)
    return out
