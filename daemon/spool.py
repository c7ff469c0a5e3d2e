"""Where an import's blocks wait while they are verified, so that nothing
from outside is stored before all of it has passed.

``CarSpool`` parks a CAR's blocks (each already checked against its CID by
the CAR reader) in an anonymous temp file under the data dir: it is
unlinked at once, so a crash leaves nothing behind, and it holds only
ciphertext. ``FetchTracker`` wraps the node's own block store for a share
token: it notes which blocks were not here before the import fetched them
(Kubo keeps what bitswap brings), so a refused import can delete exactly
those and leave no trace.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator

from . import car
from .blocks import Block
from .cid import Cid
from .errors import BlockNotFound, TooLarge


async def _capped(source: AsyncIterator[bytes], cap: int) -> AsyncIterator[bytes]:
    total = 0
    async for piece in source:
        total += len(piece)
        if total > cap:
            raise TooLarge(f"the CAR file is larger than this node's limit of {cap} bytes")
        yield piece


class CarSpool:
    def __init__(self, directory: str):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=directory)
        self._where: dict[Cid, tuple[int, int]] = {}
        self._end = 0
        self.roots: list[Cid] = []

    async def fill(self, source: AsyncIterator[bytes], cap: int) -> None:
        """Reads the whole CAR (FormatError on a bad one, TooLarge over ``cap``)."""
        loop = asyncio.get_running_loop()
        self.roots, blocks = await car.read(_capped(source, cap))
        pending: list[Block] = []
        size = 0
        async for block in blocks:
            if block.cid in self._where:
                continue
            pending.append(block)
            size += len(block.data)
            if size >= 4 * 1024 * 1024:
                await loop.run_in_executor(None, self._append, pending)
                pending, size = [], 0
        await loop.run_in_executor(None, self._append, pending)

    def _append(self, blocks: list[Block]) -> None:
        for block in blocks:  # positional writes and reads: safe from several threads at once
            os.pwrite(self._file.fileno(), block.data, self._end)
            self._where[block.cid] = (self._end, len(block.data))
            self._end += len(block.data)

    def _read(self, cid: Cid) -> bytes:
        offset, length = self._where[cid]
        return os.pread(self._file.fileno(), length, offset)

    async def get(self, cid: Cid) -> bytes:
        if cid not in self._where:
            raise BlockNotFound("a block the CAR file needs is not in it")
        return await asyncio.get_running_loop().run_in_executor(None, self._read, cid)

    async def blocks(self, cids: list[Cid]) -> list[Block]:
        return [Block(cid, await self.get(cid)) for cid in cids]

    def close(self) -> None:
        self._file.close()


class FetchTracker:
    """The node's block store as an import's source, remembering what it had to fetch."""

    def __init__(self, store):
        self._store = store
        self.fetched: list[Cid] = []
        self._seen: set[Cid] = set()

    async def get(self, cid: Cid) -> bytes:
        if cid not in self._seen:
            self._seen.add(cid)
            if not await self._store.has(cid):
                self.fetched.append(cid)
        return await self._store.get(cid)

    async def discard(self) -> None:
        """Deletes the blocks this import brought in (a refused import leaves no trace)."""
        if self.fetched:
            await self._store.delete_many(self.fetched)
