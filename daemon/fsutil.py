"""Crash-safe file writes: a reader sees the old file or the whole new one."""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a regular file may take less
    than asked, e.g. when interrupted by a signal)."""
    with memoryview(data) as view:
        while view:
            view = view[os.write(fd, view):]


def atomic_write(path: str, data: bytes, mode: int = 0o600, exclusive: bool = False,
                 sync_dir: bool = True, fsync: bool = True) -> None:
    """Writes ``data`` to a temp file, fsyncs it, renames it over ``path`` and
    fsyncs the directory. ``exclusive`` refuses to replace an existing file;
    ``fsync=False, sync_dir=False`` leave durability to a caller that flushes
    many files at once (``sync_filesystem``)."""
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp-{os.getpid()}-{id(data)}"
    # Plain os calls, no file object: io.open adds an fstat, an lseek and an
    # isatty ioctl per file, and every syscall hands the GIL round (a 256 MiB
    # record writes 1,024 of these files).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # fails with FileExistsError instead of replacing
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        fsync_dir(directory)


def sync_filesystem(path: str) -> None:
    """Flushes every dirty page and metadata change of the filesystem holding
    ``path`` (Linux ``syncfs``; ``sync`` elsewhere). One call makes a whole
    batch of writes durable, which is what group commit needs."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs is None or _syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
