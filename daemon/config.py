"""Node configuration: ``<data>/config.json``, written once by ``medvault init``.

Every limit a deployment may want to tune lives here with its default, so a
node's behaviour is visible in one file.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from .audit_anchor import MAX_ENTRIES
from .crypto import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from .manifest import MAX_LINKS
from .fsutil import atomic_write
from .padding import DEFAULT_BUCKETS, check_buckets

CONFIG_FILE = "config.json"
DEFAULT_LISTEN = "127.0.0.1:7420"


@dataclass
class Config:
    data_dir: str
    backend: str = "local"  # local | kubo | cluster
    ipfs_api: str | None = None
    cluster_api: str | None = None
    listen: str = DEFAULT_LISTEN
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_record_bytes: int = 4 * 1024 ** 3
    max_fhir_bytes: int = 16 * 1024 ** 2
    max_car_bytes: int = 4 * 1024 ** 3  # a CAR import above this is 413 (it is spooled to disk while verified)
    link_fanout: int = MAX_LINKS  # links per manifest/link block; smaller only to test deep trees
    # Size buckets a record's sealed stream is padded to (daemon/padding.py); [] turns padding off.
    pad_buckets: list[int] = field(default_factory=lambda: list(DEFAULT_BUCKETS))
    ingest_concurrency: int = 4
    read_prefetch: int = 4
    replication_min: int = 2
    replication_max: int = 3
    gc_grace_seconds: int = 3600
    reconcile_interval: float = 2.0
    verify_interval: float = 30.0
    cluster_basic_auth: str | None = None  # "user:password"
    cluster_token: str | None = None
    request_timeout: float = 60.0
    fetch_timeout: float = 30.0  # how long a block no peer has is waited for before 504
    query_time_limit: float = 5.0  # an index read running longer is interrupted (503 query_timeout)
    # Page cache of each search connection (two): decrypted index pages kept
    # in memory, so a search at a million records does not decrypt the same
    # index pages again on every query. Allocated only as pages are read.
    index_cache_mb: int = 64
    # FHIR resources up to this size keep a copy of their current version in
    # the encrypted index, so a searchset is read from it rather than opened
    # resource by resource (0: no copies; docs/DECISIONS.md, "FHIR search").
    index_copy_max_bytes: int = 64 * 1024
    header_timeout: float = 15.0  # a connection's complete request headers (and idle keep-alive) within this
    body_timeout: float = 30.0  # longest silence from a client while its request body is being read
    max_connections: int = 256  # open connections; more get 503 too_many_connections
    min_free_bytes: int = 64 * 1024 ** 2  # below this, uploads get 507 and health says degraded
    reserve_bytes: int = 8 * 1024 ** 2  # kept in a file, given back so an erase can run on a full disk
    grant_policy: str = "patient_or_author"  # or "patient": only the record's patient may grant
    emergency_minutes: int = 60  # how long break-glass access lasts
    # The audit chain is anchored (daemon/anchors.py) every this many entries,
    # or once its oldest unanchored entry is this many minutes old.
    audit_anchor_every: int = 100
    audit_anchor_minutes: float = 10.0
    master_key: dict = field(default_factory=dict)

    @property
    def blocks_dir(self) -> str:
        return os.path.join(self.data_dir, "blocks")

    @property
    def keys_dir(self) -> str:
        return os.path.join(self.data_dir, "keys")

    @property
    def index_path(self) -> str:
        return os.path.join(self.data_dir, "index.sqlite")

    @property
    def audit_stage_path(self) -> str:
        """Read audits on their way into the chain (indexer/audit_stage.py)."""
        return os.path.join(self.data_dir, "audit-stage.sqlite")

    def validate(self) -> "Config":
        if self.backend not in ("local", "kubo", "cluster"):
            raise ValueError("backend must be local, kubo or cluster")
        if self.backend == "kubo" and not self.ipfs_api:
            raise ValueError("the kubo backend needs --ipfs-api")
        if self.backend == "cluster" and not (self.ipfs_api and self.cluster_api):
            raise ValueError("the cluster backend needs --ipfs-api and --cluster-api")
        if not 1024 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be between 1024 and {MAX_CHUNK_SIZE}")
        if not 2 <= self.link_fanout <= MAX_LINKS:
            raise ValueError(f"link_fanout must be between 2 and {MAX_LINKS}")
        check_buckets(self.pad_buckets)
        if self.grant_policy not in ("patient_or_author", "patient"):
            raise ValueError("grant_policy must be patient_or_author or patient")
        if not 0 < self.fetch_timeout <= 3600:
            raise ValueError("fetch_timeout must be between 0 and 3600 seconds")
        if not 0 < self.query_time_limit <= 3600:
            raise ValueError("query_time_limit must be between 0 and 3600 seconds")
        if not 2 <= self.index_cache_mb <= 16 * 1024:
            raise ValueError("index_cache_mb must be between 2 and 16384")
        if not 0 <= self.index_copy_max_bytes <= self.max_fhir_bytes:
            raise ValueError("index_copy_max_bytes must be between 0 and max_fhir_bytes")
        if not (0 < self.header_timeout <= 3600 and 0 < self.body_timeout <= 3600):
            raise ValueError("header_timeout and body_timeout must be between 0 and 3600 seconds")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.min_free_bytes < 0 or self.reserve_bytes < 0:
            raise ValueError("min_free_bytes and reserve_bytes must not be negative")
        if not 1 <= self.audit_anchor_every <= MAX_ENTRIES:
            raise ValueError(f"audit_anchor_every must be between 1 and {MAX_ENTRIES}")
        if not 0 < self.audit_anchor_minutes <= 7 * 24 * 60:
            raise ValueError("audit_anchor_minutes must be between 0 and 10080 (a week)")
        if not 1 <= self.replication_min <= self.replication_max:
            raise ValueError("replication_min must be at least 1 and at most replication_max")
        return self

    def save(self, exclusive: bool = False) -> None:
        doc = {k: v for k, v in asdict(self).items() if k != "data_dir"}
        atomic_write(os.path.join(self.data_dir, CONFIG_FILE), json.dumps(doc, indent=2).encode() + b"\n",
                     0o600, exclusive=exclusive)

    @classmethod
    def load(cls, data_dir: str) -> "Config":
        path = os.path.join(data_dir, CONFIG_FILE)
        try:
            with open(path, "rb") as handle:
                doc = json.loads(handle.read())
        except FileNotFoundError:
            raise FileNotFoundError(f"no medvault data dir at {data_dir} (run `medvault init` first)") from None
        known = set(cls.__dataclass_fields__) - {"data_dir"}
        return cls(data_dir=data_dir, **{k: v for k, v in doc.items() if k in known}).validate()
