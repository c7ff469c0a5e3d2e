"""Creating a data dir and opening a node: the one place that wires config,
keys, index, backend and Vault together (the CLI and tests both use it)."""
from __future__ import annotations

import logging
import os

from indexer import principals as principal_rows
from indexer.db import Database

from . import timeutil
from .auth import SCOPES, issue_token
from .blockstore.cluster import ClusterPinner, ClusterRest
from .blockstore.kubo import KuboBlockStore, KuboPinner, KuboRpc
from .blockstore.local import LocalBlockStore, LocalPinner
from .config import Config
from .fsutil import atomic_write
from .identity import Principal
from .keystore import FileKeyStore
from .masterkey import KeySource, create_master_key, index_key, load_master_key, storage
from .access import AccessPolicy
from .admin import Admin
from .anchors import AuditAnchors
from .garbage import GarbageCollector
from .importer import Imports
from .metrics import Metrics
from .pin_admin import PinAdmin
from .record_service import Records
from .services import Services
from .sharing import Sharing
from .vault import Vault
from .version_writer import VersionWriter

log = logging.getLogger("medvault.node")
OWNER_TOKEN_FILE = "owner.token"


class InitError(Exception):
    pass


async def init_data_dir(config: Config, source: KeySource | None = None) -> dict:
    """``medvault init``: data dir, config, master key, node key, the "owner"
    principal and an all-scopes token for it in ``owner.token``. The master
    key comes from ``source`` (passphrase or key file; by default the
    environment, else a demo key file in the data dir)."""
    config.validate()
    data_dir = config.data_dir
    if os.path.exists(os.path.join(data_dir, "config.json")):
        raise InitError(f"{data_dir} is already a medvault data dir; refusing to overwrite")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if os.listdir(data_dir):
        raise InitError(f"{data_dir} is not empty; refusing to overwrite")
    source = source or KeySource.resolve()
    config.master_key = create_master_key(data_dir, source)
    data_key = load_master_key(data_dir, config.master_key, source)
    keys = FileKeyStore(config.keys_dir, data_key)
    node_key = Principal.generate("node")
    owner = Principal.generate("owner")
    keys.add(node_key, role="node")
    keys.add(owner)
    db = Database(config.index_path, index_key(data_key))
    await db.start()
    try:
        now = timeutil.now()
        await db.write(principal_rows.add_principal, node_key.did, "node", "node", now)
        await db.write(principal_rows.add_principal, owner.did, "owner", "principal", now)
        _, token = await issue_token(db, owner.did, list(SCOPES), None)
    finally:
        await db.close()
    token_file = os.path.join(data_dir, OWNER_TOKEN_FILE)
    atomic_write(token_file, token.encode() + b"\n", 0o600, exclusive=True)
    config.save(exclusive=True)  # last: its presence marks a complete init
    return {"did": owner.did, "token_file": os.path.abspath(token_file)}


def make_backend(config: Config, metrics: Metrics):
    """The block store and pinner the config names (DESIGN.md's backend table)."""
    if config.backend == "local":
        store = LocalBlockStore(config.blocks_dir)
        store.remove_temp_files()
        return store, LocalPinner(store)
    rpc = KuboRpc(config.ipfs_api, metrics, timeout=config.request_timeout)
    if config.backend == "kubo":
        return KuboBlockStore(rpc, config.fetch_timeout), KuboPinner(rpc)
    rest = ClusterRest(config.cluster_api, metrics, basic_auth=config.cluster_basic_auth,
                       token=config.cluster_token, timeout=config.request_timeout)
    return KuboBlockStore(rpc, config.fetch_timeout), ClusterPinner(rest)


def unlock(config: Config, source: KeySource | None = None) -> bytes:
    """The node's data key, or WrongKey; reads only (a wrong key changes nothing)."""
    return load_master_key(config.data_dir, config.master_key, source or KeySource.resolve())


async def open_vault(config: Config, source: KeySource | None = None, data_key: bytes | None = None) -> Vault:
    """Opens a node with the data key (or unlocks it from ``source``)."""
    source = source or KeySource.resolve()
    data_key = data_key or unlock(config, source)
    keys = FileKeyStore(config.keys_dir, data_key)
    db = Database(config.index_path, index_key(data_key), time_limit=config.query_time_limit,
                  cache_mb=config.index_cache_mb, stage_path=config.audit_stage_path)
    await db.start()
    metrics = Metrics()
    blocks, pinner = make_backend(config, metrics)
    services = Services(config, db, keys, blocks, pinner, metrics)
    services.key_storage = storage(config.data_dir, config.master_key, source)
    return assemble(services)


def assemble(services: Services) -> Vault:
    """The components over shared services, wired in one place (the order
    shows who depends on whom)."""
    access = AccessPolicy(services)
    writer = VersionWriter(services)
    return Vault(services, access=access, records=Records(services, access, writer),
                 sharing=Sharing(services, access, writer), imports=Imports(services, access),
                 pins=PinAdmin(services), admin=Admin(services, access), anchors=AuditAnchors(services),
                 garbage=GarbageCollector(services))


async def close_vault(vault: Vault) -> None:
    await vault.close()
    await vault.pinner.close()
    await vault.blocks.close()  # (kubo+cluster share one RPC client; closing twice is harmless)
    await vault.db.close()
