"""Patient-controlled sharing: grants, revocation with key rotation, and
break-glass emergency access. A mixin of the Vault (it uses the Vault's
storage, access checks and version writer) kept apart so each file has one job.

A grant is an envelope sealed to the recipient for the record's current
version, stored and pinned like any other, plus a share token
``mv1.<manifest>.<envelope>`` that is all the recipient's node needs.
Revocation cannot recall copies already taken; rotation makes sure the
recipient cannot open anything written from now on.
"""
from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone

from indexer import audit, pins, records

from . import timeutil
from .auth import Caller
from .blocks import Block
from .cid import Cid
from .envelope import build_envelope
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .reader import plaintext
from .record_input import RecordInput
from .views import check_record_id, did_param, future_time, record_view

SHARE_PREFIX = "mv1"
RECALL_NOTICE = ("Access is revoked from now on and the record was re-encrypted under a new key; "
                 "copies the recipient already fetched cannot be recalled.")
MAX_BATCH = 1000


def share_token(manifest: Cid | str, envelope: Cid | str) -> str:
    return f"{SHARE_PREFIX}.{manifest}.{envelope}"


def parse_share(token) -> tuple[Cid, Cid]:
    parts = token.split(".") if isinstance(token, str) else []
    try:
        if len(parts) != 3 or parts[0] != SHARE_PREFIX:
            raise ValueError
        return Cid.parse(parts[1]), Cid.parse(parts[2])
    except ValueError:
        raise BadRequest("a share token looks like mv1.<manifest CID>.<envelope CID>", "bad_share") from None


