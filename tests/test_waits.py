"""Bounded waits against a real Kubo: a block no peer has is answered with
504 within the fetch timeout (not 503 after minutes of retries), while Kubo
itself being down stays 503. Times are asserted only as generous upper
bounds that prove "bounded"."""
from __future__ import annotations

import os
import time

from daemon.cid import DAG_CBOR, Cid
from daemon.node import close_vault

from .errors import assert_error
from .ipfs import Kubo
from .test_kubo import _api

FETCH_TIMEOUT = 2.0
BOUND = 20.0  # seconds: far above FETCH_TIMEOUT + Kubo's answer, far below the old 363 s


def _nobodys_share() -> str:
    """A well-formed share token whose blocks exist nowhere."""
    manifest, envelope = (Cid.for_data(DAG_CBOR, os.urandom(64)) for _ in range(2))
    return f"mv1.{manifest}.{envelope}"


async def test_share_naming_a_missing_block_is_504_within_the_fetch_timeout(tmp_path, aiohttp_client, kubo):
    api = await _api(tmp_path, aiohttp_client, kubo.api_url, fetch_timeout=FETCH_TIMEOUT)
    try:
        started = time.monotonic()
        resp = await api.client.post("/v1/imports", json={"share": _nobodys_share()}, headers=api.auth())
        elapsed = time.monotonic() - started
        await assert_error(resp, 504, "not_found_on_network")
        assert elapsed < BOUND
    finally:
        await close_vault(api.vault)


async def test_share_import_with_kubo_down_stays_503(tmp_path, aiohttp_client):
    own = Kubo(str(tmp_path), "down").start()
    api = await _api(tmp_path, aiohttp_client, own.api_url, fetch_timeout=FETCH_TIMEOUT)
    try:
        own.stop()
        started = time.monotonic()
        resp = await api.client.post("/v1/imports", json={"share": _nobodys_share()}, headers=api.auth())
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "backend_unavailable"
        assert time.monotonic() - started < BOUND
    finally:
        await close_vault(api.vault)
        own.stop()


async def test_car_naming_a_missing_block_is_answered_at_once(tmp_path, aiohttp_client, kubo):
    """A CAR import reads only the archive (never the network), so a block it
    lacks is 422 incomplete_car straight away, not a wait on IPFS."""
    from daemon import car
    api = await _api(tmp_path, aiohttp_client, kubo.api_url, fetch_timeout=FETCH_TIMEOUT)
    try:
        archive = car.header([Cid.for_data(DAG_CBOR, os.urandom(64))])  # a root and no blocks
        started = time.monotonic()
        resp = await api.client.post("/v1/imports/car", data=archive,
                                     headers={**api.auth(), "Content-Type": "application/vnd.ipld.car"})
        assert resp.status == 422, await resp.text()
        assert (await resp.json())["error"]["code"] == "incomplete_car"
        assert time.monotonic() - started < BOUND
    finally:
        await close_vault(api.vault)
