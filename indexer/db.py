"""SQLite in WAL mode behind asyncio, with group commit.

All writes go through one writer thread and one connection. Callers submit
functions; the writer runs every function queued at that moment inside one
transaction, each under its own SAVEPOINT (so one failure rolls back only
its own work), then commits once with ``synchronous=FULL``. A caller's
``await write(...)`` returns only after that commit: acknowledged means
durable, and many concurrent small records share one fsync. Reads use their
own connections on a small thread pool and never wait for the writer.

``write_relaxed`` is for writes that record but change no state (a
resource's index copy; the audit entries of reads on an index without a
staging file): a batch holding only those commits with
``synchronous=NORMAL`` (in the WAL, safe from a process crash, not yet
fsync'd), and the writer fsyncs the WAL within ``RELAXED_SYNC_DELAY`` or at
the next durable commit, whichever comes first (WAL frames are ordered, so
one fsync makes every earlier frame durable).

``audit_reads`` takes the audit entries of reads, views, denials and failed
authentications. With a staging file (the daemon's case) they are committed
there, relaxed, and every durable batch first chains what is staged
(indexer/audit_stage.py): a commit here resets every reader's page cache,
and an audited read must not cost each following search that.

Reads come in three lanes, each with its own threads and connections, so
one kind cannot queue behind another: ``read`` (requests; each query is
interrupted past ``time_limit`` seconds, as datasette's ``sqlite_timelimit``
does, with a progress handler), ``read_auth`` (token checks: one indexed
lookup, so they never wait behind a long search) and ``read_long`` (whole-
table scans such as audit verification: no limit, off the shared lanes).

The index is encrypted at rest (SQLCipher 4, ``indexer/sql.py``): every
page of the database, its WAL and any journal. Erasure leaves no trace in
the clear pages either: ``secure_delete`` zeroes freed content, and after a
commit that erased something the writer checkpoints the WAL and truncates
it (``erased()``), so the old pages do not linger there.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from datetime import datetime, timezone
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from . import audit, audit_stage, schema
from .sql import encrypt_in_place, is_plaintext, open_encrypted, sqlite3

T = TypeVar("T")
_MAX_BATCH = 512
_AUTH_TIME_LIMIT = 2.0  # seconds; a token lookup is one indexed row
_PROGRESS_STEPS = 100  # SQLite VM steps between deadline checks (microseconds of work)
_SQLITE_FULL = 13
RELAXED_SYNC_DELAY = 0.1  # seconds a relaxed commit may wait for its fsync
_SYNC = object()  # queued by a timer: fsync what relaxed commits left in the WAL
log = logging.getLogger("medvault.index")


def _nothing(conn: sqlite3.Connection) -> None:
    """A durable batch's own work when all it is for is chaining staged audits."""


class DiskFull(sqlite3.OperationalError):
    """A write failed because the disk holding the index is full."""


class IndexClosed(sqlite3.OperationalError):
    """Work asked of an index that is closing: refused at once (queued behind
    the writer's last batch, it would wait forever)."""

    def __init__(self) -> None:
        super().__init__("the index is closed")


class QueryInterrupted(sqlite3.OperationalError):
    """A read ran past its time limit and was interrupted."""

    def __init__(self, limit: float):
        super().__init__(f"the index query took longer than {limit:g} s")
        self.limit = limit


def _full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in str(exc)


