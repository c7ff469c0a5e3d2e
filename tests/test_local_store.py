"""The embedded block store's files: what a put leaves on disk, whatever was
there before it (a crash's torn file, a folder removed by hand)."""
from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from daemon.blocks import Block
from daemon.blockstore.local import LocalBlockStore
from daemon.blockstore.tracked import TrackedPuts
from daemon.errors import BlockNotFound, InsufficientStorage, IntegrityError


@pytest.fixture
async def store(tmp_path):
    store = LocalBlockStore(str(tmp_path / "blocks"))
    yield store
    await store.close()


async def test_a_put_block_reads_back_and_leaves_no_temp_file(store):
    block = Block.raw(b"sealed bytes" * 100)
    await store.put_many([block])
    assert await store.get(block.cid) == block.data
    folder = os.path.dirname(store.path_of(block.cid))
    assert os.listdir(folder) == [os.path.basename(store.path_of(block.cid))]
    assert oct(os.stat(store.path_of(block.cid)).st_mode & 0o777) == oct(0o600)


async def test_a_torn_file_is_replaced_when_the_block_is_put_again(store):
    block = Block.raw(os.urandom(4096))
    await store.put_many([block])
    with open(store.path_of(block.cid), "r+b") as handle:  # what a crash before the sync can leave
        handle.truncate(1000)
    with pytest.raises(IntegrityError):
        await store.get(block.cid)
    await store.put_many([block])
    assert await store.get(block.cid) == block.data


async def test_an_intact_block_put_again_is_left_as_it_is(store):
    """Its file may be durable already (an acknowledged record's): a rewrite
    would leave it unsynced, and torn by a crash, until the next sync."""
    block = Block.raw(os.urandom(4096))
    await store.put_many([block])
    before = os.stat(store.path_of(block.cid))
    await store.put_many([block])  # an import carrying a block this node holds
    after = os.stat(store.path_of(block.cid))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


async def test_a_missing_shard_folder_is_made_again(store):
    first, second = Block.raw(b"one"), Block.raw(b"two")
    await store.put_many([first])
    shutil.rmtree(store.root)  # removed by hand while the daemon runs
    with pytest.raises(BlockNotFound):
        await store.get(first.cid)
    await store.put_many([first, second])
    assert await store.get(first.cid) == b"one"
    assert await store.get(second.cid) == b"two"


async def test_a_file_under_another_blocks_name_is_refused(store):
    block, other = Block.raw(b"the real block"), Block.raw(b"another block")
    await store.put_many([block])
    with open(store.path_of(block.cid), "wb") as handle:
        handle.write(other.data)
    with pytest.raises(IntegrityError):
        await store.get(block.cid)


async def test_a_block_made_and_put_in_one_hop_is_tracked_even_when_its_caller_is_cancelled(store):
    """An upload cut off while a chunk is being sealed and written: the upload
    learns the block's CID and waits for the write, so it can remove it."""
    tracked, started, release = TrackedPuts(store), threading.Event(), threading.Event()
    block = Block.raw(os.urandom(100_000))

    def make() -> Block:  # the sealing, held until the caller has gone
        started.set()
        release.wait(10)
        return block

    with ThreadPoolExecutor(1) as pool:
        task = asyncio.create_task(tracked.put_made(make, pool))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await tracked.settle()
    assert tracked.put == [block.cid]
    assert await store.get(block.cid) == block.data  # written after the caller left: settle() waited for it


async def test_callers_sharing_a_group_commit_each_get_their_own_write_failure(store, monkeypatch):
    """Blocks and the sync go in one hop for everyone waiting: a write that
    fails for want of space fails its own caller (507), not the others."""
    good, doomed = Block.raw(b"fits"), Block.raw(b"does not fit")
    write = store._write

    def write_unless_doomed(block: Block) -> None:
        if block.cid == doomed.cid:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(block)

    monkeypatch.setattr(store, "_write", write_unless_doomed)
    synced = []
    monkeypatch.setattr("daemon.blockstore.local.sync_filesystem", synced.append)
    results = await asyncio.gather(store.put_protected([good], [good.cid]), store.put_protected([doomed], []),
                                   return_exceptions=True)
    assert results[0] is None and isinstance(results[1], InsufficientStorage)
    assert await store.get(good.cid) == b"fits"
    assert synced == [store.root]  # one sync for both callers
