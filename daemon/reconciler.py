"""The pin reconciler: the index says what should be pinned and at what
replication; this loop makes the backend agree and records what it saw.

Each pass takes the jobs whose time has come (those needing an action newest
first, then pins only being watched, longest overdue first): pending unpins
are carried out; pins not yet confirmed are (re)submitted — a degraded pin is
re-submitted so the Cluster re-allocates it, a failed one is recovered —
and then every due pin's status is read back in one batch, except those a
Cluster has just accepted (first checked a moment later: with crdt batching
they are not in its shared state yet). Failures back off
exponentially with jitter; confirmed pins are re-checked every
``verify_interval`` so a lost peer shows up as ``degraded``. ``attempts``
counts consecutive failures, or for a pin in progress, consecutive checks. All state lives
in the index, so a restart resumes where it stopped. We do not rely on
Cluster's own repinning (off by default).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback

from indexer import pins
from indexer.db import Database

from . import timeutil
from .blockstore.base import Pinner, PinStatus
from .cid import Cid
from .errors import BackendUnavailable, VaultError

log = logging.getLogger("medvault.reconciler")
STUCK_CHECKS = 60  # consecutive in-progress checks before a pin counts as stuck
FIRST_CHECK_DELAY = 0.25  # doubled at each check of a pin still in progress, up to ``interval``
_IN_PROGRESS = {"pinning", "pin_queued", "queued", "remote"}
_UNDER_WAY = {"pinning", "pin_queued", "queued"}  # a peer allocated the pin is still fetching it
_ERRORS = {"pin_error", "error", "cluster_error", "unexpectedly_unpinned", "unpin_error"}


def classify(state: PinStatus, replication_min: int) -> str:
    """The record-level status for what the backend reported."""
    if state.replicas >= replication_min:
        return "pinned"
    statuses = set(state.peers.values())
    if state.replicas > 0:
        # Short of replication-min while another peer is still pinning is progress, not a
        # loss: calling it degraded re-submitted it and backed off, and those backoffs were
        # the last 15 s of 10,000 pins (bench/README). A peer stuck there is recovered after
        # STUCK_CHECKS like any pin in progress.
        return "pinning" if statuses & _UNDER_WAY else "degraded"
    if statuses & _IN_PROGRESS:
        return "pinning"
    if statuses & _ERRORS or state.error:
        return "failed"
    return "queued"  # nothing held, nothing in progress: (re)submit it


def backoff(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter between half and all of the step."""
    step = min(cap, base * 2 ** max(0, attempts - 1))
    return step * (0.5 + random.random() / 2)


