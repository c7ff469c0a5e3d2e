"""Disk space: telling "full" apart from other failures, a low-space check
for health and new uploads, and a reserve file that keeps erasure possible.

A full disk must never stop a user from freeing space: erasing a record
commits a delete to the SQLite index first, and in WAL mode even a delete
appends pages to the log. So the node keeps ``reserve_bytes`` in a file it
can give back: when an erase finds the disk full, the reserve is released
and the erase retried; the reserve is re-made as soon as space allows.
Uploads are refused (507) while free space is under ``min_free_bytes``, so
the disk rarely gets that far.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from typing import TypeVar

from indexer.db import DiskFull
from indexer.sql import sqlite3

from .errors import InsufficientStorage

log = logging.getLogger("medvault.space")
RESERVE_FILE = "space.reserve"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13
T = TypeVar("T")


def is_full(exc: BaseException) -> bool:
    """A write failed because the disk (or the user's quota) is full."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in str(exc)
    return False


def full_error(what: str) -> InsufficientStorage:
    return InsufficientStorage(f"the node's disk is full ({what}); erase records or add space, then retry")


class Space:
    def __init__(self, data_dir: str, min_free_bytes: int, reserve_bytes: int):
        self.data_dir = data_dir
        self.min_free = min_free_bytes
        self.reserve_bytes = reserve_bytes
        self.reserve_path = os.path.join(data_dir, RESERVE_FILE)

    def free(self) -> int:
        return shutil.disk_usage(self.data_dir).free

    def check(self) -> dict:
        """For /v1/health: ``low`` while free space is under the minimum or
        the reserve is spent. Re-makes the reserve when space has returned."""
        self.restore_reserve()
        free = self.free()
        reserved = os.path.exists(self.reserve_path) or not self.reserve_bytes
        status = "ok" if free >= self.min_free and reserved else "low"
        return {"status": status, "free_bytes": free, "reserve": reserved}

    def require(self) -> None:
        """Raises 507 before an upload starts on a disk that is nearly full."""
        if self.check()["status"] != "ok":
            raise full_error("free space is under the node's minimum")

    def restore_reserve(self) -> None:
        if not self.reserve_bytes or os.path.exists(self.reserve_path):
            return
        if self.free() < self.reserve_bytes + self.min_free:
            return
        tmp = self.reserve_path + ".tmp"
        try:
            with open(tmp, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, self.reserve_bytes)  # real blocks, not a sparse hole
            os.replace(tmp, self.reserve_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not is_full(exc):  # a filesystem that cannot hold one: run without, and say so once
                log.warning("cannot keep a space reserve here; erasure on a full disk may fail",
                            extra={"errno": exc.errno})
                self.reserve_bytes = 0

    def release_reserve(self) -> bool:
        try:
            os.unlink(self.reserve_path)
        except FileNotFoundError:
            return False
        log.warning("disk full: released the space reserve so an erase can proceed")
        return True

    async def freeing(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Runs an operation that frees space; on a full disk, spends the reserve and tries once more."""
        try:
            return await operation()
        except (OSError, sqlite3.Error) as exc:
            if not is_full(exc) or not self.release_reserve():
                raise
        return await operation()

