"""Index reads are time-limited (datasette's sqlite_timelimit, a progress
handler), and token checks and audit verification have their own lanes, so
neither waits behind long searches. Times are upper bounds only."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from indexer.db import Database, QueryInterrupted
from api.app import make_app
from daemon.node import close_vault

from .conftest import Api, make_node

ENDLESS = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"


async def test_a_read_past_the_limit_is_interrupted(tmp_path):
    db = Database(str(tmp_path / "index.sqlite"), os.urandom(32), time_limit=0.5)
    await db.start()
    try:
        started = time.monotonic()
        with pytest.raises(QueryInterrupted):
            await db.read(lambda conn: conn.execute(ENDLESS).fetchone())
        assert time.monotonic() - started < 10
        assert await db.read(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1  # the connection is fine
    finally:
        await db.close()


async def _api(tmp_path, aiohttp_client, **overrides) -> Api:
    vault, info = await make_node(str(tmp_path / "node"), **overrides)
    client = await aiohttp_client(make_app(vault))
    with open(info["token_file"]) as handle:
        return Api(client, vault, handle.read().strip(), info["did"])


async def test_a_search_past_the_limit_is_503_query_timeout(tmp_path, aiohttp_client):
    api = await _api(tmp_path, aiohttp_client)
    try:
        for n in range(5):
            await api.put(f"note {n}".encode(), "text/plain", title=f"note {n}")
        api.vault.db.time_limit = 1e-6  # from now on every search runs longer than its limit
        resp = await api.client.get("/v1/records", headers=api.auth())
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"]["code"] == "query_timeout"
    finally:
        await close_vault(api.vault)


async def test_token_checks_and_audit_verify_do_not_wait_behind_long_reads(tmp_path, aiohttp_client):
    busy_for = 6.0
    api = await _api(tmp_path, aiohttp_client, query_time_limit=busy_for)
    try:
        # Every request reader is taken by a query that runs until its limit.
        hogs = [asyncio.create_task(api.vault.db.read(lambda conn: conn.execute(ENDLESS).fetchone()))
                for _ in range(2)]  # the request lane has two threads
        await asyncio.sleep(0.2)
        started = time.monotonic()
        resp = await api.client.get("/v1/records/not-a-record-id", headers=api.auth())
        assert resp.status == 400  # the token was checked (else 401) with every reader busy
        resp = await api.client.get("/v1/audit/verify", headers=api.auth())
        assert resp.status == 200 and (await resp.json())["ok"] is True
        assert time.monotonic() - started < busy_for / 2
        for hog in hogs:
            with pytest.raises(QueryInterrupted):
                await hog
    finally:
        await close_vault(api.vault)