class Reconciler:
    def __init__(self, db: Database, pinner: Pinner, metrics=None, *, interval: float = 2.0,
                 verify_interval: float = 30.0, batch: int = 5000, concurrency: int = 16,
                 base_backoff: float = 1.0, max_backoff: float = 300.0):
        self.db = db
        self.pinner = pinner
        self.metrics = metrics
        self.interval = interval
        self.verify_interval = verify_interval
        self.batch = batch
        self.concurrency = concurrency
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Runs the next pass now (a new record, or an operator's recover)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            pause = self.interval
            try:
                outcome = await self.pass_once()
                if outcome.get("next") is not None:  # a job comes due before the interval ends
                    pause = max(0.05, min(pause, outcome["next"] - time.time()))
            except VaultError as exc:  # backend down: the jobs stay due, try again next pass
                log.warning("reconcile pass failed", extra={"code": exc.code})
            except Exception as exc:  # never let the loop die; frames only, messages may carry data
                log.error("reconcile pass crashed", extra={
                    "error_type": type(exc).__name__, "traceback": "".join(traceback.format_tb(exc.__traceback__))})
            await self._pause(pause)
            self._wake.clear()

    async def _pause(self, seconds: float) -> None:
        """Until ``kick`` or ``seconds``. Not ``asyncio.wait_for``: on Python
        3.11 it swallows a cancellation that arrives as the kick wakes it (it
        returns the finished wait's result), so a daemon stopping just after
        a kick (the audit anchor written at shutdown kicks) kept this loop
        running and its stop waited for ever; ``asyncio.wait`` lets the
        cancellation through."""
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({woken}, timeout=seconds)
        finally:
            woken.cancel()

    async def _bounded(self, jobs, action) -> list:
        """Runs ``action`` on every job, at most ``concurrency`` at a time;
        returns (job, error or None) for each. Once the backend is unreachable,
        jobs not yet started are not tried (each would fail the same way, after
        its retries) and the pass ends with BackendUnavailable: nothing is
        recorded, no attempt counted, every job stays due for the next pass."""
        gate = asyncio.Semaphore(self.concurrency)
        down: list[BackendUnavailable] = []

        async def one(job):
            async with gate:
                if down:
                    return job, down[0]
                try:
                    await action(job)
                    return job, None
                except BackendUnavailable as exc:
                    down.append(exc)
                    return job, exc
                except VaultError as exc:
                    return job, exc

        results = await asyncio.gather(*[one(job) for job in jobs])
        if down:
            raise down[0]
        return results

    async def pass_once(self) -> dict:
        """One reconciliation pass; returns how many jobs it settled."""
        now_ts = time.time()
        due = await self.db.read(pins.due, now_ts, self.batch)
        if not due:
            return {"due": 0}
        removals = [j for j in due if not j["desired"]]
        wanted = [j for j in due if j["desired"]]
        limit = self.pinner.max_replicas

        async def submit(job):
            cid = Cid.parse(job["cid"])
            if job["status"] == "failed" and job["attempts"]:
                await self.pinner.recover(cid, job["rmin"], job["rmax"])
            else:
                await self.pinner.pin(cid, job["rmin"], job["rmax"])

        # A pin already in progress is only checked, not re-submitted (re-submitting
        # thousands of in-progress pins each pass starved older ones: 10,000 pins
        # took 944 passes). One that stays in progress too long is recovered.
        to_submit = [j for j in wanted if j["status"] in ("queued", "degraded", "failed")
                     or (j["status"] == "pinning" and j["attempts"] >= STUCK_CHECKS)]
        submitted = await self._bounded(to_submit, submit)
        failed = {job["cid"]: exc for job, exc in submitted if exc}
        # A pin the Cluster just accepted is in progress: reading its status back at once cost
        # a status listing per pass and told nothing new. With crdt batching it was worse than
        # useless: the pin (or a re-submission) is not in the shared state until its batch
        # commits, so the read-back saw the state before it (a re-submitted degraded pin was
        # recorded pinned, then its peers re-queued it). It is first checked FIRST_CHECK_DELAY
        # after its window ends; attempts are carried, so one that fails again backs off further.
        accepted = {job["cid"] for job, exc in submitted if exc is None} if self.pinner.settles_later else set()
        accepted_at = time.time()
        removed = await self._bounded(removals, lambda job: self.pinner.unpin(Cid.parse(job["cid"])))
        check = [Cid.parse(j["cid"]) for j in wanted if j["cid"] not in failed and j["cid"] not in accepted]
        states = await self.pinner.statuses(check, await self.db.read(pins.population)) if check else {}

        now = timeutil.now()
        results = []
        for job in wanted:
            error = failed.get(job["cid"])
            if error is not None:
                attempts = job["attempts"] + 1
                results.append((job["cid"], "failed" if attempts >= 3 else job["status"], job["replicas"] or 0,
                                error.message, now_ts + backoff(attempts, self.base_backoff, self.max_backoff),
                                attempts))
                continue
            if job["cid"] in accepted:  # attempts carried: a pin the Cluster keeps losing still backs off
                results.append((job["cid"], "pinning", job["replicas"] or 0, None,
                                accepted_at + FIRST_CHECK_DELAY, job["attempts"]))
                continue
            state = states[Cid.parse(job["cid"])]
            status = classify(state, min(job["rmin"], limit))
            if status == "pinned":
                results.append((job["cid"], status, state.replicas, None, now_ts + self.verify_interval, 0))
            elif status == "pinning":
                checks = job["attempts"] + 1 if job["status"] == "pinning" else 0
                # New pins settle in well under a second; a backlog takes longer, and polling
                # thousands of them every 0.25 s took CPU from the very peers pinning them.
                delay = min(self.interval, FIRST_CHECK_DELAY * 2 ** checks)
                results.append((job["cid"], "failed" if checks > STUCK_CHECKS else status, state.replicas, None,
                                now_ts + delay, checks))
            else:  # degraded or failed: act again after a backoff
                attempts = job["attempts"] + 1
                results.append((job["cid"], status, state.replicas, state.error,
                                now_ts + backoff(attempts, self.base_backoff, self.max_backoff), attempts))
        gone = [job["cid"] for job, exc in removed if exc is None]
        retry = [(job["cid"], now_ts + backoff(job["attempts"] + 1, self.base_backoff, self.max_backoff))
                 for job, exc in removed if exc is not None]

        def commit(conn):
            for cid, status, replicas, error, next_attempt, attempts in results:
                pins.record_result(conn, cid, status, replicas, error, next_attempt, attempts, now)
            for cid in gone:
                pins.forget(conn, cid)
            for cid, next_attempt in retry:
                pins.postpone(conn, cid, next_attempt, now)

        await self.db.write(commit)
        upcoming = [r[4] for r in results] + [r[1] for r in retry]
        return {"due": len(due), "pinned": sum(1 for r in results if r[1] == "pinned"), "unpinned": len(gone),
                "next": min(upcoming) if upcoming else None}
