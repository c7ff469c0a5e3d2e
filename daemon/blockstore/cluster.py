"""The ``cluster`` backend's pinner: IPFS Cluster's REST API (port 9094).

Blocks still go to this node's own Kubo (``KuboBlockStore``); pins go to the
Cluster with replication-min/max, and status comes back per peer. Pin names
replicate in clear to every peer, so they carry only the constant
``medvault`` and no metadata: nothing about a patient or a record.
"""
from __future__ import annotations

import aiohttp

from ..cid import Cid
from .base import Pinner, PinStatus
from .http import BackendError, HttpBackend

PIN_NAME = "medvault"
_STATUS_BATCH = 100  # CIDs per GET /pins?cids= (~6 KB of URL; Cluster answers 431 far beyond)
# Asking for n CIDs costs ~4.4 ms each (every peer looks each up in its Kubo);
# listing every pin ~0.3-1 ms a pin (one streamed pin ls per peer), measured on
# the 3-peer topology with 2,000 pins. List all once n is a fifth of the pinset.
_LIST_ALL_RATIO = 5
_LIST_ALL_ABOVE = 1000  # when the pinset's size is not known


class ClusterRest(HttpBackend):
    def __init__(self, api_url: str, metrics=None, *, basic_auth: str | None = None, token: str | None = None,
                 **kwargs):
        auth = aiohttp.BasicAuth(*basic_auth.split(":", 1)) if basic_auth else None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        super().__init__(api_url, "cluster", metrics, auth=auth, headers=headers, **kwargs)

    async def pin(self, cid: Cid, rmin: int, rmax: int) -> dict:
        return await self.request("POST", f"/pins/{cid}", "pin", params={
            "replication-min": str(rmin), "replication-max": str(rmax), "name": PIN_NAME})

    async def unpin(self, cid: Cid) -> None:
        try:
            await self.request("DELETE", f"/pins/{cid}", "unpin", parse="none")
        except BackendError as exc:
            if exc.status != 404:
                raise

    async def status(self, cid: Cid) -> dict:
        return await self.request("GET", f"/pins/{cid}", "status")

    async def statuses(self, cids: list[Cid] | None) -> list[dict]:
        """Status of these pins, or of every pin in the cluster when ``cids`` is None."""
        params = {"cids": ",".join(str(c) for c in cids)} if cids is not None else None
        return await self.request("GET", "/pins", "status_all", parse="ndjson", params=params, timeout=600)

    async def recover(self, cid: Cid) -> dict:
        return await self.request("POST", f"/pins/{cid}/recover", "recover")

    async def peers(self) -> list[dict]:
        return await self.request("GET", "/peers", "peers", parse="ndjson", retry=False, timeout=10)

    async def node_id(self) -> dict:
        return await self.request("GET", "/id", "id", retry=False, timeout=5)


def _pin_status(info: dict) -> PinStatus:
    peers = {}
    for peer_id, state in (info.get("peer_map") or {}).items():
        peers[state.get("peername") or peer_id] = state.get("status", "undefined")
    replicas = sum(1 for s in peers.values() if s == "pinned")
    errors = [s.get("error") for s in (info.get("peer_map") or {}).values() if s.get("error")]
    return PinStatus(replicas, peers, errors[0][:200] if errors else None)


class ClusterPinner(Pinner):
    name = "cluster"
    max_replicas = 1_000_000  # the cluster decides; replication-min is the bar
    settles_later = True

    def __init__(self, rest: ClusterRest):
        self.rest = rest

    async def pin(self, cid: Cid, replication_min: int, replication_max: int) -> None:
        await self.rest.pin(cid, replication_min, replication_max)

    async def unpin(self, cid: Cid) -> None:
        await self.rest.unpin(cid)

    async def status(self, cid: Cid) -> PinStatus:
        try:
            return _pin_status(await self.rest.status(cid))
        except BackendError as exc:
            if exc.status == 404:
                return PinStatus(0, {}, "not pinned in the cluster")
            raise

    async def statuses(self, cids: list[Cid], population: int | None = None) -> dict[Cid, PinStatus]:
        wanted = set(cids)
        list_all = (len(cids) > _STATUS_BATCH and len(cids) * _LIST_ALL_RATIO >= population
                    if population is not None else len(cids) > _LIST_ALL_ABOVE)
        batches = [None] if list_all else [
            cids[start:start + _STATUS_BATCH] for start in range(0, len(cids), _STATUS_BATCH)]
        result: dict[Cid, PinStatus] = {}
        for batch in batches:
            for info in await self.rest.statuses(batch):
                try:
                    cid = Cid.parse(info["cid"])
                except (KeyError, ValueError):
                    continue
                if cid in wanted:
                    result[cid] = _pin_status(info)
        for cid in [c for c in cids if c not in result]:
            # not tracked yet, or a stream cut short (its error trailer is invisible to aiohttp)
            result[cid] = await self.status(cid)
        return result

    async def recover(self, cid: Cid, replication_min: int, replication_max: int) -> None:
        await self.rest.recover(cid)

    async def health(self) -> dict:
        ident, peers = await self.rest.node_id(), await self.rest.peers()
        reachable = [p for p in peers if not p.get("error")]
        return {"status": "ok", "peer": ident.get("peername"), "peers": len(peers), "reachable": len(reachable)}

    async def close(self) -> None:
        await self.rest.close()
