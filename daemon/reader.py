"""Verified, streaming reads of a record's plaintext, with byte ranges.

A padded record (format 2) holds ``manifest.padded`` bytes in its chunks:
the record, then zeros. Counts and lengths are checked against that stream;
the chunk holding the record's last byte must be zero after it; chunks of
padding alone are never fetched by a read.

Every block is hashed against its CID by the store and every chunk opened
(authenticated) before any of its bytes are yielded, so no unverified byte is
ever sent. Chunks ahead of the reader are prefetched, a bounded number at a
time, and opened on the CPU pool (read there too, in the same hop, from a
store of local files).
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from functools import partial

from . import crypto
from .blockstore.base import BlockStore
from .cid import DAG_CBOR, RAW, Cid
from .errors import IntegrityError
from .manifest import Manifest, decode_link_block

_INLINE_BYTES = 64 * 1024


async def walk(manifest: Manifest, store, pool: Executor | None = None) -> tuple[list[Cid], list[Cid]]:
    """The manifest's link tree, level by level: (every link block, each
    once, top level first; the ordered chunk CIDs). ``store`` is anything
    with ``async get(cid)`` (a block store, an import's spool); link blocks
    (up to 4,096 links each) are decoded on ``pool``, off the event loop."""
    loop = asyncio.get_running_loop()
    link_blocks: list[Cid] = []
    level = list(manifest.links)
    for remaining in range(manifest.depth - 1, -1, -1):
        codec = RAW if remaining == 0 else DAG_CBOR  # the level below holds chunks only at the bottom
        link_blocks.extend(level)
        children: list[Cid] = []
        for link in level:
            data = await store.get(link)
            children.extend(await loop.run_in_executor(pool, decode_link_block, link, data, codec))
        level = children
    return link_blocks, level


async def chunk_cids(manifest: Manifest, store, pool: Executor | None = None) -> list[Cid]:
    """Resolves the manifest's link tree to the ordered chunk CIDs."""
    return (await walk(manifest, store, pool))[1]


def expected_chunks(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


async def plaintext(manifest: Manifest, dek: bytes, size: int, store: BlockStore, pool: Executor,
                    start: int = 0, end: int | None = None, prefetch: int = 4) -> AsyncIterator[bytes]:
    """Yields plaintext bytes ``start``..``end`` (inclusive) of a record."""
    cs, stream = manifest.chunk_size, manifest.stream_length(size)
    chunks = await chunk_cids(manifest, store, pool)
    if len(chunks) != expected_chunks(stream, cs):
        raise IntegrityError("the record's chunk list does not match its size")
    end = size - 1 if end is None else end
    first, last = start // cs, end // cs
    final = (size - 1) // cs  # the chunk holding the record's last byte
    loop = asyncio.get_running_loop()

    read_here = getattr(store, "get_blocking", None)  # a local file: read and open it in one hop

    async def fetch(index: int) -> bytes:
        last = index == len(chunks) - 1
        open_this = partial(crypto.open_chunk, dek, manifest.stream_id, index, last, version=manifest.version)
        try:
            if read_here is not None and cs > _INLINE_BYTES:
                opened = await loop.run_in_executor(pool, lambda: open_this(read_here(chunks[index])))
            else:
                data = await store.get(chunks[index])
                if len(data) <= _INLINE_BYTES:  # opening a small chunk costs less than the thread hop (and its GIL wait)
                    opened = open_this(data)
                else:
                    opened = await loop.run_in_executor(pool, open_this, data)
        except crypto.DecryptError:
            raise IntegrityError("a chunk of this record failed to authenticate") from None
        if len(opened) != min(cs, stream - index * cs):
            raise IntegrityError("a chunk of this record has the wrong length")
        tail = size - index * cs  # where the padding starts in the record's final chunk
        if index == final and stream != size and opened.count(0, tail) != len(opened) - tail:
            raise IntegrityError("the padding of this record is not zero")
        return opened

    window: deque[asyncio.Task] = deque()
    upcoming = first
    try:
        for index in range(first, last + 1):
            while upcoming <= last and len(window) < prefetch:
                window.append(asyncio.create_task(fetch(upcoming)))
                upcoming += 1
            data = await window.popleft()
            lo = start - index * cs if index == first else 0
            hi = end - index * cs + 1 if index == last else len(data)
            yield data[lo:hi]
    finally:
        for task in window:
            task.cancel()
        await asyncio.gather(*window, return_exceptions=True)
