"""A record's last blocks and pins in one group-committed ``dag/import``
(daemon/blockstore/kubo_import.py), against a real Kubo: what it pins, what
it refuses, and that one bad record does not fail the writers beside it."""
from __future__ import annotations

import asyncio
import os

import pytest

from daemon.blocks import Block
from daemon.blockstore.kubo import KuboBlockStore, KuboRpc
from daemon.blockstore.kubo_import import ImportBatcher, check_answer
from daemon.cid import Cid
from daemon.errors import IntegrityError, VaultError


def _record() -> tuple[list[Block], list[Cid]]:
    chunk = Block.raw(os.urandom(3000))
    manifest = Block.dag_cbor({"chunks": [chunk.cid.to_link()], "n": os.urandom(8)})
    envelope = Block.dag_cbor({"manifest": manifest.cid.to_link(), "n": os.urandom(8)})
    return [chunk, manifest, envelope], [manifest.cid, envelope.cid]


def _recursive_pins(kubo) -> set[str]:
    return {line.split()[0] for line in kubo.ipfs("pin", "ls", "--type=recursive").decode().splitlines()}


class _Counting(KuboRpc):
    """The real RPC client, counting ``dag/import`` calls."""

    imports = 0

    async def dag_import(self, body: bytes, pin_wait: float) -> list:
        self.imports += 1
        return await super().dag_import(body, pin_wait)


async def test_concurrent_writes_share_imports_and_a_bad_one_fails_alone(kubo):
    rpc = _Counting(kubo.api_url)
    store = KuboBlockStore(rpc)
    try:
        records = [_record() for _ in range(8)]
        blocks, roots = records[3]
        records[3] = ([Block(blocks[0].cid, os.urandom(3000)), *blocks[1:]], roots)  # bytes that are not its CID
        results = await asyncio.gather(*[store.put_protected(b, r) for b, r in records], return_exceptions=True)
        assert isinstance(results[3], VaultError)
        assert [r for i, r in enumerate(results) if i != 3] == [None] * 7
        assert rpc.imports < 8 + 7  # the seven good ones were not each tried twice
        pinned = _recursive_pins(kubo)
        for i, (_, roots) in enumerate(records):
            assert all((str(r) in pinned) == (i != 3) for r in roots)
        for blocks, _ in [r for i, r in enumerate(records) if i != 3]:
            for block in blocks:  # every block is in Kubo under the CID we computed
                assert Cid.for_data(block.cid.codec, kubo.ipfs("block", "get", str(block.cid))) == block.cid
    finally:
        await store.close()


async def test_one_writer_alone_is_one_import(kubo):
    rpc = _Counting(kubo.api_url)
    store = KuboBlockStore(rpc)
    try:
        blocks, roots = _record()
        await store.put_protected(blocks, roots)
        assert rpc.imports == 1 and {str(r) for r in roots} <= _recursive_pins(kubo)
    finally:
        await store.close()


async def test_a_record_whose_earlier_chunk_kubo_lost_is_not_confirmed(kubo):
    rpc = KuboRpc(kubo.api_url)
    batcher = ImportBatcher(rpc, pin_wait=2)
    try:
        lost = Block.raw(os.urandom(1000))  # as if put earlier and collected since: never in Kubo
        manifest = Block.dag_cbor({"chunks": [lost.cid.to_link()], "n": os.urandom(8)})
        with pytest.raises(VaultError):
            await batcher.put_protected([manifest], [manifest.cid])
        assert str(manifest.cid) not in _recursive_pins(kubo)
    finally:
        await rpc.close()


def _answer(roots, count, error=""):
    return [*({"Root": {"Cid": {"/": str(r)}, "PinErrorMsg": error}} for r in roots), {"Stats": {"BlockCount": count,
                                                                                             "BlockBytesCount": 1}}]


@pytest.mark.parametrize("answer", [
    lambda roots: _answer(roots[:1], 3),  # a root left out
    lambda roots: _answer([*roots, Block.raw(b"other").cid], 3),  # a root we did not send
    lambda roots: _answer([Block.raw(b"other").cid, roots[1]], 3),  # another CID in its place
    lambda roots: _answer(roots, 2),  # fewer blocks read than sent
    lambda roots: _answer(roots, 3)[:-1],  # no stats
    lambda roots: _answer(roots, 3) + [{"Stats": {"BlockCount": 3}}],  # two stats
    lambda roots: [{"Root": {"Cid": str(roots[0]), "PinErrorMsg": ""}}, *_answer(roots[1:], 3)],  # malformed root
    lambda roots: _answer(roots, 3) + [{"Surprise": 1}],
    lambda roots: _answer(roots, 3) + [["Root"]],
    lambda roots: [{**_answer(roots, 3)[0], "Stats": {"BlockCount": 3}}, *_answer(roots, 3)[1:]],
    lambda roots: _answer(roots, "3"),
])
def test_an_answer_that_does_not_confirm_exactly_what_was_sent_is_refused(answer):
    _, roots = _record()
    with pytest.raises(IntegrityError):
        check_answer(answer(roots), roots, 3)


def test_a_pin_error_in_the_answer_is_an_error():
    _, roots = _record()
    with pytest.raises(VaultError) as raised:
        check_answer(_answer(roots, 3, "context deadline exceeded"), roots, 3)
    assert not isinstance(raised.value, IntegrityError)
    check_answer(_answer(roots, 3), roots, 3)  # and the exact answer passes
