"""Issue 9's table for the local backend: small FHIR records/s, big-record
throughput against one core's seal+hash, the longest event-loop stalls and
peak memory, each measured in this one run beside the issue's "before" figure
and the goal. Kubo/Cluster rows come from ``make bench-ipfs``.

Prints figures; asserts nothing. Run with ``make bench`` or
``python bench/ingest.py [--mib 256] [--small 4000] [--clients 16]``;
``--rss-only`` does the same work on the daemon (without the one-client
run and the seal+hash reference) and prints only the memory figures, per
process.
The benchmark client runs on the same machine as the daemon: its own CPU
time and the load average are printed beside the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request

import aiohttp

import sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RssSampler, start_node, tree_peak_rss_mb, tree_peak_rss_parts  # noqa: E402  (bench/ on path)

from daemon import crypto  # noqa: E402
from daemon.fsutil import atomic_write  # noqa: E402
from tests.process import Daemon, download, set_chunk_size, upload  # noqa: E402

CHUNK = crypto.DEFAULT_CHUNK_SIZE


def raw_seal_rate(data: bytes) -> float:
    """MB/s of XChaCha20-Poly1305 + SHA-256 over ``data`` on one core."""
    dek, sid = crypto.new_data_key(), crypto.new_stream_id()
    started = time.perf_counter()
    for i, offset in enumerate(range(0, len(data), CHUNK)):
        sealed = crypto.seal_chunk(dek, sid, i, offset + CHUNK >= len(data), data[offset:offset + CHUNK])
        hashlib.sha256(sealed).digest()
    return len(data) / (time.perf_counter() - started) / 1e6


def raw_write_rate(path: str, folder: str) -> float:
    """MB/s of writing the file at ``path`` as chunk-sized block files (the
    local store's temp file and rename, no fsync) into a new folder on the data dir's
    filesystem, on one thread; the folder is removed afterwards. This VM
    backs guest memory on first touch, so growing the page cache costs
    several times what refilling freed pages does: both POST and this
    reference pay it."""
    with open(path, "rb") as handle:
        data = handle.read()
    target = tempfile.mkdtemp(dir=folder, prefix="write-reference-")
    try:
        started = time.perf_counter()
        for i, offset in enumerate(range(0, len(data), CHUNK)):
            atomic_write(os.path.join(target, str(i)), data[offset:offset + CHUNK], fsync=False, sync_dir=False)
        return len(data) / (time.perf_counter() - started) / 1e6
    finally:
        shutil.rmtree(target)


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


_BUCKET = re.compile(r'medvault_event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)')


def _lag_buckets(api: str, token: str) -> dict[float, float]:
    request = urllib.request.Request(f"{api}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        text = resp.read().decode()
    return {float(le): float(count) for le, count in _BUCKET.findall(text)}


def longest_stall(api: str, token: str, work) -> str:
    """Runs ``work`` and reads the loop-lag histogram before and after: the
    longest stall lies in the highest bucket that gained a count."""
    before = _lag_buckets(api, token)
    work()
    after = _lag_buckets(api, token)
    bounds = sorted(after)
    gained = [after[b] - before.get(b, 0) for b in bounds]  # cumulative: each bucket counts all below it
    in_bin = [gained[0]] + [gained[i] - gained[i - 1] for i in range(1, len(bounds))]
    top = max((i for i, n in enumerate(in_bin) if n > 0), default=None)
    if top is None:
        return "none seen"
    low = bounds[top - 1] * 1000 if top else 0.0
    return f"{low:g}–{bounds[top] * 1000:g} ms" if bounds[top] != float("inf") else f"> {low:g} ms"


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=4000)
    parser.add_argument("--single", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rss-only", action="store_true", help="only the daemon's peak RSS, per process")
    args = parser.parse_args()
    load_before = _load()
    size = args.mib * 1024 * 1024
    data = os.urandom(size)
    raw = 0.0 if args.rss_only else raw_seal_rate(data)

    # A 4,096-link manifest: 4 MiB in 1 KiB chunks, written before the daemon
    # under test starts with the default chunk size.
    daemon, data_dir, api, token = start_node()
    daemon.stop()
    set_chunk_size(data_dir, 1024)
    daemon = Daemon(data_dir, daemon.log_path).start()
    wide = upload(open(os.path.join(data_dir, "api")).read().strip(), token, os.urandom(4096 * 1024),
                   "application/octet-stream")
    daemon.stop()
    set_chunk_size(data_dir, crypto.DEFAULT_CHUNK_SIZE)
    daemon = Daemon(data_dir, daemon.log_path).start()
    api = open(os.path.join(data_dir, "api")).read().strip()

    path = os.path.join(os.path.dirname(data_dir), "big.bin")
    with open(path, "wb") as handle:
        handle.write(data)
    del data
    rss_start = tree_peak_rss_mb(daemon.proc.pid)
    parts_start = tree_peak_rss_parts(daemon.proc.pid)
    sampler = RssSampler(daemon.proc.pid)
    try:
        sampler.start()
        put_rate, get_rate = asyncio.run(big_round_trip(api, token, path, size))
        started = os.times()
        rate = asyncio.run(small_records(api, token, args.small, args.clients))
        ended = os.times()
        client_cpu = (ended.user - started.user + ended.system - started.system) / args.small * 1000
        single = 0.0 if args.rss_only else asyncio.run(small_records(api, token, args.single, 1))
        big64 = upload(api, token, os.urandom(64 * 1024 * 1024), "application/octet-stream")
        fhir = json.dumps({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                           "note": [{"text": "n" * 1024} for _ in range(15 * 1024)]}).encode()
        written = 0.0 if args.rss_only else raw_write_rate(path, os.path.dirname(data_dir))
        stall_64 = longest_stall(api, token, lambda: download(api, token, big64["id"]))
        stall_wide = longest_stall(api, token, lambda: download(api, token, wide["id"]))
        stall_fhir = longest_stall(api, token, lambda: upload(api, token, fhir, "application/fhir+json"))
        rss_peak = tree_peak_rss_mb(daemon.proc.pid)
        parts_peak = tree_peak_rss_parts(daemon.proc.pid)
    finally:
        sampler.stop()
        daemon.stop()

    def parts(found: list[tuple[str, float]]) -> str:
        return ", ".join(f"{role} {mb:.0f}" for role, mb in found)

    memory = (f"daemon peak RSS, workers included: {rss_peak:.0f} MB ({parts(parts_peak)}); "
              f"after start {rss_start:.0f} MB ({parts(parts_start)}); largest sum sampled every 10 ms "
              f"{sampler.max_mb:.0f} MB (the processes' peaks need not coincide)")
    if args.rss_only:
        print(memory)
        print(f"load average before {load_before}, after {_load()}")
        return

    rows = [
        ("2 KB FHIR records, 16 clients, local backend", "285–415 /s", f"{rate:,.0f} /s", "≥ 1,000 /s"),
        ("FHIR resources, 1 client, local", "133 /s", f"{single:,.0f} /s", "≥ 300 /s"),
        ("FHIR resources, 1 client, Kubo", "73 /s", "see make bench-ipfs", "≥ 150 /s"),
        ("2 KB FHIR records, 16 clients, Kubo backend", "not measured", "see make bench-ipfs", "≥ 300 /s"),
        (f"POST {args.mib} MiB, local, ÷ one-core seal+hash", "0.23–0.32", f"{put_rate / raw:.2f}", "≥ 0.5"),
        (f"GET {args.mib} MiB, local, ÷ one-core seal+hash", "0.43–0.52", f"{get_rate / raw:.2f}", "≥ 0.8"),
        (f"POST {args.mib} MiB on Kubo ÷ ipfs add --cid-version=1", "0.34–0.40", "see make bench-ipfs", "≥ 0.8"),
        (f"GET {args.mib} MiB on Kubo ÷ ipfs cat", "0.46–0.70", "see make bench-ipfs", "≥ 1.0"),
        ("10,000 pins to pinned on a 3-peer cluster", "100 s", "see make bench-ipfs", "< 30 s"),
        ("longest event-loop stall: open 64 MiB", "72 ms", stall_64, "≤ 20 ms"),
        ("longest event-loop stall: 4,096-link manifest", "623 ms", stall_wide, "≤ 20 ms"),
        ("longest event-loop stall: 15.6 MiB FHIR parse", "276 ms", stall_fhir, "≤ 20 ms"),
        ("daemon peak RSS, workers included", "57 MB", f"{rss_peak:.0f} MB", "< 150 MB"),
    ]
    widths = [max(len(row[i]) for row in rows + [("what", "before", "now", "goal")]) for i in range(4)]
    line = "| " + " | ".join("{:<%d}" % w for w in widths) + " |"
    print(line.format("what", "before", "now", "goal"))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line.format(*row))
    print()
    print(f"one-core seal+hash {raw:.0f} MB/s; POST {put_rate:.0f} MB/s, GET {get_rate:.0f} MB/s")
    both = 1 / (1 / raw + 1 / written)  # one core sealing, hashing and then writing each chunk
    print(f"page-cache write of the same bytes as {CHUNK // 1024} KiB block files, one thread: {written:.0f} MB/s; "
          f"one core sealing, hashing and writing: {both:.0f} MB/s, POST ÷ that: {put_rate / both:.2f}")
    print(memory)
    print(f"benchmark client CPU: {client_cpu:.2f} ms per small record (same machine); "
          f"load average before {load_before}, after {_load()}")


if __name__ == "__main__":
    main()
