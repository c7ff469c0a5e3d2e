"""What operators see and do about pins: the desired state from the index
beside what the backend reports, per peer, and recovery (a Vault
component). Operators get CIDs and statuses only: no content, no envelopes, no
identities."""
from __future__ import annotations

import asyncio
import time

from indexer import audit, pins, records
from indexer.sql import sqlite3

from . import timeutil
from .auth import Caller
from .cid import Cid
from .errors import BadRequest, NotFound
from .reconciler import classify
from .views import page_limit, record_view

PIN_STATUSES = ("queued", "pinning", "pinned", "degraded", "failed")


class PinAdmin:
    def __init__(self, services):
        self._s = services

    @staticmethod
    def _pin_view(row: dict) -> dict:
        return {"cid": row["cid"], "kind": row["kind"], "status": row["status"], "replicas": row["replicas"],
                "replication_min": row["rmin"], "replication_max": row["rmax"], "attempts": row["attempts"],
                "error": row["error"], "updated": row["updated"]}

    async def list_pins(self, status: str | None = None, after: str | None = None, limit: int = 100) -> dict:
        if status is not None and status not in PIN_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(PIN_STATUSES)}", "bad_status")
        page_limit(limit)
        rows = await self._s.db.read(pins.listing, status, after, limit)
        return {"items": [self._pin_view(r) for r in rows], "next": rows[-1]["cid"] if len(rows) == limit else None}

    async def _pin_row(self, cid_text: str) -> tuple[Cid, dict]:
        try:
            cid = Cid.parse(cid_text)
        except ValueError:
            raise BadRequest("not a CIDv1 this node writes", "bad_cid") from None
        row = await self._s.db.read(pins.get, str(cid))
        if row is None or not row["desired"]:
            raise NotFound("this node has no such pin", "pin_not_found")
        return cid, row

    async def pin_detail(self, cid_text: str) -> dict:
        """Desired state from the index beside what the backend reports now, per peer."""
        cid, row = await self._pin_row(cid_text)
        state = await self._s.pinner.status(cid)
        actual = {"status": classify(state, min(row["rmin"], self._s.pinner.max_replicas)),
                  "replicas": state.replicas, "peers": state.peers, "error": state.error}
        return {**self._pin_view(row), "desired": {"pinned": True, "replication_min": row["rmin"],
                                                   "replication_max": row["rmax"]}, "actual": actual}

    async def recover_pin(self, caller: Caller, cid_text: str) -> dict:
        cid, row = await self._pin_row(cid_text)
        if row["status"] == "failed":
            await self._s.pinner.recover(cid, row["rmin"], row["rmax"])
        else:
            await self._s.pinner.pin(cid, row["rmin"], row["rmax"])
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            pins.record_result(conn, str(cid), "pinning" if row["status"] != "pinned" else "pinned",
                               row["replicas"] or 0, None, 0, 0, now)
            audit.append(conn, now, caller.did, "pin_recover", None, "ok", {"cid": str(cid)})

        await self._s.db.write(commit)
        if self._s.reconciler is not None:
            self._s.reconciler.kick()
        return await self.pin_detail(str(cid))

    async def wait_pinned(self, caller: Caller, record: dict, timeout: float = 120.0) -> dict:
        """Waits until the record's manifest pin is confirmed (``wait=pinned``)."""
        deadline = time.monotonic() + timeout
        while record["pin"]["status"] != "pinned" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            row = await self._s.db.read(records.readable, record["id"], caller.did, timeutil.now())
            if row is None:
                break
            record = record_view(row)
        return record

    async def refresh_gauges(self) -> None:
        def read(conn: sqlite3.Connection):
            return (pins.counts(conn), conn.execute("SELECT COUNT(*) FROM records").fetchone()[0],
                    conn.execute("SELECT COUNT(*) FROM pins WHERE desired = 1 AND status = 'degraded'")
                    .fetchone()[0])

        counts, total, degraded = await self._s.db.read(read)
        self._s.metrics.pins.clear()
        for status, n in counts.items():
            self._s.metrics.pins.labels(status).set(n)
        self._s.metrics.records.set(total)
        self._s.metrics.under_replicated.set(degraded)
