"""``medvault reindex``: rebuild the SQLite index from what is pinned.

Every pinned dag-cbor root is tried as an envelope with each local
principal's key: one that opens gives a readable record version (its
manifest is fetched, opened and verified); one that does not may still carry
a receipt for a local granter, which restores an outgoing grant. Principals
come from the keystore. The old index file, if any, is kept beside the new
one; tokens cannot be recovered (only their hashes were stored), so a fresh
owner token is written to owner.token.

The audit chain comes back from its anchors (daemon/anchors.py): pinned
anchor blocks are opened with the owner's key and checked against the node's
signature, the newest complete chain (from the pointer file, else the
pinned anchors) is written back entry for entry, and its anchors are pinned
again. Entries after the newest anchor were never anchored and are lost;
without any anchor the chain starts again. A ``reindex`` entry follows.
"""
from __future__ import annotations

import logging
import os
import time

from indexer import anchors as anchor_rows, audit, pins, principals as principal_rows, records
from indexer.sql import sqlite3

from . import crypto, timeutil
from .auth import SCOPES, issue_token
from .blocks import FormatError, decode_node
from .anchors import PointerError, anchor_keys, read_pointer, recover_chain, write_pointer
from .audit_anchor import is_anchor, open_anchor
from .blockstore.kubo import KuboBlockStore
from .cid import DAG_CBOR, Cid
from .config import Config
from .envelope import NotForUs, open_envelope, open_receipt
from .fsutil import atomic_write
from .manifest import SignatureError, decode_manifest, open_metadata
from .masterkey import KeySource
from .node import OWNER_TOKEN_FILE, close_vault, open_vault, unlock
from .views import role_of, row_from_metadata

log = logging.getLogger("medvault.reindex")


async def _roots(vault) -> list[Cid]:
    if isinstance(vault.blocks, KuboBlockStore):
        return [Cid.parse(c) for c in await vault.blocks.rpc.pin_ls() if c.startswith("bafy")]
    return [cid async for cid, _ in vault.blocks.all_cids() if cid.codec == DAG_CBOR]


