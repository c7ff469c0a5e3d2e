"""Streaming ingest: request body → fixed chunks → seal → hash → store.

Memory stays bounded by the chunks in flight, whatever the record size: a
chunk is handed to the CPU pool (PyNaCl and hashlib release the GIL, so
sealing runs on every core) and the reader waits for a free slot before
cutting the next one. One chunk is always held back until the next byte (or
the end) arrives, because the last chunk's flag is part of its seal. When the
source ends, zeros are appended up to the size bucket (``pad_to``, format 2)
and sealed like the rest, so chunk lengths reveal only the bucket.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

from . import crypto
from .blocks import Block
from .blockstore.base import BlockStore
from .cid import Cid
from .errors import BadRequest, TooLarge


_INLINE_BYTES = 64 * 1024
_WRITERS = 2


@dataclass
class SealedContent:
    """The sealed record: its chunk CIDs, and any chunk blocks not yet stored
    (``pending``) that the caller must put together with the manifest."""

    stream_id: bytes
    size: int
    chunks: list[Cid]
    pending: list[Block]
    padded: int | None = None  # the sealed stream's length when padded (format 2)


def _seal_block(dek: bytes, stream_id: bytes, index: int, last: bool, plaintext: bytes, version: int) -> Block:
    return Block.raw(crypto.seal_chunk(dek, stream_id, index, last, plaintext, version))


async def seal_stream(source: AsyncIterator[bytes], dek: bytes, store: BlockStore, pool: Executor, *,
                      chunk_size: int, max_bytes: int, concurrency: int,
                      stream_id: bytes | None = None, pad_to: Callable[[int], int] | None = None) -> SealedContent:
    """Seals and stores every chunk of ``source``; returns their CIDs in order.

    Sealing runs on the CPU pool; one writer stores sealed chunks in batches
    of up to ``store.batch_blocks`` (one Kubo ``block/put`` of several parts);
    a store that gains nothing from batches (local files) seals and writes
    each chunk in one hop with ``put_made``. ``concurrency`` bounds the chunks in
    flight, sealing or waiting to be written, so memory does not grow with the
    record. A record of a single chunk is left in ``pending`` so the
    small-record path stores all its blocks in one batch. On any failure the
    chunks already stored stay behind, unreferenced, for garbage collection.
    With ``pad_to`` (size → padded length) the stream is padded and sealed as
    format 2; without it, format 1.
    """
    version = crypto.FORMAT_VERSION if pad_to is None else crypto.PADDED_FORMAT
    loop = asyncio.get_running_loop()
    stream_id = stream_id or crypto.new_stream_id()
    batch_size = max(1, store.batch_blocks)
    slots = asyncio.Semaphore(max(concurrency, 2 * batch_size))
    queue: asyncio.Queue[Block | None] = asyncio.Queue()
    failure: list[BaseException] = []
    tasks: list[asyncio.Task] = []
    pending: list[Block] = []

    async def writer() -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            batch, finished = [item], False
            while len(batch) < batch_size and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    finished = True
                    break
                batch.append(nxt)
            try:
                if not failure:
                    await store.put_many(batch)
            except Exception as exc:  # keep draining so no producer waits on a slot forever
                failure.append(exc)
            finally:
                for _ in batch:
                    slots.release()
            if finished:
                return

    async def process(index: int, last: bool, plaintext: bytes) -> Cid:
        seal = partial(_seal_block, dek, stream_id, index, last, plaintext, version)
        try:
            if len(plaintext) <= _INLINE_BYTES:  # a thread hop costs more than sealing this
                block = seal()
            elif batch_size == 1 and not (index == 0 and last):  # sealed and stored in one hop
                block = await store.put_made(seal, pool)
                slots.release()
                return block.cid
            else:
                block = await loop.run_in_executor(pool, seal)
        except BaseException:
            slots.release()
            raise
        if index == 0 and last:
            pending.append(block)  # a one-chunk record: stored with its manifest in one batch
            slots.release()
        elif batch_size == 1:  # a store that gains nothing from batches: write concurrently
            try:
                await store.put_many([block])
            finally:
                slots.release()
        else:
            if not writers:  # two, so one request is in flight while the next batch fills
                writers.extend(asyncio.create_task(writer()) for _ in range(_WRITERS))
            queue.put_nowait(block)  # the writer releases the slot once it is stored
        return block.cid

    def check() -> None:
        if failure:  # a failed chunk or write surfaces early instead of reading on
            raise failure[0]

    def note_failure(task: asyncio.Task) -> None:
        # (checking every task on each submit was quadratic: 1,024 chunks for 256 MiB)
        if not task.cancelled() and task.exception() is not None:
            failure.append(task.exception())

    async def submit(last: bool, plaintext: bytes) -> None:
        await slots.acquire()
        try:
            check()
        except BaseException:
            slots.release()
            raise
        task = asyncio.create_task(process(len(tasks), last, plaintext))
        task.add_done_callback(note_failure)
        tasks.append(task)

    writers: list[asyncio.Task] = []  # started on the first block that needs it
    size, buffer, padded = 0, bytearray(), None

    async def cut() -> None:
        while len(buffer) > chunk_size:
            with memoryview(buffer) as view:
                chunk = bytes(view[:chunk_size])  # one copy (a slice of the bytearray was a second)
            del buffer[:chunk_size]
            await submit(False, chunk)

    try:
        async for piece in source:
            size += len(piece)
            if size > max_bytes:
                raise TooLarge(f"the record is larger than this node's limit of {max_bytes} bytes")
            buffer += piece
            await cut()
        if size == 0:
            raise BadRequest("the request body is empty", "empty_body")
        if pad_to is not None:
            padded = pad_to(size)
            for start in range(size, padded, chunk_size):  # a chunk of zeros at a time: memory stays bounded
                buffer += bytes(min(chunk_size, padded - start))
                await cut()
        await submit(True, bytes(buffer))
        chunks = await asyncio.gather(*tasks)
        for _ in writers:
            queue.put_nowait(None)
        await asyncio.gather(*writers)
        check()
    except BaseException:
        for task in [*tasks, *writers]:
            task.cancel()
        await asyncio.gather(*tasks, *writers, return_exceptions=True)
        raise
    return SealedContent(stream_id, size, list(chunks), pending, padded)


async def iterate_bytes(data: bytes, piece: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """An in-memory body as the async source ``seal_stream`` takes."""
    for start in range(0, len(data), piece):
        yield data[start:start + piece]
