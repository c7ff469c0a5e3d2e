"""``medvault daemon``: serve the API until SIGINT/SIGTERM, then drain.

The listening address is written to ``<data>/api`` (like Kubo's repo ``api``
file) so clients and tests find a daemon started on port 0. On the local
backend a sweep at start removes blocks left by uploads a crash cut off, and
a periodic sweep does the same for anything erased or abandoned later.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from aiohttp import web

from api.app import make_app

from .config import Config
from .datalock import DataDirLock
from .errors import Conflict, VaultError
from .fsutil import atomic_write
from .listener import listen
from .masterkey import KeySource
from .node import close_vault, open_vault

log = logging.getLogger("medvault.daemon")
API_FILE = "api"
# Worker threads (sealing, file reads, index reads) hand the GIL back to the
# event loop after at most this long; CPython's 5 ms default let a few busy
# threads hold small requests for tens of milliseconds.
GIL_SWITCH_INTERVAL = 0.001


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError("--listen must be HOST:PORT")
    return host.strip("[]"), int(port)


async def _sweep(vault, grace: float, every: float | None) -> None:
    while True:
        try:
            result = await vault.garbage.collect(grace)
            log.info("garbage collected", extra=result)
        except VaultError as exc:
            log.warning("garbage collection skipped", extra={"code": exc.code})
        if every is None:
            return
        await asyncio.sleep(every)
        grace = vault.config.gc_grace_seconds


async def serve(config: Config, listen: str, ready: asyncio.Event | None = None,
                source: KeySource | None = None, data_key: bytes | None = None) -> None:
    """Runs the daemon; the caller should unlock (``node.unlock``) first, so
    a wrong key is refused before the lock file or anything else is written."""
    host, port = split_listen(listen)
    lock = DataDirLock(config.data_dir)
    if not lock.try_acquire():
        raise Conflict(f"another medvault process (daemon, gc or reindex) is using {config.data_dir}",
                       "data_dir_busy")
    try:
        await _serve(config, host, port, ready, source, data_key)
    finally:
        lock.release()


async def _serve(config: Config, host: str, port: int, ready: asyncio.Event | None,
                 source: KeySource | None, data_key: bytes | None) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    vault = await open_vault(config, source, data_key)
    if vault.services.key_storage == "beside-data":
        log.warning("the master key file is in the data dir: a copy of the dir opens every record; "
                    "use --passphrase-file or --key-file outside it in production (medvault rekey)")
    app = make_app(vault)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=30,
                           keepalive_timeout=config.header_timeout)  # also bounds header reading
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    background = []
    api_file = os.path.join(config.data_dir, API_FILE)
    server = None
    try:
        server = await listen(runner, host, port, config.max_connections, config.header_timeout)
        bound = server.sockets[0].getsockname()
        address = f"http://{host}:{bound[1]}"
        atomic_write(api_file, address.encode() + b"\n", 0o600)
        if config.backend == "local":
            background.append(asyncio.create_task(_sweep(vault, 0, 3600)))
        background.extend(vault.start_background())
        log.info("listening", extra={"address": address, "backend": config.backend})
        if ready:
            ready.set()
        await stop.wait()
        log.info("stopping: finishing in-flight requests")
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            server.close()  # no new connections; runner.cleanup() finishes the open ones
        await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(api_file)
        await close_vault(vault)
        log.info("stopped")
