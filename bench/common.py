"""Helpers for benchmarks: a real daemon subprocess, its peak RSS, timing."""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.process import Daemon, run_json  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def children_of(pid: int) -> list[int]:
    """Every child of a process: /proc lists children per thread (task), and
    a worker started from a thread is not among the main thread's."""
    children = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += [int(c) for c in handle.read().split()]
        except FileNotFoundError:  # a thread that just ended
            pass
    return children


def tree_peak_rss_mb(pid: int) -> float:
    """The peak RSS of a process plus each of its children's (worker
    processes): a sum of peaks, so an upper bound on what was resident at once."""
    return sum(mb for _, mb in tree_peak_rss_parts(pid))


def _role(pid: int) -> str:
    """What a process of the daemon's tree is, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return "gone"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "daemon.cli" in cmd:
        return "daemon"
    if "spawn_main" in cmd or "worker_main" in cmd:
        return "parse worker"
    return cmd[:60]


def tree_peak_rss_parts(pid: int) -> list[tuple[str, float]]:
    """(role, VmHWM in MB) of a process and each of its descendants."""
    parts = [(_role(pid), peak_rss_mb(pid))]
    for child in children_of(pid):
        try:
            parts += tree_peak_rss_parts(child)
        except FileNotFoundError:  # a worker that just exited
            pass
    return parts


def tree_rss_mb(pid: int) -> float:
    """VmRSS now, summed over a process and its descendants."""
    total = 0.0
    for p in [pid, *children_of(pid)]:
        try:
            with open(f"/proc/{p}/status") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024
        except (FileNotFoundError, StopIteration):
            pass
    return total


class RssSampler:
    """Samples the tree's summed RSS every ``interval`` s on a thread: the
    largest sum seen is a lower bound on what was resident at once (the
    sum of peaks, ``tree_peak_rss_mb``, is the upper bound)."""

    def __init__(self, pid: int, interval: float = 0.01):
        import threading
        self.pid, self.interval, self.max_mb = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.max_mb = max(self.max_mb, tree_rss_mb(self.pid))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def scratch_dir(prefix: str) -> str:
    """A new temp folder, removed when the benchmark exits, however it exits
    short of a kill (benchmarks write hundreds of MB a run: left behind, a
    few dozen runs filled this machine's disk)."""
    root = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def start_node(backend_args: tuple[str, ...] = ()) -> tuple[Daemon, str, str, str]:
    """Initialises a data dir and starts a daemon, stopped at exit if the
    caller has not; returns (daemon, data_dir, api, token)."""
    root = scratch_dir("medvault-bench-")
    data_dir = os.path.join(root, "node")
    run_json("init", "--data-dir", data_dir, *backend_args)
    daemon = Daemon(data_dir, os.path.join(root, "daemon.log")).start()
    atexit.register(daemon.stop)  # runs before the folder's removal (atexit is last in, first out)
    api = open(os.path.join(data_dir, "api")).read().strip()
    token = open(os.path.join(data_dir, "owner.token")).read().strip()
    return daemon, data_dir, api, token
