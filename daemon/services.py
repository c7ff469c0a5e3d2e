"""What every Vault component shares: the node's config, index, keystore,
block store, pinner and metrics, plus the few helpers they all need (the
caller's key, an audit entry, opening a record version, pin rows, releasing
blocks, per-record write locks). Built once by ``daemon.node`` and handed to
each component's constructor, so no component reaches into another.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from indexer import audit, pins, records
from indexer.db import Index
from indexer.sql import sqlite3

from . import crypto, timeutil
from .blocks import FormatError
from .blockstore.base import BlockStore, Pinner
from .blockstore.tracked import TrackedPuts
from .cid import Cid
from .config import Config
from .envelope import NotForUs, open_envelope
from .errors import Forbidden, IntegrityError, NotFound, VaultError, WorkerUnavailable
from .identity import Principal
from .keystore import KeyStore
from .manifest import Manifest, SignatureError, decode_manifest, open_metadata
from .metrics import Metrics
from .priority import bulk_pool
from .reader import walk
from .space import Space
from .worker import Worker, WorkerCrashed

log = logging.getLogger("medvault.vault")
MANIFEST_CACHE = 256


class RecordLocks:
    """One asyncio lock per record id: writes to one record (update, revoke
    with rotation, erase, grant, import) run one at a time, so a revoke can
    never interleave with a PUT that still seals for the revoked reader."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, *record_ids: str):
        ids = sorted(set(record_ids))  # a fixed order: two batch writers never deadlock
        taken = []
        try:
            for record_id in ids:
                lock, users = self._locks.get(record_id, (asyncio.Lock(), 0))
                self._locks[record_id] = (lock, users + 1)
                taken.append(record_id)
                await lock.acquire()
            yield
        finally:
            for record_id in reversed(taken):
                lock, users = self._locks[record_id]
                if lock.locked():
                    lock.release()
                if users <= 1:
                    del self._locks[record_id]
                else:
                    self._locks[record_id] = (lock, users - 1)


@dataclass
class OpenVersion:
    """A record version whose key is in hand. Holds the DEK: never logged
    (the repr shows only the manifest CID)."""

    manifest: Manifest
    dek: bytes = field(repr=False)
    body: dict = field(repr=False)

    def __repr__(self) -> str:
        return f"OpenVersion(manifest={self.manifest.cid})"


