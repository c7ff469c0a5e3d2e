"""Anchoring the audit chain outside the index, and verifying it against
the anchors (a Vault component).

Once ``audit_anchor_every`` entries wait, or once the oldest unanchored entry is
``audit_anchor_minutes`` old, the next segment of the chain is written as an
anchor block (daemon/audit_anchor.py: signed by the node, sealed to the
owner, linked to the previous anchor) and pinned like a record: its pin job
is a row of the index (kind ``anchor``), so the reconciler replicates it on
a Cluster and garbage collection keeps it. The newest anchor's CID is kept
in the index and in a pointer file signed by the node key
(``audit-anchor.json`` in the data dir), which ``reindex`` reads after the
index is lost.

``verify`` recomputes the local chain and then walks the anchors from the
newest back to the first, checking each one's signature and links and
comparing its entries with the local rows. A local chain edited and rehashed
verifies by itself but differs from the anchors: ``broken_at`` names the
first entry that differs. Entries after the newest anchor are reported as
``unanchored``, not as tampered; an anchor that cannot be fetched is
``unreachable``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import timedelta

import dag_cbor

from indexer import anchors as anchor_rows, audit
from indexer.sql import sqlite3

from . import timeutil
from .audit_anchor import MAX_ENTRIES, SEGMENT_BYTES, Anchor, build_anchor, follows, open_anchor, row_entry
from .blocks import FormatError
from .cid import Cid
from .errors import VaultError
from .fsutil import atomic_write
from .identity import Principal, verify as verify_signature
from .manifest import SignatureError, canonical_json

log = logging.getLogger("medvault.anchors")
POINTER_FILE = "audit-anchor.json"
_POINTER_DOMAIN = b"medvault/v1/audit-pointer-sig\x00"
_POLL_SECONDS = 5.0


class PointerError(Exception):
    """The pointer file is there but is not one this node signed."""


def anchor_keys(keys) -> tuple[Principal, Principal]:
    """(the node key that signs anchors, the owner they are sealed to)."""
    node = keys.principals(role="node")[0]
    owner = next((p for p in keys.principals() if p.name == "owner"), node)
    return node, owner


def write_pointer(data_dir: str, node: Principal, cid: Cid, last: int) -> None:
    signed = {"cid": str(cid), "last": last}
    sig = node.sign(_POINTER_DOMAIN + canonical_json(signed))
    atomic_write(os.path.join(data_dir, POINTER_FILE),
                 json.dumps({"v": 1, **signed, "sig": sig.hex()}).encode() + b"\n", 0o600)


def read_pointer(data_dir: str, node_did: str) -> tuple[Cid, int] | None:
    """(newest anchor CID, its last seq) from the pointer file; None when
    there is none; PointerError when it is malformed or not the node's."""
    try:
        with open(os.path.join(data_dir, POINTER_FILE), "rb") as handle:
            doc = json.loads(handle.read(4096))
        cid, last, sig = Cid.parse(doc["cid"]), doc["last"], bytes.fromhex(doc["sig"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise PointerError("the audit anchor pointer file is malformed") from None
    if type(last) is not int or not verify_signature(
            node_did, _POINTER_DOMAIN + canonical_json({"cid": str(cid), "last": last}), sig):
        raise PointerError("the audit anchor pointer file is not signed by this node")
    return cid, last


def _segment(rows: list[dict]) -> list[dict]:
    """The longest prefix of ``rows`` whose anchor stays under SEGMENT_BYTES."""
    total = 0
    for i, row in enumerate(rows):
        total += len(dag_cbor.encode(row_entry(row)))
        if total > SEGMENT_BYTES and i > 0:
            return rows[:i]
    return rows


class AuditAnchors:
    def __init__(self, services):
        self._s = services
        self._lock = asyncio.Lock()

    # ---- writing --------------------------------------------------------

    async def anchor_due(self, force: bool = False) -> int:
        """Anchors what is due (``force``: everything not yet anchored): once
        ``audit_anchor_every`` entries wait (or the oldest is old), all that
        wait, at most MAX_ENTRIES (and a block's size) per anchor; returns
        how many anchors were written."""
        s, cfg = self._s, self._s.config
        written = 0
        if force:
            await s.db.flush_audit()  # a clean stop anchors the reads audited a moment ago too
        async with self._lock:
            while True:
                latest = await s.db.read(anchor_rows.latest)
                after, prev_head = (latest["last_seq"], latest["head"]) if latest else (0, audit.GENESIS)
                # Everything due goes into one anchor (up to the block's limits), not
                # segments of audit_anchor_every: a burst of reads is a few anchors,
                # each a block sync and a durable commit, not dozens.
                rows = await s.db.read(audit.rows, after + 1, after + MAX_ENTRIES)
                if not rows or not (force or len(rows) >= cfg.audit_anchor_every or self._old(rows[0])):
                    return written
                rows = _segment(rows)
                if not _continues(rows, prev_head):
                    log.error("the local audit chain does not continue its last anchor: not anchoring it")
                    return written
                await self._write(Cid.parse(latest["cid"]) if latest else None, rows, prev_head)
                written += 1

    def _old(self, row: dict) -> bool:
        limit = timeutil.clock() - timedelta(minutes=self._s.config.audit_anchor_minutes)
        return row["time"] <= timeutil.format_time(limit)

    async def _write(self, prev: Cid | None, rows: list[dict], prev_head: str) -> None:
        """Stores, pins and records one anchor; the pointer file last (a crash
        before it leaves the pointer one anchor behind, which reindex handles).
        Like an upload, it is refused while the disk is below ``min_free_bytes``
        (the loop retries)."""
        s = self._s
        node, owner = anchor_keys(s.keys)
        await s.db.flush()  # read audits commit relaxed: an anchor names only entries already on disk
        block = await s.off_loop(build_anchor, prev, rows, prev_head, node, owner.did)
        # As an upload: gc spares the block until its pin job commits, and a
        # failure before that unpins and deletes it (no orphan pin in Kubo).
        async with s.upload(block) as store:
            await store.put_many([block])
            await s.blocks.sync()
            await store.protect([block.cid])
            first_look = time.time() + s.config.verify_interval if s.pinner.pinned_on_protect else 0
            now = timeutil.now()

            def commit(conn: sqlite3.Connection) -> None:
                anchor_rows.add(conn, str(block.cid), None if prev is None else str(prev), rows[0]["seq"],
                                rows[-1]["seq"], rows[-1]["hash"], now)
                s.want_pins(conn, [(str(block.cid), "anchor")], None, now, first_look)

            await s.db.write(commit)
        await asyncio.to_thread(write_pointer, s.config.data_dir, node, block.cid, rows[-1]["seq"])
        s.kick_reconciler()
        log.info("audit anchored", extra={"first": rows[0]["seq"], "last": rows[-1]["seq"]})

    async def run(self) -> None:
        """The background loop: anchors whatever is due every few seconds."""
        poll = min(_POLL_SECONDS, self._s.config.audit_anchor_minutes * 60)
        while True:
            try:
                await self.anchor_due()
            except (VaultError, sqlite3.Error, OSError) as exc:
                log.warning("anchoring the audit chain failed; retrying",
                            extra={"error": getattr(exc, "code", type(exc).__name__)})
            await asyncio.sleep(poll)

    # ---- verifying ------------------------------------------------------

    async def verify(self) -> dict:
        """The local chain recomputed, then checked against the anchors:
        ``{"ok", "count", "head", "broken_at", "anchors": {...}}``."""
        db = self._s.db
        await db.flush_audit()
        state = await db.read_long(audit.verify_page, None)  # a page per read transaction
        while not state["done"]:
            state = await db.read_long(audit.verify_page, state)
        result = audit.verification(state)
        report, mismatch = await self._check_anchors(result["count"])
        if mismatch is not None:
            result["broken_at"] = min(mismatch, result["broken_at"] or mismatch)
        result["ok"] = result["broken_at"] is None and report["status"] in ("ok", "none")
        result["anchors"] = report
        return result

    async def _check_anchors(self, count: int) -> tuple[dict, int | None]:
        s = self._s
        node, owner = anchor_keys(s.keys)
        report = {"status": "ok", "latest": None, "verified": 0, "anchored": 0, "unanchored": count, "error": None}
        try:
            pointer = await asyncio.to_thread(read_pointer, s.config.data_dir, node.did)
        except PointerError as exc:
            return {**report, "status": "invalid", "error": str(exc)}, None
        row = await s.db.read_long(anchor_rows.latest)  # verify stays off the request readers throughout
        known = [p for p in (pointer, row and (Cid.parse(row["cid"]), row["last_seq"])) if p]
        if not known:
            # Nothing anchored: fine for a young chain, not for one the writer should have anchored.
            missing = count > s.config.audit_anchor_every
            return {**report, "status": "missing" if missing else "none",
                    "error": "no anchor, yet more entries than one segment" if missing else None}, None
        latest, anchored = max(known, key=lambda p: p[1])
        report.update(latest=str(latest), anchored=anchored, unanchored=max(0, count - anchored))
        mismatch, later, cid = None, None, latest
        while cid is not None:
            try:
                anchor = await s.off_loop(open_anchor, cid, await s.blocks.get(cid), owner, node.did)
            except VaultError:
                return {**report, "status": "unreachable",
                        "error": f"anchor {report['verified'] + 1} back from the newest could not be fetched"}, None
            except (FormatError, SignatureError) as exc:
                return {**report, "status": "invalid", "error": f"an anchor does not verify: {exc}"}, None
            if later is None and anchor.last != anchored:
                return {**report, "status": "invalid", "error": "the newest anchor does not end where recorded"}, None
            if later is not None and not follows(later, anchor):
                return {**report, "status": "invalid", "error": "an anchor's prev link does not match"}, None
            differs = await self._first_difference(anchor)
            mismatch = differs if differs is not None else mismatch
            report["verified"] += 1
            later, cid = anchor, anchor.prev
        if not follows(later, None):
            return {**report, "status": "invalid", "error": "the oldest anchor does not start the chain"}, None
        if mismatch is not None:
            report.update(status="mismatch", error="the local chain differs from its anchors")
        return report, mismatch

    async def _first_difference(self, anchor: Anchor) -> int | None:
        """The first seq the local rows differ from (or lack) in ``anchor``."""
        local = await self._s.db.read_long(audit.rows, anchor.first, anchor.last)
        for i, entry in enumerate(anchor.entries):
            if i >= len(local) or tuple(row_entry(local[i])) != entry:
                return anchor.first + i
        return None


def _continues(rows: list[dict], prev_head: str) -> bool:
    """Whether ``rows`` chain on from ``prev_head`` (nothing tampered is anchored)."""
    for row in rows:
        if row["prev"] != prev_head or audit.entry_hash(prev_head, row) != row["hash"]:
            return False
        prev_head = row["hash"]
    return True


async def recover_chain(found: dict[Cid, Anchor], pointer: tuple[Cid, int] | None, get, owner: Principal,
                        node_did: str) -> list[Anchor]:
    """The longest complete anchor chain (oldest first) ending at the pointer
    file's anchor or at any anchor found pinned, for ``reindex``. A link that
    is missing or does not verify disqualifies the chain it is part of; []
    when no chain reaches back to the first anchor."""
    heads = sorted(found.values(), key=lambda a: a.last, reverse=True)
    if pointer is not None and pointer[0] not in found:
        try:
            heads.insert(0, open_anchor(pointer[0], await get(pointer[0]), owner, node_did))
        except (VaultError, FormatError, SignatureError):
            log.warning("the anchor the pointer file names cannot be read; trying the pinned ones")
    heads.sort(key=lambda a: a.last, reverse=True)
    for head in heads:
        chain, anchor = [head], head
        try:
            while anchor.prev is not None:
                earlier = found.get(anchor.prev) or open_anchor(anchor.prev, await get(anchor.prev), owner,
                                                                 node_did)
                if not follows(anchor, earlier):
                    raise FormatError("broken link")
                chain.append(earlier)
                anchor = earlier
        except (VaultError, FormatError, SignatureError):
            continue
        if follows(anchor, None):
            return chain[::-1]
    return []
