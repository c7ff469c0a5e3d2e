"""The SQLite index: group commit, isolation of failures, search, audit chain."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest

from indexer import audit, dates, records, search
from indexer.db import RELAXED_SYNC_DELAY, Database, connect
from indexer.sql import sqlite3


def _record(rid: str, version: int = 1, **extra) -> dict:
    return {"id": rid, "version": version, "cid": f"bafy{rid}{version}", "content_type": "text/plain", "size": 1,
            "created": "2024-01-01T00:00:00.000Z", "updated": "2024-01-01T00:00:00.000Z", "author": "did:a",
            "tags": [], **extra}


def _env(rid: str, who: str, version: int = 1, expires=None) -> dict:
    return {"cid": f"env-{rid}-{who}-{version}", "record_id": rid, "version": version,
            "manifest": f"bafy{rid}{version}", "recipient": who,
            "granter": "did:a", "role": "author", "granted": "2024-01-01T00:00:00.000Z", "expires": expires}


async def test_wal_mode_and_concurrent_writes_all_commit(db):
    mode = await db.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"
    await asyncio.gather(*[db.write(audit.append, "t", "did:a", "write", f"r{i}", "ok") for i in range(200)])
    result = await db.read(audit.verify)
    assert result["ok"] and result["count"] == 200


async def test_a_failing_write_rolls_back_only_itself(db):
    def bad(conn):
        audit.append(conn, "t", "did:a", "write", "bad", "ok")
        raise sqlite3.IntegrityError("boom")

    results = await asyncio.gather(db.write(audit.append, "t", "did:a", "write", "good", "ok"), db.write(bad),
                                   return_exceptions=True)
    assert isinstance(results[1], sqlite3.IntegrityError)
    entries = await db.read(audit.entries)
    assert [e["record"] for e in entries] == ["good"]


async def test_search_filters_by_envelope_and_fields(db):
    def seed(conn):
        records.save_version(conn, _record("r1", title="Blood panel", patient="did:p", type="Observation",
                                           date="2024-03-01", tags=["lab"]), [_env("r1", "did:a")],
                             [("http://loinc.org", "718-7")])
        records.save_version(conn, _record("r2", title="X-ray chest", type="ImagingStudy", date="2023-01-01"),
                             [_env("r2", "did:a"), _env("r2", "did:b")], [])
        records.save_version(conn, _record("r3", title="Expired grant"),
                             [_env("r3", "did:b", expires="2000-01-01T00:00:00.000Z")], [])

    await db.write(seed)
    now = "2025-01-01T00:00:00.000Z"

    async def ids(caller, **kw):
        rows, _ = await db.read(search.run, search.Query(caller, now, **kw))
        return [r["id"] for r in rows]

    T = search.Term
    year = lambda text: dates.date_range(text)  # noqa: E731
    assert await ids("did:a") == ["r2", "r1"]
    assert await ids("did:b") == ["r2"]  # r1 not granted, r3 expired
    assert await ids("did:nobody") == []
    assert await ids("did:a", text="blood") == ["r1"]
    assert await ids("did:a", text='panel" OR "x') == []  # quotes cannot inject FTS syntax
    assert await ids("did:a", codes=[[T("718-7")]]) == ["r1"]
    assert await ids("did:a", codes=[[T("718-7", "http://loinc.org")]]) == ["r1"]
    assert await ids("did:a", codes=[[T("718-7", "other")]]) == []
    assert await ids("did:a", tags=[[T("lab")]]) == ["r1"]
    assert await ids("did:a", dates=[("ge", *year("2024-01-01"))]) == ["r1"]
    assert await ids("did:a", dates=[("le", *year("2023-12-31"))]) == ["r2"]
    assert await ids("did:a", refs=[[T("did:p")]], types=[["Observation"]]) == ["r1"]


async def test_keyset_pagination_visits_each_record_once(db):
    def seed(conn):
        for i in range(25):
            records.save_version(conn, _record(f"r{i:02d}"), [_env(f"r{i:02d}", "did:a")], [])

    await db.write(seed)
    seen, before = [], None
    while True:
        rows, before = await db.read(search.run, search.Query("did:a", "2025", after=before, limit=10))
        seen += [r["id"] for r in rows]
        if before is None:
            break
    assert seen == [f"r{i:02d}" for i in reversed(range(25))]


async def test_version_race_is_refused(db):
    await db.write(records.save_version, _record("r1"), [], [])
    await db.write(lambda c: records.save_version(c, _record("r1", version=2), [], [], prev_cid="bafyr11"))
    with pytest.raises(sqlite3.IntegrityError):  # a second version 2 that also continues version 1
        await db.write(lambda c: records.save_version(c, _record("r1", version=2, cid="bafyother"), [], [],
                                                      prev_cid="bafyr11"))
    with pytest.raises(sqlite3.IntegrityError):  # version 3 that claims to continue a manifest never current
        await db.write(lambda c: records.save_version(c, _record("r1", version=3, cid="bafy3"), [], [],
                                                      prev_cid="bafyother"))
    assert (await db.read(records.find, "r1"))["cid"] == "bafyr12"


async def test_access_follows_the_current_manifest_not_the_version_number(db):
    """An envelope opens only what it seals: one naming an old manifest (or
    another manifest with the same version number) grants nothing now."""
    await db.write(records.save_version, _record("r1"), [_env("r1", "did:a"), _env("r1", "did:b")], [])
    now = "2025-01-01T00:00:00.000Z"
    assert await db.read(records.readable, "r1", "did:b", now) is not None
    stray = {**_env("r1", "did:c", version=2), "manifest": "bafy-not-the-record"}
    await db.write(lambda c: records.save_version(c, _record("r1", version=2), [_env("r1", "did:a", 2)], [],
                                                  prev_cid="bafyr11"))
    await db.write(records.add_envelopes, [stray])
    assert await db.read(records.readable, "r1", "did:a", now) is not None
    assert await db.read(records.readable, "r1", "did:b", now) is None  # only held the old manifest
    assert await db.read(records.readable, "r1", "did:c", now) is None  # names version 2 but not its manifest


async def test_audit_refuses_fields_that_would_not_verify(db):
    with pytest.raises(TypeError):
        await db.write(audit.append, "t", "did:a", "import", 12345, "ok")
    await db.write(audit.append, "t", "did:a", "import", "12345", "ok")
    assert (await db.read(audit.verify))["ok"]


async def test_audit_verify_names_the_first_broken_entry(db):
    for i in range(5):
        await db.write(audit.append, "t", "did:a", "read", f"r{i}", "ok")
    await db.write(lambda c: c.execute("UPDATE audit SET actor = 'did:evil' WHERE seq = 3"))
    result = await db.read(audit.verify)
    last_good = await db.read(lambda c: c.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0])
    assert result == {"ok": False, "count": 2, "head": last_good, "broken_at": 3}
    await db.write(lambda c: c.execute("UPDATE audit SET actor = 'did:a' WHERE seq = 3"))
    await db.write(lambda c: c.execute("DELETE FROM audit WHERE seq = 4"))
    assert (await db.read(audit.verify))["broken_at"] == 4


async def test_audit_verify_in_pages_agrees_with_one_pass(db):
    """Verification runs a page per read transaction; page boundaries must not
    hide a break, a gap or the head."""
    for i in range(25):
        await db.write(audit.append, "t", "did:a", "read", f"r{i}", "ok")

    async def paged(limit: int) -> dict:
        state = await db.read(audit.verify_page, None, limit)
        while not state["done"]:
            state = await db.read(audit.verify_page, state, limit)
        return audit.verification(state)

    whole = await db.read(audit.verify)
    assert whole["ok"] and whole["count"] == 25
    assert await paged(10) == await paged(5) == await paged(25) == whole
    await db.write(lambda c: c.execute("UPDATE audit SET actor = 'did:evil' WHERE seq = 11"))  # first of page 2
    assert (await paged(10))["broken_at"] == 11 == (await db.read(audit.verify))["broken_at"]
    await db.write(lambda c: c.execute("UPDATE audit SET actor = 'did:a' WHERE seq = 11"))
    await db.write(lambda c: c.execute("DELETE FROM audit WHERE seq = 21"))  # a gap right after a page
    assert (await paged(10))["broken_at"] == 21 == (await db.read(audit.verify))["broken_at"]


def test_an_index_made_before_record_roles_and_search_terms_migrates(tmp_path):
    """A node upgraded in place: a version-1 index (no manifest on envelopes,
    no roles, tags and codes in their own tables, dates as text) keeps every
    answer after the migrations."""
    import sqlite_utils

    from indexer import schema

    conn = connect(str(tmp_path / "old.sqlite"), os.urandom(32))
    schema._m001_initial(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO records (id, version, cid, patient, type, content_type, title, text, subject, date,"
                 " tags, size, created, updated, author) VALUES ('r1', 2, 'bafy-v2', 'did:p', 'Observation',"
                 " 'application/fhir+json', 'Blood panel', 'glucose', 'Patient/7', '2021-01-01T02:00:00+05:00',"
                 " '[\"lab\"]', 10, 't', 't', 'did:w')")
    for version, cid, author in ((1, "bafy-v1", "did:a"), (2, "bafy-v2", "did:w")):
        conn.execute("INSERT INTO versions VALUES ('r1', ?, ?, 10, 'application/fhir+json', 't', ?)",
                     (version, cid, author))
    for cid, version, who in (("e1", 1, "did:a"), ("e2", 2, "did:a"), ("e3", 2, "did:p"), ("e4", 1, "did:old")):
        conn.execute("INSERT INTO envelopes (cid, record_id, version, recipient, granter, role, granted)"
                     " VALUES (?, 'r1', ?, ?, 'did:a', 'grant', 't')", (cid, version, who))
    conn.execute("INSERT INTO record_tags VALUES ('r1', 'lab')")
    conn.execute("INSERT INTO record_codes VALUES ('r1', 'http://loinc.org', '2345-7')")
    assert schema.migrate(conn) == len(schema.MIGRATIONS)
    now = "2025-01-01T00:00:00.000Z"

    def ids(caller, **kw):
        return [r["id"] for r in search.run(conn, search.Query(caller, now, **kw))[0]]

    assert ids("did:a") == ["r1"] and ids("did:p") == ["r1"]
    assert ids("did:old") == []  # only held the first version's manifest
    assert ids("did:a", tags=[[search.Term("lab")]], codes=[[search.Term("2345-7", "http://loinc.org")]],
               refs=[[search.Term("Patient/7")]]) == ["r1"]
    assert ids("did:a", dates=[("le", *dates.date_range("2020-12-31"))]) == ["r1"]  # 2020-12-31T21:00Z
    assert records.roles(conn, "r1") == {"did:a": {"creator", "writer"}, "did:w": {"writer"}, "did:p": {"patient"}}
    assert "record_tags" not in sqlite_utils.Database(conn).table_names()


# ---- at rest (issue 10) ------------------------------------------------------

MARKER = "QXERASE-Wilhelmina-Vandersloot-7731"
_PAGE, _RESERVE = 4096, 80  # SQLCipher 4 defaults: each page ends with a 16-byte IV and a 64-byte HMAC


def _decrypted_pages(path: str, key: bytes) -> bytes:
    """Every page of an SQLCipher 4 file decrypted with the raw key
    (AES-256-CBC, the IV stored in the page), as someone holding the key
    could: the forensic view, free pages included."""
    data = open(path, "rb").read()
    out = []
    for number in range(len(data) // _PAGE):
        page = data[number * _PAGE:(number + 1) * _PAGE]
        start = 16 if number == 0 else 0  # page 1 starts with the salt
        iv = page[_PAGE - _RESERVE:_PAGE - _RESERVE + 16]
        out.append(subprocess.run(["openssl", "enc", "-d", "-aes-256-cbc", "-nopad", "-K", key.hex(), "-iv", iv.hex()],
                                  input=page[start:_PAGE - _RESERVE], capture_output=True, check=True).stdout)
    return b"".join(out)


def _insert_marked(conn, rid: str) -> None:
    conn.execute("INSERT INTO records (id, version, cid, content_type, title, text, size, created, updated, author)"
                 " VALUES (?, 1, ?, 'text/plain', ?, ?, 1, 't', 't', 'did:a')",
                 (rid, "bafy" + rid, f"{MARKER} {rid}", f"narrative {MARKER}"))


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl decrypts the pages")
async def test_an_erased_row_leaves_no_trace_even_for_the_key_holder(tmp_path):
    key = os.urandom(32)
    path = str(tmp_path / "index.sqlite")
    db = Database(path, key)
    await db.start()
    try:
        for rid in ("r1", "r2"):
            await db.write(_insert_marked, rid)
        await db.erased()  # checkpoint: both rows now in the database file
        assert MARKER.encode() in _decrypted_pages(path, key)  # the check can see what it looks for
        await db.write(lambda conn: records.delete(conn, "r1"))
        await db.write(lambda conn: records.delete(conn, "r2"))
        await db.erased()
        assert os.path.getsize(path + "-wal") == 0
        assert MARKER.encode() not in _decrypted_pages(path, key)  # secure_delete and FTS5 secure-delete
        for name in os.listdir(tmp_path):
            assert MARKER.encode() not in (tmp_path / name).read_bytes()
    finally:
        await db.close()


async def test_a_plaintext_index_is_encrypted_once_and_its_plaintext_removed(tmp_path):
    from indexer import schema
    from indexer.sql import WrongIndexKey

    path = str(tmp_path / "index.sqlite")
    plain = sqlite3.connect(path, isolation_level=None)  # no key: an index from before issue 10
    plain.execute("PRAGMA journal_mode=WAL")
    schema.migrate(plain)
    _insert_marked(plain, "r1")
    plain.close()
    assert open(path, "rb").read(16) == b"SQLite format 3\x00"
    key = os.urandom(32)
    db = Database(path, key)
    await db.start()
    try:
        row = await db.read(lambda conn: conn.execute("SELECT title FROM records WHERE id = 'r1'").fetchone())
        assert row["title"].startswith(MARKER)
        assert await db.read(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0]) == len(schema.MIGRATIONS)
    finally:
        await db.close()
    assert sorted(os.listdir(tmp_path)) == ["index.sqlite"]  # no plaintext copy, WAL or partial file left
    assert open(path, "rb").read(16) != b"SQLite format 3\x00"
    assert MARKER.encode() not in open(path, "rb").read()
    with pytest.raises(WrongIndexKey):
        connect(path, os.urandom(32))


async def test_a_relaxed_write_is_readable_at_once_and_fsynced_within_the_delay(db, monkeypatch):
    """Read audits commit without waiting for the disk (indexer/db.py); the
    writer still makes them durable moments later, by itself."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    await db.write_relaxed(audit.append, "t", "did:a", "read", "r1", "ok")
    assert [e["record"] for e in await db.read(audit.entries)] == ["r1"]
    for _ in range(100):
        if synced:
            break
        await asyncio.sleep(0.02)
    assert synced, "the relaxed commit was never fsync'd"