def connect(path: str, key: bytes) -> sqlite3.Connection:
    """A connection to the encrypted index (``PRAGMA key`` first, then the
    pragmas every connection needs)."""
    if not os.path.exists(path):  # SQLite gives -wal/-shm files the database file's mode
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = open_encrypted(path, key, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA temp_store=MEMORY")  # sorts and temp tables never reach a file
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class Index(ABC):
    """The index interface the engine depends on (DESIGN.md's ``Index``).

    ``write(fn, *args)`` runs ``fn(conn, *args)`` inside one committed
    transaction and returns its result only once it is durable; a failure
    rolls back that call alone. ``read(fn, ...)`` runs ``fn`` on a consistent
    read snapshot. Everything the engine stores about records, envelopes,
    roles, pins, tokens and the audit chain goes through these two calls, so
    an implementation may batch commits (group commit) as it likes.
    """

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def write(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def write_relaxed(self, fn: Callable[..., T], *args: Any) -> T:
        """A write that records, but does not change, state (the audit entry
        of a read): an implementation may acknowledge it before it is
        durable, if it makes it durable moments later."""
        return await self.write(fn, *args)

    async def erased(self) -> None:
        """Called after a commit that erased records, so an implementation can
        drop what its journals still hold of them."""

    async def flush(self) -> None:
        """Makes every commit so far durable, relaxed ones included."""

    async def audit_reads(self, entries: list[tuple]) -> None:
        """Records the audit entries of reads, views, denials and failed
        authentications ((time, actor, action, record, outcome, detail)),
        committed before this returns; an implementation may chain them a
        moment later (indexer/audit_stage.py) if ``flush_audit`` chains
        them at once."""
        await self.write_relaxed(audit.append_many, entries)

    async def flush_audit(self) -> None:
        """Chains every audit entry recorded so far (before reading the chain)."""

    @abstractmethod
    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def read_auth(self, fn: Callable[..., T], *args: Any) -> T:
        """A token check; an implementation may give these their own lane."""
        return await self.read(fn, *args)

    async def read_long(self, fn: Callable[..., T], *args: Any) -> T:
        """A long scan (audit verification); an implementation may keep it off the request lane."""
        return await self.read(fn, *args)

    @abstractmethod
    async def close(self) -> None: ...


class Database(Index):
    """SQLite in WAL mode: the one ``Index`` implementation."""

    def __init__(self, path: str, key: bytes, read_threads: int = 2, time_limit: float | None = None,
                 cache_mb: int = 2, stage_path: str | None = None, migrate: Callable = schema.migrate):
        self.path = path
        self._key = key
        self._migrate = migrate
        # Read audits are staged in a database of their own and moved into the
        # chain by this writer (indexer/audit_stage.py); None: chained at once.
        self._stage = Database(stage_path, key, read_threads=1, migrate=audit_stage.migrate) if stage_path else None
        self._stage_reader: sqlite3.Connection | None = None  # the writer thread's view of the staged entries
        self._stage_taken: int | None = None  # the last staged id the batch just committed chained
        self._move_timer: asyncio.TimerHandle | None = None
        self.time_limit = time_limit
        self._cache_mb = cache_mb  # the search connections' page cache; token and audit reads keep SQLite's 2 MB
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-write")
        self._reader_pool = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="db-read")
        self._auth_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-auth")
        self._long_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-long")
        self._local = threading.local()
        self._queue: asyncio.Queue | None = None
        self._writer_task: asyncio.Task | None = None
        self._wconn: sqlite3.Connection | None = None
        self._synchronous = "FULL"  # the writer connection's current setting
        self._unsynced_since: float | None = None  # a relaxed commit not yet fsync'd, since when
        self._sync_timer: asyncio.TimerHandle | None = None
        self._closed = False  # set once close() has queued the writer's stop

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._stage is not None:
            await self._stage.start()
            self._stage_reader = await loop.run_in_executor(self._writer_pool, connect, self._stage.path, self._key)
            self._stage_generation = await loop.run_in_executor(self._writer_pool, audit_stage.generation,
                                                                self._stage_reader)
        self._wconn = await loop.run_in_executor(self._writer_pool, self._open_writer)
        await loop.run_in_executor(self._writer_pool, self._migrate, self._wconn)
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._writer_loop(), name="db-writer")
        if self._stage is not None:
            # The staging file commits without fsync, so a power loss can roll it
            # (and its AUTOINCREMENT counter) back below the ids the index already
            # recorded as chained: new ids must start past them, or they are skipped.
            moved = await loop.run_in_executor(self._writer_pool, audit.moved_upto, self._wconn,
                                               self._stage_generation)
            await self._stage.write(audit_stage.skip_past, moved)
            try:
                await self.write(self._note_new_stage)
            except Exception:  # a full disk: noted at the next start
                log.warning("a replaced audit staging file could not be noted in the chain", exc_info=True)
            await self._chain_staged()  # what a crash left staged is chained before anything else

    def _open_writer(self) -> sqlite3.Connection:
        if is_plaintext(self.path):  # an index from before encryption: once, before any reader opens it
            encrypt_in_place(self.path, self._key)
        return connect(self.path, self._key)

    async def erased(self) -> None:
        """After a commit that erased records: copy the WAL back and truncate
        it, so no erased row stays in it (secure_delete has zeroed the
        database's freed pages). Queued behind the writer's current batch."""
        if self._closed:
            raise IndexClosed()

        def checkpoint() -> None:
            try:
                self._wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass  # a full disk: the erase itself committed; the next checkpoint copies the WAL back
        await asyncio.get_running_loop().run_in_executor(self._writer_pool, checkpoint)

    async def flush(self) -> None:
        """fsyncs what relaxed commits left in the WAL (on the writer's thread, between batches)."""
        if self._closed:
            raise IndexClosed()
        await asyncio.get_running_loop().run_in_executor(self._writer_pool, self._sync_wal)

    async def audit_reads(self, entries: list[tuple]) -> None:
        if self._closed:
            raise IndexClosed()
        if self._stage is None:
            await self.write_relaxed(audit.append_many, entries)
            return
        await self._stage.write_relaxed(audit_stage.stage, entries)
        if self._move_timer is None:  # chained by a durable batch within MOVE_DELAY
            self._move_timer = asyncio.get_running_loop().call_later(audit_stage.MOVE_DELAY, self._move_soon)

    def _move_soon(self) -> None:
        self._move_timer = None
        if self._writer_task is not None:
            asyncio.ensure_future(self._chain_staged())

    async def _chain_staged(self) -> None:
        try:
            await self.flush_audit()
        except Exception:  # a full or failing disk: the next durable batch chains them
            log.warning("staged audit entries could not be chained yet", exc_info=True)

    async def flush_audit(self) -> None:
        if self._stage is not None:
            await self._submit(_nothing, (), True)  # every durable batch first chains what is staged

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn(conn, *args)`` in a committed, durable transaction; returns its result."""
        return await self._submit(fn, args, True)

    async def write_relaxed(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn(conn, *args)`` in a committed transaction that becomes
        durable within RELAXED_SYNC_DELAY (see the module doc)."""
        return await self._submit(fn, args, False)

    async def _submit(self, fn, args, durable: bool):
        if self._closed or self._queue is None:
            raise IndexClosed()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, args, future, durable))
        try:
            return await future
        except sqlite3.OperationalError as exc:
            if _full(exc) and not isinstance(exc, DiskFull):
                raise DiskFull(str(exc)) from None
            raise

    def _reader(self, cached: bool) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, self._key)
            conn.execute("PRAGMA query_only=ON")
            if cached:
                conn.execute(f"PRAGMA cache_size = -{int(self._cache_mb) * 1024}")
        return conn

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs ``fn(conn, *args, **kwargs)`` on a read connection (a consistent
        snapshot); raises QueryInterrupted past the time limit."""
        return await self._read_on(self._reader_pool, self.time_limit, fn, args, kwargs)

    async def read_auth(self, fn: Callable[..., T], *args: Any) -> T:
        """A token check: its own thread and connection, never queued behind other reads."""
        return await self._read_on(self._auth_pool, _AUTH_TIME_LIMIT, fn, args, {})

    async def read_long(self, fn: Callable[..., T], *args: Any) -> T:
        """A scan that may take long (audit verification): no limit, its own thread."""
        return await self._read_on(self._long_pool, None, fn, args, {})

    async def _read_on(self, pool: ThreadPoolExecutor, limit: float | None, fn, args, kwargs):
        if self._closed:
            raise IndexClosed()

        def run():
            conn = self._reader(pool is self._reader_pool)
            if limit is not None:
                deadline = time.monotonic() + limit
                conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
            conn.execute("BEGIN")
            try:
                return fn(conn, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                if limit is not None and str(exc) == "interrupted":
                    raise QueryInterrupted(limit) from None
                raise
            finally:
                conn.set_progress_handler(None, 0)  # first: COMMIT must not be interrupted too
                if conn.in_transaction:
                    conn.execute("COMMIT")

        return await asyncio.get_running_loop().run_in_executor(pool, run)

    def _run_batch(self, batch: list) -> list[tuple[bool, Any]]:
        conn = self._wconn
        synchronous = "FULL" if any(durable for *_, durable in batch) else "NORMAL"
        if synchronous != self._synchronous:
            conn.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            taken = self._take_staged(conn) if synchronous == "FULL" else None
            for fn, args, _, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn, *args)
                    conn.execute("RELEASE op")
                    results.append((True, value))
                except Exception as exc:  # handed to that caller only
                    if not conn.in_transaction:
                        raise  # SQLite rolled back the whole batch itself (a full disk does): all fail
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if synchronous == "FULL":
            self._unsynced_since = None  # this commit's fsync covered every earlier frame
            self._stage_taken = taken
        elif self._unsynced_since is None:
            self._unsynced_since = time.monotonic()
        return results

    def _note_new_stage(self, conn: sqlite3.Connection) -> None:
        """A staging file other than the one the index last chained from
        (deleted or replaced while the daemon was stopped) may have taken
        unchained read audits with it: the chain says so, once."""
        previous = audit.moved_generation(conn)
        if previous is None or previous == self._stage_generation:
            return
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        audit.append(conn, now, None, "audit_stage_replaced", None, "ok",
                     {"previous": previous, "generation": self._stage_generation})
        audit.set_moved_upto(conn, self._stage_generation, 0)

    def _take_staged(self, conn: sqlite3.Connection) -> int | None:
        """Inside a durable batch, before its own work: chains the staged read
        audits and records the last id taken; returns it (None: nothing)."""
        if self._stage_reader is None:
            return None
        try:  # all of them: a write is never chained before an older read
            entries = audit_stage.all_pending(self._stage_reader, audit.moved_upto(conn, self._stage_generation))
        except sqlite3.DatabaseError:  # a damaged staging file must not fail every unrelated write
            log.error("staged audit entries cannot be read; not chained", exc_info=True)
            return None
        if not entries:
            return None
        conn.execute("SAVEPOINT staged")
        try:
            audit.append_many(conn, [entry[1:] for entry in entries])
            audit.set_moved_upto(conn, self._stage_generation, entries[-1][0])
            conn.execute("RELEASE staged")
        except Exception:
            # A full index: the batch's own work (an erasure that frees space)
            # must still run; the staged entries follow in a later batch.
            log.warning("staged audit entries could not be chained yet", exc_info=True)
            if conn.in_transaction:
                conn.execute("ROLLBACK TO staged")
                conn.execute("RELEASE staged")
            else:  # SQLite rolled the transaction back itself
                conn.execute("BEGIN IMMEDIATE")
            return None
        return entries[-1][0]

    def _sync_wal(self) -> None:
        """Makes relaxed commits durable: one fsync of the WAL file (what a
        FULL commit would have done)."""
        if self._unsynced_since is None:
            return
        try:
            fd = os.open(self.path + "-wal", os.O_RDONLY)
        except FileNotFoundError:  # checkpointed and removed meanwhile: nothing unsynced is left in it
            self._unsynced_since = None
            return
        try:
            os.fsync(fd)
            self._unsynced_since = None
        finally:
            os.close(fd)

    async def _writer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            if item is _SYNC:
                self._sync_timer = None
                await self._sync(loop)
                continue
            if item is None:
                await self._sync(loop)
                return
            batch, stop = [item], False
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is _SYNC:
                    self._sync_timer = None  # re-armed below if this batch leaves frames unsynced
                    continue
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                results = await loop.run_in_executor(self._writer_pool, self._run_batch, batch)
            except Exception as exc:  # the commit itself failed: nobody's work is durable
                results = [(False, exc)] * len(batch)
            for (_, _, future, _), (ok, value) in zip(batch, results):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            if self._stage_taken is not None:  # chained for good: the staged copies can go
                taken, self._stage_taken = self._stage_taken, None
                asyncio.ensure_future(self._drop_staged(taken))
            if stop:
                await self._sync(loop)
                return
            if self._unsynced_since is not None:
                # Due from the oldest unsynced commit, not from this batch: a
                # _SYNC drained into a busy writer's batch must not push the
                # fsync back again and again.
                due = self._unsynced_since + RELAXED_SYNC_DELAY - time.monotonic()
                if due <= 0:
                    await self._sync(loop)
                elif self._sync_timer is None:
                    self._sync_timer = loop.call_later(due, self._queue.put_nowait, _SYNC)

    async def _drop_staged(self, upto: int) -> None:
        try:
            await self._stage.write_relaxed(audit_stage.drop, upto)
        except Exception:  # they are skipped by their id and dropped with the next ones
            log.warning("staged audit entries already chained were not dropped yet", exc_info=True)

    async def _sync(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.run_in_executor(self._writer_pool, self._sync_wal)
        except OSError:  # a failing disk: the next durable commit syncs the WAL or reports the error
            pass

    async def close(self) -> None:
        if self._stage is not None and self._writer_task is not None:
            await self._chain_staged()  # nothing left staged behind a clean stop (a full disk must not stop the stop)
        if self._move_timer is not None:
            self._move_timer.cancel()
            self._move_timer = None
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        self._closed = True
        if self._writer_task is not None:
            self._queue.put_nowait(None)
            await self._writer_task
            self._writer_task = None
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer_pool, self._wconn.close)
            self._wconn = None
        if self._stage_reader is not None:
            await loop.run_in_executor(self._writer_pool, self._stage_reader.close)
            self._stage_reader = None
        for pool in (self._writer_pool, self._reader_pool, self._auth_pool, self._long_pool):
            pool.shutdown(wait=True)
        if self._stage is not None:
            await self._stage.close()
