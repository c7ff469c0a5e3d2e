"""Maintenance beside a live daemon (real processes): `medvault gc` during
uploads breaks none of them, a cut-off upload leaves no orphan block and is
logged as a client abort, and an export that meets a missing block cuts the
connection instead of hanging. Times are generous upper bounds only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time


import pytest

from daemon.blocks import Block
from daemon.errors import Conflict

from .process import MEDVAULT, ROOT, run, run_json

MiB = 1024 * 1024


def _block_files(data_dir: str) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(os.path.join(data_dir, "blocks")) for f in files}


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)



def _put(data_dir: str, path) -> subprocess.Popen:
    return subprocess.Popen([*MEDVAULT, "put", str(path), "--data-dir", data_dir], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_gc_during_uploads_breaks_none_of_them(node, tmp_path):
    data_dir, _, _ = node
    files = []
    for n in range(3):
        path = tmp_path / f"upload{n}.bin"
        path.write_bytes(os.urandom(24 * MiB))
        files.append(path)
    uploads = [_put(data_dir, path) for path in files]
    _wait(lambda: len(_block_files(data_dir)) >= 10, 120, "the uploads to store blocks")
    collections = 0
    while any(u.poll() is None for u in uploads) or collections == 0:
        result = run_json("gc", "--grace", "0", "--data-dir", data_dir)  # through the daemon: it is running
        assert set(result) >= {"removed", "kept"}
        collections += 1
    records = []
    for upload in uploads:
        out, err = upload.communicate(timeout=120)
        assert upload.returncode == 0, err.decode()[-2000:]
        records.append(json.loads(out))
    for record, path in zip(records, files):
        back = tmp_path / "back.bin"
        run("get", record["id"], "-o", str(back), "--data-dir", data_dir)
        assert back.read_bytes() == path.read_bytes()
    assert run_json("gc", "--grace", "0", "--data-dir", data_dir)["removed"] == 0  # nothing was orphaned


def test_gc_without_a_daemon_works_on_the_data_dir(node):
    data_dir, _, daemon = node
    daemon.stop()
    assert run_json("gc", "--grace", "0", "--data-dir", data_dir) == {"removed": 0, "kept": 0}


def test_cut_off_upload_leaves_no_orphans_and_is_a_client_abort(node, tmp_path):
    data_dir, _, daemon = node
    before = _block_files(data_dir)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * MiB))
    upload = _put(data_dir, big)
    _wait(lambda: len(_block_files(data_dir)) >= len(before) + 10, 120, "the upload to store blocks")
    upload.send_signal(signal.SIGKILL)
    upload.wait(30)
    _wait(lambda: _block_files(data_dir) == before, 120, "the cut-off upload's blocks to be removed")
    assert run_json("search", "--data-dir", data_dir)["items"] == []
    daemon.stop()
    lines = [json.loads(line) for line in open(daemon.log_path, "rb").read().splitlines()]
    assert any(line.get("msg") == "request aborted by the client" for line in lines)
    assert not [line for line in lines if line.get("msg") == "unhandled error" or line.get("status") == 500]


def test_export_meeting_a_missing_block_cuts_the_connection(node, tmp_path):
    data_dir, info, _ = node
    source = tmp_path / "record.bin"
    source.write_bytes(os.urandom(2 * MiB))
    run_json("put", str(source), "--data-dir", data_dir, "--patient", info["did"])
    chunk = next(path for path in _block_files(data_dir) if os.path.basename(path).startswith("bafk"))
    os.unlink(chunk)
    out = tmp_path / "export.car"
    started = time.monotonic()
    result = run("export", "--patient", info["did"], "-o", str(out), "--data-dir", data_dir, check=False,
                 timeout=120)
    assert result.returncode != 0 and not out.exists()
    assert time.monotonic() - started < 60


def test_a_second_daemon_and_reindex_refuse_a_data_dir_in_use(node):
    data_dir, _, _ = node
    second = run("daemon", "--data-dir", data_dir, "--listen", "127.0.0.1:0", check=False, timeout=60)
    assert second.returncode != 0 and b"another medvault process" in second.stderr
    reindex = run("reindex", "--data-dir", data_dir, check=False, timeout=60)
    assert reindex.returncode != 0 and b"stop it before" in reindex.stderr
    assert run_json("search", "--data-dir", data_dir)["items"] == []  # the running daemon is untouched


async def test_gc_refuses_a_lost_index_but_not_uploads_in_flight(api):
    """Blocks and no pins: a lost index (reindex first), unless every such block
    belongs to an upload still in flight (the first uploads on a new node)."""
    garbage, services = api.vault.garbage, api.vault.services
    async with services.upload(object()):  # an upload has stored a block but not committed yet
        await api.vault.blocks.put_many([Block.raw(b"in flight")])
        assert (await garbage.collect(0))["removed"] == 0
    record = await api.put(b"kept", "text/plain")
    await api.vault.db.write(lambda conn: conn.execute("DELETE FROM pins"))  # the index lost its pin set
    with pytest.raises(Conflict) as refused:
        await garbage.collect(0)
    assert refused.value.code == "index_empty"
    content = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    assert await content.read() == b"kept"