class SharingMixin:
    async def _may_grant(self, caller: Caller, row: dict) -> None:
        if caller.did == row["patient"]:
            return
        if self.config.grant_policy == "patient":
            raise Forbidden("on this node only the record's patient may share it", "patient_only")
        await self._may_modify(caller, row)

    async def _store_envelopes(self, caller: Caller, blocks: list[Block], rows: list[dict], action: str,
                               details: list[dict]) -> None:
        """Stores, protects and indexes new envelopes (and their audit entries) in one commit."""
        await self.blocks.put_many(blocks)
        await self.blocks.sync()
        await self.blocks.protect([b.cid for b in blocks])
        confirmed = self.pinner.pinned_on_protect
        status, replicas = ("pinned", 1) if confirmed else ("queued", 0)
        cfg, now = self.config, timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            records.add_envelopes(conn, rows)
            for row, detail in zip(rows, details):
                pins.want(conn, row["cid"], row["record_id"], "envelope", cfg.replication_min, cfg.replication_max,
                          now, status, replicas)
                audit.append(conn, now, caller.did, action, row["record_id"], "ok", detail)

        await self.db.write(commit)
        if self.reconciler is not None and not confirmed:
            self.reconciler.kick()

    async def _prepare_grant(self, caller: Caller, record_id: str, recipient: str, expires: str | None,
                             now: str) -> tuple[Block, dict]:
        row = await self._readable(caller, record_id, "grant")
        await self._may_grant(caller, row)
        manifest, dek, _ = await self._open_version(caller.did, record_id, row["version"], row["cid"])
        block = build_envelope(manifest.cid, dek, recipient, self._key_of(caller.did), now, expires)
        return block, {"cid": str(block.cid), "record_id": record_id, "version": row["version"],
                       "recipient": recipient, "granter": caller.did, "role": "grant", "granted": now,
                       "expires": expires, "manifest": row["cid"]}

    async def grant(self, caller: Caller, record_id: str, recipient, expires=None) -> dict:
        """Seals the current version's key to ``recipient``; returns the envelope and share token."""
        result = await self.grant_many(caller, [record_id], recipient, expires)
        return result["items"][0]

    async def grant_many(self, caller: Caller, record_ids, recipient, expires=None) -> dict:
        """One recipient, many records, one commit (the batch grant endpoint)."""
        recipient = did_param(recipient, "recipient")
        expires = future_time(expires) if expires is not None else None
        if not isinstance(record_ids, list) or not 1 <= len(record_ids) <= MAX_BATCH:
            raise BadRequest(f"records must be a list of 1 to {MAX_BATCH} record ids", "bad_records")
        now = timeutil.now()
        gate = asyncio.Semaphore(16)

        async def one(record_id):
            async with gate:
                return await self._prepare_grant(caller, record_id, recipient, expires, now)

        prepared = await asyncio.gather(*[one(r) for r in record_ids])
        blocks = [block for block, _ in prepared]
        rows = [row for _, row in prepared]
        await self._store_envelopes(caller, blocks, rows, "grant",
                                    [{"recipient": recipient, "expires": expires, "envelope": r["cid"]} for r in rows])
        return {"items": [{"record": r["record_id"], "envelope": r["cid"], "recipient": recipient,
                           "expires": expires, "share": share_token(r["manifest"], r["cid"])} for r in rows]}

    async def grants(self, caller: Caller, record_id: str) -> list[dict]:
        row = await self._readable(caller, record_id, "grants")
        await self._may_grant(caller, row)
        live = await self.db.read(records.live_grants, record_id, row["version"], timeutil.now())
        return [{"recipient": e["recipient"], "role": e["role"], "granter": e["granter"], "granted": e["granted"],
                 "expires": e["expires"], "envelope": e["cid"],
                 "share": share_token(row["cid"], e["cid"]) if e["role"] == "grant" else None} for e in live]

    async def revoke(self, caller: Caller, record_id: str, recipient: str, rotate: bool = True) -> dict:
        """Revokes every envelope of ``recipient`` and, by default, rotates the key:
        a new version under a new DEK for the remaining readers, the old one unpinned."""
        recipient = did_param(recipient, "recipient")
        row = await self._readable(caller, record_id, "revoke")
        await self._may_grant(caller, row)
        live = await self.db.read(records.live_grants, record_id, row["version"], timeutil.now())
        mine = [e for e in live if e["recipient"] == recipient]
        if not mine:
            raise NotFound("this principal holds no grant for the record", "grant_not_found")
        if any(e["role"] in ("patient", "author") for e in mine):
            raise Conflict("the patient's and the author's own access cannot be revoked", "cannot_revoke_owner")
        if rotate:  # read the key before our own view of the record changes
            manifest, dek, body = await self._open_version(caller.did, record_id, row["version"], row["cid"])
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> list[str]:
            cids = records.revoke_envelopes(conn, record_id, recipient, now)
            pins.unwant(conn, cids, now)
            audit.append(conn, now, caller.did, "revoke", record_id, "ok",
                         {"recipient": recipient, "rotate": rotate, "envelopes": len(cids)})
            return cids

        revoked = await self.db.write(commit)
        await self._release(revoked, [Cid.parse(c) for c in revoked])
        result = record_view(row)
        if rotate:
            readers = [{"recipient": e["recipient"], "role": e["role"], "expires": e["expires"]}
                       for e in live if e["recipient"] != recipient]
            info = RecordInput(patient=row["patient"], type=row["type"], title=row["title"], tags=row["tags"],
                               date=row["date"])
            source = plaintext(manifest, dek, body["size"], self.blocks, self.cpu, prefetch=self.config.read_prefetch)
            result = await self._write_version(caller, record_id, row["version"] + 1, row, source,
                                               body["content_type"], info, None, readers)
            await self._retire_version(record_id, row["version"])
        return {**result, "revoked": recipient, "rotated": rotate, "notice": RECALL_NOTICE}

    async def _retire_version(self, record_id: str, version: int) -> None:
        """Unpins a rotated-away version (manifest, chunks, envelopes) everywhere we reach."""
        cids = await self.db.read(records.version_cids, record_id, version)
        now = timeutil.now()
        await self.db.write(pins.unwant, cids, now)
        doomed = [Cid.parse(c) for c in cids[1:]]
        if cids:
            doomed.extend(await self._blocks_of_manifest(Cid.parse(cids[0])))
        await self._release(cids, doomed)

    async def emergency_open(self, caller: Caller, record_id: str, reason) -> dict:
        """Break-glass: access without a grant, only with a reason; audited, shown
        to the patient, and expiring after ``emergency_minutes``."""
        if not isinstance(reason, str) or not 10 <= len(reason.strip()) <= 1000:
            raise BadRequest("break-glass access needs a reason of 10 to 1000 characters", "reason_required")
        check_record_id(record_id)
        row = await self.db.read(records.find, record_id)
        if row is None:
            await self._audit(caller.did, "break_glass", record_id, "denied")
            raise NotFound("no such record", "record_not_found")
        now = timeutil.now()
        holder = next((e["recipient"] for e in await self.db.read(records.live_grants, record_id, row["version"], now)
                       if self.keys.get(e["recipient"]) is not None), None)
        if holder is None:
            raise Conflict("no key on this node can open this record", "no_local_key")
        manifest, dek, _ = await self._open_version(holder, record_id, row["version"], row["cid"])
        expires = timeutil.format_time(datetime.now(timezone.utc) + timedelta(minutes=self.config.emergency_minutes))
        node_key = self.keys.principals(role="node")[0]
        block = build_envelope(manifest.cid, dek, caller.did, node_key, now, expires)
        envelope = {"cid": str(block.cid), "record_id": record_id, "version": row["version"],
                    "recipient": caller.did, "granter": node_key.did, "role": "emergency", "granted": now,
                    "expires": expires}
        await self._store_envelopes(caller, [block], [envelope], "break_glass",
                                    [{"reason": reason.strip(), "expires": expires, "notify": "patient"}])
        return {"record": record_view(row), "expires": expires}
