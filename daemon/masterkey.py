"""Where the node's master key comes from, and the data key it wraps.

The master key is derived with Argon2id from a passphrase (``--passphrase-file``,
``MEDVAULT_PASSPHRASE_FILE``, or the older ``MEDVAULT_PASSPHRASE``) or read
from a 32-byte 0600 key file (``--key-file``; by default ``master.key`` in the
data dir, the demo setup). It wraps one thing: a random 32-byte *data key*,
stored sealed in config.json. The data key seals the keystore's files and,
through a domain-separated BLAKE2b, keys the encrypted index. So ``medvault
rekey`` re-wraps 32 bytes and rewrites config.json: no key file, record or
index page is touched. Data dirs made before this design have no wrapped
key: their master key *is* the data key.
"""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import nacl.encoding
import nacl.hash
import nacl.pwhash
import nacl.utils
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as _aead_open,
    crypto_aead_xchacha20poly1305_ietf_encrypt as _aead_seal,
)
from nacl.exceptions import CryptoError

from .fsutil import atomic_write

DOMAIN = b"medvault/v1/keystore\x00"
_WRAP = b"medvault/v1/data-key\x00"
_CHECK = b"medvault master key check"
_INDEX = b"medvault/v1/index-key"
PASSPHRASE_ENV = "MEDVAULT_PASSPHRASE"  # kept for old setups: an env var is visible in /proc/PID/environ
PASSPHRASE_FILE_ENV = "MEDVAULT_PASSPHRASE_FILE"
DEMO_KEY_FILE = "master.key"


class KeyStoreError(Exception):
    """The master key is missing or wrong, or a key file is damaged."""


class WrongKey(KeyStoreError):
    """The passphrase or key file given does not open this data dir."""


def seal(key: bytes, aad: bytes, plaintext: bytes) -> str:
    nonce = nacl.utils.random(24)
    return base64.b64encode(nonce + _aead_seal(plaintext, aad, nonce, key)).decode()


def unseal(key: bytes, aad: bytes, sealed: str) -> bytes:
    raw = base64.b64decode(sealed)
    try:
        return _aead_open(raw[24:], aad, raw[:24], key)
    except CryptoError as exc:
        raise KeyStoreError("wrong master key or damaged key file") from exc


@dataclass(frozen=True)
class KeySource:
    """What the operator gave to unlock the node: a passphrase, a key file
    path, or neither (the demo key file in the data dir). repr hides the
    passphrase."""

    passphrase: bytes | None = None
    key_file: str | None = None

    def __repr__(self) -> str:
        return f"KeySource(passphrase={'***' if self.passphrase else None}, key_file={self.key_file!r})"

    @classmethod
    def given(cls, passphrase_file: str | None = None, key_file: str | None = None) -> "KeySource":
        """Exactly what the options name (``rekey``'s new key ignores the environment)."""
        if passphrase_file and key_file:
            raise KeyStoreError("give a passphrase file or a key file, not both")
        if key_file:
            return cls(key_file=os.path.abspath(key_file))
        return cls(passphrase=read_passphrase(passphrase_file)) if passphrase_file else cls()

    @classmethod
    def resolve(cls, passphrase_file: str | None = None, key_file: str | None = None) -> "KeySource":
        """Command-line options first, then MEDVAULT_PASSPHRASE_FILE, then MEDVAULT_PASSPHRASE."""
        if passphrase_file or key_file:
            return cls.given(passphrase_file, key_file)
        if os.environ.get(PASSPHRASE_FILE_ENV):
            return cls.given(os.environ[PASSPHRASE_FILE_ENV])
        if os.environ.get(PASSPHRASE_ENV):
            return cls(passphrase=os.environ[PASSPHRASE_ENV].encode())
        return cls()


