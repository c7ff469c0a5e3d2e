"""The audit chain anchored in pinned blocks (issue 10): a rewritten and
rehashed local chain is caught by its anchors (HTTP and CLI), forged anchors
are refused, an unanchored tail is not "tampered", a lost anchor is a clear
state, reindex restores the history, and an anchor shows nothing in clear."""
from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta

import dag_cbor
import pytest

from daemon import timeutil
from daemon.anchors import POINTER_FILE, anchor_keys, write_pointer
from daemon.audit_anchor import build_anchor, follows, open_anchor
from daemon.blocks import Block, FormatError
from daemon.cid import Cid
from daemon.config import Config
from daemon.identity import Principal
from daemon.manifest import SignatureError
from daemon.masterkey import index_key
from daemon.node import close_vault, open_vault, unlock
from daemon.reindex import reindex
from indexer import audit
from indexer.db import Database

from .process import Daemon, run, run_json
from .waiting import until

EVERY = 3
VECTORS = json.loads(open(os.path.join(os.path.dirname(__file__), "..", "docs", "vectors",
                                       "audit-anchor-v1.json")).read())


def _vector_keys() -> tuple[Principal, str]:
    return Principal.from_seed("owner", bytes.fromhex(VECTORS["inputs"]["owner_seed"])), VECTORS["node_did"]


def test_anchor_vectors_open_and_chain():
    owner, node_did = _vector_keys()
    first, second = (open_anchor(Cid.parse(a["cid"]), bytes.fromhex(a["hex"]), owner, node_did)
                     for a in VECTORS["anchors"])
    assert follows(first, None) and follows(second, first)
    rows = VECTORS["inputs"]["rows"]
    assert [list(e) for e in first.entries + second.entries] == [
        [r["seq"], r["time"], r["actor"], r["action"], r["record"], r["outcome"], r["detail"], r["hash"]]
        for r in rows]
    for anchor in VECTORS["anchors"]:
        data = bytes.fromhex(anchor["hex"])
        assert set(dag_cbor.decode(data)) == {"v", "prev", "box"}
        for needle in (node_did, owner.did, rows[0]["record"], "did:key", "write"):
            assert needle.encode() not in data


def test_every_single_byte_change_of_an_anchor_is_refused_cleanly():
    """Blocks fetched back are hostile: any one-byte change (as a peer could
    serve under a re-addressed CID) gives FormatError or SignatureError, never
    another exception and never an anchor."""
    owner, node_did = _vector_keys()
    data = bytes.fromhex(VECTORS["anchors"][1]["hex"])
    for i in range(len(data)):
        changed = data[:i] + bytes([data[i] ^ 0x41]) + data[i + 1:]
        with pytest.raises((FormatError, SignatureError)):
            open_anchor(Cid.for_data(0x71, changed), changed, owner, node_did)


@pytest.mark.parametrize("vector", VECTORS["negative"], ids=lambda v: v["name"])
def test_anchor_negative_vectors_are_refused(vector):
    owner, node_did = _vector_keys()
    cid, data = Cid.parse(vector["cid"]), bytes.fromhex(vector["hex"])
    if vector["error"] == "chain":  # a valid anchor that is not the one after ``follows``
        earlier = open_anchor(Cid.parse(VECTORS["anchors"][0]["cid"]), bytes.fromhex(VECTORS["anchors"][0]["hex"]),
                              owner, node_did)
        assert not follows(open_anchor(cid, data, owner, node_did), earlier)
        return
    with pytest.raises({"SignatureError": SignatureError, "FormatError": FormatError}[vector["error"]]):
        open_anchor(cid, data, owner, node_did)


@pytest.fixture
async def anchored(node_api):
    """A node anchoring every 3 entries, with 7 entries of history and two anchors (entries 1-6)."""
    api = await node_api("anchored", audit_anchor_every=EVERY)
    for i in range(7):
        await api.vault.services.audit(api.owner_did, "test", None, "ok", {"i": i})
        if i in (2, 5):  # due: everything waiting goes into one anchor
            assert await api.vault.anchors.anchor_due() == 1
    assert await api.vault.anchors.anchor_due() == 0  # one entry waits, young
    return api


async def test_a_burst_of_entries_is_one_anchor_not_one_per_segment(node_api):
    """Anchoring takes all that waits (up to a block's limits), so a burst
    of audited reads costs a few block syncs and commits, not dozens."""
    api = await node_api("burst", audit_anchor_every=EVERY)
    for i in range(4 * EVERY + 1):
        await api.vault.services.audit(api.owner_did, "test", None, "ok", {"i": i})
    assert await api.vault.anchors.anchor_due() == 1
    assert (await _verify(api))["anchors"]["unanchored"] == 0


