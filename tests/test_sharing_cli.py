"""The sharing commands end to end: two real daemons, each on its own Kubo."""
from __future__ import annotations

import json
import os

from .process import Daemon, run, run_json


def test_grant_and_import_through_the_cli(tmp_path, kubo_pair):
    nodes = []
    for name, kubo in zip(("a", "b"), kubo_pair):
        data_dir = str(tmp_path / name)
        run_json("init", "--data-dir", data_dir, "--ipfs-api", kubo.api_url)
        nodes.append((data_dir, Daemon(data_dir, str(tmp_path / f"{name}.log")).start()))
    (a_dir, a_daemon), (b_dir, b_daemon) = nodes
    try:
        clinician = run_json("principal", "add", "Dr. B", "--data-dir", b_dir)["did"]
        token = run_json("token", "create", "--principal", clinician, "--scope", "read,write",
                         "--data-dir", b_dir)["token"]
        note = tmp_path / "note.txt"
        note.write_bytes(os.urandom(40_000))
        record = run_json("put", str(note), "--data-dir", a_dir, "--title", "referral")
        share = run_json("grant", record["id"], clinician, "--data-dir", a_dir)["share"]
        with open(os.path.join(b_dir, "api")) as handle:
            env = {**os.environ, "MEDVAULT_API": handle.read().strip(), "MEDVAULT_TOKEN": token}
        imported = json.loads(run("import", share, env=env).stdout)
        assert imported["id"] == record["id"]
        out = tmp_path / "out.bin"
        run("get", record["id"], "-o", str(out), env=env)
        assert out.read_bytes() == note.read_bytes()
        revoked = run_json("revoke", record["id"], clinician, "--data-dir", a_dir)
        assert revoked["version"] == 2 and revoked["rotated"]
        pins = run_json("pins", "--data-dir", a_dir)
        assert revoked["cid"] in {p["cid"] for p in pins["items"]}
    finally:
        b_daemon.stop()
        a_daemon.stop()
