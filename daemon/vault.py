"""The Vault: the node's components, assembled by one constructor.

Modelled on IPFS Cluster's ``NewCluster``: each component is built
elsewhere (``daemon.node.open_vault``) and handed in explicitly, so every
dependency is visible at one call and each can be swapped or tested alone.

- ``access``   AccessPolicy: the one access decision (daemon/access.py)
- ``records``  Records: create, update, read, search, erase
- ``sharing``  Sharing: grants, revocation with rotation, break-glass
- ``imports``  Imports: share tokens, CAR import and export
- ``pins``     PinAdmin: what operators see and do about pins
- ``admin``    Admin: principals, tokens, the audit log
- ``anchors``  AuditAnchors: the audit chain anchored in pinned blocks, and its verification
- ``garbage``  GarbageCollector: unreferenced blocks of the local store

The HTTP layer checks scopes and hands a component a ``Caller``. The Vault
itself owns only the lifecycle (background tasks, shutdown) and health.
"""
from __future__ import annotations

import asyncio
import logging
import traceback

from indexer.sql import sqlite3

from .access import AccessPolicy
from .admin import Admin
from .anchors import AuditAnchors
from .errors import VaultError
from .garbage import GarbageCollector
from .importer import Imports
from .loop_monitor import watch_loop_lag
from .pin_admin import PinAdmin
from .reconciler import Reconciler
from .record_service import Records
from .services import Services
from .sharing import Sharing

log = logging.getLogger("medvault.vault")
SHUTDOWN_ANCHOR_SECONDS = 10.0


class Vault:
    def __init__(self, services: Services, *, access: AccessPolicy, records: Records, sharing: Sharing,
                 imports: Imports, pins: PinAdmin, admin: Admin, anchors: AuditAnchors, garbage: GarbageCollector):
        self.services = services
        self.access = access
        self.records = records
        self.sharing = sharing
        self.imports = imports
        self.pins = pins
        self.admin = admin
        self.anchors = anchors
        self.garbage = garbage
        self.config, self.db, self.keys = services.config, services.db, services.keys
        self.blocks, self.pinner, self.metrics = services.blocks, services.pinner, services.metrics
        self._background: list[asyncio.Task] = []
        self._crashed: dict[str, str] = {}  # task name → exception type, shown in health

    def watch(self, task: asyncio.Task) -> asyncio.Task:
        """Owns a background task: a crash is logged with its traceback (frames
        only: messages may carry data), counted, and shown in health."""
        def done(finished: asyncio.Task) -> None:
            if finished.cancelled() or finished.exception() is None:
                return
            exc = finished.exception()
            name = finished.get_name()
            self._crashed[name] = type(exc).__name__
            self.metrics.background_crashes.labels(name).inc()
            log.error("background task crashed", extra={
                "task": name, "error_type": type(exc).__name__,
                "traceback": "".join(traceback.format_tb(exc.__traceback__))})

        task.add_done_callback(done)
        self._background.append(task)
        return task

    def start_background(self) -> list[asyncio.Task]:
        """Long-running tasks the daemon owns: the pin reconciler, the audit
        anchor writer and the loop-lag monitor."""
        cfg = self.config
        reconciler = Reconciler(self.db, self.pinner, self.metrics, interval=cfg.reconcile_interval,
                                verify_interval=cfg.verify_interval)
        self.services.reconciler = reconciler
        return [self.watch(asyncio.create_task(reconciler.run(), name="reconciler")),
                self.watch(asyncio.create_task(self.anchors.run(), name="audit-anchors")),
                self.watch(asyncio.create_task(watch_loop_lag(self.metrics.loop_lag), name="loop-lag")),
                self.watch(asyncio.create_task(self.services.off_process(int), name="worker-warm-up"))]

    async def close(self) -> None:
        if self._background:  # a daemon stopping cleanly anchors its audit tail first (bounded: a dead backend)
            try:
                await asyncio.wait_for(self.anchors.anchor_due(force=True), SHUTDOWN_ANCHOR_SECONDS)
            except (asyncio.TimeoutError, VaultError, sqlite3.Error, OSError) as exc:
                log.warning("the audit tail was not anchored at shutdown",
                            extra={"error": getattr(exc, "code", type(exc).__name__)})
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        self.services.close()

    async def health(self, detail: bool = True) -> dict:
        """``{"status": "ok"|"degraded"}``; with ``detail`` (operators) also the
        backend, each dependency's check and any crashed background task."""
        checks: dict = {}
        try:
            await self.db.read(lambda conn: conn.execute("SELECT 1").fetchone())
            checks["index"] = {"status": "ok"}
        except sqlite3.Error:
            checks["index"] = {"status": "down"}
        for name, probe, backend in (("blocks", self.blocks.health, self.blocks.name),
                                     ("pins", self.pinner.health, self.pinner.name)):
            try:
                checks[name] = {**await probe(), "backend": backend}
            except VaultError as exc:
                checks[name] = {"status": "down", "error": exc.message}
        checks["storage"] = await asyncio.to_thread(self.services.space.check)
        if self._crashed:
            checks["background"] = {"status": "down", "crashed": dict(self._crashed)}
        ok = all(c.get("status") == "ok" for c in checks.values())
        report = {"status": "ok" if ok else "degraded"}
        if detail:
            report.update(backend=self.config.backend, key_storage=self.services.key_storage, checks=checks)
        return report
