"""A full disk: 507 insufficient_storage on block writes (ENOSPC) and index
writes (SQLITE_FULL), /v1/health degraded, erasure still works, and the node
recovers without a restart once space returns. The block-store half runs on
a small tmpfs the test mounts (we run as root; under CI=true a failed mount
fails the test, elsewhere it skips)."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest

from api.app import make_app
from daemon.node import close_vault

from .conftest import Api, make_node
from .errors import assert_error
from .ipfs import missing

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        missing(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield str(path)
    subprocess.run(["umount", "-l", str(path)], check=False)


async def _api(path: str, aiohttp_client, **overrides) -> Api:
    vault, info = await make_node(path, **overrides)
    client = await aiohttp_client(make_app(vault))
    with open(info["token_file"]) as handle:
        return Api(client, vault, handle.read().strip(), info["did"])


async def _upload(api: Api, data: bytes):
    return await api.client.post("/v1/records", data=data,
                                 headers={**api.auth(), "Content-Type": "application/octet-stream"})


def _fill(path: str) -> None:
    """What another process on the same disk might do: take every last byte
    (the file stays, possibly empty, even when the disk is already full)."""
    try:
        with open(path, "wb") as handle:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


async def _status(api: Api) -> tuple[int, dict]:
    resp = await api.client.get("/v1/health", headers=api.auth())  # an operator sees the checks
    return resp.status, await resp.json()


async def test_full_disk_is_507_erase_frees_it_and_uploads_resume(small_disk, aiohttp_client):
    api = await _api(os.path.join(small_disk, "node"), aiohttp_client, min_free_bytes=MiB, reserve_bytes=MiB)
    try:
        assert (await _status(api))[0] == 200
        stored = []
        for _ in range(20):  # 12 MiB cannot hold 20 records of 1 MiB
            resp = await _upload(api, os.urandom(MiB))
            if resp.status != 201:
                break
            stored.append((await resp.json())["id"])
        await assert_error(resp, 507, "insufficient_storage")
        assert stored
        status, health = await _status(api)
        assert status == 503 and health["status"] == "degraded" and health["checks"]["storage"]["status"] == "low"

        filler = os.path.join(small_disk, "filler")
        _fill(filler)  # now truly full: not one byte left
        resp = await _upload(api, os.urandom(300_000))
        assert resp.status == 507 and (await resp.json())["error"]["code"] == "insufficient_storage"
        resp = await api.client.post("/v1/principals", json={"name": "Dr. Full"}, headers=api.auth())
        assert resp.status == 507, await resp.text()  # a key file cannot be written either: 507, not 500
        resp = await api.client.delete(f"/v1/records/{stored[0]}", headers=api.auth())
        assert resp.status == 204, await resp.text()  # erasure works on a full disk: it frees space
        resp = await api.client.get(f"/v1/records/{stored[0]}", headers=api.auth())
        assert resp.status == 404

        if os.path.exists(filler):
            os.unlink(filler)  # the operator makes room, and the patient erases another record
        resp = await api.client.delete(f"/v1/records/{stored[1]}", headers=api.auth())
        assert resp.status == 204
        status, health = await _status(api)
        assert status == 200 and health["checks"]["storage"]["status"] == "ok", health
        assert health["checks"]["storage"]["reserve"] is True  # the reserve is back for next time
        resp = await _upload(api, os.urandom(MiB))
        assert resp.status == 201, await resp.text()  # no restart needed
    finally:
        await close_vault(api.vault)


async def test_full_index_is_507(tmp_path, aiohttp_client):
    """SQLITE_FULL, produced by SQLite itself through max_page_count (the index
    cannot grow past it, exactly as on a full disk)."""
    api = await _api(str(tmp_path / "node"), aiohttp_client)
    try:
        pages = await api.vault.db.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await api.vault.db.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        for _ in range(200):
            resp = await _upload(api, os.urandom(1000))
            if resp.status != 201:
                break
        assert resp.status == 507, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "insufficient_storage" and "index" in error["message"]
        await api.vault.db.write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        assert (await _upload(api, os.urandom(1000))).status == 201
    finally:
        await close_vault(api.vault)


async def test_kubo_with_a_full_disk_is_507_and_recovers(small_disk, tmp_path, aiohttp_client):
    """The kubo backend: Kubo's own ENOSPC ("no space left on device") is the node's 507 too."""
    from .ipfs import Kubo
    kubo = Kubo(small_disk, "kubo").start()  # Kubo's repo on the 12 MiB tmpfs; our data dir is not
    api = await _api(str(tmp_path / "node"), aiohttp_client, backend="kubo", ipfs_api=kubo.api_url)
    try:
        stored = []
        for _ in range(20):
            resp = await _upload(api, os.urandom(MiB))
            if resp.status != 201:
                break
            stored.append((await resp.json())["id"])
        assert resp.status == 507, await resp.text()
        assert (await resp.json())["error"]["code"] == "insufficient_storage"
        assert stored
        for record_id in stored[:3]:
            resp = await api.client.delete(f"/v1/records/{record_id}", headers=api.auth())
            assert resp.status == 204, await resp.text()
        kubo.ipfs("repo", "gc")  # on Kubo, unpinned blocks go with Kubo's own garbage collection
        resp = await _upload(api, os.urandom(MiB))
        assert resp.status == 201, await resp.text()
    finally:
        await close_vault(api.vault)
        kubo.stop()
