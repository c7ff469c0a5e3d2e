"""Writing one record version: seal the content, sign the manifest, seal an
envelope per reader, store every block durably, then commit the index row,
envelopes, roles, pin jobs and the audit entry in one transaction.

New records, new versions (PUT) and key rotation (revoke) all come through
here. For a new version the commit re-checks, inside the transaction, that
the record is still at the version it continues and that every reader it
sealed for still holds a live envelope; otherwise nothing is kept and the
caller gets 409 (a revoke that landed meanwhile wins).
"""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

from indexer import audit, records
from indexer.sql import sqlite3

from . import crypto, fhir, timeutil
from .auth import Caller
from .envelope import build_envelope
from .errors import BadRequest, Conflict, TooLarge
from .identity import Principal
from .ingest import iterate_bytes, seal_stream
from .manifest import build_link_tree, build_manifest
from .padding import padded_length
from .record_input import RecordInput, check_media_type
from .views import record_view

log = logging.getLogger("medvault.vault")
_PARSE_IN_PROCESS_ABOVE = 1024 * 1024  # below this a parse is a few ms: a thread is cheaper than the hop
# A small body parses on the loop itself: a thread hop costs the loop more
# than parsing 64 KiB (~0.3 ms), and json.loads holds the GIL in a thread too.
_INLINE_PARSE_BYTES = 64 * 1024
# A version of one chunk up to this size, for a few readers, is signed and
# sealed on the loop too (~0.6 ms; each reader is a sealed box): the hop to
# the pool and back cost more than the other core gained (docs/DECISIONS.md,
# "Small versions seal on the loop"). A rotation for many grantees stays off it.
_INLINE_SEAL_BYTES = 64 * 1024
_INLINE_SEAL_READERS = 4


def _seal_version(dek: bytes, stream_id: bytes, chunk_size: int, chunks: list, fanout: int, body: dict,
                  author: Principal, readers: list[dict], now: str, padded: int | None):
    """The link tree, the signed manifest and one envelope per reader (CPU
    work, run on the pool: a 4,096-link tree stalls a loop for ~0.5 s)."""
    depth, links, link_blocks = build_link_tree(chunks, fanout)
    manifest = build_manifest(dek, stream_id, chunk_size, depth, links, body, author, padded=padded)
    link = manifest.cid.to_link()
    return link_blocks, manifest, [build_envelope(manifest.cid, dek, r["recipient"], author, now, r.get("expires"),
                                                  link) for r in readers]


@dataclass
class NewVersion:
    """What a version write needs besides the content."""

    caller: Caller
    record_id: str
    version: int
    prev: dict | None  # the current row this version continues, or None for a new record
    readers: list[dict]  # {"recipient", "role", "expires"?}
    info: RecordInput
    content_type: str | None
    content_length: int | None = None
    action: str = "write"
    also: Callable[[sqlite3.Connection, str], None] | None = None  # more work in the same commit


