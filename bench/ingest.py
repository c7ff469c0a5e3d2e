"""Ingest/read throughput, daemon memory and small-record rate on the local backend.

Prints figures; asserts nothing. Run with ``make bench`` or
``python bench/ingest.py [--mib 256] [--small 4000] [--clients 16]``.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time

import aiohttp

import sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_rss_mb, start_node  # noqa: E402  (bench/ on sys.path when run as a script)

from daemon import crypto  # noqa: E402

CHUNK = crypto.DEFAULT_CHUNK_SIZE


def raw_seal_rate(data: bytes) -> float:
    """MB/s of XChaCha20-Poly1305 + SHA-256 over ``data`` on one core."""
    dek, sid = crypto.new_data_key(), crypto.new_stream_id()
    started = time.perf_counter()
    for i, offset in enumerate(range(0, len(data), CHUNK)):
        sealed = crypto.seal_chunk(dek, sid, i, offset + CHUNK >= len(data), data[offset:offset + CHUNK])
        hashlib.sha256(sealed).digest()
    return len(data) / (time.perf_counter() - started) / 1e6


async def big_round_trip(api: str, token: str, path: str, size: int) -> tuple[float, float]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as session:
        async def body():
            with open(path, "rb") as handle:
                while piece := handle.read(1 << 20):
                    yield piece

        started = time.perf_counter()
        async with session.post(f"{api}/v1/records", data=body(),
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(size)}) as resp:
            assert resp.status == 201, await resp.text()
            record = await resp.json()
        put_rate = size / (time.perf_counter() - started) / 1e6
        digest = hashlib.sha256()
        started = time.perf_counter()
        async with session.get(f"{api}/v1/records/{record['id']}/content") as resp:
            async for piece in resp.content.iter_chunked(1 << 20):
                digest.update(piece)
        get_rate = size / (time.perf_counter() - started) / 1e6
        with open(path, "rb") as handle:
            assert digest.digest() == hashlib.file_digest(handle, "sha256").digest(), "read-back mismatch"
        return put_rate, get_rate


def fhir_resource(i: int) -> bytes:
    doc = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{i % 500}"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
           "effectiveDateTime": "2024-03-01T09:30:00Z", "valueQuantity": {"value": 13.2, "unit": "g/dL"},
           "note": [{"text": "x" * 1500}]}
    return json.dumps(doc).encode()


async def small_records(api: str, token: str, total: int, clients: int) -> float:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    bodies = [fhir_resource(i) for i in range(total)]
    next_index = iter(range(total))
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def worker():
            for i in next_index:
                async with session.post(f"{api}/v1/records", data=bodies[i]) as resp:
                    assert resp.status == 201, await resp.text()
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    data = os.urandom(size)
    raw = raw_seal_rate(data)
    daemon, data_dir, api, token = start_node()
    path = os.path.join(os.path.dirname(data_dir), "big.bin")
    with open(path, "wb") as handle:
        handle.write(data)
    del data
    rss_before = peak_rss_mb(daemon.proc.pid)
    try:
        put_rate, get_rate = asyncio.run(big_round_trip(api, token, path, size))
        rss_peak = peak_rss_mb(daemon.proc.pid)
        rate = asyncio.run(small_records(api, token, args.small, args.clients))
    finally:
        daemon.stop()
    print(f"raw seal+hash, one core     : {raw:8.1f} MB/s")
    print(f"POST {args.mib} MiB (local)       : {put_rate:8.1f} MB/s  ({put_rate / raw:.2f} of raw)")
    print(f"GET  {args.mib} MiB (local)       : {get_rate:8.1f} MB/s  ({get_rate / raw:.2f} of raw)")
    print(f"daemon peak RSS             : {rss_peak:8.1f} MB  (after start: {rss_before:.1f} MB)")
    print(f"small FHIR records ({args.clients} clients): {rate:8.1f} records/s over {args.small}")


if __name__ == "__main__":
    main()
