"""Read audits staged beside the index, moved into the chain in batches.

Every commit to the index makes SQLite drop the page cache of every reader
connection, so the next search decrypts each index page it touches again
(bench/README.md, "FHIR R4 REST": 0.6 ms warm, 1.7 ms after one commit). A
read's audit entry would cost every following search that. So the entries
of reads, views, denials and failed authentications (``Index.audit_reads``)
are committed to this small encrypted database of their own before the
reader is answered, and the index's writer moves them into the hash chain
at the start of its next durable batch (at most ``MOVE_DELAY`` later):
before any write that follows them, so the chain keeps their order.

Crash safety across the two files: the index records, in the same
transaction as the moved entries, the last staged id it took
(``audit_moved``); staged rows up to it are skipped and deleted later, so
an entry is neither lost nor chained twice whichever file a crash leaves
behind.
"""
from __future__ import annotations

import json
import os

from .sql import sqlite3

MOVE_DELAY = 0.1  # seconds a staged entry may wait for the index's next durable batch
_MOVE_AT_MOST = 5000  # entries read from the staging file at a time (a batch takes them all, page by page)


def migrate(conn: sqlite3.Connection) -> int:
    """The staging database's tables (its own file, not the index's
    migrations). Ids are never reused (AUTOINCREMENT), and the file has a
    random generation, so a staging file replaced or lost is never read as
    one whose entries were already chained."""
    conn.execute("CREATE TABLE IF NOT EXISTS staged (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT, actor TEXT,"
                 " action TEXT, record TEXT, outcome TEXT, detail TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS generation (id TEXT NOT NULL)")
    if conn.execute("SELECT COUNT(*) FROM generation").fetchone()[0] == 0:
        conn.execute("INSERT INTO generation (id) VALUES (?)", (os.urandom(16).hex(),))
    return 1


def generation(conn: sqlite3.Connection) -> str:
    return conn.execute("SELECT id FROM generation").fetchone()[0]


def stage(conn: sqlite3.Connection, entries: list[tuple]) -> None:
    """Stages (time, actor, action, record, outcome, detail) entries in order."""
    conn.executemany("INSERT INTO staged (time, actor, action, record, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
                     [(*entry[:5], json.dumps(entry[5] or {}, sort_keys=True)) for entry in entries])


def pending(conn: sqlite3.Connection, after: int) -> list[tuple]:
    """Staged entries after id ``after``, oldest first: (id, time, actor, action, record, outcome, detail)."""
    return [(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in conn.execute(
        "SELECT id, time, actor, action, record, outcome, detail FROM staged WHERE id > ? ORDER BY id LIMIT ?",
        (after, _MOVE_AT_MOST))]


def skip_past(conn: sqlite3.Connection, upto: int) -> None:
    """Makes the next staged id greater than ``upto`` (the last one the index
    chained): a staging file rolled back by a power loss must not hand out
    ids the index would skip as already chained."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'staged'").fetchone()
    if row is None:
        if upto:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('staged', ?)", (upto,))
    elif row[0] < upto:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'staged'", (upto,))


def all_pending(conn: sqlite3.Connection, after: int) -> list[tuple]:
    """Every staged entry after id ``after``, read a page at a time."""
    entries: list[tuple] = []
    while True:
        page = pending(conn, after)
        entries += page
        if len(page) < _MOVE_AT_MOST:
            return entries
        after = page[-1][0]


def drop(conn: sqlite3.Connection, upto: int) -> None:
    """Deletes the staged entries the chain has taken."""
    conn.execute("DELETE FROM staged WHERE id <= ?", (upto,))