class VersionWriter:
    def __init__(self, services):
        self._s = services

    async def _prepare_body(self, source: AsyncIterator[bytes], base_type: str, info: RecordInput,
                            content_length: int | None):
        """For FHIR JSON, reads and validates the (bounded) body and fills in
        what it says: (the body to seal, its summary, the body itself)."""
        limit = self._s.config.max_record_bytes
        if content_length is not None and content_length > limit:
            raise TooLarge(f"the record is larger than this node's limit of {limit} bytes")
        if base_type != fhir.MEDIA_TYPE:
            return source, None, None
        cap = self._s.config.max_fhir_bytes
        if content_length is not None and content_length > cap:
            raise TooLarge(f"FHIR resources are limited to {cap} bytes on this node")
        # Gathered in place: one copy of the body, parsed and then sealed
        # (pieces and their join were two; ~9 MB of peak RSS at 16 MiB).
        body = bytearray()
        async for piece in source:
            if len(body) + len(piece) > cap:
                raise TooLarge(f"FHIR resources are limited to {cap} bytes on this node")
            body += piece
        if not body:
            raise BadRequest("the request body is empty", "empty_body")
        # Parsing holds the GIL for its whole length: a big body goes to a worker process.
        if len(body) <= _INLINE_PARSE_BYTES:
            summary = fhir.summarize(body)
        else:
            if len(body) > _PARSE_IN_PROCESS_ABOVE:  # the worker frees its own copy as it parses
                summary = await self._s.off_process(fhir.summarize_buffer, body)
            else:
                summary = await self._s.off_loop(fhir.summarize, body)
        info.type = info.type or summary.resource_type
        info.date = info.date or summary.date
        return iterate_bytes(body), summary, body

    async def write(self, new: NewVersion, source: AsyncIterator[bytes]) -> dict:
        return (await self.write_many([(new, source)]))[0]

    async def write_many(self, versions: list[tuple[NewVersion, AsyncIterator[bytes]]]) -> list[dict]:
        """Writes several versions (of different records) all or nothing: every
        block stored, one durability wait for the blocks, then one index
        commit whose savepoint holds every version's rows (a FHIR transaction
        Bundle; one version is the common case). A failure in any version
        keeps none of them and removes every block stored."""
        s = self._s
        async with s.upload(versions) as store:  # a failure anywhere inside removes the blocks stored
            staged = [await self._stage(new, source, store) for new, source in versions]
            # Every block durable and every root protected before the index says
            # a record exists: one durability wait for them all (on Kubo, one
            # dag/import shared with other writers).
            await store.put_protected([block for version in staged for block in version.last],
                                      [cid for version in staged for cid in version.roots])

            def commit(conn: sqlite3.Connection) -> None:
                for version in staged:
                    version.commit(conn)

            await s.db.write(commit)  # inside the upload: gc spares its blocks until they are live
        s.kick_reconciler()
        status, replicas = s.initial_pin
        for version in staged:
            s.metrics.records_written.inc()
            s.metrics.bytes_written.inc(version.row["size"])
            log.info("record version stored", extra={"record": version.row["id"], "version": version.row["version"],
                                                      "size": version.row["size"], "chunks": version.chunks})
        return [record_view({**version.row, "pin_status": status, "pin_replicas": replicas}) for version in staged]

    async def _stage(self, new: NewVersion, source: AsyncIterator[bytes], store) -> "_Staged":
        """Seals and stores one version's blocks; returns what its commit needs."""
        s, cfg, info = self._s, self._s.config, new.info
        author = s.key_of(new.caller.did)
        full_type, base_type = check_media_type(new.content_type)
        info.validated()
        source, summary, resource = await self._prepare_body(source, base_type, info, new.content_length)
        # A small resource is also kept, as this version's copy, in the encrypted index (FHIR searchsets).
        copy = bytes(resource) if resource is not None and len(resource) <= cfg.index_copy_max_bytes else None
        del resource
        dek = crypto.new_data_key()
        sealed = await seal_stream(source, dek, store, s.cpu, chunk_size=cfg.chunk_size,
                                   max_bytes=cfg.max_record_bytes, concurrency=cfg.ingest_concurrency,
                                   pad_to=partial(padded_length, buckets=cfg.pad_buckets))
        now = timeutil.now()
        body = {
            "record": new.record_id, "version": new.version, "prev": new.prev["cid"] if new.prev else None,
            "content_type": full_type, "size": sealed.size, "patient": info.patient, "type": info.type,
            "title": info.title, "tags": info.tags, "date": info.date,
            "subject": summary.subject if summary else None,
            "codes": [list(c) for c in summary.codes] if summary else [],
            "identifiers": [list(i) for i in summary.identifiers] if summary else [],
            "text": summary.text if summary else None, "author": author.did, "created": now,
        }
        seal = partial(_seal_version, dek, sealed.stream_id, cfg.chunk_size, sealed.chunks, cfg.link_fanout, body,
                       author, new.readers, now, sealed.padded)
        small = (len(sealed.chunks) == 1 and (sealed.padded or sealed.size) <= _INLINE_SEAL_BYTES
                 and len(new.readers) <= _INLINE_SEAL_READERS)
        link_blocks, manifest, envelope_blocks = seal() if small else await s.off_loop(seal)
        last = [*sealed.pending, *link_blocks, manifest, *envelope_blocks]  # stored with the roots, below
        envelopes = [{"cid": str(block.cid), "record_id": new.record_id, "version": new.version,
                      "manifest": str(manifest.cid), "recipient": reader["recipient"], "granter": author.did,
                      "role": reader["role"], "granted": now, "expires": reader.get("expires")}
                     for reader, block in zip(new.readers, envelope_blocks)]
        row = {"id": new.record_id, "version": new.version, "cid": str(manifest.cid), "patient": info.patient,
               "type": info.type, "content_type": full_type, "title": info.title,
               "text": summary.text if summary else None, "subject": body["subject"], "date": info.date,
               "tags": info.tags, "identifiers": body["identifiers"], "size": sealed.size,
               "created": new.prev["created"] if new.prev else now,
               "updated": now, "author": author.did}
        roles = [(author.did, "creator"), (info.patient, "patient")] if new.prev is None else []
        # Where protect() already pinned everything, the reconciler only re-checks later.
        first_look = time.time() + cfg.verify_interval if s.pinner.pinned_on_protect else 0
        codes = summary.codes if summary else []

        def commit(conn: sqlite3.Connection) -> None:
            if new.prev is not None:
                _check_readers(conn, new.prev["cid"], new.readers, now)
            try:
                records.save_version(conn, row, envelopes, codes,
                                     prev_cid=new.prev["cid"] if new.prev else None, roles=roles, content=copy)
            except sqlite3.IntegrityError:
                raise Conflict("the record changed while this version was written; retry",
                               "version_conflict") from None
            s.want_pins(conn, [(row["cid"], "manifest"), *((e["cid"], "envelope") for e in envelopes)],
                        new.record_id, now, first_look)
            if new.also is not None:
                new.also(conn, now)
            audit.append(conn, now, new.caller.did, new.action, new.record_id, "ok",
                         {"version": new.version, "size": sealed.size})

        return _Staged(row, [manifest.cid, *(b.cid for b in envelope_blocks)], last, len(sealed.chunks), commit)


@dataclass
class _Staged:
    """A version whose chunks are stored: its index row, the roots to protect,
    its last blocks (link tree, manifest, envelopes: stored with the roots),
    and the commit that makes it live."""

    row: dict
    roots: list
    last: list
    chunks: int
    commit: Callable[[sqlite3.Connection], None]


def _check_readers(conn: sqlite3.Connection, prev_manifest: str, readers: list[dict], now: str) -> None:
    """Every reader sealed for must still hold a live envelope for the version
    this one continues (a revoke that committed meanwhile wins)."""
    live = {e["recipient"] for e in records.live_grants(conn, prev_manifest, now)}
    if any(r["recipient"] not in live for r in readers):
        raise Conflict("the record's readers changed while this version was written; retry", "version_conflict")
