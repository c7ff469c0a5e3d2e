"""Garbage collection of the local block store: deletes blocks no desired
pin reaches that are older than the grace period and than any upload in
progress (``medvault gc``, the daemon's start-up and hourly sweeps)."""
from __future__ import annotations

import time

from indexer import pins

from .cid import Cid
from .errors import Conflict


class GarbageCollector:
    def __init__(self, services):
        self._s = services

    async def live_blocks(self) -> set[Cid]:
        live: set[Cid] = set()
        for cid_text, kind in await self._s.db.read(pins.desired_cids):
            cid = Cid.parse(cid_text)
            live.add(cid)
            if kind == "manifest":
                live.update(await self._s.blocks_of_manifest(cid))
        return live

    async def collect(self, grace_seconds: float, force: bool = False) -> dict:
        s = self._s
        # The cutoff comes first: an upload that commits while the live set is
        # computed started before it, so its blocks are newer than the cutoff.
        # (One second of slack: file times use the kernel's coarse clock.)
        cutoff = min([time.time() - grace_seconds, *(t - 1.0 for t in s.inflight.values())])
        live = await self.live_blocks()
        candidates = [(cid, mtime) async for cid, mtime in s.blocks.all_cids()]
        doomed = [cid for cid, mtime in candidates if cid not in live and mtime < cutoff]
        if not live and doomed and not force:  # (blocks of uploads still in flight are not a lost index)
            raise Conflict("the index pins nothing but blocks exist: run `medvault reindex` first "
                           "(or gc --force)", "index_empty")
        await s.blocks.delete_many(doomed)
        return {"removed": len(doomed), "kept": len(candidates) - len(doomed)}
