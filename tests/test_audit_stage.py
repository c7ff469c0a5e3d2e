"""Read audits staged in audit-stage.sqlite and chained by the index's
writer (indexer/audit_stage.py): order against writes, crash safety across
the two files, a damaged, lost or replaced staging file, a full index, and
reindex. The hostile cases came from a review of the first version."""
from __future__ import annotations

import asyncio
import os

import pytest

from indexer import audit
from indexer.db import Database, IndexClosed, connect


async def _staged_db(tmp_path, key: bytes) -> Database:
    db = Database(str(tmp_path / "index.sqlite"), key, stage_path=str(tmp_path / "audit-stage.sqlite"))
    await db.start()
    return db


async def _one_more_read(tmp_path, key: bytes, chained: list[str]) -> None:
    """Reopens the index, audits a read of r3 and checks the chain's records."""
    db = await _staged_db(tmp_path, key)
    try:
        await db.audit_reads([("t3", "did:a", "read", "r3", "ok", None)])
        await db.flush_audit()
        assert [e["record"] for e in await db.read(audit.entries)] == chained
    finally:
        await db.close()


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
    await _one_more_read(tmp_path, key, ["r1", "r2", "r3"])


async def test_reindex_with_read_audits_left_staged_by_a_crash(tmp_path):
    """reindex moves the index aside but not audit-stage.sqlite. Opening the
    new, empty index chains whatever a crash left staged (moved_upto is 0
    in an index that has no audit_moved row) as seq 1.., and the restore of
    the anchored chain then collides with them: reindex -- the recovery
    path for a lost index -- fails, or the chain starts with entries out of
    their place."""
    from daemon.node import close_vault, open_vault
    from daemon.reindex import reindex

    from .conftest import lose_index, make_node
    vault, _ = await make_node(str(tmp_path / "n"), audit_anchor_every=4)
    for i in range(8):
        await vault.services.audit(None, "test", None, "ok", {"i": i})
    await vault.anchors.anchor_due(force=True)
    before = await vault.db.read(audit.rows, 1, 100)
    config = vault.config
    key = vault.db._key
    await close_vault(vault)
    stage = connect(config.audit_stage_path, key)  # a read audited just before the crash
    stage.execute("INSERT INTO staged (time, actor, action, record, outcome, detail)"
                  " VALUES ('t', 'did:a', 'read', 'r1', 'ok', '{}')")
    stage.close()
    lose_index(config)
    result = await reindex(config)
    assert result["audit_entries"] == len(before)
    vault = await open_vault(config)
    try:
        after = await vault.db.read(audit.rows, 1, 100)
        assert after[:len(before)] == before
        assert (await vault.anchors.verify())["ok"]
    finally:
        await close_vault(vault)


async def test_a_full_index_still_takes_the_write_that_frees_space_with_reads_staged(tmp_path):
    """On a full index (SQLITE_FULL), each durable batch first appends what
    is staged -- outside any op's savepoint -- so once a read is staged
    every durable write fails, erasure (what frees space, docs: "erasure
    still works" on a full disk) included. Before staging, the read's own
    audit failed alone and the erase went through."""
    from indexer.db import DiskFull
    key = os.urandom(32)
    db = await _staged_db(tmp_path, key)
    try:
        await db.write(lambda c: c.execute("CREATE TABLE junk (x BLOB)"))
        for _ in range(20):
            await db.write(lambda c: c.execute("INSERT INTO junk VALUES (randomblob(3000))"))
        pages = await db.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await db.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        try:
            for i in range(1000):
                await db.write(audit.append, "t", "did:a", "fill", f"r{i}", "ok", {"pad": "x" * 500})
        except DiskFull:
            pass
        await db.audit_reads([("t", "did:a", "read", f"s{i}", "ok", {"pad": "y" * 500}) for i in range(50)])
        await db.write(lambda c: c.execute("DELETE FROM junk"))  # frees space: must not fail
        await db.flush_audit()
        assert [e["record"] for e in await db.read(audit.entries, limit=100000) if e["action"] == "read"] \
            == [f"s{i}" for i in range(50)]
        assert (await db.read(audit.verify))["ok"]
    finally:
        await db.close()


async def test_more_staged_than_one_batch_takes_are_all_chained_before_a_write(tmp_path, monkeypatch):
    """A batch takes at most _MOVE_AT_MOST staged entries: with more staged
    (a burst of searches, a crash), a write is chained before older reads,
    and flush_audit leaves some out of the listed/verified/anchored chain."""
    from indexer import audit_stage
    monkeypatch.setattr(audit_stage, "_MOVE_AT_MOST", 3)
    db = await _staged_db(tmp_path, os.urandom(32))
    try:
        await db.audit_reads([("t", "did:a", "read", f"s{i}", "ok", None) for i in range(7)])
        await db.write(audit.append, "t", "did:a", "write", "w", "ok")
        assert [e["record"] for e in await db.read(audit.entries)] == [f"s{i}" for i in range(7)] + ["w"]
        await db.audit_reads([("t", "did:a", "read", f"x{i}", "ok", None) for i in range(7)])
        await db.flush_audit()
        assert len(await db.read(audit.entries)) == 15
    finally:
        await db.close()