async def test_a_durable_write_after_relaxed_ones_is_synchronous_full(db, monkeypatch):
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    await db.write_relaxed(audit.append, "t", "did:a", "read", "r1", "ok")
    mode = await db.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert mode == 2  # FULL: SQLite fsyncs the WAL at this commit, covering the relaxed frame before it
    await asyncio.sleep(0.3)
    assert synced == []  # so the writer had nothing left to fsync itself
    assert [e["record"] for e in await db.read(audit.entries)] == ["r1"]
    assert (await db.read(audit.verify))["ok"]


async def test_a_copy_is_kept_only_for_the_version_still_current(db):
    def seed(conn):
        records.save_version(conn, _record("r1", type="Observation"), [_env("r1", "did:a")], [], content=b"v1")
        records.save_version(conn, _record("r1", 2, type="Observation"), [_env("r1", "did:a", 2)], [],
                             prev_cid="bafyr11")
        records.keep_contents(conn, [("r1", "bafyr11", b"stale"), ("r1", "bafyr12", b"v2")])

    await db.write(seed)
    copies = await db.read(lambda c: {r["cid"]: r["body"] for r in c.execute("SELECT cid, body FROM resource_copies")})
    assert copies == {"bafyr12": b"v2"}  # v1's copy went with its version; the stale one was not kept
    now = "2025-01-01T00:00:00.000Z"
    assert await db.read(records.live_contents, ["bafyr12"], "did:a", now) == (
        {"bafyr12": _env("r1", "did:a", 2)}, {"bafyr12": b"v2"})
    assert await db.read(records.live_contents, ["bafyr12"], "did:b", now) == ({}, {})