class Services:
    def __init__(self, config: Config, db: Index, keys: KeyStore, blocks: BlockStore, pinner: Pinner,
                 metrics: Metrics | None = None):
        self.config = config
        self.db = db
        self.keys = keys
        self.blocks = blocks
        self.pinner = pinner
        self.metrics = metrics or Metrics()
        self.cpu = bulk_pool(max(2, os.cpu_count() or 2), "seal")
        self.locks = RecordLocks()
        self.inflight: dict[int, float] = {}  # uploads in progress → start time (garbage collection spares them)
        self.space = Space(config.data_dir, config.min_free_bytes, config.reserve_bytes)
        self.reconciler = None  # set by the Vault when background work starts
        self.key_storage = "unknown"  # passphrase | key-file | beside-data (set by node.open_vault)
        self._manifests: OrderedDict[Cid, Manifest] = OrderedDict()  # decoded manifests never change
        self._worker = Worker()  # its process starts on the first call (the Vault's warm-up at start)

    async def off_loop(self, fn, *args):
        """Runs CPU work (decoding, parsing, signing) on the pool, so the event
        loop keeps answering other clients meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, fn, *args)

    async def off_process(self, fn, *args):
        """Runs CPU work that holds the GIL throughout (``json.loads`` of a
        16 MiB body is one C call: a thread would still stop the loop for its
        whole length) in the worker process (``daemon.worker``). A worker
        that died is a 503 for this request (it starts again for the next)."""
        try:
            return await self._worker.run(fn, *args)
        except WorkerCrashed:
            raise WorkerUnavailable("the parse worker stopped; retry the request") from None

    async def manifest(self, cid: Cid) -> Manifest:
        """The decoded manifest ``cid`` names, from a small LRU cache or
        fetched (verified against its CID by the store) and decoded off the loop."""
        cached = self._manifests.get(cid)
        if cached is not None:
            self._manifests.move_to_end(cid)
            return cached
        manifest = await self.off_loop(decode_manifest, cid, await self.blocks.get(cid))
        self._manifests[cid] = manifest
        if len(self._manifests) > MANIFEST_CACHE:
            self._manifests.popitem(last=False)
        return manifest

    def key_of(self, did: str) -> Principal:
        principal = self.keys.get(did)
        if principal is None:
            raise Forbidden("this node holds no key for the calling principal", "no_local_key")
        return principal

    async def audit(self, actor: str | None, action: str, record: str | None, outcome: str,
                    detail: dict | None = None) -> None:
        await self.db.write(audit.append, timeutil.now(), actor, action, record, outcome, detail)

    async def audit_access(self, actor: str | None, action: str, record: str | None, outcome: str,
                           detail: dict | None = None) -> None:
        """The audit entry of a read or a refusal, which changes no state:
        committed before the caller is answered, fsync'd and chained moments
        later (``Index.audit_reads``; docs/DECISIONS.md "Read audits")."""
        await self.db.audit_reads([(timeutil.now(), actor, action, record, outcome, detail)])

    # ---- pins -----------------------------------------------------------

    @property
    def initial_pin(self) -> tuple[str, int]:
        """The pin status a freshly protected root starts with."""
        return ("pinned", 1) if self.pinner.pinned_on_protect else ("queued", 0)

    def want_pins(self, conn: sqlite3.Connection, roots: list[tuple[str, str]], record_id: str | None, now: str,
                  first_look: float = 0) -> None:
        """Desired pins for (cid, kind) roots, in the caller's transaction (no record: an audit anchor)."""
        status, replicas = self.initial_pin
        cfg = self.config
        for cid, kind in roots:
            pins.want(conn, cid, record_id, kind, cfg.replication_min, cfg.replication_max, now, status, replicas,
                      first_look)

    def kick_reconciler(self) -> None:
        if self.reconciler is not None and not self.pinner.pinned_on_protect:
            self.reconciler.kick()

    # ---- opening a version ----------------------------------------------

    async def open_version(self, did: str, row: dict, emergency: bool = False,
                           envelope: dict | None = None) -> OpenVersion:
        """Opens ``did``'s live envelope for the record's current manifest
        (``envelope``: that row, when the caller just read it with others),
        then the manifest; checks both signatures and that the manifest is
        the version the index row describes."""
        if envelope is None:
            envelope = await self.db.read(records.live_envelope, row["cid"], did, timeutil.now(), emergency)
        if envelope is None or envelope["manifest"] != row["cid"] or envelope["recipient"] != did:
            raise NotFound("no such record", "record_not_found")
        try:
            env_cid = Cid.parse(envelope["cid"])
            grant = open_envelope(env_cid, await self.blocks.get(env_cid), self.key_of(did))
            if str(grant.manifest) != row["cid"]:
                raise IntegrityError("the envelope points at another manifest")
            manifest = await self.manifest(grant.manifest)
            body = await self.off_loop(open_metadata, manifest, grant.dek)
        except (FormatError, SignatureError, NotForUs, crypto.DecryptError):
            raise IntegrityError("the record's envelope or manifest failed verification") from None
        if body.get("record") != row["id"] or body.get("version") != row["version"]:
            raise IntegrityError("the manifest belongs to another record or version")
        return OpenVersion(manifest, grant.dek, body)

    # ---- releasing blocks -----------------------------------------------

    async def blocks_of_manifest(self, manifest_cid: Cid) -> list[Cid]:
        """The manifest, its link blocks and chunks (best effort: what cannot be read is skipped)."""
        try:
            manifest = await self.manifest(manifest_cid)
            link_blocks, chunks = await walk(manifest, self.blocks, self.cpu)
            return [manifest_cid, *link_blocks, *chunks]
        except (VaultError, FormatError):
            return [manifest_cid]

    async def release(self, pinned: list[str], doomed: list[Cid]) -> None:
        """Unpins and deletes what an erase or rotation dropped; what fails
        here the reconciler retries (the pin rows already say 'unwanted')."""
        try:
            roots = [Cid.parse(c) for c in pinned]
            await self.blocks.release(roots)
            for cid in roots:
                await self.pinner.unpin(cid)
            await self.blocks.delete_many(doomed)  # before the writes below: on a full disk it frees the space
            for cid in roots:
                await self.db.write(pins.forget, str(cid))
        except (VaultError, sqlite3.Error) as exc:
            log.warning("release left work for the reconciler",
                        extra={"error": getattr(exc, "code", type(exc).__name__)})

    # ---- uploads in flight ----------------------------------------------

    @asynccontextmanager
    async def upload(self, marker: object) -> AsyncIterator[TrackedPuts]:
        """Marks an upload in progress so garbage collection spares its blocks
        (keep the index commit inside: only committed blocks are live), and
        hands out the block store through a TrackedPuts. If the upload fails
        or is cut off, everything it stored is unpinned and deleted."""
        self.space.require()
        tracked = TrackedPuts(self.blocks)
        async with self.in_flight(marker):
            try:
                yield tracked
            except BaseException:
                await self._abandon(tracked)
                raise

    @asynccontextmanager
    async def in_flight(self, marker: object) -> AsyncIterator[None]:
        """Garbage collection spares blocks stored from now until the block
        leaves: keep the index commit that makes them live inside."""
        key = id(marker)
        self.inflight[key] = time.time()
        try:
            yield
        finally:
            self.inflight.pop(key, None)

    async def _abandon(self, tracked: TrackedPuts) -> None:
        async def discard() -> None:
            await tracked.settle()  # a put still on a thread would write its block after the delete
            if tracked.roots:
                await self.blocks.release(tracked.roots)
            await self.blocks.delete_many(tracked.put)

        try:
            await asyncio.shield(discard())  # finishes even if the request task is being cancelled
            log.info("upload abandoned; its blocks were removed", extra={"blocks": len(tracked.put)})
        except (asyncio.CancelledError, VaultError, OSError) as exc:
            log.warning("upload abandoned; gc will remove its blocks", extra={"error": type(exc).__name__})

    def close(self) -> None:
        self.cpu.shutdown(wait=True)
        self._worker.close()
