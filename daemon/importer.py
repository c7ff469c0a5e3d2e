"""Bringing records in from elsewhere: share tokens (through this node's own
IPFS, from the granting node over the swarm) and CAR archives (no network at
all), and writing a patient's records out as a CAR (a Vault component).

Everything from outside is hostile until verified, and nothing is stored
before all of it is: the envelope must open with the caller's key and carry
a valid signature from the record's author or patient, and not be expired;
the manifest must decode strictly, open and verify under its author's
signature; every link block and chunk must be present, match its CID and
authenticate. Then the access policy decides whether the version may enter
this node (a new record, or the exact continuation of the one we hold by one
of its writers); only then are blocks stored, pinned and indexed, under the
record's lock and in one commit. A refused import leaves no block, pin or
row behind, only an audit entry.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from indexer import audit, pins, records, search
from indexer.sql import sqlite3

from . import car, crypto, timeutil
from .access import AccessPolicy, Action, Incoming, RecordFacts, allowed, facts_in
from .auth import Caller
from .blocks import Block, FormatError
from .cid import Cid
from .envelope import Grant, NotForUs, envelope_manifest, open_envelope
from .errors import (BadRequest, BlockNotFound, Forbidden, IntegrityError, InvalidRecord, NotFound,
                     VaultError)
from .manifest import Manifest, SignatureError, decode_manifest, open_metadata
from .metadata import MetadataError
from .reader import plaintext, walk
from .sharing import parse_share
from .spool import CarSpool, FetchTracker
from .views import did_param, record_view, row_from_metadata

_STORE_BATCH = 32


@dataclass
class Verified:
    """An envelope addressed to the caller whose whole record version checked out."""

    grant: Grant
    manifest: Manifest
    body: dict
    cids: list[Cid]  # every block the version needs: envelope, manifest, link blocks, chunks

    def incoming(self, revoked: set[str]) -> Incoming:
        b = self.body
        return Incoming(str(self.manifest.cid), b["record"], b["version"], b["prev"], b.get("patient"), b["author"],
                        str(self.grant.envelope) in revoked)


def _bad_metadata(exc: FormatError) -> InvalidRecord:
    """422 naming the field: ``bad_metadata`` for the signed body, ``bad_manifest`` for the manifest itself."""
    path = getattr(exc, "path", None)
    if isinstance(exc, MetadataError):
        return InvalidRecord(f"the record's signed metadata is invalid at {path}", "bad_metadata")
    if path:
        return InvalidRecord(f"the record's manifest is invalid at {path}", "bad_manifest")
    return InvalidRecord("the record's manifest fails to decode, open or verify", "bad_manifest")


class Imports:
    def __init__(self, services, access: AccessPolicy):
        self._s = services
        self._access = access

    # ---- verification (nothing stored) ----------------------------------

    async def _verify(self, caller: Caller, source, envelope_cid: Cid, missing: Callable[[], VaultError],
                      expected_manifest: Cid | None = None) -> Verified:
        """Checks one envelope and everything it reaches, reading from ``source``."""
        principal = self._s.key_of(caller.did)

        async def get(cid: Cid) -> bytes:
            try:
                return await source.get(cid)
            except BlockNotFound:
                raise missing() from None

        data = await get(envelope_cid)
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
        try:  # stored in the canonical form: expiry is compared as text in SQL
            grant = replace(grant, granted=timeutil.parse_time(grant.granted),
                            expires=None if grant.expires is None else timeutil.parse_time(grant.expires))
        except (ValueError, OverflowError):
            raise InvalidRecord("the envelope's times are not RFC 3339", "bad_envelope") from None
        if grant.expires is not None and grant.expires <= timeutil.now():
            raise Forbidden("this grant has expired", "grant_expired")
        try:
            manifest = await self._s.off_loop(decode_manifest, manifest_cid, await get(manifest_cid))
            body = await self._s.off_loop(open_metadata, manifest, grant.dek)
        except FormatError as exc:
            raise _bad_metadata(exc) from None
        except (SignatureError, crypto.DecryptError):
            raise InvalidRecord("the record's manifest fails to open or verify", "bad_manifest") from None
        if grant.granter not in (body["author"], body.get("patient")):
            raise Forbidden("the grant was not made by the record's author or patient", "untrusted_granter")
        try:
            link_blocks, chunks = await walk(manifest, _Getter(get), self._s.cpu)
            async for _ in plaintext(manifest, grant.dek, body["size"], _Getter(get), self._s.cpu,
                                     prefetch=self._s.config.read_prefetch):
                pass  # every chunk fetched, hashed and authenticated; nothing kept
        except FormatError:
            raise InvalidRecord("the record's link blocks are malformed", "bad_manifest") from None
        except IntegrityError:
            raise InvalidRecord("the record's content fails to authenticate", "bad_content") from None
        return Verified(grant, manifest, body, [envelope_cid, manifest_cid, *link_blocks, *chunks])

    # ---- admission (decided, then stored, in one commit) -----------------

    async def _admit(self, caller: Caller, items: list[Verified], via: str, spool: CarSpool | None = None) -> list:
        s = self._s
        items = sorted(items, key=lambda v: (v.body["record"], v.body["version"]))  # a CAR may hold v1 and v2
        ids = [v.body["record"] for v in items]
        async with s.locks.hold(*ids), s.in_flight(items):  # gc spares the blocks stored here until committed
            now = timeutil.now()
            envelopes = [str(v.grant.envelope) for v in items]
            decisions, revoked = await s.db.read(lambda conn: (
                [(v, facts_in(conn, v.body["record"], caller.did, now)) for v in items],
                records.revoked_envelopes(conn, envelopes)))
            for verified, facts in decisions:
                error = allowed(verified.body["author"], Action.IMPORT, facts, incoming=verified.incoming(revoked))
                if error is not None:
                    raise error
            if spool is not None:
                wanted = list(dict.fromkeys(c for v in items for c in v.cids))
                for start in range(0, len(wanted), _STORE_BATCH):
                    await s.blocks.put_many(await spool.blocks(wanted[start:start + _STORE_BATCH]))
                await s.blocks.sync()
            roots = list(dict.fromkeys(c for v in items for c in v.cids[:2]))  # envelopes and manifests
            known = set(await s.db.read(lambda conn: [c for c in roots if pins.get(conn, str(c))]))
            await s.blocks.protect(roots)

            def commit(conn: sqlite3.Connection) -> list[str]:
                for verified in items:
                    self._index(conn, caller, verified, via)
                return ids

            try:
                await s.db.write(commit)
            except BaseException:
                await s.blocks.release([c for c in roots if c not in known])  # nothing of ours pinned stays
                raise
        s.kick_reconciler()
        rows = await s.db.read(lambda conn: [records.readable(conn, i, caller.did, now) for i in dict.fromkeys(ids)])
        return [record_view(r) for r in rows if r is not None]

    def _index(self, conn: sqlite3.Connection, caller: Caller, verified: Verified, via: str) -> None:
        """Indexes one admitted version, deciding again inside the transaction."""
        body, manifest_cid = verified.body, str(verified.manifest.cid)
        now = timeutil.now()
        facts: RecordFacts | None = facts_in(conn, body["record"], caller.did, now)
        revoked = records.revoked_envelopes(conn, [str(verified.grant.envelope)])
        error = allowed(body["author"], Action.IMPORT, facts, incoming=verified.incoming(revoked))
        if error is not None:
            raise error
        codes = [tuple(c) for c in body.get("codes") or []]
        if facts is None:
            row = row_from_metadata(body, manifest_cid)
            records.save_version(conn, row, [], codes, roles=[(body["author"], "creator"),
                                                              (body.get("patient"), "patient")])
            patient = body.get("patient")
        elif body["version"] == facts.row["version"] + 1:
            row = row_from_metadata(body, manifest_cid, facts.row["created"])
            records.save_version(conn, row, [], codes, prev_cid=facts.row["cid"])
            patient = facts.patient
        else:
            patient = facts.patient  # another envelope for the version we hold
        roles = records.roles(conn, body["record"]).get(caller.did, set())
        role = "patient" if caller.did == patient else "author" if roles & {"creator", "writer"} else "grant"
        grant = verified.grant
        records.add_envelopes(conn, [{"cid": str(grant.envelope), "record_id": body["record"],
                                      "version": body["version"], "manifest": manifest_cid,
                                      "recipient": caller.did, "granter": grant.granter, "role": role,
                                      "granted": grant.granted, "expires": grant.expires}])
        self._s.want_pins(conn, [(manifest_cid, "manifest"), (str(grant.envelope), "envelope")], body["record"],
                          now)
        audit.append(conn, now, caller.did, "import", body["record"], "ok",
                     {"version": body["version"], "via": via, "granter": grant.granter})

    async def _refused(self, caller: Caller, exc: VaultError, via: str) -> None:
        await self._s.audit_access(caller.did, "import", None, "denied", {"code": exc.code, "via": via})

    # ---- share tokens -----------------------------------------------------

    async def import_share(self, caller: Caller, share) -> dict:
        manifest_cid, envelope_cid = parse_share(share)
        tracker = FetchTracker(self._s.blocks)
        try:
            verified = await self._verify(
                caller, tracker, envelope_cid,
                lambda: NotFound("a block of the share could not be fetched from IPFS", "share_not_found"),
                manifest_cid)
            return (await self._admit(caller, [verified], "share"))[0]
        except VaultError as exc:
            await tracker.discard()
            await self._refused(caller, exc, "share")
            raise

    # ---- CAR ------------------------------------------------------------

    async def import_car(self, caller: Caller, source: AsyncIterator[bytes]) -> dict:
        """Imports every root envelope of a CAR addressed to the caller, all or
        nothing: roots sealed to others are counted as skipped; any root
        addressed to the caller that fails verification or authority refuses
        the whole archive. Only blocks reachable from accepted roots are stored."""
        spool = CarSpool(os.path.join(self._s.config.data_dir, "tmp"))
        try:
            try:
                await spool.fill(source, self._s.config.max_car_bytes)
            except FormatError as exc:
                raise BadRequest(f"not a valid CAR file: {exc}", "bad_car") from None
            verified, skipped = [], 0
            for root in dict.fromkeys(spool.roots):
                try:
                    verified.append(await self._verify(
                        caller, spool, root,
                        lambda: InvalidRecord("the CAR file lacks a block its records need", "incomplete_car")))
                except Forbidden as exc:
                    if exc.code != "not_recipient":
                        raise
                    skipped += 1  # sealed to someone else
            imported = await self._admit(caller, verified, "car", spool) if verified else []
            return {"items": imported, "skipped": skipped}
        except VaultError as exc:
            await self._refused(caller, exc, "car")
            raise
        finally:
            spool.close()

    async def export_car(self, caller: Caller, patient) -> tuple[int, AsyncIterator[bytes]]:
        """Every block of the patient's records the caller can read (current
        versions, all their live envelopes) as a CAR; roots are the envelopes."""
        s = self._s
        patient = did_param(patient, "patient")
        query = search.Query(caller.did, timeutil.now(), caller.has("emergency"), refs=[[search.Term(patient)]],
                             limit=1000)
        rows = []
        while True:
            page, query.after = await s.db.read(search.run, query)
            rows.extend(page)
            if query.after is None:
                break
        envelopes = []
        for row in rows:
            envelopes.extend(e["cid"] for e in await s.db.read(records.live_grants, row["cid"], timeutil.now()))
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            for row in rows:
                audit.append(conn, now, caller.did, "export", row["id"], "ok", {"version": row["version"]})

        await s.db.write(commit)
        roots = [Cid.parse(c) for c in envelopes]

        async def frame(cid: Cid) -> bytes:
            return car.frame(Block(cid, await s.blocks.get(cid)))

        async def stream() -> AsyncIterator[bytes]:
            yield car.header(roots)
            for cid in roots:
                yield await frame(cid)
            for row in rows:
                manifest_cid = Cid.parse(row["cid"])
                data = await s.blocks.get(manifest_cid)
                yield car.frame(Block(manifest_cid, data))
                manifest = await s.off_loop(decode_manifest, manifest_cid, data)
                link_blocks, chunks = await walk(manifest, s.blocks, s.cpu)
                for cid in [*link_blocks, *chunks]:  # each block once, top level first
                    yield await frame(cid)

        return len(rows), stream()


class _Getter:
    """Adapts a ``get`` function to the ``store.get`` shape the reader expects."""

    def __init__(self, get):
        self.get = get
