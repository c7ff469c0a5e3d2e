"""Sharing figures: grant-to-readable on a second node (10 MiB, and 1,000
small records granted in one call), and reindex time for many records.
Prints figures; asserts nothing.

    python bench/sharing.py [--records 1000] [--reindex 10000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import scratch_dir, start_node  # noqa: E402
from ingest import fhir_resource, small_records  # noqa: E402

from tests.ipfs import Kubo  # noqa: E402
from tests.process import MEDVAULT, ROOT  # noqa: E402


async def _json(session, method, url, **kwargs):
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.json()
        assert resp.status < 300, body
        return body


async def grant_to_readable(a_api, a_token, b_api, b_token_of, clinician, count: int) -> None:
    owner = {"Authorization": f"Bearer {a_token}"}
    reader = {"Authorization": f"Bearer {b_token_of}"}
    async with aiohttp.ClientSession() as session:
        big = os.urandom(10 * 1024 * 1024)
        record = await _json(session, "POST", f"{a_api}/v1/records", data=big,
                             headers={**owner, "Content-Type": "application/octet-stream"})
        started = time.perf_counter()
        grant = await _json(session, "POST", f"{a_api}/v1/records/{record['id']}/grants", headers=owner,
                            json={"recipient": clinician})
        await _json(session, "POST", f"{b_api}/v1/imports", headers=reader, json={"share": grant["share"]})
        async with session.get(f"{b_api}/v1/records/{record['id']}/content", headers=reader) as resp:
            assert await resp.read() == big
        print(f"10 MiB record, grant on A to readable on B : {time.perf_counter() - started:6.2f} s")

        ids = []
        for i in range(count):
            body = await _json(session, "POST", f"{a_api}/v1/records", data=fhir_resource(i),
                               headers={**owner, "Content-Type": "application/fhir+json"})
            ids.append(body["id"])
        started = time.perf_counter()
        granted = await _json(session, "POST", f"{a_api}/v1/grants", headers=owner,
                              json={"records": ids, "recipient": clinician})
        grant_s = time.perf_counter() - started
        gate = asyncio.Semaphore(16)

        async def take(item):
            async with gate:
                await _json(session, "POST", f"{b_api}/v1/imports", headers=reader, json={"share": item["share"]})

        await asyncio.gather(*[take(item) for item in granted["items"]])
        page = await _json(session, "GET", f"{b_api}/v1/records", headers=reader, params={"limit": "1000"})
        assert len(page["items"]) >= min(count, 1000)
        total = time.perf_counter() - started
        print(f"{count} small records, one grant call          : {grant_s:6.2f} s")
        print(f"{count} small records, grant to readable on B  : {total:6.2f} s")


def reindex_time(count: int) -> None:
    daemon, data_dir, api, token = start_node()
    try:
        asyncio.run(small_records(api, token, count, 16))
    finally:
        daemon.stop()
    os.unlink(os.path.join(data_dir, "index.sqlite"))
    started = time.perf_counter()
    subprocess.run([*MEDVAULT, "reindex", "--data-dir", data_dir], cwd=ROOT, check=True, capture_output=True)
    print(f"reindex of {count} records (local backend)   : {time.perf_counter() - started:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--reindex", type=int, default=10000)
    args = parser.parse_args()
    root = scratch_dir("medvault-bench-share-")
    a_kubo, b_kubo = Kubo(root, "a").start(), Kubo(root, "b").start()
    a_kubo.connect(b_kubo)
    try:
        a_daemon, _, a_api, a_token = start_node(("--ipfs-api", a_kubo.api_url))
        b_daemon, b_dir, b_api, b_token = start_node(("--ipfs-api", b_kubo.api_url))
        try:
            async def setup():
                async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {b_token}"}) as session:
                    did = (await _json(session, "POST", f"{b_api}/v1/principals", json={"name": "clinician"}))["did"]
                    tok = (await _json(session, "POST", f"{b_api}/v1/tokens",
                                       json={"principal": did, "scopes": ["read", "write"]}))["token"]
                    return did, tok
            clinician, clinician_token = asyncio.run(setup())
            asyncio.run(grant_to_readable(a_api, a_token, b_api, clinician_token, clinician, args.records))
        finally:
            b_daemon.stop()
            a_daemon.stop()
    finally:
        b_kubo.stop()
        a_kubo.stop()
    reindex_time(args.reindex)


if __name__ == "__main__":
    main()
