"""The Vault: every record operation, with access decided by key envelopes.

The HTTP layer checks scopes and hands the Vault a ``Caller``; the Vault
decides access (a live envelope addressed to the caller), does the work
against the block store, and commits index rows, pin jobs and the audit
entry in one transaction. It never returns or logs plaintext or keys.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from indexer import audit, pins, principals as principal_rows, records
from indexer.db import Database

from . import crypto, fhir, timeutil
from .auth import Caller, issue_token
from .blocks import FormatError
from .blockstore.base import BlockStore, Pinner
from .cid import Cid
from .config import Config
from .envelope import NotForUs, build_envelope, open_envelope
from .errors import (BadRequest, Conflict, Forbidden, IntegrityError, NotFound, TooLarge,
                     VaultError)
from .identity import InvalidDid, Principal, check_did
from .ingest import iterate_bytes, seal_stream
from .keystore import KeyStore
from .manifest import SignatureError, build_link_tree, build_manifest, decode_manifest, open_metadata
from .metrics import Metrics
from .reader import chunk_cids, plaintext
from .importer import ImportMixin
from .pin_admin import PinAdminMixin
from .reconciler import Reconciler
from .record_input import RecordInput, check_media_type
from .sharing import SharingMixin
from .views import page_limit, check_record_id, decode_cursor, encode_cursor, future_time, new_record_id, record_view

log = logging.getLogger("medvault.vault")


def _seal_version(dek: bytes, stream_id: bytes, chunk_size: int, depth: int, links: list[Cid], body: dict,
                  author: Principal, readers: list[dict], now: str):
    """The signed manifest and one envelope per reader (CPU work, run on the pool)."""
    manifest = build_manifest(dek, stream_id, chunk_size, depth, links, body, author)
    link = manifest.cid.to_link()
    return manifest, [build_envelope(manifest.cid, dek, r["recipient"], author, now, r.get("expires"), link)
                      for r in readers]


@dataclass
class OpenRecord:
    """A readable record whose key is in hand; ``stream`` yields verified plaintext."""

    row: dict
    size: int
    content_type: str
    _vault: "Vault"
    _manifest: object
    _dek: bytes

    def stream(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self._vault._stream(self._manifest, self._dek, self.size, start, end)


class Vault(SharingMixin, ImportMixin, PinAdminMixin):
    def __init__(self, config: Config, db: Database, keys: KeyStore, blocks: BlockStore, pinner: Pinner,
                 metrics: Metrics | None = None):
        self.config = config
        self.db = db
        self.keys = keys
        self.blocks = blocks
        self.pinner = pinner
        self.metrics = metrics or Metrics()
        self.cpu = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="seal")
        self._inflight: dict[int, float] = {}
        self.reconciler: Reconciler | None = None
        self._background: list[asyncio.Task] = []

    def start_background(self) -> list[asyncio.Task]:
        """Long-running tasks the daemon owns: the pin reconciler."""
        cfg = self.config
        self.reconciler = Reconciler(self.db, self.pinner, self.metrics, interval=cfg.reconcile_interval,
                                     verify_interval=cfg.verify_interval)
        tasks = [asyncio.create_task(self.reconciler.run(), name="reconciler")]
        self._background.extend(tasks)
        return tasks

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        self.cpu.shutdown(wait=True)

    # ---- shared helpers -------------------------------------------------

    def _key_of(self, did: str) -> Principal:
        principal = self.keys.get(did)
        if principal is None:
            raise Forbidden("this node holds no key for the calling principal", "no_local_key")
        return principal

    async def _audit(self, actor: str | None, action: str, record: str | None, outcome: str,
                     detail: dict | None = None) -> None:
        await self.db.write(audit.append, timeutil.now(), actor, action, record, outcome, detail)

    async def _readable(self, caller: Caller, record_id: str, action: str) -> dict:
        check_record_id(record_id)
        row = await self.db.read(records.readable, record_id, caller.did, timeutil.now())
        if row is None:
            await self._audit(caller.did, action, record_id, "denied")
            raise NotFound("no such record", "record_not_found")
        return row

    async def _may_modify(self, caller: Caller, row: dict) -> None:
        """Only the record's patient or one of its authors may change or erase it."""
        if caller.did == row["patient"]:
            return
        authors = {v["author"] for v in await self.db.read(records.versions, row["id"])}
        if caller.did not in authors:
            raise Forbidden("only the record's patient or author may change or erase it", "not_owner")

    async def _open_version(self, did: str, record_id: str, version: int, manifest_cid: str):
        """Finds and opens the caller's envelope, then the manifest; checks both signatures."""
        envelope_cid = await self.db.read(records.live_envelope, record_id, version, did, timeutil.now())
        if envelope_cid is None:
            raise NotFound("no such record", "record_not_found")
        try:
            env_cid = Cid.parse(envelope_cid)
            grant = open_envelope(env_cid, await self.blocks.get(env_cid), self._key_of(did))
            if str(grant.manifest) != manifest_cid:
                raise IntegrityError("the envelope points at another manifest")
            cid = Cid.parse(manifest_cid)
            manifest = decode_manifest(cid, await self.blocks.get(cid))
            body = open_metadata(manifest, grant.dek)
        except (FormatError, SignatureError, NotForUs, crypto.DecryptError):
            raise IntegrityError("the record's envelope or manifest failed verification") from None
        if body.get("record") != record_id or body.get("version") != version:
            raise IntegrityError("the manifest belongs to another record or version")
        return manifest, grant.dek, body

    async def _stream(self, manifest, dek: bytes, size: int, start: int, end: int | None) -> AsyncIterator[bytes]:
        async for piece in plaintext(manifest, dek, size, self.blocks, self.cpu, start, end,
                                     self.config.read_prefetch):
            self.metrics.bytes_read.inc(len(piece))
            yield piece

    # ---- writing --------------------------------------------------------

    async def _prepare_body(self, source: AsyncIterator[bytes], base_type: str, info: RecordInput,
                            content_length: int | None):
        """For FHIR JSON, reads and validates the (bounded) body and fills in what it says."""
        limit = self.config.max_record_bytes
        if content_length is not None and content_length > limit:
            raise TooLarge(f"the record is larger than this node's limit of {limit} bytes")
        if base_type != fhir.MEDIA_TYPE:
            return source, None
        cap = self.config.max_fhir_bytes
        if content_length is not None and content_length > cap:
            raise TooLarge(f"FHIR resources are limited to {cap} bytes on this node")
        body = bytearray()
        async for piece in source:
            body += piece
            if len(body) > cap:
                raise TooLarge(f"FHIR resources are limited to {cap} bytes on this node")
        if not body:
            raise BadRequest("the request body is empty", "empty_body")
        summary = fhir.summarize(bytes(body))
        info.type = info.type or summary.resource_type
        info.date = info.date or summary.date
        return iterate_bytes(bytes(body)), summary

    async def _write_version(self, caller: Caller, record_id: str, version: int, prev: dict | None,
                             source: AsyncIterator[bytes], content_type: str | None, info: RecordInput,
                             content_length: int | None, readers: list[dict]) -> dict:
        author = self._key_of(caller.did)
        full_type, base_type = check_media_type(content_type)
        info.validated()
        source, summary = await self._prepare_body(source, base_type, info, content_length)
        marker = id(source)
        self._inflight[marker] = time.time()
        try:
            dek = crypto.new_data_key()
            sealed = await seal_stream(source, dek, self.blocks, self.cpu, chunk_size=self.config.chunk_size,
                                       max_bytes=self.config.max_record_bytes,
                                       concurrency=self.config.ingest_concurrency)
            depth, links, link_blocks = build_link_tree(sealed.chunks)
            now = timeutil.now()
            body = {
                "record": record_id, "version": version, "prev": prev["cid"] if prev else None,
                "content_type": full_type, "size": sealed.size, "patient": info.patient, "type": info.type,
                "title": info.title, "tags": info.tags, "date": info.date,
                "subject": summary.subject if summary else None,
                "codes": [list(c) for c in summary.codes] if summary else [],
                "text": summary.text if summary else None, "author": author.did, "created": now,
            }
            # Signing and sealing release the GIL: off the event loop, onto the CPU pool.
            manifest, envelope_blocks = await asyncio.get_running_loop().run_in_executor(
                self.cpu, _seal_version, dek, sealed.stream_id, self.config.chunk_size, depth, links, body, author,
                readers, now)
            await self.blocks.put_many([*sealed.pending, *link_blocks, manifest, *envelope_blocks])
            await self.blocks.sync()  # every block durable before the index says the record exists
            await self.blocks.protect([manifest.cid, *(b.cid for b in envelope_blocks)])
            envelopes = [{"cid": str(block.cid), "record_id": record_id, "version": version,
                          "recipient": reader["recipient"], "granter": author.did, "role": reader["role"],
                          "granted": now, "expires": reader.get("expires")}
                         for reader, block in zip(readers, envelope_blocks)]
        finally:
            del self._inflight[marker]
        row = {"id": record_id, "version": version, "cid": str(manifest.cid), "patient": info.patient,
               "type": info.type, "content_type": full_type, "title": info.title,
               "text": summary.text if summary else None, "subject": body["subject"], "date": info.date,
               "tags": info.tags, "size": sealed.size, "created": prev["created"] if prev else now,
               "updated": now, "author": author.did}
        # Where protect() already pinned everything, the reconciler only re-checks
        # it later; otherwise it submits the pins right away.
        confirmed = self.pinner.pinned_on_protect
        status, replicas = ("pinned", 1) if confirmed else ("queued", 0)
        first_look = time.time() + self.config.verify_interval if confirmed else 0
        cfg = self.config

        def commit(conn: sqlite3.Connection) -> None:
            records.save_version(conn, row, envelopes, summary.codes if summary else [])
            for cid, kind in ((row["cid"], "manifest"), *((env["cid"], "envelope") for env in envelopes)):
                pins.want(conn, cid, record_id, kind, cfg.replication_min, cfg.replication_max, now, status,
                          replicas, first_look)
            audit.append(conn, now, caller.did, "write" if version == 1 else "update", record_id, "ok",
                         {"version": version, "size": sealed.size})

        try:
            await self.db.write(commit)
        except sqlite3.IntegrityError:
            raise Conflict("the record changed while this version was written; retry", "version_conflict") from None
        if self.reconciler is not None and not confirmed:
            self.reconciler.kick()
        self.metrics.records_written.inc()
        self.metrics.bytes_written.inc(sealed.size)
        log.info("record version stored", extra={"record": record_id, "version": version, "size": sealed.size,
                                                  "chunks": len(sealed.chunks)})
        return record_view({**row, "pin_status": status, "pin_replicas": replicas})

    async def create(self, caller: Caller, source: AsyncIterator[bytes], content_type: str | None,
                     info: RecordInput, content_length: int | None = None) -> dict:
        readers = [{"recipient": caller.did, "role": "author"}]
        if info.patient and info.patient != caller.did:
            readers.append({"recipient": info.patient, "role": "patient"})
        return await self._write_version(caller, new_record_id(), 1, None, source, content_type, info,
                                         content_length, readers)

    async def update(self, caller: Caller, record_id: str, source: AsyncIterator[bytes], content_type: str | None,
                     info: RecordInput, content_length: int | None = None) -> dict:
        """A new version under a new DEK; every live envelope is re-issued for it."""
        row = await self._readable(caller, record_id, "update")
        await self._may_modify(caller, row)
        now = timeutil.now()
        readers = [{"recipient": e["recipient"], "role": e["role"], "expires": e["expires"]}
                   for e in await self.db.read(records.envelopes_of, record_id, row["version"])
                   if e["revoked"] is None and (e["expires"] is None or e["expires"] > now)]
        info.patient = row["patient"]  # the patient of a record does not change between versions
        info.type = info.type or row["type"]
        info.title = info.title or row["title"]
        info.tags = info.tags or row["tags"]
        return await self._write_version(caller, record_id, row["version"] + 1, row, source, content_type, info,
                                         content_length, readers)

    # ---- reading --------------------------------------------------------

    async def get(self, caller: Caller, record_id: str) -> dict:
        row = await self._readable(caller, record_id, "view")
        await self._audit(caller.did, "view", record_id, "ok")
        return record_view(row)

    async def open(self, caller: Caller, record_id: str) -> OpenRecord:
        row = await self._readable(caller, record_id, "read")
        manifest, dek, body = await self._open_version(caller.did, record_id, row["version"], row["cid"])
        await self._audit(caller.did, "read", record_id, "ok", {"version": row["version"]})
        self.metrics.records_read.inc()
        return OpenRecord(row, body["size"], body["content_type"], self, manifest, dek)

    async def versions(self, caller: Caller, record_id: str) -> list[dict]:
        await self._readable(caller, record_id, "versions")
        return [{"version": v["version"], "cid": v["cid"], "size": v["size"], "content_type": v["content_type"],
                 "created": v["created"], "author": v["author"]}
                for v in await self.db.read(records.versions, record_id)]

    async def search(self, caller: Caller, *, patient: str | None = None, type: str | None = None,
                     tags: list[str] | None = None, code: str | None = None, since: str | None = None,
                     until: str | None = None, q: str | None = None, limit: int = 100,
                     cursor: str | None = None) -> dict:
        if patient is not None:
            try:
                check_did(patient)
            except InvalidDid:
                raise BadRequest("patient must be an Ed25519 did:key", "bad_patient") from None
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                try:
                    timeutil.check_clinical_date(value)
                except ValueError:
                    raise BadRequest(f"{name} must be an ISO 8601 date or date-time", f"bad_{name}") from None
        page_limit(limit)
        before = decode_cursor(cursor) if cursor else None
        rows, next_seq = await self.db.read(
            records.search, caller.did, timeutil.now(), patient=patient, type=type, tags=tags, code=code,
            since=since, until=until, q=q, before_seq=before, limit=limit)
        return {"items": [record_view(r) for r in rows],
                "next": encode_cursor(next_seq) if next_seq is not None else None}

    # ---- erasure and garbage --------------------------------------------

    async def _blocks_of_manifest(self, manifest_cid: Cid) -> list[Cid]:
        """The manifest, its link blocks and chunks (best effort: missing blocks are skipped)."""
        try:
            manifest = decode_manifest(manifest_cid, await self.blocks.get(manifest_cid))
            found = [manifest_cid, *manifest.links]
            if manifest.depth:
                found.extend(await chunk_cids(manifest, self.blocks))
            return found
        except (VaultError, FormatError):
            return [manifest_cid]

    async def erase(self, caller: Caller, record_id: str) -> None:
        """Right to erasure: every version and envelope unpinned and dropped;
        a tombstone stays in the audit chain."""
        row = await self._readable(caller, record_id, "erase")
        await self._may_modify(caller, row)
        cids = await self.db.read(records.all_cids, record_id)
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            records.delete(conn, record_id)
            pins.unwant(conn, cids["manifests"] + cids["envelopes"], now)
            audit.append(conn, now, caller.did, "erase", record_id, "ok",
                         {"versions": len(cids["manifests"]), "envelopes": len(cids["envelopes"])})

        await self.db.write(commit)
        doomed = [Cid.parse(c) for c in cids["envelopes"]]
        for manifest in cids["manifests"]:
            doomed.extend(await self._blocks_of_manifest(Cid.parse(manifest)))
        await self._release(cids["manifests"] + cids["envelopes"], doomed)

    async def _release(self, pinned: list[str], doomed: list[Cid]) -> None:
        """Unpins and deletes what erase dropped; what fails here the reconciler retries."""
        try:
            roots = [Cid.parse(c) for c in pinned]
            await self.blocks.release(roots)
            for cid in roots:
                await self.pinner.unpin(cid)
                await self.db.write(pins.forget, str(cid))
            await self.blocks.delete_many(doomed)
        except VaultError as exc:
            log.warning("erase left work for the reconciler", extra={"error": exc.code})

    async def live_blocks(self) -> set[Cid]:
        live: set[Cid] = set()
        for cid_text, kind in await self.db.read(pins.desired_cids):
            cid = Cid.parse(cid_text)
            live.add(cid)
            if kind == "manifest":
                live.update(await self._blocks_of_manifest(cid))
        return live

    async def collect_garbage(self, grace_seconds: float, force: bool = False) -> dict:
        """Deletes stored blocks nothing pinned refers to and that are older than
        the grace period (and than any upload now in progress)."""
        # The cutoff comes first: an upload that commits while the live set is
        # computed started before it, so its blocks are newer than the cutoff.
        # (One second of slack: file times use the kernel's coarse clock.)
        cutoff = min([time.time() - grace_seconds, *(t - 1.0 for t in self._inflight.values())])
        live = await self.live_blocks()
        candidates = [(cid, mtime) async for cid, mtime in self.blocks.all_cids()]
        if not live and candidates and not force:
            raise Conflict("the index pins nothing but blocks exist: run `medvault reindex` first "
                           "(or gc --force)", "index_empty")
        doomed = [cid for cid, mtime in candidates if cid not in live and mtime < cutoff]
        await self.blocks.delete_many(doomed)
        return {"removed": len(doomed), "kept": len(candidates) - len(doomed)}

    # ---- principals, tokens, audit, health ------------------------------

    async def add_principal(self, caller: Caller, name) -> dict:
        if not isinstance(name, str) or not (0 < len(name) <= 100) or not name.isprintable():
            raise BadRequest("name must be 1 to 100 printable characters", "bad_name")
        principal = Principal.generate(name)
        await asyncio.to_thread(self.keys.add, principal)
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            principal_rows.add_principal(conn, principal.did, name, "principal", now)
            audit.append(conn, now, caller.did, "principal_add", None, "ok", {"did": principal.did})

        await self.db.write(commit)
        return {"did": principal.did, "name": name, "created": now}

    async def list_principals(self) -> list[dict]:
        return await self.db.read(principal_rows.list_principals)

    async def create_token(self, caller: Caller, principal, scopes, expires=None) -> dict:
        try:
            check_did(principal)
        except InvalidDid:
            raise BadRequest("principal must be a did:key", "bad_principal") from None
        if self.keys.get(principal) is None:
            raise NotFound("this node has no such principal", "unknown_principal")
        if expires is not None:
            expires = future_time(expires)
        token_id, token = await issue_token(self.db, principal, scopes, expires)
        await self._audit(caller.did, "token_create", None, "ok", {"token": token_id, "principal": principal})
        return {"token": token, "id": token_id, "principal": principal, "scopes": sorted(set(scopes)),
                "expires": expires}

    async def revoke_token(self, caller: Caller, token_id: str) -> None:
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> bool:
            if not principal_rows.revoke_token(conn, token_id, now):
                return False
            audit.append(conn, now, caller.did, "token_revoke", None, "ok", {"token": token_id})
            return True

        if not await self.db.write(commit):
            raise NotFound("no such active token", "token_not_found")

    async def audit_entries(self, caller: Caller, *, record: str | None = None, principal: str | None = None,
                            since: str | None = None, after: int = 0, limit: int = 100) -> dict:
        if since is not None:
            try:
                since = timeutil.parse_time(since)
            except ValueError:
                raise BadRequest("since must be an RFC 3339 time", "bad_since") from None
        page_limit(limit)
        readable_by = None if caller.has("operator") else caller.did
        items = await self.db.read(lambda conn: audit.entries(
            conn, record=record, principal=principal, since=since, readable_by=readable_by, after_seq=after,
            limit=limit))
        return {"items": items, "next": items[-1]["seq"] if len(items) == limit else None}

    async def verify_audit(self) -> dict:
        return await self.db.read(audit.verify)

    async def health(self) -> dict:
        checks: dict = {}
        try:
            await self.db.read(lambda conn: conn.execute("SELECT 1").fetchone())
            checks["index"] = {"status": "ok"}
        except sqlite3.Error:
            checks["index"] = {"status": "down"}
        for name, probe in (("blocks", self.blocks.health), ("pins", self.pinner.health)):
            try:
                checks[name] = {**await probe(), "backend": getattr(self, name if name == "blocks" else "pinner").name}
            except VaultError as exc:
                checks[name] = {"status": "down", "error": exc.message}
        ok = all(c.get("status") == "ok" for c in checks.values())
        return {"status": "ok" if ok else "degraded", "backend": self.config.backend, "checks": checks}
