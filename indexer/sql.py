"""The one SQLite driver every module uses: SQLCipher 4 (``sqlcipher3``).

``sqlcipher3`` is a fork of the stdlib ``sqlite3`` module with its own Row
and exception classes, so a module that imported the stdlib beside it would
catch the wrong ``IntegrityError`` and fail an ``isinstance`` on rows. Every
file imports ``sqlite3`` from here instead (``from indexer.sql import
sqlite3``).

``open_encrypted`` is the only way a connection is made: ``PRAGMA key`` is
its first statement (a raw 256-bit key, so no PBKDF2 on each open), then a
read proves the key before anything else runs. An index written before
encryption is migrated once, in place, with ``sqlcipher_export``.
"""
from __future__ import annotations

import os

from sqlcipher3 import dbapi2 as sqlite3

__all__ = ["sqlite3", "open_encrypted", "WrongIndexKey"]
_PLAIN_HEADER = b"SQLite format 3\x00"


class WrongIndexKey(sqlite3.DatabaseError):
    """The key does not open this index (or the file is not an index)."""


def _key_pragma(key: bytes) -> str:
    if len(key) != 32:
        raise ValueError("the index key must be 32 bytes")
    return f"\"x'{key.hex()}'\""


def open_encrypted(path: str, key: bytes, **kwargs) -> sqlite3.Connection:
    """A keyed connection; the key is checked before it is returned."""
    conn = sqlite3.connect(path, **kwargs)
    try:
        conn.execute(f"PRAGMA key = {_key_pragma(key)}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise WrongIndexKey("the index does not open with this node's key") from exc
    return conn


def is_plaintext(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == _PLAIN_HEADER
    except FileNotFoundError:
        return False


def encrypt_in_place(path: str, key: bytes) -> None:
    """Rewrites a plaintext index as an encrypted one and removes the
    plaintext file and its WAL. Crash-safe: the encrypted copy replaces the
    original only once complete (rename), and the plaintext is read again
    on the next start if it did not."""
    partial = path + ".encrypting"
    for leftover in (partial, partial + "-journal"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    plain = sqlite3.connect(path, isolation_level=None)
    try:
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        version = plain.execute("PRAGMA user_version").fetchone()[0]
        os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        plain.execute(f"ATTACH DATABASE ? AS encrypted KEY {_key_pragma(key)}", [partial])
        plain.execute("SELECT sqlcipher_export('encrypted')")
        plain.execute(f"PRAGMA encrypted.user_version = {int(version)}")  # export does not copy it
        plain.execute("DETACH DATABASE encrypted")
        plain.execute("PRAGMA journal_mode=DELETE")  # so closing leaves no plaintext -wal/-shm
    finally:
        plain.close()
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
    for suffix in ("-wal", "-shm", "-journal"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
