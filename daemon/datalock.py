"""Who may change a data dir's blocks: one process at a time.

The daemon holds an exclusive ``flock`` on ``<data>/lock`` for as long as it
runs; ``medvault gc`` and ``medvault reindex`` take the same lock to work on
the data dir directly. A gc that finds the lock held does not open its own
Vault beside the daemon's (it would know nothing of the daemon's uploads in
flight and delete their blocks): it asks the running daemon to collect.
The kernel drops the lock when its holder exits, however it exits, so a
crash never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os

LOCK_FILE = "lock"


class DataDirLock:
    def __init__(self, data_dir: str):
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """True when this process now holds the lock; False when another does."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