def read_passphrase(path: str) -> bytes:
    """The file's bytes without one trailing newline (echo adds one)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError as exc:
        raise KeyStoreError(f"cannot read the passphrase file ({exc.strerror})") from None
    text = text[:-2] if text.endswith(b"\r\n") else text[:-1] if text.endswith(b"\n") else text
    if not text:
        raise KeyStoreError("the passphrase file is empty")
    return text


def _derive(params: dict, passphrase: bytes) -> bytes:
    return nacl.pwhash.argon2id.kdf(32, passphrase, base64.b64decode(params["salt"]),
                                    opslimit=params["ops"], memlimit=params["mem"])


def _read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            key = handle.read()
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        raise KeyStoreError("master key file is missing or unreadable") from exc
    if mode & 0o077:
        raise KeyStoreError("master key file must not be readable by group or others (chmod 600)")
    if len(key) != 32:
        raise KeyStoreError("master key file must hold exactly 32 bytes")
    return key


def _inside(path: str, data_dir: str) -> bool:
    data_dir = os.path.realpath(data_dir)
    return os.path.commonpath([os.path.realpath(path), data_dir]) == data_dir


def _new_master(data_dir: str, source: KeySource, allow_beside: bool) -> tuple[dict, bytes]:
    """A fresh master key from the source, and its config entry (no wrapped key yet)."""
    if source.passphrase:
        params = {"kind": "argon2id", "salt": base64.b64encode(nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)).decode(),
                  "ops": nacl.pwhash.argon2id.OPSLIMIT_MODERATE, "mem": nacl.pwhash.argon2id.MEMLIMIT_MODERATE}
        return params, _derive(params, source.passphrase)
    if source.key_file:
        if _inside(source.key_file, data_dir):
            raise KeyStoreError("--key-file must be outside the data dir (a copy of the dir would carry it)")
        if not os.path.exists(source.key_file):
            atomic_write(source.key_file, nacl.utils.random(32), 0o600, exclusive=True)
        return {"kind": "file", "path": source.key_file}, _read_key_file(source.key_file)
    if not allow_beside:
        raise KeyStoreError("give the new --passphrase-file or --key-file")
    key = nacl.utils.random(32)
    atomic_write(os.path.join(data_dir, DEMO_KEY_FILE), key, 0o600, exclusive=True)
    return {"kind": "file", "path": DEMO_KEY_FILE}, key


def create_master_key(data_dir: str, source: KeySource | None = None) -> dict:
    """``init``: a master key from the source and a fresh data key wrapped
    under it; returns the config entry."""
    params, master = _new_master(data_dir, source or KeySource.resolve(), allow_beside=True)
    params["wrapped"] = seal(master, _WRAP, nacl.utils.random(32))
    return params


def _master(data_dir: str, params: dict, source: KeySource) -> bytes:
    if params["kind"] == "argon2id":
        if source.key_file:
            raise KeyStoreError("this data dir is passphrase-protected: give --passphrase-file, not --key-file")
        if not source.passphrase:
            raise KeyStoreError(f"this data dir is passphrase-protected: give --passphrase-file "
                                f"or set {PASSPHRASE_FILE_ENV}")
        return _derive(params, source.passphrase)
    if source.passphrase:
        raise KeyStoreError("this data dir is unlocked by a key file, not a passphrase")
    return _read_key_file(source.key_file or os.path.join(data_dir, params["path"]))


def load_master_key(data_dir: str, params: dict, source: KeySource | None = None) -> bytes:
    """The data key (what seals key files and keys the index); WrongKey when
    the passphrase or key file does not open it. Reads only: a wrong key
    changes nothing on disk."""
    master = _master(data_dir, params, source or KeySource.resolve())
    try:
        if "wrapped" in params:
            return unseal(master, _WRAP, params["wrapped"])
        if unseal(master, DOMAIN, params["check"]) == _CHECK:  # before the data key: the master key is it
            return master
    except KeyStoreError:
        pass
    raise WrongKey("wrong passphrase or key file: it does not open this data dir (nothing was changed)")


def rewrap(data_dir: str, params: dict, old: KeySource, new: KeySource) -> dict:
    """``rekey``: the same data key under a master key from ``new``."""
    data_key = load_master_key(data_dir, params, old)
    fresh, master = _new_master(data_dir, new, allow_beside=False)
    fresh["wrapped"] = seal(master, _WRAP, data_key)
    return fresh


def storage(data_dir: str, params: dict, source: KeySource | None = None) -> str:
    """How the master key is kept, for health: passphrase, key-file or beside-data."""
    if params.get("kind") == "argon2id":
        return "passphrase"
    path = (source.key_file if source and source.key_file else None) or os.path.join(data_dir, params["path"])
    return "beside-data" if _inside(path, data_dir) else "key-file"


def index_key(data_key: bytes) -> bytes:
    """The index's SQLCipher key: BLAKE2b keyed by the data key over a domain
    string, so it is never the key that seals the key files."""
    return nacl.hash.blake2b(_INDEX, key=data_key, digest_size=32, encoder=nacl.encoding.RawEncoder)
