"""Patient-controlled sharing: grants, revocation with key rotation, and
break-glass emergency access (a Vault component).

A grant is an envelope sealed to the recipient for the record's current
version, stored and pinned like any other, plus a share token
``mv1.<manifest>.<envelope>`` that is all the recipient's node needs.
Revocation cannot recall copies already taken; rotation makes sure the
recipient cannot open anything written from now on.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

from indexer import audit, pins, records
from indexer.sql import sqlite3

from . import timeutil
from .access import AccessPolicy, Action
from .auth import Caller
from .blocks import Block
from .cid import Cid
from .envelope import build_envelope
from .errors import BadRequest, Conflict, NotFound
from .reader import plaintext
from .record_input import RecordInput
from .version_writer import NewVersion, VersionWriter
from .views import did_param, future_time, record_view

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


class Sharing:
    def __init__(self, services, access: AccessPolicy, writer: VersionWriter):
        self._s = services
        self._access = access
        self._writer = writer

    async def _store_envelopes(self, caller: Caller, blocks: list[Block], rows: list[dict], action: str,
                               details: list[dict], writer: str | None = None) -> None:
        """Stores, protects and indexes new envelopes (and their audit entries)
        in one commit, which first checks that each still names its record's
        current manifest (a new version meanwhile makes the grant moot: 409)."""
        s = self._s
        await s.blocks.put_protected(blocks, [b.cid for b in blocks])
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            for row in rows:
                current = records.find(conn, row["record_id"])
                if current is None or current["cid"] != row["manifest"]:
                    raise Conflict("the record changed while access was being granted; retry", "version_conflict")
            records.add_envelopes(conn, rows)
            for row in rows if writer else ():
                records.add_role(conn, row["record_id"], writer, "writer")
            for row, detail in zip(rows, details):
                s.want_pins(conn, [(row["cid"], "envelope")], row["record_id"], now)
                audit.append(conn, now, caller.did, action, row["record_id"], "ok", detail)

        await s.db.write(commit)
        s.kick_reconciler()

    async def _prepare_grant(self, caller: Caller, record_id, recipient: str, expires: str | None, now: str,
                             write: bool) -> tuple[Block, dict]:
        if not isinstance(record_id, str):
            raise BadRequest("records must be a list of record ids", "bad_records")
        row = (await self._access.require(caller, Action.GRANT_WRITE if write else Action.GRANT, record_id)).row
        opened = await self._s.open_version(caller.did, row, caller.has("emergency"))
        block = build_envelope(opened.manifest.cid, opened.dek, recipient, self._s.key_of(caller.did), now, expires)
        return block, {"cid": str(block.cid), "record_id": record_id, "version": row["version"],
                       "manifest": row["cid"], "recipient": recipient, "granter": caller.did, "role": "grant",
                       "granted": now, "expires": expires}

    async def grant(self, caller: Caller, record_id: str, recipient, expires=None, write: bool = False) -> dict:
        """Seals the current version's key to ``recipient``; returns the envelope
        and share token. ``write`` also makes the recipient one of the record's
        writers on this node (its versions, made here or imported, are accepted)."""
        result = await self.grant_many(caller, [record_id], recipient, expires, write)
        return result["items"][0]

    async def grant_many(self, caller: Caller, record_ids, recipient, expires=None, write: bool = False) -> dict:
        """One recipient, many records, one commit (the batch grant endpoint)."""
        recipient = did_param(recipient, "recipient")
        if not isinstance(write, bool):
            raise BadRequest("write must be true or false", "bad_write")
        expires = future_time(expires) if expires is not None else None
        if not isinstance(record_ids, list) or not 1 <= len(record_ids) <= MAX_BATCH:
            raise BadRequest(f"records must be a list of 1 to {MAX_BATCH} record ids", "bad_records")
        now = timeutil.now()
        gate = asyncio.Semaphore(16)

        async def one(record_id):
            async with gate:
                return await self._prepare_grant(caller, record_id, recipient, expires, now, write)

        prepared = await asyncio.gather(*[one(r) for r in record_ids])
        blocks = [block for block, _ in prepared]
        rows = [row for _, row in prepared]
        await self._store_envelopes(caller, blocks, rows, "grant",
                                    [{"recipient": recipient, "expires": expires, "envelope": r["cid"], "write": write}
                                     for r in rows], writer=recipient if write else None)
        return {"items": [{"record": r["record_id"], "envelope": r["cid"], "recipient": recipient,
                           "expires": expires, "write": write, "share": share_token(r["manifest"], r["cid"])}
                          for r in rows]}

    async def grants(self, caller: Caller, record_id: str) -> list[dict]:
        row = (await self._access.require(caller, Action.LIST_GRANTS, record_id)).row
        live = await self._s.db.read(records.live_grants, row["cid"], timeutil.now())
        return [{"recipient": e["recipient"], "role": e["role"], "granter": e["granter"], "granted": e["granted"],
                 "expires": e["expires"], "envelope": e["cid"],
                 "share": share_token(row["cid"], e["cid"]) if e["role"] == "grant" else None} for e in live]

    async def revoke(self, caller: Caller, record_id: str, recipient: str, rotate: bool = True) -> dict:
        """Revokes every envelope of ``recipient`` and, by default, rotates the
        key: a new version under a new DEK for the remaining readers, the old
        one unpinned. Revocation and the new version commit together, so a
        failure part-way leaves the grant in place and a retry starts over."""
        recipient = did_param(recipient, "recipient")
        s = self._s
        async with s.locks.hold(record_id):
            row = (await self._access.require(caller, Action.REVOKE, record_id)).row
            live = await s.db.read(records.live_grants, row["cid"], timeutil.now())
            mine = [e for e in live if e["recipient"] == recipient]
            if not mine:
                raise NotFound("this principal holds no grant for the record", "grant_not_found")
            if any(e["role"] in ("patient", "author") for e in mine):
                raise Conflict("the patient's and the author's own access cannot be revoked", "cannot_revoke_owner")
            old = await s.db.read(records.version_cids, record_id, row["version"])
            revoked: list[str] = []

            def revoke_in(conn: sqlite3.Connection, now: str) -> None:
                revoked.extend(records.revoke_envelopes(conn, record_id, recipient, now))
                records.drop_role(conn, record_id, recipient, "writer")
                pins.unwant(conn, old if rotate else revoked, now)
                audit.append(conn, now, caller.did, "revoke", record_id, "ok",
                             {"recipient": recipient, "rotate": rotate, "envelopes": len(revoked)})

            if not rotate:
                await s.db.write(revoke_in, timeutil.now())
                await s.release(revoked, [Cid.parse(c) for c in revoked])
                return {**record_view(row), "revoked": recipient, "rotated": False, "notice": RECALL_NOTICE}
            opened = await s.open_version(caller.did, row, caller.has("emergency"))
            readers = [{"recipient": e["recipient"], "role": e["role"], "expires": e["expires"]}
                       for e in live if e["recipient"] != recipient]
            info = RecordInput(patient=row["patient"], type=row["type"], title=row["title"], tags=row["tags"],
                               date=row["date"])
            source = plaintext(opened.manifest, opened.dek, opened.body["size"], s.blocks, s.cpu,
                               prefetch=s.config.read_prefetch)
            result = await self._writer.write(NewVersion(caller, record_id, row["version"] + 1, row, readers, info,
                                                         opened.body["content_type"], action="update",
                                                         also=revoke_in), source)
            doomed = [Cid.parse(c) for c in old[1:]] + await s.blocks_of_manifest(Cid.parse(old[0]))
            await s.release(old, doomed)
        return {**result, "revoked": recipient, "rotated": True, "notice": RECALL_NOTICE}

    async def emergency_open(self, caller: Caller, record_id: str, reason) -> dict:
        """Break-glass: access without a grant, only with a reason; audited, shown
        to the patient, and expiring after ``emergency_minutes``."""
        if not isinstance(reason, str) or not 10 <= len(reason.strip()) <= 1000:
            raise BadRequest("break-glass access needs a reason of 10 to 1000 characters", "reason_required")
        s = self._s
        row = (await self._access.require(caller, Action.BREAK_GLASS, record_id)).row
        now = timeutil.now()
        holder = next((e["recipient"] for e in await s.db.read(records.live_grants, row["cid"], now)
                       if s.keys.get(e["recipient"]) is not None), None)
        if holder is None:
            raise Conflict("no key on this node can open this record", "no_local_key")
        opened = await s.open_version(holder, row)
        expires = timeutil.format_time(timeutil.clock() + timedelta(minutes=s.config.emergency_minutes))
        node_key = s.keys.principals(role="node")[0]
        block = build_envelope(opened.manifest.cid, opened.dek, caller.did, node_key, now, expires)
        envelope = {"cid": str(block.cid), "record_id": record_id, "version": row["version"], "manifest": row["cid"],
                    "recipient": caller.did, "granter": node_key.did, "role": "emergency", "granted": now,
                    "expires": expires}
        await self._store_envelopes(caller, [block], [envelope], "break_glass",
                                    [{"reason": reason.strip(), "expires": expires, "notify": "patient"}])
        return {"record": record_view(row), "expires": expires}
