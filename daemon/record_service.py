"""Records as their owners and readers use them: create, new version, read
metadata and content, list versions, search, erase. Access is decided by the
AccessPolicy before anything else happens; writes go through the
VersionWriter under the record's lock. Nothing here returns or logs
plaintext or keys.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from indexer import audit, pins, records, search
from indexer.sql import sqlite3

from . import fhir, search_params, timeutil
from .access import AccessPolicy, Action
from .auth import Caller
from .cid import Cid
from .errors import BadRequest, BlockNotFound, Gone, NotFound, PreconditionFailed, TooLarge
from .ingest import iterate_bytes
from .reader import plaintext
from .record_input import RecordInput
from .version_writer import NewVersion, VersionWriter
from .views import check_record_id, new_record_id, record_view

log = logging.getLogger("medvault.vault")
T = TypeVar("T")


def _resources(rows: list[dict], cap: int) -> list[dict]:
    """The rows holding a FHIR resource of at most ``cap`` bytes (never open a PDF to find it is not FHIR)."""
    return [r for r in rows if r["type"] and fhir.is_fhir(r["content_type"]) and r["size"] <= cap]


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


@dataclass
class WholeRecord:
    """A record version read whole: its row (of that version) and plaintext."""

    row: dict
    content_type: str
    data: bytes = field(repr=False)


@dataclass
class Change:
    """One record of a multi-record write: a new record (``new``, with an id
    chosen by the caller so references between the records can be set
    before they are sealed) or the next version of ``record_id``."""

    record_id: str
    new: bool
    body: bytes = field(repr=False)
    content_type: str
    info: RecordInput
    expect_version: int | None = None


class Records:
    def __init__(self, services, access: AccessPolicy, writer: VersionWriter):
        self._s = services
        self._access = access
        self._writer = writer

    # ---- writing --------------------------------------------------------

    async def create(self, caller: Caller, source: AsyncIterator[bytes], content_type: str | None,
                     info: RecordInput, content_length: int | None = None) -> dict:
        return await self._writer.write(self._first_version(caller, new_record_id(), info, content_type,
                                                            content_length), source)

    async def update(self, caller: Caller, record_id: str, source: AsyncIterator[bytes], content_type: str | None,
                     info: RecordInput, content_length: int | None = None) -> dict:
        """A new version under a new DEK; every live envelope is re-issued for it."""
        async with self._s.locks.hold(record_id):
            new = await self._next_version(caller, record_id, info, content_type, content_length, None)
            return await self._writer.write(new, source)

    async def write_many(self, caller: Caller, changes: list[Change]) -> list[dict]:
        """New records and new versions of others, all or nothing, in one index
        commit (a FHIR transaction Bundle). Each change is decided by the
        access policy exactly as a single create or update is; a version's
        ``expect_version`` (FHIR's If-Match) refuses with 412 when the record
        moved on."""
        updated = [c.record_id for c in changes if not c.new]
        if len(set(updated)) != len(updated):
            raise BadRequest("a transaction may change each record only once", "duplicate_record")
        for change in changes:
            check_record_id(change.record_id)
        async with self._s.locks.hold(*updated):
            versions = []
            for change in changes:
                new = (self._first_version(caller, change.record_id, change.info, change.content_type, len(change.body))
                       if change.new else
                       await self._next_version(caller, change.record_id, change.info, change.content_type,
                                                len(change.body), change.expect_version))
                versions.append((new, iterate_bytes(change.body)))
            return await self._writer.write_many(versions)

    @staticmethod
    def _first_version(caller: Caller, record_id: str, info: RecordInput, content_type: str | None,
                       content_length: int | None) -> NewVersion:
        readers = [{"recipient": caller.did, "role": "author"}]
        if info.patient and info.patient != caller.did:
            readers.append({"recipient": info.patient, "role": "patient"})
        return NewVersion(caller, record_id, 1, None, readers, info, content_type, content_length)

    async def _next_version(self, caller: Caller, record_id: str, info: RecordInput, content_type: str | None,
                            content_length: int | None, expect_version: int | None) -> NewVersion:
        """The next version of a record (the caller holds its lock)."""
        row = (await self._access.require(caller, Action.UPDATE, record_id)).row
        if expect_version is not None and expect_version != row["version"]:
            raise PreconditionFailed(f"the record is at version {row['version']}, not {expect_version}",
                                     "version_mismatch")
        readers = [{"recipient": e["recipient"], "role": e["role"], "expires": e["expires"]}
                   for e in await self._s.db.read(records.live_grants, row["cid"], timeutil.now())]
        info.patient = row["patient"]  # the patient of a record does not change between versions
        info.type = info.type or row["type"]
        info.title = info.title or row["title"]
        info.tags = info.tags or row["tags"]
        return NewVersion(caller, record_id, row["version"] + 1, row, readers, info, content_type, content_length,
                          action="update")

    # ---- reading --------------------------------------------------------

    async def get(self, caller: Caller, record_id: str) -> dict:
        row = (await self._access.require(caller, Action.VIEW, record_id)).row
        await self._s.audit_access(caller.did, "view", record_id, "ok")
        return record_view(row)

    async def open(self, caller: Caller, record_id: str) -> OpenRecord:
        s = self._s
        row = (await self._access.require(caller, Action.READ, record_id)).row
        opened = await s.open_version(caller.did, row, caller.has("emergency"))
        await s.audit_access(caller.did, "read", record_id, "ok", {"version": row["version"]})
        s.metrics.records_read.inc()
        size = opened.body["size"]

        async def stream(start: int, end: int | None) -> AsyncIterator[bytes]:
            async for piece in plaintext(opened.manifest, opened.dek, size, s.blocks, s.cpu, start, end,
                                         s.config.read_prefetch):
                s.metrics.bytes_read.inc(len(piece))
                yield piece

        return OpenRecord(row, size, opened.body["content_type"], stream)

    async def read_whole(self, caller: Caller, record_id: str, cap: int, version: int | None = None,
                         media_type: str | None = None) -> WholeRecord:
        """A record's (or one of its versions') whole plaintext, at most ``cap``
        bytes (FHIR reads return resources, not streams). Access is the
        current version's READ; an older version opens through the caller's
        own envelope for it, and one rotated away or no longer held is 410.
        With ``media_type``, a record of another type is 404 (not opened)."""
        s = self._s
        row = (await self._access.require(caller, Action.READ, record_id)).row
        if media_type is not None and row["content_type"].split(";", 1)[0].strip().lower() != media_type:
            raise NotFound("no such record of that media type", "record_not_found")
        if version is not None and version != row["version"]:
            past = next((v for v in await s.db.read(records.versions, record_id) if v["version"] == version), None)
            if past is None:
                raise NotFound("the record has no such version", "version_not_found")
            row = {**row, "version": version, "cid": past["cid"], "updated": past["created"],
                   "author": past["author"], "content_type": past["content_type"], "size": past["size"]}
            try:
                opened = await s.open_version(caller.did, row, caller.has("emergency"))
            except (NotFound, BlockNotFound):
                raise Gone("that version's key or content is no longer held (rotated or erased)",
                           "version_gone") from None
        else:
            # The current version: its copy in the index when it has one (a
            # small FHIR resource), under the same live-envelope check.
            envelopes, copies = await s.db.read(records.live_contents, [row["cid"]], caller.did, timeutil.now(),
                                                caller.has("emergency"))
            copy = copies.get(row["cid"])
            if copy is not None and len(copy) <= min(cap, s.config.index_copy_max_bytes):
                return await self._whole(caller, row, row["content_type"], copy)
            opened = await s.open_version(caller.did, row, caller.has("emergency"), envelopes.get(row["cid"]))
        size = opened.body["size"]
        if size > cap:
            raise TooLarge(f"the record is larger than {cap} bytes and cannot be read whole here")
        data = b"".join([piece async for piece in plaintext(opened.manifest, opened.dek, size, s.blocks, s.cpu,
                                                            prefetch=s.config.read_prefetch)])
        return await self._whole(caller, row, opened.body["content_type"], data)

    async def _whole(self, caller: Caller, row: dict, content_type: str, data: bytes) -> WholeRecord:
        s = self._s
        await s.audit_access(caller.did, "read", row["id"], "ok", {"version": row["version"]})
        s.metrics.records_read.inc()
        s.metrics.bytes_read.inc(len(data))
        return WholeRecord(row, content_type, data)

    async def read_resources(self, caller: Caller, rows: list[dict], cap: int,
                             render: Callable[[list[tuple[dict, bytes]]], T]) -> T:
        """The FHIR resources of records a search returned (``rows``), for
        ``render``: access is checked again for all of them in one read (a
        live envelope of the caller's for each current manifest)."""
        s, emergency, now = self._s, caller.has("emergency"), timeutil.now()
        chosen = _resources(rows, cap)
        access = await s.db.read(records.live_contents, [r["cid"] for r in chosen], caller.did, now, emergency)
        return await self._serve(caller, chosen, access, now, render)

    async def search_resources(self, caller: Caller, items: list[tuple[str, str]], cap: int,
                               render: Callable[[dict, list[tuple[dict, bytes]]], T]) -> T:
        """A search page (as ``search``) and the FHIR resources on it, found
        and access-checked in one read of the index, for ``render(page,
        [(record, content)])``."""
        s, emergency, now = self._s, caller.has("emergency"), timeutil.now()
        query = search_params.parse(items, caller.did, now, emergency)

        def run(conn: sqlite3.Connection):
            rows, position = search.run(conn, query)
            views = [record_view(r) for r in rows]
            chosen = _resources(views, cap)
            return views, position, chosen, records.live_contents(conn, [r["cid"] for r in chosen], caller.did,
                                                                 now, emergency)

        views, position, chosen, access = await s.db.read(run)
        page = {"items": views, "next": search_params.encode_cursor(position, query.sort) if position else None}
        return await self._serve(caller, chosen, access, now, lambda found: render(page, found))

    async def _serve(self, caller: Caller, rows: list[dict], access: tuple[dict, dict], now: str,
                     render: Callable[[list[tuple[dict, bytes]]], T]) -> T:
        """Contents of ``rows`` the caller holds a live envelope for: the
        index's copy of a small FHIR resource (records.live_contents), or
        opened with that envelope (and the copy kept for the next read).
        ``render``'s result is returned only after the audit entries (one
        per record read) and any new copies commit (relaxed), so nothing
        read is answered unaudited."""
        s, emergency = self._s, caller.has("emergency")
        envelopes, copies = access
        limit = s.config.index_copy_max_bytes
        # Copies kept under a larger limit (or before copies were turned off)
        # are neither served nor kept: they go when next met.
        dropped = [cid for cid, body in copies.items() if len(body) > limit]
        copies = {cid: body for cid, body in copies.items() if len(body) <= limit}

        async def one(row: dict) -> bytes | None:
            envelope = envelopes.get(row["cid"])
            if envelope is None:
                return None
            if row["cid"] in copies:
                return copies[row["cid"]]
            opened = await s.open_version(caller.did, row, emergency, envelope)
            return b"".join([piece async for piece in plaintext(
                opened.manifest, opened.dek, opened.body["size"], s.blocks, s.cpu, prefetch=s.config.read_prefetch)])

        contents = await asyncio.gather(*[one(r) for r in rows])
        found = [(row, data) for row, data in zip(rows, contents) if data is not None]
        fresh = [(row["id"], row["cid"], data) for row, data in found
                 if row["cid"] not in copies and len(data) <= limit]

        def copies_changed(conn: sqlite3.Connection) -> None:
            records.keep_contents(conn, fresh)
            records.drop_contents(conn, dropped)

        result = render(found)
        if found:
            await s.db.audit_reads([(now, caller.did, "read", row["id"], "ok", {"version": row["version"]})
                                    for row, _ in found])
        if fresh or dropped:
            await s.db.write_relaxed(copies_changed)
        s.metrics.records_read.inc(len(found))
        return result

    async def versions(self, caller: Caller, record_id: str) -> list[dict]:
        await self._access.require(caller, Action.VERSIONS, record_id)
        return [{"version": v["version"], "cid": v["cid"], "size": v["size"], "content_type": v["content_type"],
                 "created": v["created"], "author": v["author"]}
                for v in await self._s.db.read(records.versions, record_id)]

    async def search(self, caller: Caller, items: list[tuple[str, str]]) -> dict:
        """Records the caller can read, by the parameters of daemon/search_params.
        Not audited: for work inside the node (counts, ``$everything``'s
        gathering, a Consent's records) whose own result is audited or shows
        no record; a page shown to the caller goes through ``browse``."""
        query = search_params.parse(items, caller.did, timeutil.now(), caller.has("emergency"))
        rows, position = await self._s.db.read(search.run, query)
        return {"items": [record_view(r) for r in rows],
                "next": search_params.encode_cursor(position, query.sort) if position else None}

    async def browse(self, caller: Caller, items: list[tuple[str, str]]) -> dict:
        """A search page for the caller to see. It shows each record's
        metadata (title, patient, type, dates) as ``get`` does, so each is
        audited as viewed before the page is answered (one staged commit)."""
        page = await self.search(caller, items)
        if page["items"]:
            now = timeutil.now()
            await self._s.db.audit_reads([(now, caller.did, "view", view["id"], "ok", {"via": "search"})
                                          for view in page["items"]])
        return page

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
