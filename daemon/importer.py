"""Bringing records in from elsewhere: share tokens (through this node's own
IPFS, from the granting node over the swarm) and CAR archives (no network at
all), and writing a patient's records out as a CAR. A mixin of the Vault.

An import checks everything before it writes anything: the envelope must
point at the manifest the token names, open with the caller's key, carry a
valid signature from the record's author or patient, and not be expired; the
manifest must open and verify under the author's signature; every chunk must
fetch, hash and authenticate. Only then are the blocks pinned and the record
indexed, in one commit. A refused import leaves no row and no pin.
"""
from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

from indexer import audit, pins, records

from . import car, crypto, timeutil
from .auth import Caller
from .blocks import Block, FormatError
from .cid import Cid
from .envelope import NotForUs, envelope_manifest, open_envelope
from .errors import BadRequest, BlockNotFound, Forbidden, IntegrityError, InvalidRecord, NotFound
from .manifest import SignatureError, decode_manifest, open_metadata
from .reader import chunk_cids, plaintext
from .sharing import parse_share
from .views import did_param, record_view, role_of, row_from_metadata

_CAR_BATCH = 32


class ImportMixin:
    async def _fetch(self, cid: Cid, what: str) -> bytes:
        try:
            return await self.blocks.get(cid)
        except BlockNotFound:
            raise NotFound(f"the {what} could not be fetched from IPFS", "share_not_found") from None

    async def _import_envelope(self, caller: Caller, envelope_cid: Cid, expected_manifest: Cid | None = None,
                               source: str = "share") -> dict:
        principal = self._key_of(caller.did)
        data = await self._fetch(envelope_cid, "envelope")
        try:
            manifest_cid, _ = envelope_manifest(envelope_cid, data)
        except FormatError:
            raise InvalidRecord("the share does not point at a medvault envelope", "bad_envelope") from None
        if expected_manifest is not None and manifest_cid != expected_manifest:
            raise InvalidRecord("the envelope belongs to another manifest than the token names", "share_mismatch")
        try:
            grant = open_envelope(envelope_cid, data, principal)
        except NotForUs:
            raise Forbidden("this share is not addressed to you", "not_recipient") from None
        except (SignatureError, FormatError):
            raise InvalidRecord("the envelope's signature or contents are invalid", "bad_envelope") from None
        now = timeutil.now()
        if grant.expires is not None and grant.expires <= now:
            raise Forbidden("this grant has expired", "grant_expired")
        try:
            manifest = decode_manifest(manifest_cid, await self._fetch(manifest_cid, "manifest"))
            body = open_metadata(manifest, grant.dek)
        except (FormatError, SignatureError, crypto.DecryptError):
            raise InvalidRecord("the record's manifest fails to open or verify", "bad_manifest") from None
        if grant.granter not in (body.get("author"), body.get("patient")):
            raise Forbidden("the grant was not made by the record's author or patient", "untrusted_granter")
        async for _ in plaintext(manifest, grant.dek, body["size"], self.blocks, self.cpu,
                                 prefetch=self.config.read_prefetch):
            pass  # every chunk fetched, hashed and authenticated; nothing kept
        return await self._index_import(caller, grant, manifest, body, source)

    async def _index_import(self, caller: Caller, grant, manifest, body: dict, source: str) -> dict:
        record_id, version = body["record"], body["version"]
        existing = await self.db.read(records.find, record_id)
        if existing is not None and existing["version"] > version:
            raise BadRequest("this node already holds a newer version of the record", "stale_share")
        await self.blocks.protect([manifest.cid, grant.envelope])
        now = timeutil.now()
        row = row_from_metadata(body, str(manifest.cid), existing["created"] if existing else None)
        role = role_of(caller.did, body)
        envelope = {"cid": str(grant.envelope), "record_id": record_id, "version": version,
                    "recipient": caller.did, "granter": grant.granter, "role": role, "granted": grant.granted,
                    "expires": grant.expires}
        confirmed = self.pinner.pinned_on_protect
        status, replicas = ("pinned", 1) if confirmed else ("queued", 0)
        cfg = self.config

        def commit(conn: sqlite3.Connection) -> None:
            if existing is None or existing["version"] < version:
                records.save_version(conn, row, [], [tuple(c) for c in body.get("codes") or []],
                                     new=existing is None)
            records.add_envelopes(conn, [envelope])
            for cid, kind in ((row["cid"], "manifest"), (envelope["cid"], "envelope")):
                pins.want(conn, cid, record_id, kind, cfg.replication_min, cfg.replication_max, now, status, replicas)
            audit.append(conn, now, caller.did, "import", record_id, "ok",
                         {"version": version, "via": source, "granter": grant.granter})

        await self.db.write(commit)
        if self.reconciler is not None and not confirmed:
            self.reconciler.kick()
        fresh = await self.db.read(records.readable, record_id, caller.did, now)
        return record_view(fresh)

    async def import_share(self, caller: Caller, share) -> dict:
        manifest_cid, envelope_cid = parse_share(share)
        try:
            return await self._import_envelope(caller, envelope_cid, manifest_cid)
        except (Forbidden, InvalidRecord, NotFound, IntegrityError) as exc:
            await self._audit(caller.did, "import", None, "denied", {"code": exc.code})
            raise

    # ---- CAR ------------------------------------------------------------

    async def export_car(self, caller: Caller, patient) -> tuple[int, AsyncIterator[bytes]]:
        """Every block of the patient's records the caller can read (current
        versions, all their envelopes) as a CAR; roots are the envelopes."""
        patient = did_param(patient, "patient")
        rows, before = [], None
        while True:
            page, before = await self.db.read(records.search, caller.did, timeutil.now(), patient=patient,
                                              before_seq=before, limit=1000)
            rows.extend(page)
            if before is None:
                break
        envelopes = []
        for row in rows:
            envelopes.extend(e["cid"] for e in await self.db.read(records.live_grants, row["id"], row["version"],
                                                                  timeutil.now()))
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            for row in rows:
                audit.append(conn, now, caller.did, "export", row["id"], "ok", {"version": row["version"]})

        await self.db.write(commit)
        roots = [Cid.parse(c) for c in envelopes]

        async def stream() -> AsyncIterator[bytes]:
            yield car.header(roots)
            for cid in roots:
                yield car.frame(Block(cid, await self.blocks.get(cid)))
            for row in rows:
                manifest_cid = Cid.parse(row["cid"])
                data = await self.blocks.get(manifest_cid)
                yield car.frame(Block(manifest_cid, data))
                manifest = decode_manifest(manifest_cid, data)
                level = list(manifest.links)
                for _ in range(manifest.depth):  # link blocks, then (below) the chunks
                    for link in level:
                        yield car.frame(Block(link, await self.blocks.get(link)))
                for chunk in await chunk_cids(manifest, self.blocks):
                    yield car.frame(Block(chunk, await self.blocks.get(chunk)))

        return len(rows), stream()

    async def import_car(self, caller: Caller, source: AsyncIterator[bytes]) -> dict:
        """Stores every (verified) block of a CAR, then imports each root
        envelope addressed to the caller; others are counted as skipped."""
        try:
            roots, blocks = await car.read(source)
            batch: list[Block] = []
            async for block in blocks:
                batch.append(block)
                if len(batch) >= _CAR_BATCH:
                    await self.blocks.put_many(batch)
                    batch = []
            await self.blocks.put_many(batch)
        except FormatError as exc:
            raise BadRequest(f"not a valid CAR file: {exc}", "bad_car") from None
        await self.blocks.sync()
        imported, skipped = [], 0
        for root in roots:
            try:
                imported.append(await self._import_envelope(caller, root, source="car"))
            except (Forbidden, InvalidRecord, NotFound, BadRequest):
                skipped += 1  # addressed to someone else, or not an importable record
        return {"items": imported, "skipped": skipped}
