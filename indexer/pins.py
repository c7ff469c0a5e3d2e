"""Desired pin state: what should be pinned, at what replication, and what
the reconciler last saw. Rows are written in the same transaction as the
record they belong to, so an acknowledged record always has its pin job."""
from __future__ import annotations

from .sql import sqlite3


def want(conn: sqlite3.Connection, cid: str, record_id: str | None, kind: str, rmin: int, rmax: int, now: str,
         status: str = "queued", replicas: int = 0, next_attempt: float = 0) -> None:
    """Records a desired pin; ``next_attempt`` is when the reconciler should look at it."""
    conn.execute(
        "INSERT INTO pins (cid, record_id, kind, desired, status, replicas, rmin, rmax, attempts,"
        " next_attempt, created, updated) VALUES (?, ?, ?, 1, ?, ?, ?, ?, 0, ?, ?, ?)"
        " ON CONFLICT(cid) DO UPDATE SET desired = 1, status = excluded.status,"
        " next_attempt = excluded.next_attempt, updated = excluded.updated",
        (cid, record_id, kind, status, replicas, rmin, rmax, next_attempt, now, now))


def unwant(conn: sqlite3.Connection, cids: list[str], now: str) -> None:
    conn.executemany("UPDATE pins SET desired = 0, status = 'unpinning', record_id = NULL, next_attempt = 0,"
                     " attempts = 0, updated = ? WHERE cid = ?", [(now, c) for c in cids])


def get(conn: sqlite3.Connection, cid: str) -> dict | None:
    row = conn.execute("SELECT * FROM pins WHERE cid = ?", (cid,)).fetchone()
    return dict(row) if row else None


def listing(conn: sqlite3.Connection, status: str | None = None, after: str | None = None,
            limit: int = 100) -> list[dict]:
    where, params = ["desired = 1"], []
    if status:
        where.append("status = ?")
        params.append(status)
    if after:
        where.append("cid > ?")
        params.append(after)
    return [dict(r) for r in conn.execute(
        f"SELECT * FROM pins WHERE {' AND '.join(where)} ORDER BY cid LIMIT ?", (*params, limit))]


def due(conn: sqlite3.Connection, now_ts: float, limit: int) -> list[dict]:
    """Jobs whose time has come: those that need an action (submit, recover,
    unpin), newest first, before pins that are only being watched, longest
    overdue first. Newest first alone kept re-checking the same newest
    in-progress pins every pass while older ones waited unsubmitted behind
    them; newest first among watched pins did the same to older pins already
    pinned (a Cluster pins a backlog oldest first): 5 passes of 10,000 checked
    the same 1,000 newest while ~4,000 older ones waited to be seen pinned."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM pins WHERE next_attempt <= ? ORDER BY status = 'pinning',"
        " CASE WHEN status = 'pinning' THEN next_attempt END, created DESC LIMIT ?",
        (now_ts, limit))]


def population(conn: sqlite3.Connection) -> int:
    """How many pins medvault wants (sizes the cheapest way to read their status)."""
    return conn.execute("SELECT COUNT(*) FROM pins WHERE desired = 1").fetchone()[0]


def postpone(conn: sqlite3.Connection, cid: str, next_attempt: float, now: str) -> None:
    conn.execute("UPDATE pins SET next_attempt = ?, attempts = attempts + 1, updated = ? WHERE cid = ?",
                 (next_attempt, now, cid))


def record_result(conn: sqlite3.Connection, cid: str, status: str, replicas: int, error: str | None,
                  next_attempt: float, attempts: int, now: str) -> None:
    conn.execute("UPDATE pins SET status = ?, replicas = ?, error = ?, next_attempt = ?, attempts = ?,"
                 " updated = ? WHERE cid = ? AND desired = 1",
                 (status, replicas, error, next_attempt, attempts, now, cid))


def forget(conn: sqlite3.Connection, cid: str) -> None:
    conn.execute("DELETE FROM pins WHERE cid = ? AND desired = 0", (cid,))


def desired_cids(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return [(r["cid"], r["kind"]) for r in conn.execute("SELECT cid, kind FROM pins WHERE desired = 1")]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {r["status"]: r["n"] for r in conn.execute(
        "SELECT status, COUNT(*) AS n FROM pins WHERE desired = 1 GROUP BY status")}
