"""The reconciler's bounded window of submissions and its status reads, on
the real three-peer Cluster (and on a Cluster that is not there)."""
from __future__ import annotations

import asyncio
import os

import pytest

from daemon import timeutil
from daemon.blocks import Block
from daemon.blockstore.base import Pinner, PinStatus
from daemon.blockstore.cluster import ClusterPinner, ClusterRest
from daemon.blockstore.kubo import KuboBlockStore, KuboRpc
from daemon.blockstore.local import LocalBlockStore, LocalPinner
from daemon.errors import BackendUnavailable
from daemon.reconciler import Reconciler, classify
from indexer import pins

from .ipfs import free_port
from .waiting import until


class _CountingRest(ClusterRest):
    """The real REST client, counting pin submissions."""

    submitted = 0

    async def pin(self, cid, rmin, rmax):
        self.submitted += 1
        return await super().pin(cid, rmin, rmax)


async def _want(db, cids, rmin=2, rmax=3, status="queued", now=None):
    now = now or timeutil.now()

    def seed(conn):
        for cid in cids:
            pins.want(conn, str(cid), None, "manifest", rmin, rmax, now, status=status)

    await db.write(seed)


async def _rows(db) -> dict[str, dict]:
    return {r["cid"]: r for r in await db.read(lambda c: pins.listing(c, limit=10_000))}


async def test_pins_the_cluster_refuses_do_not_stop_the_others(db, topology):
    peer = topology.peers[2]
    store, rest = KuboBlockStore(KuboRpc(peer.kubo.api_url)), _CountingRest(peer.api_url)
    try:
        blocks = [Block.raw(os.urandom(512)) for _ in range(60)]
        await store.put_many(blocks)
        good, refused = blocks[:48], blocks[48:]
        await _want(db, [b.cid for b in good])
        await _want(db, [b.cid for b in refused], rmin=3, rmax=2)  # Cluster refuses min above max
        await Reconciler(db, ClusterPinner(rest), concurrency=8).pass_once()
        assert rest.submitted == 60  # a refusal is about one pin, not the Cluster: the window went on
        rows = await _rows(db)
        for block in good:
            row = rows[str(block.cid)]
            assert row["status"] in ("pinning", "pinned", "degraded") and row["error"] is None, row
        for block in refused:
            row = rows[str(block.cid)]
            assert row["status"] == "queued" and row["attempts"] == 1 and row["error"], row
            assert row["next_attempt"] > 0
    finally:
        await store.close()
        await rest.close()


async def test_a_cluster_that_is_down_stops_the_window_and_leaves_every_job_due(db):
    rest = _CountingRest(f"http://127.0.0.1:{free_port()}", retries=1)  # nothing listens there
    try:
        cids = [Block.raw(os.urandom(64)).cid for _ in range(300)]
        await _want(db, cids)
        with pytest.raises(BackendUnavailable):
            await Reconciler(db, ClusterPinner(rest), concurrency=16).pass_once()
        assert 1 <= rest.submitted <= 16  # the first window, not 300 doomed requests
        rows = await _rows(db)
        assert {(r["status"], r["attempts"], r["next_attempt"]) for r in rows.values()} == {("queued", 0, 0)}
    finally:
        await rest.close()


async def test_listing_all_and_asking_by_cid_agree(topology):
    peer = topology.peers[0]
    store, rest = KuboBlockStore(KuboRpc(peer.kubo.api_url)), ClusterRest(peer.api_url)
    pinner = ClusterPinner(rest)
    try:
        blocks = [Block.raw(os.urandom(512)) for _ in range(130)]  # more than one ?cids= batch
        await store.put_many(blocks)
        for block in blocks[:20]:  # on this peer, whose Kubo has the blocks: no fetch between peers
            await rest.request("POST", f"/pins/{block.cid}", "pin", params={
                "replication-min": "1", "replication-max": "1", "allocations": peer.peer_id, "name": "medvault"})
        cids = [b.cid for b in blocks]

        async def settled():  # states change while pins are in flight: compare once they stop
            states = await pinner.statuses(cids[:20], population=20)  # the cheap listing
            return all(s.replicas == 1 for s in states.values())

        await until(settled, 180, "20 pins to be pinned on one peer each", interval=2)
        listed = await pinner.statuses(cids, population=len(cids))  # one streamed listing of every pin
        asked = await pinner.statuses(cids, population=10 ** 9)  # ?cids= batches
        assert set(listed) == set(asked) == set(cids)
        for cid in cids[20:]:  # never pinned: nothing held, whichever way we asked
            assert listed[cid].replicas == asked[cid].replicas == 0
        for cid in cids[:20]:
            holders = [{p for p, s in state.peers.items() if s == "pinned"} for state in (listed[cid], asked[cid])]
            assert listed[cid].replicas == asked[cid].replicas == 1 and holders[0] == holders[1]
    finally:
        await rest.close()
        await store.close()