async def test_a_staging_file_deleted_while_stopped_is_recorded_in_the_chain(tmp_path):
    """Deleting audit-stage.sqlite needs no key, and takes with it the read
    audits a kill left unchained; a new generation silently starts. The
    chain should at least record that the staging file changed."""
    key = os.urandom(32)
    db = await _staged_db(tmp_path, key)
    await db.audit_reads([("t1", "did:a", "read", "r1", "ok", None)])
    await db.flush_audit()
    await db.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(tmp_path / "audit-stage.sqlite") + suffix):
            os.unlink(str(tmp_path / "audit-stage.sqlite") + suffix)
    db = await _staged_db(tmp_path, key)
    try:
        actions = [e["action"] for e in await db.read(audit.entries)]
        assert actions == ["read", "audit_stage_replaced"]
        await db.close()
        db = await _staged_db(tmp_path, key)  # once, not at every start
        assert [e["action"] for e in await db.read(audit.entries)] == actions
    finally:
        await db.close()


async def test_staged_read_audits_are_chained_before_the_writes_that_follow_them(tmp_path):
    """Read audits wait in their own file (indexer/audit_stage.py) so they
    do not reset the index's reader caches; the next durable batch chains
    them first, so the chain keeps the order things happened in."""
    db = await _staged_db(tmp_path, os.urandom(32))
    try:
        await db.audit_reads([("t1", "did:a", "read", "r1", "ok", {"version": 1})])
        assert await db.read(audit.entries) == []  # staged, not chained yet
        await db.write(audit.append, "t2", "did:a", "write", "r2", "ok")
        assert [(e["action"], e["record"]) for e in await db.read(audit.entries)] == [("read", "r1"), ("write", "r2")]
        await db.audit_reads([("t3", "did:b", "denied", "r3", "denied", None)])
        for _ in range(100):  # chained by itself within MOVE_DELAY, no write needed
            if len(await db.read(audit.entries)) == 3:
                break
            await asyncio.sleep(0.02)
        assert [e["record"] for e in await db.read(audit.entries)] == ["r1", "r2", "r3"]
        assert (await db.read(audit.verify))["ok"]
    finally:
        await db.close()


async def test_staged_audits_are_neither_lost_nor_chained_twice_across_restarts(tmp_path):
    key = os.urandom(32)
    db = await _staged_db(tmp_path, key)
    await db.audit_reads([("t1", "did:a", "read", "r1", "ok", None), ("t2", "did:a", "read", "r2", "ok", None)])
    await db.close()  # a clean stop chains what is staged
    stage = connect(str(tmp_path / "audit-stage.sqlite"), key)
    # as if the daemon died after chaining them and before dropping them from the stage
    stage.executemany("INSERT INTO staged (id, time, actor, action, record, outcome, detail)"
                      " VALUES (?, ?, 'did:a', 'read', ?, 'ok', '{}')", [(1, "t1", "r1"), (2, "t2", "r2")])
    stage.close()
    await _one_more_read(tmp_path, key, ["r1", "r2", "r3"])
    os.unlink(tmp_path / "audit-stage.sqlite")  # a staging file lost or replaced starts a new generation
    db = await _staged_db(tmp_path, key)
    try:
        await db.audit_reads([("t4", "did:a", "read", "r4", "ok", None)])
        await db.flush_audit()
        assert [(e["action"], e["record"]) for e in await db.read(audit.entries)] == [
            ("read", "r1"), ("read", "r2"), ("read", "r3"), ("audit_stage_replaced", None), ("read", "r4")]
        assert (await db.read(audit.verify))["ok"]
    finally:
        await db.close()


async def test_work_asked_of_a_closed_index_is_refused_at_once(tmp_path):
    """A read audited (or any write or read) after close() has begun used to
    wait forever behind the writer's last batch; now it is refused (the API
    answers 503 node_stopping), and what was audited before the close is kept."""
    key = os.urandom(32)
    db = await _staged_db(tmp_path, key)
    await db.audit_reads([("t1", "did:a", "read", "r1", "ok", None)])
    await db.close()
    for work in (db.audit_reads([("t2", "did:a", "read", "r2", "ok", None)]), db.write(audit.head),
                 db.read(audit.entries), db.flush(), db.erased(), db.flush_audit()):
        with pytest.raises(IndexClosed):
            await asyncio.wait_for(work, 5)  # a hang fails as TimeoutError
    db = await _staged_db(tmp_path, key)
    try:
        assert [e["record"] for e in await db.read(audit.entries)] == ["r1"]
    finally:
        await db.close()
