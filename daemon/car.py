"""CAR v1 (Content Addressable aRchive), streamed both ways.

A varint-prefixed dag-cbor header ``{"version": 1, "roots": [...]}``, then
for each block a varint of len(CID)+len(data), the binary CID and the data.
The PyPI ``ipld_car`` package builds and parses whole archives in memory; a
patient's export can be gigabytes, so we stream with multiformats' varint and
dag-cbor instead. Every block read is checked against its CID, and the
header is decoded as strictly as any other object from outside (daemon.strict):
exactly ``version`` 1 and ``roots``, canonical dag-cbor, minimal varints.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

from multiformats import varint

from . import cbor, strict
from .blocks import Block, FormatError
from .cid import Cid

MAX_BLOCK = 2 * 1024 * 1024
MAX_HEADER = 1024 * 1024
_HEADER_FIELDS = frozenset({"version", "roots"})


def header(roots: list[Cid]) -> bytes:
    encoded = cbor.encode({"roots": [r.to_link() for r in roots], "version": 1})
    return varint.encode(len(encoded)) + encoded


def frame(block: Block) -> bytes:
    cid = bytes(block.cid)
    return varint.encode(len(cid) + len(block.data)) + cid + block.data


class _Reader:
    """Pulls exact byte counts out of an async stream of arbitrary pieces."""

    def __init__(self, source: AsyncIterator[bytes]):
        self._source = source.__aiter__()
        self._buffer = bytearray()
        self._ended = False

    async def _fill(self, n: int) -> bool:
        while len(self._buffer) < n and not self._ended:
            try:
                self._buffer += await self._source.__anext__()
            except StopAsyncIteration:
                self._ended = True
        return len(self._buffer) >= n

    async def varint(self) -> int | None:
        await self._fill(1)
        if not self._buffer:
            return None
        for end in range(1, 10):
            if not await self._fill(end):
                raise FormatError("the CAR file ends inside a length")
            if not self._buffer[end - 1] & 0x80:
                try:
                    value = varint.decode(bytes(self._buffer[:end]))
                except ValueError:  # not minimally encoded: one length, one spelling
                    raise FormatError("bad varint in the CAR file") from None
                del self._buffer[:end]
                return value
        raise FormatError("bad varint in the CAR file")

    async def take(self, n: int) -> bytes:
        if not await self._fill(n):
            raise FormatError("the CAR file ends inside a block")
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


async def read(source: AsyncIterator[bytes]) -> tuple[list[Cid], AsyncIterator[Block]]:
    """Parses the header, then yields verified blocks one at a time."""
    reader = _Reader(source)
    length = await reader.varint()
    if length is None or not 0 < length <= MAX_HEADER:
        raise FormatError("not a CAR file")
    head = strict.exact_map(strict.decode_canonical(await reader.take(length), "CAR header"), "CAR header",
                            _HEADER_FIELDS)
    strict.integer(head["version"], "CAR header.version", 1, 1)
    if type(head["roots"]) is not list:
        raise FormatError("CAR header.roots: must be a list of CID links")
    roots = [strict.any_link(r, f"CAR header.roots[{i}]") for i, r in enumerate(head["roots"])]

    async def blocks() -> AsyncIterator[Block]:
        while (size := await reader.varint()) is not None:
            if not 36 < size <= MAX_BLOCK + 36:
                raise FormatError("a CAR section has an impossible size")
            section = await reader.take(size)
            try:
                cid = Cid(section[:36])
            except ValueError:
                raise FormatError("a CAR block has a CID this format does not use") from None
            data = section[36:]
            if not cid.matches(data):
                raise FormatError("a CAR block does not match its CID")
            yield Block(cid, data)

    return roots, blocks()
