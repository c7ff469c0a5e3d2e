"""The two error statuses of API.md that need the world to misbehave:
504 `not_found_on_network` (a block no peer has, answered within the
configured fetch timeout instead of after minutes of retries) and 507 (out
of space, on a real full filesystem). Written against the documented
behaviour (API.md, issue 7) while the implementation is being built."""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.request

from daemon.identity import Principal
from daemon.views import new_record_id

from . import forge
from .process import Daemon, run_json

FETCH_TIMEOUT = 2.0  # seconds, config `fetch_timeout`
MiB = 1024 * 1024


def assert_error_shape(status: int, body: bytes, want_status: int, code: str | None = None) -> dict:
    """The documented error: this status, {"error": {"code", "message"}} and nothing else."""
    assert status == want_status, f"expected {want_status}, got {status}: {body[:500]!r}"
    doc = json.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
    assert re.fullmatch(r"[a-z][a-z0-9_]*", doc["error"]["code"]), doc
    assert doc["error"]["message"].strip(), doc
    if code is not None:
        assert doc["error"]["code"] == code, doc
    return doc["error"]


async def test_share_naming_a_block_no_peer_has_is_504_within_the_fetch_timeout(node_api, kubo):
    node = await node_api("node", backend="kubo", ipfs_api=kubo.api_url, fetch_timeout=FETCH_TIMEOUT)
    stranger = Principal.generate("elsewhere")  # its blocks were never given to any peer
    forged = forge.forge(stranger, new_record_id(), 1)
    forge.seal_to(forged, node.owner_did, stranger)
    started = time.monotonic()
    try:
        resp = await asyncio.wait_for(node.client.post("/v1/imports", json={"share": forged.share()},
                                                       headers=node.auth()), FETCH_TIMEOUT + 15)
    except asyncio.TimeoutError:
        raise AssertionError(f"no answer {FETCH_TIMEOUT + 15:.0f} s after the import with fetch_timeout "
                             f"{FETCH_TIMEOUT} s (documented: 504 not_found_on_network)") from None
    body = await resp.read()
    assert_error_shape(resp.status, body, 504, "not_found_on_network")
    assert time.monotonic() - started < FETCH_TIMEOUT + 10
    for table in ("records", "envelopes"):
        count = await node.vault.db.read(lambda c, t=table: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
        assert count == 0, table


def _request(api: str, token: str, method: str, path: str, data: bytes | None = None,
             content_type: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}", **({"Content-Type": content_type} if content_type else {})}
    request = urllib.request.Request(api + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_out_of_space_is_507_and_stores_nothing(tmp_path):
    """The daemon's block store on a 1 MiB tmpfs (a mount namespace of its
    own, so nothing leaks to the host); a 2 MiB record cannot fit."""
    data_dir = str(tmp_path / "node")
    info = run_json("init", "--data-dir", data_dir)
    blocks = os.path.join(data_dir, "blocks")
    os.makedirs(blocks, mode=0o700, exist_ok=True)
    small_disk = ("unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=1m,mode=0700 tmpfs "$0" && exec "$@"',
                  blocks)
    daemon = Daemon(data_dir, str(tmp_path / "daemon.log"), wrapper=small_disk).start()
    try:
        with open(os.path.join(data_dir, "api")) as handle:
            api = handle.read().strip()
        with open(info["token_file"]) as handle:
            token = handle.read().strip()
        status, body = _request(api, token, "POST", "/v1/records", os.urandom(2 * MiB), "application/octet-stream")
        error = assert_error_shape(status, body, 507)
        assert "space" in error["message"].lower(), error
        status, body = _request(api, token, "GET", "/v1/records")
        assert status == 200 and json.loads(body)["items"] == []  # nothing half-stored, the index still answers
    finally:
        daemon.stop()
