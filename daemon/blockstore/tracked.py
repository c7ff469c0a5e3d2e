"""A view of a BlockStore that remembers what one upload put through it.

An upload that fails or is cut off (client gone, disk full, conflict) must
leave no orphan blocks: garbage collection would only find them after its
grace period, and on a full disk they hold the very space the node needs
back. Every block of an upload is new (a fresh data key and stream id), so
deleting exactly what it put cannot touch another record.

A cancelled upload stops awaiting its puts, but a put already handed to a
store's thread goes on writing: ``settle()`` waits for those, so a block is
never written after the upload deleted it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from ..blocks import Block
from ..cid import Cid
from .base import BlockStore


class TrackedPuts:
    def __init__(self, store: BlockStore):
        self._store = store
        self.put: list[Cid] = []
        self.roots: list[Cid] = []
        self._running: set[asyncio.Future] = set()

    def __getattr__(self, name: str):
        return getattr(self._store, name)  # everything else goes straight through

    async def put_many(self, blocks: list[Block]) -> None:
        self.put.extend(b.cid for b in blocks)  # before the call: a failed batch may be half-written
        await self._finished(self._store.put_many(blocks))

    async def put_made(self, make: Callable[[], Block], pool: Executor) -> Block:
        def made() -> Block:
            block = make()
            self.put.append(block.cid)  # before the write, as above (list.append holds the GIL: thread-safe)
            return block

        return await self._finished(self._store.put_made(made, pool))

    async def _finished(self, work):
        running = asyncio.ensure_future(work)
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        return await asyncio.shield(running)  # a cancelled caller leaves it to finish, for settle() to wait on

    async def settle(self) -> None:
        """Waits for every put still running (their failures are the caller's to ignore)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def protect(self, roots: list[Cid]) -> None:
        self.roots.extend(roots)  # before the call: a failed pin/add may have pinned some
        await self._store.protect(roots)

    async def put_protected(self, blocks: list[Block], roots: list[Cid]) -> None:
        self.put.extend(b.cid for b in blocks)
        self.roots.extend(roots)
        await self._finished(self._store.put_protected(blocks, roots))
