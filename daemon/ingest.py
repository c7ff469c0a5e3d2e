"""Streaming ingest: request body → fixed chunks → seal → hash → store.

Memory stays bounded by ``concurrency`` chunks in flight, whatever the record
size: a chunk is handed to the CPU pool (PyNaCl and hashlib release the GIL,
so sealing runs on every core) and the reader waits for a free slot before
cutting the next one. One chunk is always held back until the next byte (or
the end) arrives, because the last chunk's flag is part of its seal.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass

from . import crypto
from .blocks import Block
from .blockstore.base import BlockStore
from .cid import Cid
from .errors import BadRequest, TooLarge


_INLINE_BYTES = 64 * 1024


@dataclass
class SealedContent:
    """The sealed record: its chunk CIDs, and any chunk blocks not yet stored
    (``pending``) that the caller must put together with the manifest."""

    stream_id: bytes
    size: int
    chunks: list[Cid]
    pending: list[Block]


def _seal_block(dek: bytes, stream_id: bytes, index: int, last: bool, plaintext: bytes) -> Block:
    return Block.raw(crypto.seal_chunk(dek, stream_id, index, last, plaintext))


async def seal_stream(source: AsyncIterator[bytes], dek: bytes, store: BlockStore, pool: Executor, *,
                      chunk_size: int, max_bytes: int, concurrency: int,
                      stream_id: bytes | None = None) -> SealedContent:
    """Seals and stores every chunk of ``source``; returns their CIDs in order.
    A record of a single chunk is left in ``pending`` so that the small-record
    path stores all its blocks in one batch.

    On any failure the chunks already stored stay behind as unreferenced
    blocks for garbage collection; nothing refers to them.
    """
    loop = asyncio.get_running_loop()
    stream_id = stream_id or crypto.new_stream_id()
    slots = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task] = []
    pending: list[Block] = []

    async def process(index: int, last: bool, plaintext: bytes) -> Cid:
        try:
            if len(plaintext) <= _INLINE_BYTES:  # a thread hop costs more than sealing this
                block = _seal_block(dek, stream_id, index, last, plaintext)
            else:
                block = await loop.run_in_executor(pool, _seal_block, dek, stream_id, index, last, plaintext)
            if index == 0 and last:
                pending.append(block)  # a one-chunk record: stored with its manifest in one batch
            else:
                await store.put_many([block])
            return block.cid
        finally:
            slots.release()

    async def submit(last: bool, plaintext: bytes) -> None:
        await slots.acquire()
        for task in tasks:  # surface a failed chunk early instead of reading on
            if task.done() and task.exception():
                slots.release()
                raise task.exception()
        tasks.append(asyncio.create_task(process(len(tasks), last, plaintext)))

    size, buffer = 0, bytearray()
    try:
        async for piece in source:
            size += len(piece)
            if size > max_bytes:
                raise TooLarge(f"the record is larger than this node's limit of {max_bytes} bytes")
            buffer += piece
            while len(buffer) > chunk_size:
                chunk = bytes(buffer[:chunk_size])
                del buffer[:chunk_size]
                await submit(False, chunk)
        if size == 0:
            raise BadRequest("the request body is empty", "empty_body")
        await submit(True, bytes(buffer))
        chunks = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return SealedContent(stream_id, size, list(chunks), pending)


async def iterate_bytes(data: bytes, piece: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """An in-memory body as the async source ``seal_stream`` takes."""
    for start in range(0, len(data), piece):
        yield data[start:start + piece]