async def test_flush_makes_relaxed_commits_durable_at_once(db, monkeypatch):
    """The audit anchor flushes before it names entries (daemon/anchors.py)."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    await db.write_relaxed(audit.append, "t", "did:a", "read", "r1", "ok")
    await db.flush()
    assert len(synced) == 1
    await db.flush()
    assert len(synced) == 1  # nothing relaxed left to sync


async def test_relaxed_commits_are_fsynced_within_the_delay_while_the_writer_stays_busy(db, monkeypatch):
    """The writer's _SYNC sentinel is dropped when it is drained into a batch
    behind another write, and the timer is re-armed from that batch's end: as
    long as relaxed work keeps arriving while the writer is busy, the WAL is
    never fsync'd (only a checkpoint would), far past RELAXED_SYNC_DELAY."""
    wal = db.path + "-wal"
    synced: list[float] = []
    real_fsync = os.fsync

    def fsync(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(wal):
            synced.append(time.monotonic())
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def slow(conn, seq):  # a relaxed write that keeps the writer busy longer than the delay
        time.sleep(3 * RELAXED_SYNC_DELAY)
        audit.append(conn, "t", "did:a", "read", f"slow{seq}", "ok")

    await db.write_relaxed(audit.append, "t", "did:a", "read", "first", "ok")
    committed = time.monotonic()
    for i in range(4):  # reads keep coming: one in the writer, the next queued behind it
        busy = asyncio.ensure_future(db.write_relaxed(slow, i))
        await asyncio.sleep(RELAXED_SYNC_DELAY / 5)
        queued = asyncio.ensure_future(db.write_relaxed(audit.append, "t", "did:a", "read", f"r{i}", "ok"))
        await asyncio.gather(busy, queued)
        if synced:
            break
    assert synced, f"no fsync of the WAL {time.monotonic() - committed:.2f} s after a relaxed commit"
    # within the delay plus the one batch that was running when it fell due
    assert synced[0] - committed <= 4 * RELAXED_SYNC_DELAY + 0.2