async def test_jobs_that_need_an_action_come_before_pins_only_being_watched(db):
    waiting = [Block.raw(os.urandom(64)).cid for _ in range(5)]  # older, still to submit
    await _want(db, waiting, now="2026-01-01T00:00:00Z")
    watched = [Block.raw(os.urandom(64)).cid for _ in range(5)]  # newer, submitted, in progress
    await _want(db, watched, status="pinning", now="2026-06-01T00:00:00Z")
    due = await db.read(pins.due, 1e12, 5)
    assert {r["cid"] for r in due} == {str(c) for c in waiting}
    assert await db.read(pins.population) == 10


class _Accepting(Pinner):
    """A pinner like the Cluster's: pin() returns once accepted; status says nothing is held yet."""

    name = "accepting"
    max_replicas = 3
    settles_later = True

    def __init__(self):
        self.submitted: list = []
        self.asked: list = []

    async def pin(self, cid, replication_min, replication_max):
        self.submitted.append(cid)

    async def unpin(self, cid):
        pass

    async def status(self, cid):
        self.asked.append(cid)
        return PinStatus(0, {"a": "unpinned", "b": "unpinned"}, None)


async def test_a_pin_just_accepted_is_pinning_without_reading_it_back_and_a_lost_one_is_resubmitted(db):
    cids = [Block.raw(os.urandom(64)).cid for _ in range(20)]
    await _want(db, cids)
    pinner = _Accepting()
    reconciler = Reconciler(db, pinner)
    await reconciler.pass_once()
    assert len(pinner.submitted) == 20 and pinner.asked == []  # no status read in the submitting pass
    rows = await _rows(db)
    assert {(r["status"], r["attempts"], r["error"]) for r in rows.values()} == {("pinning", 0, None)}
    assert all(r["next_attempt"] > 0 for r in rows.values())
    await db.write(lambda c: c.execute("UPDATE pins SET next_attempt = 0"))
    await reconciler.pass_once()  # first check: the Cluster holds nothing and is doing nothing: lost
    assert len(pinner.asked) == 20 and len(pinner.submitted) == 20
    rows = await _rows(db)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("queued", 1)}
    await db.write(lambda c: c.execute("UPDATE pins SET next_attempt = 0"))
    await reconciler.pass_once()  # submitted again, and still backing off if it is lost again
    assert len(pinner.submitted) == 40
    assert {(r["status"], r["attempts"]) for r in (await _rows(db)).values()} == {("pinning", 1)}


async def test_a_degraded_pin_resubmitted_is_read_back_only_after_the_first_check_delay(db):
    cids = [Block.raw(os.urandom(64)).cid for _ in range(3)]
    await _want(db, cids, status="degraded")
    await db.write(lambda c: c.execute("UPDATE pins SET attempts = 2, replicas = 1"))
    pinner = _Accepting()
    await Reconciler(db, pinner).pass_once()
    assert len(pinner.submitted) == 3 and pinner.asked == []  # the re-submission may not be committed yet
    rows = await _rows(db)
    assert {(r["status"], r["attempts"], r["replicas"]) for r in rows.values()} == {("pinning", 2, 1)}


def test_short_of_replication_min_is_pinning_while_a_peer_is_still_pinning():
    assert classify(PinStatus(1, {"a": "pinned", "b": "pin_queued", "c": "remote"}, None), 2) == "pinning"
    assert classify(PinStatus(1, {"a": "pinned", "b": "pinning", "c": "remote"}, None), 2) == "pinning"
    assert classify(PinStatus(1, {"a": "pinned", "b": "cluster_error", "c": "remote"}, None), 2) == "degraded"
    assert classify(PinStatus(1, {"a": "pinned", "b": "pin_error", "c": "remote"}, "boom"), 2) == "degraded"
    assert classify(PinStatus(2, {"a": "pinned", "b": "pinned", "c": "pin_queued"}, None), 2) == "pinned"


async def test_pins_only_being_watched_come_longest_overdue_first(db):
    older = [Block.raw(os.urandom(64)).cid for _ in range(5)]  # submitted first, due for a check long ago
    newer = [Block.raw(os.urandom(64)).cid for _ in range(5)]  # submitted last, due just now
    now = timeutil.now()

    def seed(conn):
        for cid in older:
            pins.want(conn, str(cid), None, "manifest", 2, 3, "2026-01-01T00:00:00Z", status="pinning", next_attempt=10)
        for cid in newer:
            pins.want(conn, str(cid), None, "manifest", 2, 3, now, status="pinning", next_attempt=20)

    await db.write(seed)
    due = await db.read(pins.due, 1e12, 5)
    assert {r["cid"] for r in due} == {str(c) for c in older}


async def test_a_reconciler_cancelled_as_a_kick_wakes_it_stops(db, tmp_path):
    """The daemon's stop cancels the reconciler just after the shutdown anchor
    kicked it. With asyncio.wait_for (Python 3.11) the finished wake-up
    swallowed the cancellation, the loop ran on and the stop waited for ever
    (seen once as a hung CI run)."""
    reconciler = Reconciler(db, LocalPinner(LocalBlockStore(str(tmp_path / "blocks"))), interval=60)
    task = asyncio.create_task(reconciler.run())
    await until(lambda: reconciler._wake._waiters, 5, "the reconciler to wait for its next pass")
    reconciler.kick()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
