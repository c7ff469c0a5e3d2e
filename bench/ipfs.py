"""medvault on real IPFS: throughput beside Kubo's own unixfs import/export,
small FHIR records on Kubo, pin-to-pinned latency on the three-peer Cluster,
and reconciler time for many pins. Prints figures; asserts nothing.

Every Kubo figure is taken on each of Kubo's profiles in turn (``test``;
``default``, what a plain ``ipfs init`` gives; ``default`` with flatfs
fsyncing every block), and each ratio is to a peer measured in the same run
on the same Kubo.

    python bench/ipfs.py [--mib 256] [--small 2000] [--clients 16] [--latency 20] [--pins 10000]
                         [--profiles test,default,default+sync] [--no-cluster]
                         [--only kubo,latency,reconciler] [--crdt-batching SIZE/AGE|off] [--trace] [--window 16]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import peak_rss_mb, scratch_dir, start_node  # noqa: E402
from ingest import big_round_trip, small_records  # noqa: E402

from daemon import timeutil  # noqa: E402
from daemon.blocks import Block  # noqa: E402
from daemon.blockstore.cluster import ClusterPinner, ClusterRest  # noqa: E402
from daemon.blockstore.kubo import KuboBlockStore, KuboRpc  # noqa: E402
from daemon.reconciler import Reconciler  # noqa: E402
from indexer import pins  # noqa: E402
from indexer.db import Database  # noqa: E402
from tests.ipfs import Kubo, Topology  # noqa: E402

PROFILES = {"test": ("test", None), "default": ("default", None), "default+sync": ("default", True)}


def timed(argv: list[str], **kwargs) -> tuple[float, bytes]:
    started = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, **kwargs).stdout
    return time.perf_counter() - started, out


async def kubo_small_puts(api_url: str, total: int) -> float:
    """Kubo's own floor for a small record, one client: a 2 KB block put and
    pinned in one RPC (what medvault needs at least, minus its own work)."""
    rpc = KuboRpc(api_url)
    try:
        started = time.perf_counter()
        for _ in range(total):
            await rpc.request("POST", "/block/put", "block_put", parse="ndjson",
                              data=lambda: {"file": os.urandom(2048)}, params={"cid-codec": "raw", "pin": "true"})
        return total / (time.perf_counter() - started)
    finally:
        await rpc.close()


def kubo_figures(label: str, mib: int, small: int, clients: int) -> None:
    profile, sync = PROFILES[label]
    root = scratch_dir(f"medvault-bench-kubo-{profile}-")
    kubo = Kubo(root, "kubo", profile=profile, flatfs_sync=sync).start()
    try:
        size = mib * 1024 * 1024
        path = os.path.join(root, "big.bin")
        with open(path, "wb") as handle:
            handle.write(os.urandom(size))
        ipfs = [kubo_bin(), "--api", kubo.api_multiaddr]
        add_s, out = timed([*ipfs, "add", "-Q", "--cid-version=1", "--pin=true", path])
        cat_s, _ = timed([*ipfs, "cat", out.decode().strip()], env={**os.environ, **kubo.env})
        floor = asyncio.run(kubo_small_puts(kubo.api_url, max(50, small // 8)))
        daemon, _, api, token = start_node(("--ipfs-api", kubo.api_url))
        try:
            put_rate, get_rate = asyncio.run(big_round_trip(api, token, path, size))
            rss = peak_rss_mb(daemon.proc.pid)
            one = asyncio.run(small_records(api, token, max(50, small // 8), 1))
            many = asyncio.run(small_records(api, token, small, clients))
        finally:
            daemon.stop()
        add_rate, cat_rate = size / add_s / 1e6, size / cat_s / 1e6
        print(f"== Kubo profile {label} (flatfs sync {'on' if kubo.flatfs_sync else 'off'})")
        print(f"ipfs add --cid-version=1 {mib} MiB : {add_rate:8.1f} MB/s")
        print(f"medvault POST (kubo)       : {put_rate:8.1f} MB/s  ({put_rate / add_rate:.2f} of ipfs add)")
        print(f"ipfs cat {mib} MiB               : {cat_rate:8.1f} MB/s")
        print(f"medvault GET (kubo)        : {get_rate:8.1f} MB/s  ({get_rate / cat_rate:.2f} of ipfs cat)")
        print(f"daemon peak RSS (kubo)     : {rss:8.1f} MB")
        print(f"kubo block/put+pin 2 KB, 1 client : {floor:8.1f} /s")
        print(f"FHIR resources, 1 client (kubo)   : {one:8.1f} /s  ({one / floor:.2f} of block/put+pin)")
        print(f"FHIR resources, {clients} clients (kubo) : {many:8.1f} /s")
    finally:
        kubo.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (/proc; the machine's load does not inflate it)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kubo_bin() -> str:
    from tests.ipfs import binary
    return binary("ipfs")


async def pin_latency(topology: Topology, count: int) -> None:
    peer = topology.peers[0]
    daemon, data_dir, api, token = start_node(("--ipfs-api", peer.kubo.api_url, "--cluster-api", peer.api_url))
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
        samples = []
        async with aiohttp.ClientSession(headers=headers) as session:
            for i in range(count):
                started = time.perf_counter()
                async with session.post(f"{api}/v1/records", data=os.urandom(2048)) as resp:
                    record = await resp.json()
                while record["pin"]["status"] != "pinned":
                    await asyncio.sleep(0.05)
                    async with session.get(f"{api}/v1/records/{record['id']}") as resp:
                        record = await resp.json()
                samples.append(time.perf_counter() - started)
        samples.sort()
        print(f"pin to 'pinned' (3 peers, min 2): median {statistics.median(samples) * 1000:.0f} ms, "
              f"p95 {samples[int(len(samples) * 0.95) - 1] * 1000:.0f} ms over {count}")
    finally:
        daemon.stop()


async def reconciler_time(topology: Topology, count: int, give_up: float = 600, trace: bool = False,
                          window: int = 16) -> None:
    peer = topology.peers[1]
    rpc = KuboRpc(peer.kubo.api_url)
    store, pinner = KuboBlockStore(rpc), ClusterPinner(ClusterRest(peer.api_url))
    db = Database(os.path.join(scratch_dir("medvault-bench-index-"), "index.sqlite"), os.urandom(32))
    await db.start()
    try:
        blocks = [Block.raw(os.urandom(512)) for _ in range(count)]
        await store.put_many(blocks)
        now = timeutil.now()

        def seed(conn):
            for block in blocks:
                pins.want(conn, str(block.cid), None, "manifest", 2, 3, now)

        await db.write(seed)
        reconciler = Reconciler(db, pinner, batch=1000, verify_interval=3600, interval=0.5, concurrency=window)
        processes = [*topology.kubos, *topology.peers]
        cpu_before = [cpu_seconds(p.proc.pid) for p in processes]
        started, passes, submitted = time.perf_counter(), 0, None
        while True:
            pass_started = time.perf_counter()
            outcome = await reconciler.pass_once()
            passes += 1
            counts = await db.read(pins.counts)
            if trace:
                print(f"  pass {passes} at {pass_started - started:6.1f} s took {time.perf_counter() - pass_started:5.1f} s:"
                      f" due {outcome.get('due')}, now {dict(sorted(counts.items()))}", flush=True)
            if submitted is None and not counts.get("queued"):
                submitted = time.perf_counter() - started
            if set(counts) == {"pinned"}:
                break
            if time.perf_counter() - started > give_up:  # say what is left rather than wait forever
                print(f"reconciler, {count} new pins: gave up after {give_up:.0f} s ({passes} passes): {counts}")
                return
            await asyncio.sleep(0.2)
        settle = time.perf_counter() - started
        cpu = [cpu_seconds(p.proc.pid) - before for p, before in zip(processes, cpu_before)]
        await db.write(lambda c: c.execute("UPDATE pins SET next_attempt = 0"))
        started = time.perf_counter()
        while await db.read(lambda c: c.execute("SELECT COUNT(*) FROM pins WHERE next_attempt <= ?",
                                                (time.time(),)).fetchone()[0]):
            await reconciler.pass_once()
        verify = time.perf_counter() - started
        print(f"reconciler, {count} new pins submitted to the cluster: {submitted:.1f} s")
        print(f"reconciler, {count} new pins to 'pinned': {settle:.1f} s ({passes} passes); "
              f"re-verifying {count} pinned: {verify:.1f} s")
        print(f"CPU until all pinned: Kubo {sum(cpu[:3]):.1f} s, Cluster {sum(cpu[3:]):.1f} s "
              f"({sum(cpu) / count * 1000:.1f} ms a pin, the three peers together)")
    finally:
        await db.close()
        await pinner.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--latency", type=int, default=20)
    parser.add_argument("--pins", type=int, default=10000)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--no-cluster", action="store_true")
    parser.add_argument("--only", default="kubo,latency,reconciler",
                        help="which figures: kubo (the Kubo profiles), latency, reconciler")
    parser.add_argument("--trace", action="store_true", help="print each reconciler pass")
    parser.add_argument("--window", type=int, default=16, help="the reconciler's pin submissions in flight")
    parser.add_argument("--crdt-batching", default=None,
                        help="the Cluster's crdt batching as SIZE/AGE (e.g. 500/200ms), or off; "
                             "default: the fixture's")
    args = parser.parse_args()
    only = set(args.only.split(","))
    load = os.getloadavg()
    print(f"load: {load[0]:.2f} {load[1]:.2f} (1 and 5 min) on {os.cpu_count()} cores")
    if "kubo" in only:
        for label in args.profiles.split(","):
            kubo_figures(label, args.mib, args.small, args.clients)
    if args.no_cluster or not only & {"latency", "reconciler"}:
        return
    kwargs = {}
    if args.crdt_batching == "off":
        kwargs["batching"] = {"max_batch_size": 0, "max_batch_age": "0s"}
    elif args.crdt_batching:
        size, age = args.crdt_batching.split("/")
        kwargs["batching"] = {"max_batch_size": int(size), "max_batch_age": age}
    topology = Topology(scratch_dir("medvault-bench-cluster-"), **kwargs).start()
    try:
        print("crdt batching:", kwargs.get("batching", "the fixture's"))
        if "latency" in only:
            asyncio.run(pin_latency(topology, args.latency))
        if "reconciler" in only:
            asyncio.run(reconciler_time(topology, args.pins, trace=args.trace, window=args.window))
    finally:
        topology.stop()
        load = os.getloadavg()
        print(f"load at the end: {load[0]:.2f} {load[1]:.2f} (1 and 5 min)")


if __name__ == "__main__":
    main()
