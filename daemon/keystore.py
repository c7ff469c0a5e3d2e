"""The node's private keys, each sealed under the node master key.

One file per principal under ``<data>/keys`` (0600) so the SQLite index never
holds a key: losing the index loses nothing, and ``reindex`` needs only this
folder. The master key comes from a 0600 key file (unattended service) or
from Argon2id over a passphrase in ``MEDVAULT_PASSPHRASE``.
"""
from __future__ import annotations

import base64
import json
import os
import threading
from abc import ABC, abstractmethod

import nacl.pwhash
import nacl.utils
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as _aead_open,
    crypto_aead_xchacha20poly1305_ietf_encrypt as _aead_seal,
)
from nacl.exceptions import CryptoError

from .fsutil import atomic_write
from .identity import Principal

_DOMAIN = b"medvault/v1/keystore\x00"
_CHECK = b"medvault master key check"
PASSPHRASE_ENV = "MEDVAULT_PASSPHRASE"


class KeyStoreError(Exception):
    """The master key is missing or wrong, or a key file is damaged."""


def _seal(key: bytes, aad: bytes, plaintext: bytes) -> str:
    nonce = nacl.utils.random(24)
    return base64.b64encode(nonce + _aead_seal(plaintext, aad, nonce, key)).decode()


def _open(key: bytes, aad: bytes, sealed: str) -> bytes:
    raw = base64.b64decode(sealed)
    try:
        return _aead_open(raw[24:], aad, raw[:24], key)
    except CryptoError as exc:
        raise KeyStoreError("wrong master key or damaged key file") from exc


def create_master_key(data_dir: str) -> dict:
    """Creates the master key and returns the config section that describes it."""
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase:
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        params = {"kind": "argon2id", "salt": base64.b64encode(salt).decode(),
                  "ops": nacl.pwhash.argon2id.OPSLIMIT_MODERATE, "mem": nacl.pwhash.argon2id.MEMLIMIT_MODERATE}
        key = _derive(params, passphrase)
    else:
        key = nacl.utils.random(32)
        atomic_write(os.path.join(data_dir, "master.key"), key, 0o600, exclusive=True)
        params = {"kind": "file", "path": "master.key"}
    params["check"] = _seal(key, _DOMAIN, _CHECK)
    return params


def _derive(params: dict, passphrase: str) -> bytes:
    return nacl.pwhash.argon2id.kdf(32, passphrase.encode(), base64.b64decode(params["salt"]),
                                    opslimit=params["ops"], memlimit=params["mem"])


def load_master_key(data_dir: str, params: dict) -> bytes:
    if params["kind"] == "argon2id":
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if not passphrase:
            raise KeyStoreError(f"the keystore is passphrase-protected: set {PASSPHRASE_ENV}")
        key = _derive(params, passphrase)
    else:
        path = os.path.join(data_dir, params["path"])
        try:
            with open(path, "rb") as handle:
                key = handle.read()
        except OSError as exc:
            raise KeyStoreError("master key file is missing or unreadable") from exc
        if os.stat(path).st_mode & 0o077:
            raise KeyStoreError("master key file must not be readable by group or others (chmod 600)")
    if _open(key, _DOMAIN, params["check"]) != _CHECK:
        raise KeyStoreError("wrong master key")
    return key


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
    the first load. Every stored field is authenticated: the did and role are
    the AEAD's associated data and are repeated inside the sealed part, so a
    key file edited to claim another role (say, ``node``) fails to open."""

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
        if doc.get("v") == 1:  # before every field was authenticated: upgrade in place
            inner = json.loads(_open(self._key, _DOMAIN + doc["did"].encode(), doc["sealed"]))
            principal = Principal.from_seed(inner["name"], base64.b64decode(inner["seed"]))
            if principal.did != doc["did"]:
                raise KeyStoreError("key file does not match its did")
            self._write(path, principal, doc["role"], replace=True)
            return principal, doc["role"]
        did, role = doc["did"], doc["role"]
        inner = json.loads(_open(self._key, _aad(did, role), doc["sealed"]))
        principal = Principal.from_seed(inner["name"], base64.b64decode(inner["seed"]))
        if principal.did != did or inner.get("did") != did or inner.get("role") != role:
            raise KeyStoreError("key file does not match its did or role")
        return principal, role

    def _write(self, path: str, principal: Principal, role: str, replace: bool = False) -> None:
        inner = json.dumps({"name": principal.name, "did": principal.did, "role": role,
                            "seed": base64.b64encode(principal.seed).decode()}).encode()
        doc = {"v": 2, "did": principal.did, "role": role, "sealed": _seal(self._key, _aad(principal.did, role), inner)}
        atomic_write(path, json.dumps(doc).encode(), 0o600, exclusive=not replace)

    def add(self, principal: Principal, role: str = "principal") -> None:
        path = os.path.join(self._dir, principal.did.rsplit(":", 1)[-1] + ".key")
        with self._lock:
            self._write(path, principal, role)
            self._by_did[principal.did] = (principal, role)

    def get(self, did: str) -> Principal | None:
        entry = self._by_did.get(did) if isinstance(did, str) else None
        return entry[0] if entry else None

    def principals(self, role: str = "principal") -> list[Principal]:
        return [p for p, r in self._by_did.values() if r == role]
