"""The node's private keys, each sealed under the node's data key.

One file per principal under ``<data>/keys`` (0600) so the SQLite index never
holds a key: losing the index loses nothing, and ``reindex`` needs only this
folder. Where the data key comes from (passphrase, key file) is
``daemon/masterkey.py``. A key file shows nothing in clear, not even the
principal's did (a patient's did is a patient id): its name is a keyed hash
of the did and its did, role, name and seed are all inside the sealed part.
"""
from __future__ import annotations

import base64
import json
import os
import threading
from abc import ABC, abstractmethod

import nacl.encoding
import nacl.hash

from .fsutil import atomic_write
from .identity import Principal
from .masterkey import (DOMAIN as _DOMAIN, KeyStoreError, create_master_key, load_master_key,  # noqa: F401 (re-exported)
                        seal as _seal, unseal as _open)

_AAD_V3 = _DOMAIN + b"v3"


class KeyStore(ABC):
    """The key interface the engine depends on (DESIGN.md's ``KeyStore``):
    the private keys of this node's principals and of the node itself, by
    did and role. Keys never leave it except as ``Principal`` objects whose
    repr hides them."""

    @abstractmethod
    def add(self, principal: Principal, role: str = "principal") -> None: ...

    @abstractmethod
    def get(self, did: str) -> Principal | None: ...

    @abstractmethod
    def principals(self, role: str = "principal") -> list[Principal]: ...


def _aad(did: str, role: str) -> bytes:
    return _DOMAIN + json.dumps([did, role]).encode()


class FileKeyStore(KeyStore):
    """One sealed file per key under ``<data>/keys``, cached in memory after
    the first load. Every field (did, role, name, seed) is inside the sealed
    part, so a key file edited to claim another role (say, ``node``) fails to
    open. Files of older formats (v1, v2: did and role in clear) are
    rewritten as v3 when first opened."""

    def __init__(self, directory: str, master_key: bytes):
        self._dir = directory
        self._key = master_key
        self._lock = threading.Lock()
        self._by_did: dict[str, tuple[Principal, str]] = {}
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for entry in sorted(os.listdir(directory)):
            if entry.endswith(".key"):
                principal, role = self._read(os.path.join(directory, entry))
                self._by_did[principal.did] = (principal, role)

    def _read(self, path: str) -> tuple[Principal, str]:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read())
        if doc.get("v") == 3:
            if set(doc) != {"v", "sealed"}:  # strict: a field added in clear (say "role") is an edit
                raise KeyStoreError("key file has fields outside its sealed part")
            inner = json.loads(_open(self._key, _AAD_V3, doc["sealed"]))
            principal = Principal.from_seed(inner["name"], base64.b64decode(inner["seed"]))
            if principal.did != inner["did"]:
                raise KeyStoreError("key file does not match its did")
            return principal, inner["role"]
        if doc.get("v") == 1:  # before every field was authenticated: upgrade in place
            inner = json.loads(_open(self._key, _DOMAIN + doc["did"].encode(), doc["sealed"]))
            principal = Principal.from_seed(inner["name"], base64.b64decode(inner["seed"]))
            if principal.did != doc["did"]:
                raise KeyStoreError("key file does not match its did")
            self._write(self._path(principal.did), principal, doc["role"], replace=True)
            if path != self._path(principal.did):
                os.unlink(path)
            return principal, doc["role"]
        did, role = doc["did"], doc["role"]
        inner = json.loads(_open(self._key, _aad(did, role), doc["sealed"]))
        principal = Principal.from_seed(inner["name"], base64.b64decode(inner["seed"]))
        if principal.did != did or inner.get("did") != did or inner.get("role") != role:
            raise KeyStoreError("key file does not match its did or role")
        self._write(self._path(did), principal, role, replace=True)  # v2 shows the did in clear: upgrade
        if path != self._path(did):
            os.unlink(path)
        return principal, role

    def _write(self, path: str, principal: Principal, role: str, replace: bool = False) -> None:
        inner = json.dumps({"name": principal.name, "did": principal.did, "role": role,
                            "seed": base64.b64encode(principal.seed).decode()}).encode()
        doc = {"v": 3, "sealed": _seal(self._key, _AAD_V3, inner)}
        atomic_write(path, json.dumps(doc).encode(), 0o600, exclusive=not replace)

    def _path(self, did: str) -> str:
        """A name that does not show the did but is the same for it every time."""
        name = nacl.hash.blake2b(did.encode(), key=self._key, person=b"mv-keyfile-name", digest_size=16,
                                 encoder=nacl.encoding.HexEncoder).decode()
        return os.path.join(self._dir, name + ".key")

    def add(self, principal: Principal, role: str = "principal") -> None:
        with self._lock:
            self._write(self._path(principal.did), principal, role)
            self._by_did[principal.did] = (principal, role)

    def get(self, did: str) -> Principal | None:
        entry = self._by_did.get(did) if isinstance(did, str) else None
        return entry[0] if entry else None

    def principals(self, role: str = "principal") -> list[Principal]:
        return [p for p, r in self._by_did.values() if r == role]
