"""Rows of the audit anchors this node wrote or restored (``audit_anchors``).

The anchor blocks themselves are the record (pinned, replicated); these rows
only remember where the anchored part of the chain ends, written in the same
transaction as the anchor's pin job.
"""
from __future__ import annotations

from .sql import sqlite3


def add(conn: sqlite3.Connection, cid: str, prev: str | None, first: int, last: int, head: str, now: str) -> None:
    conn.execute("INSERT OR REPLACE INTO audit_anchors (cid, prev, first_seq, last_seq, head, created)"
                 " VALUES (?, ?, ?, ?, ?, ?)", (cid, prev, first, last, head, now))


def latest(conn: sqlite3.Connection) -> dict | None:
    """The anchor that reaches furthest, or None."""
    row = conn.execute("SELECT * FROM audit_anchors ORDER BY last_seq DESC LIMIT 1").fetchone()
    return dict(row) if row else None


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_anchors").fetchone()[0]