async def _verify(api) -> dict:
    resp = await api.client.get("/v1/audit/verify", headers=api.auth())
    assert resp.status == 200
    return await resp.json()


def rewrite(conn, seq: int) -> None:
    """What someone with the index (and its key) would do: edit entry ``seq``
    and recompute every hash from there, so the local chain verifies again."""
    conn.execute("UPDATE audit SET detail = ? WHERE seq = ?", (json.dumps({"i": "edited"}), seq))
    prev = conn.execute("SELECT prev FROM audit WHERE seq = ?", (seq,)).fetchone()[0]
    for row in conn.execute("SELECT * FROM audit WHERE seq >= ? ORDER BY seq", (seq,)).fetchall():
        digest = audit.entry_hash(prev, dict(row))
        conn.execute("UPDATE audit SET prev = ?, hash = ? WHERE seq = ?", (prev, digest, row["seq"]))
        prev = digest


async def test_verify_checks_the_chain_against_its_anchors(anchored):
    result = await _verify(anchored)
    assert result["ok"] and result["broken_at"] is None and result["count"] == 7
    anchors = result["anchors"]
    assert anchors["status"] == "ok" and anchors["verified"] == 2
    assert anchors["anchored"] == 6 and anchors["unanchored"] == 1  # "not yet anchored", not tampered


async def test_a_rewritten_and_rehashed_chain_names_its_first_bad_entry(anchored):
    await anchored.vault.db.write(rewrite, 4)
    assert (await anchored.vault.db.read(audit.verify))["ok"]  # the local chain alone looks fine
    result = await _verify(anchored)
    assert not result["ok"] and result["broken_at"] == 4
    assert result["anchors"]["status"] == "mismatch"


async def test_deleted_anchored_entries_are_named(anchored):
    await anchored.vault.db.write(lambda conn: conn.execute("DELETE FROM audit WHERE seq >= 5"))
    result = await _verify(anchored)
    assert not result["ok"] and result["broken_at"] == 5 and result["anchors"]["status"] == "mismatch"


async def test_an_edited_unanchored_tail_is_reported_unanchored(anchored):
    """The limit of anchoring, said plainly: entries after the newest anchor
    are only as safe as the index until the next anchor."""
    await anchored.vault.db.write(rewrite, 7)
    result = await _verify(anchored)
    assert result["ok"] and result["anchors"]["unanchored"] == 1


async def test_the_time_trigger_anchors_a_short_tail(anchored):
    assert await anchored.vault.anchors.anchor_due() == 0  # 1 entry, young
    with timeutil.shifted(timedelta(minutes=anchored.vault.config.audit_anchor_minutes, seconds=1)):
        assert await anchored.vault.anchors.anchor_due() == 1
    assert (await _verify(anchored))["anchors"]["unanchored"] == 0


async def _newest(api) -> Cid:
    row = await api.vault.db.read(lambda conn: conn.execute(
        "SELECT cid FROM audit_anchors ORDER BY last_seq DESC LIMIT 1").fetchone())
    return Cid.parse(row[0])


async def _plant(api, block: Block, last: int) -> None:
    """Makes ``block`` the newest anchor as far as the node's records go."""
    await api.vault.blocks.put_many([block])
    node, _ = anchor_keys(api.vault.keys)
    write_pointer(api.vault.config.data_dir, node, block.cid, last)


async def test_an_anchor_signed_by_another_key_is_refused(anchored):
    vault = anchored.vault
    node, owner = anchor_keys(vault.keys)
    newest = await _newest(anchored)
    rows = await vault.db.read(audit.rows, 7, 7)
    forged = build_anchor(newest, rows, rows[0]["prev"], Principal.generate("node"), owner.did)
    with pytest.raises(SignatureError):
        open_anchor(forged.cid, forged.data, owner, node.did)
    await _plant(anchored, forged, 7)
    result = await _verify(anchored)
    assert not result["ok"] and result["anchors"]["status"] == "invalid"


async def test_an_anchor_with_a_wrong_prev_link_is_refused(anchored):
    vault = anchored.vault
    node, owner = anchor_keys(vault.keys)
    first = Cid.parse((await vault.db.read(lambda conn: conn.execute(
        "SELECT cid FROM audit_anchors WHERE first_seq = 1").fetchone()))[0])
    rows = await vault.db.read(audit.rows, 7, 7)
    skipping = build_anchor(first, rows, rows[0]["prev"], node, owner.did)  # skips anchor 2 (entries 4-6)
    open_anchor(skipping.cid, skipping.data, owner, node.did)  # valid by itself...
    await _plant(anchored, skipping, 7)
    result = await _verify(anchored)
    assert not result["ok"] and result["anchors"]["status"] == "invalid"  # ...but not where it claims to be
    assert "prev link" in result["anchors"]["error"]


