"""The kubo backend against a real Kubo: CIDs agree, pins are real, tampering
and outages are handled, and no plaintext reaches the repo."""
from __future__ import annotations

import base64
import hashlib
import os

import pytest

from api.app import make_app
from daemon.cid import Cid
from daemon.manifest import decode_manifest
from daemon.node import close_vault

from .conftest import Api, make_node
from .ipfs import Kubo

MiB = 1024 * 1024


async def _api(tmp_path, aiohttp_client, ipfs_api: str, **overrides) -> Api:
    vault, info = await make_node(str(tmp_path / "node"), backend="kubo", ipfs_api=ipfs_api, **overrides)
    client = await aiohttp_client(make_app(vault))
    with open(info["token_file"]) as handle:
        token = handle.read().strip()
    return Api(client, vault, token, info["did"])


@pytest.fixture
async def kubo_api(tmp_path, aiohttp_client, kubo):
    api = await _api(tmp_path, aiohttp_client, kubo.api_url)
    yield api
    await close_vault(api.vault)


async def _chunks(api, record) -> tuple[Cid, list[Cid]]:
    cid = Cid.parse(record["cid"])
    manifest = decode_manifest(cid, await api.vault.blocks.get(cid))
    return cid, list(manifest.links)


async def test_cids_agree_and_blocks_are_plain_ipfs_blocks(kubo_api, kubo):
    data = os.urandom(3 * MiB + 123)
    record = await kubo_api.put(data)
    manifest_cid, chunks = await _chunks(kubo_api, record)
    assert len(chunks) == 16  # padded to the 4 MiB bucket (format 2), in 256 KiB chunks
    for cid in [manifest_cid, *chunks]:
        raw = kubo.ipfs("block", "get", str(cid))
        assert Cid.for_data(cid.codec, raw) == cid  # what Kubo holds hashes to our CID
        codec = "raw" if cid.codec == 0x55 else "dag-cbor"
        again = kubo.ipfs("block", "put", "--cid-codec", codec, input=raw).decode().strip()
        assert again == str(cid)  # Kubo computes the same CID from the same bytes
    pins = kubo.ipfs("pin", "ls", "--type=all").decode().splitlines()
    kinds = {line.split()[0]: line.split()[1] for line in pins}
    assert kinds[str(manifest_cid)] == "recursive"
    assert all(kinds[str(c)] == "indirect" for c in chunks)
    resp = await kubo_api.client.get(f"/v1/records/{record['id']}/content", headers=kubo_api.auth())
    assert await resp.read() == data
    assert record["pin"] == {"status": "pinned", "replicas": 1}


async def test_64mib_round_trip_through_kubo(kubo_api):
    data = os.urandom(64 * MiB)
    record = await kubo_api.put(data)
    resp = await kubo_api.client.get(f"/v1/records/{record['id']}/content", headers=kubo_api.auth())
    assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(data).digest()


def _flatfs_path(kubo: Kubo, cid: Cid) -> str:
    """Kubo's flatfs key: base32 (upper, unpadded) of the multihash, sharded next-to-last/2."""
    key = base64.b32encode(bytes(cid)[2:]).decode().rstrip("=")
    return os.path.join(kubo.repo, "blocks", key[-3:-1], key + ".data")


async def test_tampered_block_in_kubo_is_refused_with_502(kubo_api, kubo):
    record = await kubo_api.put(os.urandom(600_000))
    _, chunks = await _chunks(kubo_api, record)
    path = _flatfs_path(kubo, chunks[0])
    raw = bytearray(open(path, "rb").read())
    raw[1000] ^= 0x55
    with open(path, "wb") as handle:
        handle.write(raw)
    resp = await kubo_api.client.get(f"/v1/records/{record['id']}/content", headers=kubo_api.auth())
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "integrity_error"


