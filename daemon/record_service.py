"""Records as their owners and readers use them: create, new version, read
metadata and content, list versions, search, erase. Access is decided by the
AccessPolicy before anything else happens; writes go through the
VersionWriter under the record's lock. Nothing here returns or logs
plaintext or keys.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from indexer import audit, pins, records, search
from indexer.sql import sqlite3

from . import search_params, timeutil
from .access import AccessPolicy, Action
from .auth import Caller
from .cid import Cid
from .reader import plaintext
from .record_input import RecordInput
from .version_writer import NewVersion, VersionWriter
from .views import new_record_id, record_view

log = logging.getLogger("medvault.vault")


@dataclass
class OpenRecord:
    """A readable record whose key is in hand; ``stream`` yields verified
    plaintext. The repr never shows the key or the content."""

    row: dict
    size: int
    content_type: str
    _stream: object = field(repr=False)

    def stream(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self._stream(start, end)


class Records:
    def __init__(self, services, access: AccessPolicy, writer: VersionWriter):
        self._s = services
        self._access = access
        self._writer = writer

    # ---- writing --------------------------------------------------------

    async def create(self, caller: Caller, source: AsyncIterator[bytes], content_type: str | None,
                     info: RecordInput, content_length: int | None = None) -> dict:
        readers = [{"recipient": caller.did, "role": "author"}]
        if info.patient and info.patient != caller.did:
            readers.append({"recipient": info.patient, "role": "patient"})
        return await self._writer.write(NewVersion(caller, new_record_id(), 1, None, readers, info, content_type,
                                                   content_length), source)

    async def update(self, caller: Caller, record_id: str, source: AsyncIterator[bytes], content_type: str | None,
                     info: RecordInput, content_length: int | None = None) -> dict:
        """A new version under a new DEK; every live envelope is re-issued for it."""
        async with self._s.locks.hold(record_id):
            row = (await self._access.require(caller, Action.UPDATE, record_id)).row
            readers = [{"recipient": e["recipient"], "role": e["role"], "expires": e["expires"]}
                       for e in await self._s.db.read(records.live_grants, row["cid"], timeutil.now())]
            info.patient = row["patient"]  # the patient of a record does not change between versions
            info.type = info.type or row["type"]
            info.title = info.title or row["title"]
            info.tags = info.tags or row["tags"]
            return await self._writer.write(NewVersion(caller, record_id, row["version"] + 1, row, readers, info,
                                                       content_type, content_length, action="update"), source)

    # ---- reading --------------------------------------------------------

    async def get(self, caller: Caller, record_id: str) -> dict:
        row = (await self._access.require(caller, Action.VIEW, record_id)).row
        await self._s.audit(caller.did, "view", record_id, "ok")
        return record_view(row)

    async def open(self, caller: Caller, record_id: str) -> OpenRecord:
        s = self._s
        row = (await self._access.require(caller, Action.READ, record_id)).row
        opened = await s.open_version(caller.did, row, caller.has("emergency"))
        await s.audit(caller.did, "read", record_id, "ok", {"version": row["version"]})
        s.metrics.records_read.inc()
        size = opened.body["size"]

        async def stream(start: int, end: int | None) -> AsyncIterator[bytes]:
            async for piece in plaintext(opened.manifest, opened.dek, size, s.blocks, s.cpu, start, end,
                                         s.config.read_prefetch):
                s.metrics.bytes_read.inc(len(piece))
                yield piece

        return OpenRecord(row, size, opened.body["content_type"], stream)

    async def versions(self, caller: Caller, record_id: str) -> list[dict]:
        await self._access.require(caller, Action.VERSIONS, record_id)
        return [{"version": v["version"], "cid": v["cid"], "size": v["size"], "content_type": v["content_type"],
                 "created": v["created"], "author": v["author"]}
                for v in await self._s.db.read(records.versions, record_id)]

    async def search(self, caller: Caller, items: list[tuple[str, str]]) -> dict:
        """Records the caller can read, by the parameters of daemon/search_params."""
        query = search_params.parse(items, caller.did, timeutil.now(), caller.has("emergency"))
        rows, position = await self._s.db.read(search.run, query)
        return {"items": [record_view(r) for r in rows],
                "next": search_params.encode_cursor(position, query.sort) if position else None}

    # ---- erasure --------------------------------------------------------

    async def erase(self, caller: Caller, record_id: str) -> None:
        """Right to erasure: every version and envelope unpinned and dropped;
        a tombstone stays in the audit chain."""
        s = self._s
        async with s.locks.hold(record_id):
            await self._access.require(caller, Action.ERASE, record_id)
            cids = await s.db.read(records.all_cids, record_id)
            now = timeutil.now()

            def commit(conn: sqlite3.Connection) -> None:
                records.delete(conn, record_id)
                pins.unwant(conn, cids["manifests"] + cids["envelopes"], now)
                audit.append(conn, now, caller.did, "erase", record_id, "ok",
                             {"versions": len(cids["manifests"]), "envelopes": len(cids["envelopes"])})

            await s.space.freeing(lambda: s.db.write(commit))  # on a full disk, spends the reserve
            await s.db.erased()  # the erased rows leave the WAL too, now rather than at some checkpoint
            doomed = [Cid.parse(c) for c in cids["envelopes"]]
            for manifest in cids["manifests"]:
                doomed.extend(await s.blocks_of_manifest(Cid.parse(manifest)))
            await s.release(cids["manifests"] + cids["envelopes"], doomed)
