"""Real Kubo and IPFS Cluster processes on loopback, in temporary folders.

Binaries come from ``make ipfs`` (``.tools/bin``). A single Kubo serves the
kubo-backend tests; the standard topology is three Kubo + three Cluster
peers (crdt consensus, a shared secret, ``--bootstrap`` to the first peer,
ports and short monitor intervals through environment overrides). Every
wait is a bounded poll, and every process is stopped at teardown.
Outside CI a missing binary skips these tests; under CI=true it fails them.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, ".tools", "bin")


def missing(message: str) -> None:
    """A tool the test needs is not installed: skip on a developer's machine,
    fail under CI=true (CI installs everything, so absence there is a bug)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def binary(name: str) -> str:
    path = shutil.which(name, path=TOOLS + os.pathsep + os.environ.get("PATH", ""))
    if path is None:
        missing(f"{name} is not built: run `make ipfs`")
    return path


_taken: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+), so a
    port we hand to a daemon is not taken meanwhile by some other process's
    port-0 listener (Kubo's gateway, test servers): that race broke CI once."""
    while True:
        port = random.randrange(20000, 32000)
        if port in _taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port


def http_post(url: str, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def http_get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else lines


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error!r})")


class Process:
    """A child process with its output in a log file."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def spawn(self, argv: list[str], env: dict) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log,
                                     start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        with open(self.log_path, "rb") as handle:
            return handle.read()[-3000:].decode(errors="replace")


class Kubo(Process):
    """``ipfs daemon`` on a ``--profile=test`` repo (loopback, no bootstrap, no mDNS).

    Benchmarks also run Kubo's ``default`` profile (what an operator gets from
    a plain ``ipfs init``: DHT, autoconf, providing), with ``flatfs_sync``
    to set the block store's fsync-per-block either way; the API, gateway and
    swarm stay on loopback so nothing here listens on the network."""

    def __init__(self, root: str, name: str, profile: str = "test", flatfs_sync: bool | None = None):
        self.repo = os.path.join(root, name)
        super().__init__(self.repo + ".log")
        self.name = name
        self.api_url = ""
        self.peer_id = ""
        self.swarm_addr = ""
        self.api_port = free_port()
        self.swarm_port = free_port()
        self.env = {"IPFS_PATH": self.repo}
        self.profile = profile
        init = ["init"] + ([f"--profile={profile}"] if profile != "default" else [])
        subprocess.run([binary("ipfs"), *init], env={**os.environ, **self.env}, check=True,
                       capture_output=True, timeout=60)
        if flatfs_sync is not None:
            self._set_flatfs_sync(flatfs_sync)
        for key, value in (("Addresses.API", f"/ip4/127.0.0.1/tcp/{self.api_port}"),
                           ("Addresses.Gateway", "/ip4/127.0.0.1/tcp/0"),
                           ("Addresses.Swarm", json.dumps([f"/ip4/127.0.0.1/tcp/{self.swarm_port}"]))):
            args = ["config", "--json", key, value] if value.startswith("[") else ["config", key, value]
            subprocess.run([binary("ipfs"), *args], env={**os.environ, **self.env}, check=True,
                           capture_output=True, timeout=30)

    def _set_flatfs_sync(self, sync: bool) -> None:
        """``sync`` is not part of the datastore's identity (datastore_spec), so it may change after init."""
        path = os.path.join(self.repo, "config")
        with open(path) as handle:
            config = json.load(handle)
        for mount in config["Datastore"]["Spec"]["mounts"]:
            if mount.get("type") == "flatfs":
                mount["sync"] = sync
        with open(path, "w") as handle:
            json.dump(config, handle, indent=2)

    @property
    def flatfs_sync(self) -> bool:
        with open(os.path.join(self.repo, "config")) as handle:
            mounts = json.load(handle)["Datastore"]["Spec"]["mounts"]
        return any(m.get("type") == "flatfs" and m.get("sync") for m in mounts)

    def start(self) -> "Kubo":
        self.spawn([binary("ipfs"), "daemon", "--offline=false"], self.env)
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        ident = wait_for(lambda: self.running and http_post(self.api_url + "/api/v0/id"), 60,
                         f"kubo {self.name} to answer") if self.running else None
        if not ident:
            raise AssertionError(f"kubo {self.name} did not start: {self.log_tail()}")
        self.peer_id = ident["ID"]
        self.swarm_addr = f"/ip4/127.0.0.1/tcp/{self.swarm_port}/p2p/{self.peer_id}"
        return self

    @property
    def api_multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.api_port}"

    def connect(self, other: "Kubo") -> None:
        wait_for(lambda: http_post(f"{self.api_url}/api/v0/swarm/connect?arg={other.swarm_addr}", 10), 30,
                 f"{self.name} to connect to {other.name}")

    def ipfs(self, *args: str, input: bytes | None = None) -> bytes:
        result = subprocess.run([binary("ipfs"), "--api", self.api_multiaddr, *args], input=input,
                                capture_output=True, timeout=300, env={**os.environ, **self.env})
        if result.returncode != 0:
            raise AssertionError(f"ipfs {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout


# What makes a peer part of the standard topology; compose/docker-compose.yml
# sets the same variables (tests/test_compose.py holds the two together).
TOPOLOGY_SIZE = 3
CLUSTER_TOPOLOGY_ENV = ("CLUSTER_SECRET", "CLUSTER_PEERNAME", "CLUSTER_LISTENMULTIADDRESS",
                        "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS", "CLUSTER_IPFSHTTP_NODEMULTIADDRESS",
                        "CLUSTER_MDNSINTERVAL", "CLUSTER_MONITORPINGINTERVAL", "CLUSTER_PEERADDRESSES")


# crdt batching (consensus.crdt.batching), set in service.json. Cluster's
# default is off: one crdt delta, DAG node and pubsub broadcast per pin, each
# POST /pins waiting for its own. Batched, a POST returns once queued and a
# delta carries up to max_batch_size pins or what arrived within max_batch_age
# (docs/DECISIONS.md: the numbers and what they gained).
# compose/docker-compose.yml sets the same through CLUSTER_CRDT_BATCHING_*.
CRDT_BATCHING: dict | None = {"max_batch_size": 1000, "max_batch_age": "100ms"}


class ClusterPeer(Process):
    """``ipfs-cluster-service daemon`` (crdt) bound to one Kubo, ports fixed so it can restart."""

    def __init__(self, root: str, name: str, kubo: Kubo, secret: str, batching: dict | None = CRDT_BATCHING):
        self.path = os.path.join(root, name)
        super().__init__(self.path + ".log")
        self.name = name
        self.kubo = kubo
        self.cluster_port, self.api_port = free_port(), free_port()
        self.env = {
            "IPFS_CLUSTER_PATH": self.path,
            "CLUSTER_SECRET": secret,
            "CLUSTER_PEERNAME": name,
            "CLUSTER_LISTENMULTIADDRESS": f"/ip4/127.0.0.1/tcp/{self.cluster_port}",
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS": f"/ip4/127.0.0.1/tcp/{self.api_port}",
            "CLUSTER_IPFSHTTP_NODEMULTIADDRESS": kubo.api_multiaddr,
            "CLUSTER_MDNSINTERVAL": "0s",
            "CLUSTER_MONITORPINGINTERVAL": "1s",
            "CLUSTER_PUBSUBMON_CHECKINTERVAL": "1s",
            "CLUSTER_DISK_METRICTTL": "3s",
            "CLUSTER_PINQUEUE_METRICTTL": "3s",
            "CLUSTER_TAGS_METRICTTL": "3s",
            "CLUSTER_STATESYNCINTERVAL": "10s",
            "CLUSTER_PINRECOVERINTERVAL": "10s",
        }
        subprocess.run([binary("ipfs-cluster-service"), "init", "--consensus", "crdt"],
                       env={**os.environ, **self.env}, check=True, capture_output=True, timeout=60)
        service = os.path.join(self.path, "service.json")
        with open(service) as handle:
            config = json.load(handle)
        for unused in ("ipfsproxy", "pinsvcapi"):  # medvault talks to the REST API only
            config["api"].pop(unused, None)
        if batching:
            config["consensus"]["crdt"]["batching"].update(batching)
        with open(service, "w") as handle:
            json.dump(config, handle, indent=2)
        with open(os.path.join(self.path, "identity.json")) as handle:
            self.peer_id = json.load(handle)["id"]
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.address = f"/ip4/127.0.0.1/tcp/{self.cluster_port}/p2p/{self.peer_id}"

    def start(self, bootstrap: str | None = None) -> "ClusterPeer":
        argv = [binary("ipfs-cluster-service"), "daemon"] + (["--bootstrap", bootstrap] if bootstrap else [])
        self.spawn(argv, self.env)
        wait_for(lambda: self.running and http_get(self.api_url + "/id"), 60, f"cluster {self.name} REST API")
        if not self.running:
            raise AssertionError(f"cluster {self.name} did not start: {self.log_tail()}")
        return self

    def peers(self) -> list[dict]:
        peers = http_get(self.api_url + "/peers", 10)
        return peers if isinstance(peers, list) else [peers]


class Topology:
    """Three Kubo + three Cluster peers, the standard replication topology."""

    def __init__(self, root: str, size: int = TOPOLOGY_SIZE, batching: dict | None = CRDT_BATCHING):
        self.secret = secrets.token_hex(32)
        self.kubos = [Kubo(root, f"kubo{i}") for i in range(size)]
        self.peers = [ClusterPeer(root, f"cluster{i}", k, self.secret, batching)
                      for i, k in enumerate(self.kubos)]
        for peer in self.peers:  # no DHT or mDNS on loopback: every peer learns the others' addresses
            peer.env["CLUSTER_PEERADDRESSES"] = ",".join(p.address for p in self.peers if p is not peer)
            assert set(CLUSTER_TOPOLOGY_ENV) <= set(peer.env)

    def start(self) -> "Topology":
        for kubo in self.kubos:
            kubo.start()
        self.connect_kubos()
        self.peers[0].start()
        for peer in self.peers[1:]:
            peer.start(bootstrap=self.peers[0].address)
        self.wait_formed()
        return self

    def connect_kubos(self) -> None:
        for i, kubo in enumerate(self.kubos):
            for other in self.kubos[i + 1:]:
                if kubo.running and other.running:
                    kubo.connect(other)

    def wait_formed(self, timeout: float = 90) -> None:
        live = [p for p in self.peers if p.running]
        wait_for(lambda: all(len([x for x in p.peers() if not x.get("error")]) >= len(live) for p in live),
                 timeout, "the cluster to form")

    def restart(self, index: int) -> None:
        self.kubos[index].start()
        self.connect_kubos()
        bootstrap = next(p.address for i, p in enumerate(self.peers) if i != index and p.running)
        self.peers[index].start(bootstrap=bootstrap)
        self.wait_formed()

    def stop(self) -> None:
        for process in [*self.peers, *self.kubos]:
            process.stop()