async def test_an_edited_clear_prev_link_breaks_the_signature(anchored):
    _, owner = anchor_keys(anchored.vault.keys)
    newest = await _newest(anchored)
    node = dag_cbor.decode(await anchored.vault.blocks.get(newest))
    node["prev"] = None
    moved = Block.dag_cbor(node)
    with pytest.raises(SignatureError):
        open_anchor(moved.cid, moved.data, owner, anchor_keys(anchored.vault.keys)[0].did)


@pytest.mark.parametrize("change", [{"v": 2}, {"box": b"x" * 60}, {"extra": 1}])
async def test_malformed_anchors_are_refused(anchored, change):
    node_key, owner = anchor_keys(anchored.vault.keys)
    node = {**dag_cbor.decode(await anchored.vault.blocks.get(await _newest(anchored))), **change}
    block = Block.dag_cbor(node)
    with pytest.raises(FormatError):
        open_anchor(block.cid, block.data, owner, node_key.did)


async def test_a_lost_anchor_is_a_clear_state(anchored):
    await anchored.vault.blocks.delete_many([await _newest(anchored)])
    result = await _verify(anchored)
    assert not result["ok"] and result["broken_at"] is None
    assert result["anchors"]["status"] == "unreachable" and "could not be fetched" in result["anchors"]["error"]


async def test_a_pointer_file_not_signed_by_the_node_is_invalid(anchored):
    path = os.path.join(anchored.vault.config.data_dir, POINTER_FILE)
    doc = json.loads(open(path).read())
    doc["last"] = 99
    open(path, "w").write(json.dumps(doc))
    result = await _verify(anchored)
    assert not result["ok"] and result["anchors"]["status"] == "invalid"


async def test_no_anchor_for_a_long_chain_is_missing(node_api):
    api = await node_api("unanchored", audit_anchor_every=EVERY)
    for i in range(EVERY + 1):
        await api.vault.services.audit(None, "test", None, "ok", {"i": i})
    result = await _verify(api)
    assert not result["ok"] and result["anchors"]["status"] == "missing"


async def test_an_anchor_shows_no_did_record_or_action_in_clear(node_api):
    api = await node_api("clear", audit_anchor_every=EVERY)
    patient, _ = await api.principal("patient")
    record = await api.put(b"a note", "text/plain", patient=patient, title="QXTITLE-Anchored")
    await api.vault.anchors.anchor_due(force=True)
    cids = await api.vault.db.read(lambda conn: [r[0] for r in conn.execute("SELECT cid FROM audit_anchors")])
    assert cids
    needles = [patient, api.owner_did, record["id"], "QXTITLE", "principal_add", "token_create", "write",
               *(p.did for p in api.vault.keys.principals(role="node"))]
    for cid in cids:
        data = await api.vault.blocks.get(Cid.parse(cid))
        assert set(dag_cbor.decode(data)) == {"v", "prev", "box"}
        for needle in needles:
            for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
                assert needle.encode(encoding) not in data
    pins = await api.vault.db.read(lambda conn: [dict(r) for r in conn.execute(
        "SELECT kind, record_id FROM pins WHERE kind = 'anchor'")])
    assert pins and all(p["record_id"] is None for p in pins)  # pinned like a record, tied to none


async def test_reindex_restores_the_audit_history_from_the_anchors(tmp_path):
    from .conftest import lose_index, make_node
    vault, _ = await make_node(str(tmp_path / "n"), audit_anchor_every=EVERY)
    for i in range(8):
        await vault.services.audit(None, "test", None, "ok", {"i": i})
    await vault.anchors.anchor_due(force=True)
    before = await vault.db.read(audit.rows, 1, 100)
    anchors_before = await vault.db.read(lambda conn: [r[0] for r in conn.execute("SELECT cid FROM audit_anchors")])
    config = vault.config
    await close_vault(vault)
    lose_index(config)
    result = await reindex(config)
    assert result["audit_entries"] == len(before)
    vault = await open_vault(config)
    try:
        after = await vault.db.read(audit.rows, 1, 100)
        assert after[:len(before)] == before  # the same entries, the same hashes
        assert after[-1]["action"] == "reindex" and after[-1]["prev"] == before[-1]["hash"]
        assert (await vault.anchors.verify())["ok"]
        pinned = await vault.db.read(lambda conn: {r[0] for r in conn.execute(
            "SELECT cid FROM pins WHERE kind = 'anchor' AND desired = 1")})
        assert pinned == set(anchors_before)
        await vault.garbage.collect(0, force=True)  # gc never deletes an anchor
        for cid in anchors_before:
            assert await vault.blocks.has(Cid.parse(cid))
    finally:
        await close_vault(vault)


