"""The cluster backend on the standard topology (three Kubo + three Cluster
peers): round trip, replication, node loss and recovery."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time


from api.app import make_app
from daemon.config import Config
from daemon.node import close_vault, open_vault
from daemon.reconciler import Reconciler

from .conftest import Api, make_node
from .ipfs import http_get
from .waiting import until

MiB = 1024 * 1024


def _cluster_config(node, **extra) -> dict:
    return {"backend": "cluster", "ipfs_api": node.kubo.api_url, "cluster_api": node.api_url,
            "reconcile_interval": 0.5, "verify_interval": 1.0, **extra}


async def _api(path, aiohttp_client, peer, **extra) -> Api:
    vault, info = await make_node(path, **_cluster_config(peer, **extra))
    vault.start_background()
    client = await aiohttp_client(make_app(vault))
    with open(info["token_file"]) as handle:
        token = handle.read().strip()
    return Api(client, vault, token, info["did"])


async def _wait_status(api: Api, cid: str, want: set[str], timeout: float = 90) -> dict:
    async def reached():
        detail = await (await api.client.get(f"/v1/pins/{cid}", headers=api.auth())).json()
        return detail if detail.get("status") in want else None

    return await until(reached, timeout, f"the pin to be {' or '.join(sorted(want))}", interval=0.5)


async def test_cluster_round_trip_64mib_and_pin_names(tmp_path, aiohttp_client, topology):
    api = await _api(str(tmp_path / "node"), aiohttp_client, topology.peers[0])
    try:
        data = os.urandom(64 * MiB)
        started = time.monotonic()
        resp = await api.client.post("/v1/records", data=data, params={"wait": "pinned"},
                                     headers={**api.auth(), "Content-Type": "application/octet-stream"})
        assert resp.status == 201, await resp.text()
        record = await resp.json()
        assert record["pin"]["status"] == "pinned" and record["pin"]["replicas"] >= 2
        print(f"64 MiB pinned on {record['pin']['replicas']} peers in {time.monotonic() - started:.1f}s")
        resp = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
        assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(data).digest()
        pin = http_get(f"{topology.peers[1].api_url}/allocations/{record['cid']}")  # replicated pin object
        assert pin["name"] == "medvault" and not pin.get("metadata")
        assert pin["replication_factor_min"] == 2 and pin["replication_factor_max"] == 3
    finally:
        await close_vault(api.vault)


async def test_node_loss_degrades_then_heals(tmp_path, aiohttp_client, topology):
    origin_dir = str(tmp_path / "origin")
    api = await _api(origin_dir, aiohttp_client, topology.peers[0], replication_min=2, replication_max=2)
    data = os.urandom(3 * MiB)
    resp = await api.client.post("/v1/records", data=data, params={"wait": "pinned"},
                                 headers={**api.auth(), "Content-Type": "application/octet-stream"})
    record = await resp.json()
    assert record["pin"]["status"] == "pinned", record
    detail = await _wait_status(api, record["cid"], {"pinned"})
    holders = [name for name, status in detail["actual"]["peers"].items() if status == "pinned"]
    assert len(holders) == 2
    await close_vault(api.vault)

    # The node that survives reads through its own Kubo; the victim is the other holder.
    reader = max(int(h.removeprefix("cluster")) for h in holders)
    victim = min(int(h.removeprefix("cluster")) for h in holders)
    failover_dir = str(tmp_path / "failover")
    shutil.copytree(origin_dir, failover_dir)  # the index and keystore, as a standby node would have them
    config = Config.load(failover_dir)
    config.ipfs_api, config.cluster_api = topology.kubos[reader].api_url, topology.peers[reader].api_url
    config.save()
    topology.peers[victim].kill()
    topology.kubos[victim].kill()
    try:
        standby = await open_vault(Config.load(failover_dir))
        client = await aiohttp_client(make_app(standby))
        survivor = Api(client, standby, api.owner_token, api.owner_did)
        resp = await client.get(f"/v1/records/{record['id']}/content", headers=survivor.auth())
        assert resp.status == 200, await resp.text()
        assert await resp.read() == data

        reconciler = Reconciler(standby.db, standby.pinner, standby.metrics, verify_interval=0, base_backoff=60)
        await standby.db.write(lambda c: c.execute("UPDATE pins SET next_attempt = 0"))
        deadline = time.monotonic() + 60
        while True:  # the monitor needs a moment to notice the victim has gone
            await reconciler.pass_once()
            row = await standby.db.read(lambda c: dict(c.execute("SELECT * FROM pins WHERE cid = ?",
                                                                 (record["cid"],)).fetchone()))
            if row["status"] == "degraded":
                break
            assert time.monotonic() < deadline, row
            await standby.db.write(lambda c: c.execute("UPDATE pins SET next_attempt = 0"))
            await asyncio.sleep(1)
        assert row["replicas"] == 1
        metrics = await (await client.get("/metrics", headers=survivor.auth())).text()
        gauge = [line for line in metrics.splitlines() if line.startswith("medvault_pins_under_replicated ")]
        assert float(gauge[0].split()[1]) >= 1  # the manifest (and its envelope, if it was on the victim)

        topology.restart(victim)
        standby.start_background()
        healed = await _wait_status(survivor, record["cid"], {"pinned"}, timeout=120)
        assert healed["actual"]["replicas"] >= 2
        await close_vault(standby)
    finally:
        if not topology.peers[victim].running:
            topology.restart(victim)


async def test_pins_listing_and_recover(tmp_path, aiohttp_client, topology):
    api = await _api(str(tmp_path / "node"), aiohttp_client, topology.peers[1])
    try:
        record = await api.put(b"a small note", "text/plain", wait="pinned")

        async def both_pinned():  # wait=pinned covers the manifest; its envelope's pin may land a moment later
            page = await (await api.client.get("/v1/pins", params={"status": "pinned"}, headers=api.auth())).json()
            return page if {p["kind"] for p in page["items"]} == {"manifest", "envelope"} else None

        page = await until(both_pinned, 60, "the manifest and its envelope to be listed as pinned", interval=0.5)
        assert record["cid"] in {p["cid"] for p in page["items"] if p["kind"] == "manifest"}
        resp = await api.client.post(f"/v1/pins/{record['cid']}/recover", headers=api.auth())
        assert resp.status == 200 and (await resp.json())["cid"] == record["cid"]
        bad = await api.client.get("/v1/pins/not-a-cid", headers=api.auth())
        assert bad.status == 400 and (await bad.json())["error"]["code"] == "bad_cid"
        unknown = await api.client.get("/v1/pins/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                                       headers=api.auth())
        assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "pin_not_found"
        health = await (await api.client.get("/v1/health", headers=api.auth())).json()
        assert health["checks"]["pins"]["peers"] == 3 and health["backend"] == "cluster"
        trail = await (await api.client.get("/v1/audit", headers=api.auth())).json()
        assert "pin_recover" in {e["action"] for e in trail["items"]}
        assert json.dumps(page).count("did:key") == 0  # operators see no identities
    finally:
        await close_vault(api.vault)


async def test_audit_anchors_are_replicated_with_a_name_that_says_nothing(tmp_path, aiohttp_client, topology):
    """An audit anchor is pinned like a record: the reconciler replicates it
    on the Cluster, and another peer's pin object carries only medvault's name."""
    api = await _api(str(tmp_path / "node"), aiohttp_client, topology.peers[0], audit_anchor_every=2)
    try:
        await api.put(b"a note", "text/plain", title="QXANCHOR-Cluster")
        assert await api.vault.anchors.anchor_due(force=True) >= 1
        cid = await api.vault.db.read(lambda conn: conn.execute(
            "SELECT cid FROM audit_anchors ORDER BY last_seq DESC LIMIT 1").fetchone()[0])
        detail = await _wait_status(api, cid, {"pinned"})
        assert detail["kind"] == "anchor" and detail["replicas"] >= 2
        pin = http_get(f"{topology.peers[1].api_url}/allocations/{cid}")
        assert pin["name"] == "medvault" and not pin.get("metadata")
    finally:
        await close_vault(api.vault)