async def reindex(config: Config, source: KeySource | None = None) -> dict:
    started = time.perf_counter()
    data_key = unlock(config, source)  # before the old index is moved: a wrong key changes nothing
    # The staged read audits go aside with the index they were on their way
    # into: a new index would chain them ahead of the anchored history it
    # restores (and collide with its seqs).
    stamp = int(time.time())
    for path in (config.index_path, config.audit_stage_path):
        if os.path.exists(path):
            aside = f"{path}.before-reindex-{stamp}"
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.replace(path + suffix, aside + suffix)
    vault = await open_vault(config, source, data_key)
    try:
        locals_ = vault.keys.principals()
        opened: dict[str, list] = {}  # record id -> [(version, manifest cid, body, envelope row)]
        receipts = []
        node_key, owner_key = anchor_keys(vault.keys)
        found_anchors = {}
        for root in await _roots(vault):
            try:
                data = await vault.blocks.get(root)
                node = decode_node(root, data)
                if is_anchor(node):
                    found_anchors[root] = open_anchor(root, data, owner_key, node_key.did)
                    continue
                if "box" not in node:
                    continue  # a manifest or link block, reached through its envelopes
            except (FormatError, SignatureError):
                continue
            for principal in locals_:
                try:
                    grant = open_envelope(root, data, principal)
                except (NotForUs, SignatureError, FormatError):
                    try:
                        receipts.append((open_receipt(root, data, principal), principal.did))
                    except (NotForUs, FormatError):
                        pass
                    continue
                try:
                    manifest = decode_manifest(grant.manifest, await vault.blocks.get(grant.manifest))
                    body = open_metadata(manifest, grant.dek)
                except (FormatError, SignatureError, crypto.DecryptError):
                    log.warning("skipped an envelope whose manifest does not verify")
                    continue
                opened.setdefault(body["record"], []).append((body, str(grant.manifest), {
                    "cid": str(root), "record_id": body["record"], "version": body["version"],
                    "manifest": str(grant.manifest),
                    "recipient": principal.did, "granter": grant.granter,
                    "role": role_of(principal.did, body),
                    "granted": grant.granted, "expires": grant.expires}))
        manifests = {m: body for versions in opened.values() for body, m, _ in versions}
        outgoing = []
        for receipt, granter in receipts:
            body = manifests.get(str(receipt.manifest))
            if body is not None:
                outgoing.append({"cid": str(receipt.envelope), "record_id": body["record"],
                                 "manifest": str(receipt.manifest),
                                 "version": body["version"], "recipient": receipt.recipient, "granter": granter,
                                 "role": "patient" if receipt.recipient == body.get("patient") else "grant",
                                 "granted": receipt.granted, "expires": receipt.expires})
        try:
            pointer = read_pointer(config.data_dir, node_key.did)
        except PointerError:
            log.warning("the audit anchor pointer file does not verify; using the pinned anchors")
            pointer = None
        chain = await recover_chain(found_anchors, pointer, vault.blocks.get, owner_key, node_key.did)
        now = timeutil.now()
        cfg = vault.config
        status, replicas = ("pinned", 1) if vault.pinner.pinned_on_protect else ("queued", 0)

        def commit(conn: sqlite3.Connection) -> None:
            audit.restore(conn, [entry for anchor in chain for entry in anchor.entries])
            for anchor in chain:
                anchor_rows.add(conn, str(anchor.cid), None if anchor.prev is None else str(anchor.prev),
                                anchor.first, anchor.last, anchor.head, now)
                pins.want(conn, str(anchor.cid), None, "anchor", cfg.replication_min, cfg.replication_max, now,
                          status, replicas)
            for principal in locals_:
                principal_rows.add_principal(conn, principal.did, principal.name, "principal", now)
            for node_key in vault.keys.principals(role="node"):
                principal_rows.add_principal(conn, node_key.did, "node", "node", now)
            for record_id, versions in opened.items():
                by_version = {}
                for body, manifest, envelope in versions:
                    by_version.setdefault(body["version"], (body, manifest, []))[2].append(envelope)
                prev = None  # the manifest each pinned version continues (rotated-away ones are gone)
                for version in sorted(by_version):
                    body, manifest, envelopes = by_version[version]
                    row = row_from_metadata(body, manifest)
                    author_role = "creator" if prev is None else "writer"
                    records.save_version(conn, row, [], [tuple(c) for c in body.get("codes") or []], prev_cid=prev,
                                         roles=[(body["author"], author_role), (body.get("patient"), "patient")])
                    prev = manifest
                    records.add_envelopes(conn, envelopes)
                    pins.want(conn, manifest, record_id, "manifest", cfg.replication_min, cfg.replication_max, now,
                              status, replicas)
                    for envelope in envelopes:
                        pins.want(conn, envelope["cid"], record_id, "envelope", cfg.replication_min,
                                  cfg.replication_max, now, status, replicas)
            records.add_envelopes(conn, outgoing)
            for envelope in outgoing:
                pins.want(conn, envelope["cid"], envelope["record_id"], "envelope", cfg.replication_min,
                          cfg.replication_max, now, status, replicas)
            audit.append(conn, now, None, "reindex", None, "ok",
                         {"records": len(opened), "outgoing_grants": len(outgoing),
                          "audit_restored": chain[-1].last if chain else 0})

        await vault.db.write(commit)
        if chain:
            write_pointer(config.data_dir, node_key, chain[-1].cid, chain[-1].last)
        owner = next((p for p in locals_ if p.name == "owner"), None)
        if owner is not None:
            _, token = await issue_token(vault.db, owner.did, list(SCOPES), None)
            atomic_write(os.path.join(config.data_dir, OWNER_TOKEN_FILE), token.encode() + b"\n", 0o600)
        return {"records": len(opened), "envelopes": sum(len(v) for v in opened.values()) + len(outgoing),
                "audit_entries": chain[-1].last if chain else 0, "seconds": round(time.perf_counter() - started, 2)}
    finally:
        await close_vault(vault)