async def test_reindex_without_the_pointer_finds_the_anchors_in_the_pinset(tmp_path):
    from .conftest import lose_index, make_node
    vault, _ = await make_node(str(tmp_path / "n"), audit_anchor_every=EVERY)
    for i in range(6):
        await vault.services.audit(None, "test", None, "ok", {"i": i})
    await vault.anchors.anchor_due(force=True)
    config = vault.config
    await close_vault(vault)
    os.unlink(os.path.join(config.data_dir, POINTER_FILE))
    os.unlink(config.index_path)
    assert (await reindex(config))["audit_entries"] == 6


# ---- from outside: the real daemon and CLI ------------------------------

def test_cli_audit_verify_names_the_first_rewritten_entry(tmp_path):
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir)
    config_path = os.path.join(data_dir, "config.json")
    config = json.loads(open(config_path).read())
    config["audit_anchor_every"] = 2
    open(config_path, "w").write(json.dumps(config))
    daemon = Daemon(data_dir, str(tmp_path / "daemon.log")).start()
    try:
        for name in ("a", "b", "c"):
            run_json("principal", "add", name, "--data-dir", data_dir)

        async def anchored():
            # (exit 1 until then: more entries than one segment and no anchor is "missing")
            result = json.loads(run("audit", "verify", "--data-dir", data_dir, check=False).stdout)
            return result["anchors"]["anchored"] >= 2

        asyncio.run(until(anchored, timeout=60, what="the daemon anchoring its audit chain"))
        assert run("audit", "verify", "--data-dir", data_dir).returncode == 0
    finally:
        daemon.stop()

    async def tamper():
        loaded = Config.load(data_dir)
        db = Database(loaded.index_path, index_key(unlock(loaded)))
        await db.start()
        try:
            await db.write(rewrite, 2)
        finally:
            await db.close()

    asyncio.run(tamper())
    daemon.start()
    try:
        result = run("audit", "verify", "--data-dir", data_dir, check=False)
        assert result.returncode == 1
        report = json.loads(result.stdout)
        assert report["ok"] is False and report["broken_at"] == 2 and report["anchors"]["status"] == "mismatch"
    finally:
        daemon.stop()


async def test_reindex_on_kubo_restores_the_audit_history_from_pinned_anchors(tmp_path, kubo):
    """On a real Kubo: anchors are pinned there, and with the index and the
    pointer file both gone, reindex finds them in Kubo's pinset."""
    from .conftest import lose_index, make_node
    vault, _ = await make_node(str(tmp_path / "n"), backend="kubo", ipfs_api=kubo.api_url,
                               audit_anchor_every=EVERY)
    for i in range(7):
        await vault.services.audit(None, "test", None, "ok", {"i": i})
        if i in (2, 5):
            assert await vault.anchors.anchor_due() == 1
    assert await vault.anchors.anchor_due(force=True) == 1  # a chain of three anchors
    before = await vault.db.read(audit.rows, 1, 100)
    anchors_before = await vault.db.read(lambda conn: {r[0] for r in conn.execute("SELECT cid FROM audit_anchors")})
    assert anchors_before <= set(await vault.blocks.rpc.pin_ls())  # pinned in Kubo, not just stored
    config = vault.config
    await close_vault(vault)
    os.unlink(os.path.join(config.data_dir, POINTER_FILE))
    lose_index(config)
    assert (await reindex(config))["audit_entries"] == len(before)
    vault = await open_vault(config)
    try:
        assert (await vault.db.read(audit.rows, 1, len(before))) == before
        result = await vault.anchors.verify()
        assert result["ok"] and result["anchors"]["verified"] == 3
    finally:
        await close_vault(vault)


def test_a_clean_stop_anchors_the_tail_so_reindex_loses_nothing(tmp_path):
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir)
    daemon = Daemon(data_dir, str(tmp_path / "daemon.log")).start()
    try:
        run_json("principal", "add", "a", "--data-dir", data_dir)
        before = json.loads(run("audit", "verify", "--data-dir", data_dir).stdout)
        assert before["anchors"]["status"] == "none" and before["count"] >= 1  # fewer than 100: not yet due
    finally:
        assert daemon.stop() == 0
    from .conftest import lose_index
    lose_index(Config.load(data_dir))
    assert run_json("reindex", "--data-dir", data_dir)["audit_entries"] == before["count"]
