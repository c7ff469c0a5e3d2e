"""glibc malloc settings for the daemon's process (Linux only).

- ``M_MMAP_THRESHOLD`` fixed at 1 MiB. glibc's default starts at 128 KiB and
  rises to the size of each mmapped block freed, up to 32 MiB: after one
  16 MiB FHIR body, later bodies and buffers came from the heap and stayed
  resident when freed (the daemon kept ~30 MB it no longer used). Fixed, a
  block of 1 MiB or more is always its own mapping, returned on free;
  256 KiB chunk buffers still come from the heap (no syscall per chunk).
- ``M_ARENA_MAX`` 2: one arena per thread (up to 8 per core) each keeps
  its own freed memory; the pools' threads share two.

Setting a fixed threshold also fixes the trim threshold at its default
(128 KiB): freed memory at the top of the heap goes back sooner.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("medvault.daemon")
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1024 * 1024
ARENA_MAX = 2


def tune_malloc() -> bool:
    """Applies the settings above; False where there is no glibc ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, no library search
    except (OSError, AttributeError):  # not glibc (musl, macOS): their defaults stay
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENA_MAX))
    if not ok:
        log.warning("malloc settings not applied")
    return ok
