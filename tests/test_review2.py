"""Review of 725f55a (read audits staged in audit-stage.sqlite)."""
from __future__ import annotations

import os

from indexer import audit
from indexer.db import Database, connect


async def _staged_db(tmp_path, key: bytes) -> Database:
    db = Database(str(tmp_path / "index.sqlite"), key, stage_path=str(tmp_path / "audit-stage.sqlite"))
    await db.start()
    return db


async def test_a_broken_staging_file_does_not_fail_every_durable_write(tmp_path):
    """A staging file that cannot be read (corrupt, its table gone) must not
    turn every durable write of the index -- each of which first chains what
    is staged -- into an error: that is a denial of service of all writes
    (and of the daemon's start) by one damaged side file."""
    key = os.urandom(32)
    db = await _staged_db(tmp_path, key)
    try:
        await db.audit_reads([("t1", "did:a", "read", "r1", "ok", None)])
        stage = connect(str(tmp_path / "audit-stage.sqlite"), key)
        stage.execute("DROP TABLE staged")
        stage.close()
        await db.write(audit.append, "t2", "did:a", "write", "r2", "ok")
        assert [e["record"] for e in await db.read(audit.entries)] == ["r2"]
    finally:
        await db.close()


async def test_staged_ids_lost_with_the_stage_wal_are_not_reused_and_skipped(tmp_path):
    """Staged rows are committed relaxed (no fsync) but the index records
    their ids as chained in a durable commit. A power loss can therefore
    leave the staging file (same generation) without the last rows *and*
    with its AUTOINCREMENT counter rolled back: the next reads get ids the
    index believes already chained, and are silently never chained."""
    key = os.urandom(32)
    db = await _staged_db(tmp_path, key)
    await db.audit_reads([("t1", "did:a", "read", "r1", "ok", None), ("t2", "did:a", "read", "r2", "ok", None)])
    await db.flush_audit()
    await db.close()
    # what a lost, unsynced stage WAL leaves: neither the rows nor the counter
    stage = connect(str(tmp_path / "audit-stage.sqlite"), key)
    stage.execute("DELETE FROM staged")
    stage.execute("DELETE FROM sqlite_sequence WHERE name = 'staged'")
    stage.close()
    db = await _staged_db(tmp_path, key)
    try:
        await db.audit_reads([("t3", "did:a", "read", "r3", "ok", None)])
        await db.flush_audit()
        assert [e["record"] for e in await db.read(audit.entries)] == ["r1", "r2", "r3"]
    finally:
        await db.close()
