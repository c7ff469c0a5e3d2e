"""Shared fixtures: a real node (local backend, real SQLite) in a temp dir and
an HTTP client for its API. Kubo/Cluster fixtures live in tests/ipfs.py."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from api.app import make_app
from daemon.config import Config
from daemon.node import close_vault, init_data_dir, open_vault
from indexer.db import Database


@dataclass
class Api:
    """The test client plus the owner's token and helpers to act as others."""

    client: object
    vault: object
    owner_token: str
    owner_did: str

    def auth(self, token: str | None = None) -> dict:
        return {"Authorization": f"Bearer {token or self.owner_token}"}

    async def principal(self, name: str, scopes=("read", "write", "share")) -> tuple[str, str]:
        """Creates a principal and a token for it; returns (did, token)."""
        resp = await self.client.post("/v1/principals", json={"name": name}, headers=self.auth())
        assert resp.status == 201, await resp.text()
        did = (await resp.json())["did"]
        resp = await self.client.post("/v1/tokens", json={"principal": did, "scopes": list(scopes)},
                                      headers=self.auth())
        assert resp.status == 201, await resp.text()
        return did, (await resp.json())["token"]

    async def put(self, data: bytes, content_type: str = "application/octet-stream", token: str | None = None,
                  **params) -> dict:
        resp = await self.client.post("/v1/records", data=data, params=params,
                                      headers={**self.auth(token), "Content-Type": content_type})
        assert resp.status == 201, await resp.text()
        return await resp.json()


def lose_index(config) -> None:
    """Deletes a stopped node's index, as a lost disk would (reindex's case)."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(config.index_path + suffix):
            os.unlink(config.index_path + suffix)


async def make_node(path: str, **overrides) -> tuple[object, dict]:
    info = await init_data_dir(Config(data_dir=path))
    config = Config.load(path)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.validate().save()  # a copied data dir (failover tests) opens the same way
    return await open_vault(config), info


@pytest.fixture
async def node_api(tmp_path, aiohttp_client):
    """Opens more nodes for one test (``await node_api("name", **config)``),
    each with its own data dir, client and owner token; closed at teardown."""
    opened = []

    async def open_one(name: str, **config) -> Api:
        node, info = await make_node(str(tmp_path / name), **config)
        opened.append(node)
        client = await aiohttp_client(make_app(node))
        with open(info["token_file"]) as handle:
            return Api(client, node, handle.read().strip(), info["did"])

    yield open_one
    for node in opened:
        await close_vault(node)


@pytest.fixture
async def vault(tmp_path):
    node, _ = await make_node(str(tmp_path / "node"), chunk_size=4096)
    yield node
    await close_vault(node)


@pytest.fixture
async def api(vault, aiohttp_client):
    client = await aiohttp_client(make_app(vault))
    with open(os.path.join(vault.config.data_dir, "owner.token")) as handle:
        token = handle.read().strip()
    owner = [p for p in vault.keys.principals() if p.name == "owner"][0]
    return Api(client, vault, token, owner.did)


@pytest.fixture
def node(tmp_path):
    """A real ``medvault daemon`` process on a fresh data dir: (data dir, init's answer, the Daemon)."""
    from .process import Daemon, run_json
    data_dir = str(tmp_path / "node")
    info = run_json("init", "--data-dir", data_dir)
    daemon = Daemon(data_dir, str(tmp_path / "daemon.log")).start()
    yield data_dir, info, daemon
    daemon.stop()


@pytest.fixture
async def db(tmp_path):
    """An empty encrypted index of its own."""
    database = Database(str(tmp_path / "index.sqlite"), os.urandom(32))
    await database.start()
    yield database
    await database.close()


@pytest.fixture(scope="session")
def kubo(tmp_path_factory):
    """One real Kubo for the whole session (kubo-backend tests)."""
    from .ipfs import Kubo
    node = Kubo(str(tmp_path_factory.mktemp("kubo")), "kubo").start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def topology(tmp_path_factory):
    """Three Kubo + three Cluster peers for replication and node-loss tests."""
    from .ipfs import Topology
    topo = Topology(str(tmp_path_factory.mktemp("cluster"))).start()
    yield topo
    topo.stop()


@pytest.fixture(scope="session")
def kubo_pair(tmp_path_factory):
    """Two real Kubo nodes connected over the swarm on loopback: two hospitals."""
    from .ipfs import Kubo
    root = str(tmp_path_factory.mktemp("pair"))
    first, second = Kubo(root, "hospital-a").start(), Kubo(root, "hospital-b").start()
    first.connect(second)
    yield first, second
    second.stop()
    first.stop()
