"""What this machine can ingest at most: small FHIR records/s with nothing
shared between processes.

Starts N independent daemons (each its own data dir, index and block store:
no lock, index writer or GIL in common) and loads each with ``--clients``
clients at once, for N in ``--daemons``. Several HTTP worker processes over
one data dir (issue 9's next step) can at best match the N-daemon figure, so
it bounds what that design would gain here; the CPU per record says what a
record costs the machine whatever the process layout.

Prints figures; asserts nothing. ``python bench/ceiling.py [--daemons 1,2,4]
[--records 1000] [--clients 16]``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import start_node  # noqa: E402  (bench/ on path)
from ingest import small_records  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / _TICK


async def _load_all(nodes, records: int, clients: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*[small_records(api, token, records, clients) for _, _, api, token in nodes])
    return len(nodes) * records / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--daemons", default="1,2,4", help="comma-separated counts of independent daemons")
    parser.add_argument("--records", type=int, default=1000, help="records per daemon")
    parser.add_argument("--clients", type=int, default=16, help="clients per daemon")
    args = parser.parse_args()
    print("| daemons | clients | records/s | daemon CPU ms/record | client CPU ms/record | load after |")
    print("|---:|---:|---:|---:|---:|---|")
    for count in (int(n) for n in args.daemons.split(",")):
        nodes = [start_node() for _ in range(count)]
        try:
            asyncio.run(_load_all(nodes, 50, 4))  # warm-up: first connections, index pages
            before = [cpu_seconds(daemon.proc.pid) for daemon, *_ in nodes]
            mine = os.times()
            rate = asyncio.run(_load_all(nodes, args.records, args.clients))
            ended = os.times()
            daemon_cpu = sum(cpu_seconds(d.proc.pid) - b for (d, *_), b in zip(nodes, before))
        finally:
            for daemon, *_ in nodes:
                daemon.stop()
        total = count * args.records
        client_cpu = ended.user - mine.user + ended.system - mine.system
        load = " ".join(open("/proc/loadavg").read().split()[:3])
        print(f"| {count} | {count * args.clients} | {rate:,.0f} | {daemon_cpu / total * 1000:.2f} "
              f"| {client_cpu / total * 1000:.2f} | {load} |")
    print(f"({os.cpu_count()} cores; every daemon and the client share them)")


if __name__ == "__main__":
    main()
