"""The embedded ``local`` backend: a content-addressed directory, no IPFS needed.

Blocks live at ``<root>/<shard>/<cid>`` where the shard is the next-to-last
two characters of the base32 CID (flatfs's ``next-to-last/2`` layout, so the
folder fans out evenly). Each write goes to a temp file renamed into place;
durability comes from ``sync``, one ``syncfs`` shared by every record being
written at that moment (per-file fsyncs made the small-record path wait on
the journal four times a record). Every read is hashed against its CID; a
put leaves an intact file of the same block alone (it may be durable
already: replacing it would put an acknowledged record's block back at risk
until the next sync) and writes over a torn one. Pins live in the index;
the local pinner only checks that the pinned block is present.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import contextmanager

from ..blocks import Block
from ..cid import Cid
from ..errors import BlockNotFound, IntegrityError
from ..fsutil import atomic_write, sync_filesystem
from ..priority import bulk_pool
from ..space import full_error, is_full
from .base import BlockStore, Pinner, PinStatus


def _shard(cid_text: str) -> str:
    return cid_text[-3:-1]


def _as_reported(exc: BaseException) -> BaseException:
    """A write that failed for want of space is the node's 507, not an OSError."""
    return full_error("blocks") if isinstance(exc, OSError) and is_full(exc) else exc


@contextmanager
def _space_errors():
    try:
        yield
    except OSError as exc:
        reported = _as_reported(exc)
        if reported is exc:
            raise
        raise reported from None


class LocalBlockStore(BlockStore):
    name = "local"
    batch_blocks = 1  # concurrent single-file writes on the I/O pool beat batches here

    def __init__(self, root: str, io_threads: int = 2):
        self.root = root
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._pool = bulk_pool(io_threads, "blocks")
        self._sync_waiters: list[tuple[list[Block], asyncio.Future]] = []
        self._sync_task: asyncio.Task | None = None

    def path_of(self, cid: Cid) -> str:
        text = str(cid)
        return os.path.join(self.root, _shard(text), text)

    def _put_many_sync(self, blocks: list[Block]) -> None:
        for block in blocks:
            if not self._intact(block.cid):  # a durable copy is never replaced by an unsynced one
                self._write(block)

    def _intact(self, cid: Cid) -> bool:
        """A file of this name whose bytes hash to it (a crash before the
        sync may have left one torn: that one is written again)."""
        try:
            with open(self.path_of(cid), "rb") as handle:
                return cid.matches(handle.read())
        except FileNotFoundError:
            return False

    def _write(self, block: Block) -> None:
        """Temp file and rename; the shard folder is made only when the write
        finds it missing (four syscalls a block: io.open and makedirs added
        six)."""
        path = self.path_of(block.cid)
        try:
            atomic_write(path, block.data, 0o600, fsync=False, sync_dir=False)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            atomic_write(path, block.data, 0o600, fsync=False, sync_dir=False)

    async def put_many(self, blocks: list[Block]) -> None:
        if blocks:
            with _space_errors():
                await asyncio.get_running_loop().run_in_executor(self._pool, self._put_many_sync, blocks)

    async def put_made(self, make: Callable[[], Block], pool: Executor) -> Block:
        """Makes and writes the block on the same ``pool`` thread: one hop."""
        def make_and_put() -> Block:
            block = make()
            self._write(block)  # a freshly sealed chunk: new key and stream id, so a new CID
            return block

        with _space_errors():
            return await asyncio.get_running_loop().run_in_executor(pool, make_and_put)

    async def sync(self) -> None:
        """Group commit: callers arriving while a flush runs share the next one."""
        await self.put_protected([], [])

    async def put_protected(self, blocks: list[Block], roots: list[Cid]) -> None:
        """``put_many`` and ``sync`` in one hop: the blocks join the next group
        commit, whose thread writes every caller's blocks, then runs one
        ``syncfs`` for them all (roots need nothing more: pins are index rows).
        Each caller gets its own write's failure; a failed sync fails them all."""
        waiter = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((blocks, waiter))
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self._sync_loop())
        await waiter

    def _write_then_sync(self, groups: list[list[Block]]) -> list[BaseException | None]:
        failures: list[BaseException | None] = []
        for blocks in groups:
            try:
                self._put_many_sync(blocks)
                failures.append(None)
            except OSError as exc:
                failures.append(_as_reported(exc))
        sync_filesystem(self.root)
        return failures

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sync_waiters:
            group, self._sync_waiters = self._sync_waiters, []
            try:
                failures = await loop.run_in_executor(self._pool, self._write_then_sync, [b for b, _ in group])
            except Exception as exc:  # the sync failed (or a bug): every caller hears it, none waits for ever
                failures = [_as_reported(exc)] * len(group)
            for (_, waiter), failure in zip(group, failures):
                if waiter.done():
                    continue
                if failure is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(failure)

    def get_blocking(self, cid: Cid) -> bytes:
        try:
            with open(self.path_of(cid), "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise BlockNotFound("a block of this record is missing from the store") from None
        if not cid.matches(data):
            raise IntegrityError("a stored block does not match its content ID")
        return data

    async def get(self, cid: Cid) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.get_blocking, cid)

    async def has(self, cid: Cid) -> bool:
        return os.path.exists(self.path_of(cid))

    def _delete_sync(self, cids: list[Cid]) -> None:
        for cid in cids:
            try:
                os.unlink(self.path_of(cid))
            except FileNotFoundError:
                pass

    async def delete_many(self, cids: list[Cid]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._delete_sync, cids)

    async def all_cids(self) -> AsyncIterator[tuple[Cid, float]]:
        def scan() -> list[tuple[Cid, float]]:
            found = []
            for shard in os.listdir(self.root):
                folder = os.path.join(self.root, shard)
                for name in os.listdir(folder) if os.path.isdir(folder) else ():
                    if ".tmp-" in name:  # an interrupted write: garbage, named so
                        continue
                    try:
                        found.append((Cid.parse(name), os.stat(os.path.join(folder, name)).st_mtime))
                    except (ValueError, FileNotFoundError):
                        continue
            return found

        for item in await asyncio.get_running_loop().run_in_executor(self._pool, scan):
            yield item

    def remove_temp_files(self) -> int:
        """Deletes temp files left by writes a crash interrupted; returns how many."""
        removed = 0
        for shard in os.listdir(self.root):
            folder = os.path.join(self.root, shard)
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                if ".tmp-" in name:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
        return removed

    async def health(self) -> dict:
        usage = shutil.disk_usage(self.root)
        return {"status": "ok", "free_bytes": usage.free}

    async def close(self) -> None:
        self._pool.shutdown(wait=True)


class LocalPinner(Pinner):
    """Pins are rows in the index; a pin holds when its block is here."""

    name = "local"
    pinned_on_protect = True

    def __init__(self, store: LocalBlockStore):
        self._store = store

    async def pin(self, cid: Cid, replication_min: int, replication_max: int) -> None:
        return None

    async def unpin(self, cid: Cid) -> None:
        return None

    async def status(self, cid: Cid) -> PinStatus:
        if await self._store.has(cid):
            return PinStatus(1, {"local": "pinned"})
        return PinStatus(0, {"local": "pin_error"}, "block missing")