async def test_no_marker_in_kubo_repo(kubo_api, kubo):
    marker = b"MARKER-kubo-Jane-Roe-MRN-77316"
    await kubo_api.put((b"x" * 5000 + marker) * 200, "text/plain", title=marker.decode())
    for folder, _, files in os.walk(os.path.join(kubo.repo, "blocks")):
        for name in files:
            assert marker not in open(os.path.join(folder, name), "rb").read()


async def test_kubo_down_gives_503_and_recovers_without_restart(tmp_path, aiohttp_client):
    own = Kubo(str(tmp_path), "lonely").start()
    api = await _api(tmp_path, aiohttp_client, own.api_url, request_timeout=5.0)
    try:
        before = await api.put(b"written while up", "text/plain")
        own.stop()
        resp = await api.client.post("/v1/records", data=b"x", headers={**api.auth(), "Content-Type": "text/plain"})
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "backend_unavailable"
        resp = await api.client.get(f"/v1/records/{before['id']}/content", headers=api.auth())
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "backend_unavailable"
        health = await api.client.get("/v1/health")
        assert health.status == 503 and (await health.json())["status"] == "degraded"
        assert (await api.client.get("/v1/records", headers=api.auth())).status == 200  # the index still answers
        own.start()
        after = await api.put(b"written after recovery", "text/plain")
        resp = await api.client.get(f"/v1/records/{before['id']}/content", headers=api.auth())
        assert await resp.read() == b"written while up"
        resp = await api.client.get(f"/v1/records/{after['id']}/content", headers=api.auth())
        assert await resp.read() == b"written after recovery"
        assert (await (await api.client.get("/v1/health")).json())["status"] == "ok"
    finally:
        await close_vault(api.vault)
        own.stop()


async def test_erase_unpins_from_kubo(kubo_api, kubo):
    record = await kubo_api.put(os.urandom(100_000))
    manifest_cid, _ = await _chunks(kubo_api, record)
    assert (await kubo_api.client.delete(f"/v1/records/{record['id']}", headers=kubo_api.auth())).status == 204
    recursive = kubo.ipfs("pin", "ls", "--type=recursive").decode()
    assert str(manifest_cid) not in recursive
    pins = await kubo_api.vault.db.read(lambda c: c.execute("SELECT COUNT(*) FROM pins").fetchone()[0])
    assert pins == 0


async def test_reconciler_confirms_and_repins_in_kubo(kubo_api, kubo):
    record = await kubo_api.put(b"pin me", "text/plain")
    kubo.ipfs("pin", "rm", record["cid"])  # someone removed our pin behind our back
    await kubo_api.vault.db.write(lambda c: c.execute("UPDATE pins SET next_attempt = 0"))
    from daemon.reconciler import Reconciler
    reconciler = Reconciler(kubo_api.vault.db, kubo_api.vault.pinner, verify_interval=0)
    await reconciler.pass_once()  # sees it unpinned: marks it for another attempt
    await kubo_api.vault.db.write(lambda c: c.execute("UPDATE pins SET next_attempt = 0"))
    await reconciler.pass_once()  # re-pins
    assert record["cid"] in kubo.ipfs("pin", "ls", "--type=recursive").decode()
    resp = await kubo_api.client.get(f"/v1/pins/{record['cid']}", headers=kubo_api.auth())
    detail = await resp.json()
    assert detail["status"] == "pinned" and detail["actual"]["replicas"] == 1


async def test_an_error_kubo_answers_is_a_502_not_a_500(kubo):
    """Kubo answering a request with an error is the upstream failing: 502
    ``backend_error`` with Kubo's reason, never a 500 from us."""
    from api.errors import status_of
    from daemon.blockstore.kubo import KuboRpc
    from daemon.errors import BackendFailed

    rpc = KuboRpc(kubo.api_url)
    try:
        with pytest.raises(BackendFailed) as refused:
            await rpc.request("POST", "/block/stat", "block_stat", params={"arg": "not-a-cid"})
    finally:
        await rpc.close()
    assert status_of(refused.value) == 502 and refused.value.code == "backend_error"
    assert "kubo refused the request" in refused.value.message
