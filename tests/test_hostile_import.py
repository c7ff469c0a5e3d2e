"""Hostile imports (issue 12): what an attacker with nothing but a `read,write`
token on the victim's node can send, and what the node must do with it.

Every forged block is made here, offline, with a key of the attacker's own
(``Principal.generate``) or, where the attack is "a local principal signs",
with that principal's key read from the node's keystore. CAR attacks run on
the embedded backend; share-token attacks run on two real Kubo nodes, the
forged blocks sitting only in the *other* node's Kubo so the victim node
fetches them over the swarm.

Each attack asserts the documented refusal (status and code) and that nothing
changed: the victim's record reads back byte-identical at the same version
and manifest CID, no block/pin/index row was added (on disk or in Kubo), the
audit chain verifies, the attacker sees nothing of the victim's record, and
the victim can still write the next version.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass, field

import pytest
from multiformats import CID

from api.app import make_app
from daemon.blocks import Block
from daemon.identity import Principal
from daemon.node import close_vault
from daemon.views import new_record_id

from . import forge
from .conftest import Api, make_node
from .waiting import poll, until
from .test_sharing import hospitals  # noqa: F401  (fixture: two medvault nodes on two real Kubo)

CAR_TYPE = "application/vnd.ipld.car"
VICTIM_TITLE = "HIV test result"
VICTIM_TAGS = ["confidential"]


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ---- the scene: a victim's record and an attacker on the same node ----------

@dataclass
class Scene:
    api: Api
    victim: Principal
    victim_token: str
    attacker: Principal  # a local principal: the node holds its key
    attacker_token: str  # read,write only: the token every attack is sent with
    attacker_share_token: str  # read,write,share for the same principal: to try grant/revoke
    record: dict
    data: bytes
    kubo: object | None = None  # the victim node's Kubo (share-token attacks)
    offline: Principal = field(default_factory=lambda: Principal.generate("offline-attacker"))

    @property
    def client(self):
        return self.api.client

    @property
    def vault(self):
        return self.api.vault


async def _token(api: Api, did: str, scopes) -> str:
    resp = await api.client.post("/v1/tokens", json={"principal": did, "scopes": list(scopes)}, headers=api.auth())
    assert resp.status == 201, await resp.text()
    return (await resp.json())["token"]


async def make_scene(api: Api, kubo=None, data: bytes | None = None) -> Scene:
    victim_did, victim_token = await api.principal("victim", ("read", "write", "share"))
    attacker_did, attacker_token = await api.principal("attacker", ("read", "write"))
    attacker_share_token = await _token(api, attacker_did, ("read", "write", "share"))
    data = os.urandom(10_000) if data is None else data
    record = await api.put(data, "application/pdf", token=victim_token, patient=victim_did, title=VICTIM_TITLE,
                           tag=VICTIM_TAGS[0])
    keys = api.vault.keys
    return Scene(api, keys.get(victim_did), victim_token, keys.get(attacker_did), attacker_token,
                 attacker_share_token, record, data, kubo)


@pytest.fixture
async def local(tmp_path, aiohttp_client):
    """A victim node on the embedded backend (CAR attacks need no network)."""
    vault, info = await make_node(str(tmp_path / "victim-node"), chunk_size=4096, max_car_bytes=8 * 1024 * 1024)
    client = await aiohttp_client(make_app(vault))
    with open(info["token_file"]) as handle:
        api = Api(client, vault, handle.read().strip(), info["did"])
    yield await make_scene(api)
    await close_vault(vault)


@pytest.fixture
async def on_kubo(hospitals, kubo_pair):  # noqa: F811
    """Victim node A on its own Kubo; the attacker's blocks go to B's Kubo only."""
    a, b = hospitals
    scene = await make_scene(a.api, kubo=kubo_pair[0])
    return scene, b.api.vault.blocks


# ---- "nothing changed" ------------------------------------------------------

async def _victim_view(scene: Scene) -> dict:
    rid, token = scene.record["id"], scene.victim_token
    resp = await scene.client.get(f"/v1/records/{rid}", headers=auth(token))
    assert resp.status == 200, f"the victim lost their own record: {resp.status} {await resp.text()}"
    view = await resp.json()
    view.pop("pin", None)
    resp = await scene.client.get(f"/v1/records/{rid}/content", headers=auth(token))
    assert resp.status == 200, f"the victim can no longer read their record: {resp.status} {await resp.text()}"
    content = await resp.read()
    resp = await scene.client.get(f"/v1/records/{rid}/versions", headers=auth(token))
    assert resp.status == 200, await resp.text()
    versions = [(v["version"], v["cid"], v["author"]) for v in (await resp.json())["items"]]
    return {"view": view, "content": content, "versions": versions}


def _local_blocks(scene: Scene) -> set[str]:
    found = set()
    for _, _, files in os.walk(scene.vault.config.blocks_dir):
        found.update(files)
    return found


def _multihash(cid_text: str) -> str:
    """Kubo keys its blockstore by multihash: `refs local` lists a dag-cbor
    block as a raw CID. Compare blocks by multihash, whatever the codec."""
    return CID.decode(cid_text).digest.hex()


def _kubo_lines(scene: Scene, *args: str) -> set[str]:
    return {line.strip() for line in scene.kubo.ipfs(*args).decode().splitlines() if line.strip()}


def _kubo_blocks(scene: Scene) -> set[str]:
    return {_multihash(c) for c in _kubo_lines(scene, "refs", "local")}


async def _index_rows(scene: Scene) -> dict:
    def read(conn):
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN"
            " ('records', 'versions', 'envelopes', 'pins', 'record_tags', 'record_codes')")]
        return {t: sorted(tuple(str(v) for v in tuple(r)) for r in conn.execute(f"SELECT * FROM {t}"))
                for t in tables}
    return await scene.vault.db.read(read)


async def _audit_ok(scene: Scene) -> dict:
    resp = await scene.client.get("/v1/audit/verify", headers=scene.api.auth())
    assert resp.status == 200, f"/v1/audit/verify failed: {resp.status} {await resp.text()}"
    result = await resp.json()
    assert result["ok"] is True and result["broken_at"] is None, f"the audit chain no longer verifies: {result}"
    return result


async def snapshot(scene: Scene) -> dict:
    """What an attack must not change (taken right before the attack is sent)."""
    snap = {"victim": await _victim_view(scene), "index": await _index_rows(scene)}
    if scene.kubo is None:
        snap["blocks"] = _local_blocks(scene)
    else:
        snap["blocks"] = _kubo_blocks(scene)
        snap["pins"] = _kubo_lines(scene, "pin", "ls", "--type=recursive", "--quiet")
    await _audit_ok(scene)
    return snap


async def assert_untouched(scene: Scene, before: dict, forged_cids: set[str] = frozenset()) -> None:
    """The victim's record, the stores, the pins and the index are as before;
    the audit chain verifies; the attacker sees nothing; the victim can write."""
    assert await _victim_view(scene) == before["victim"], "the victim's record changed"
    if scene.kubo is None:
        after = _local_blocks(scene)
        assert after == before["blocks"], f"blocks were stored by a refused import: {sorted(after - before['blocks'])}"
    else:
        after = _kubo_blocks(scene)
        assert after == before["blocks"], \
            f"blocks stayed in the victim node's Kubo after a refused import (multihashes): " \
            f"{sorted(after - before['blocks'])}"
        pins = _kubo_lines(scene, "pin", "ls", "--type=recursive", "--quiet")
        assert pins == before["pins"], f"a refused import left pins: {sorted(pins - before['pins'])}"
        for cid in forged_cids:
            assert _multihash(cid) not in after, f"the victim node's Kubo holds the forged block {cid}"
    assert await _index_rows(scene) == before["index"], "a refused import changed the index"
    await _audit_ok(scene)
    await assert_attacker_sees_nothing(scene)
    await assert_victim_can_write(scene, before["victim"])


def assert_no_new_blocks(scene: Scene, before: dict) -> None:
    now = _local_blocks(scene) if scene.kubo is None else _kubo_blocks(scene)
    assert now == before["blocks"], f"a refused import left blocks behind: {sorted(now - before['blocks'])}"


async def assert_attacker_sees_nothing(scene: Scene) -> None:
    rid, client = scene.record["id"], scene.client
    for path in ("", "/content", "/versions"):
        resp = await client.get(f"/v1/records/{rid}{path}", headers=auth(scene.attacker_token))
        await expect_error(resp, 404, "record_not_found")  # the attacker's GET
    resp = await client.get(f"/v1/records/{rid}/grants", headers=auth(scene.attacker_share_token))
    await expect_error(resp, 404, "record_not_found")  # the attacker listing the victim's grants
    page = await (await client.get("/v1/records", params={"limit": "1000"},
                                   headers=auth(scene.attacker_token))).json()
    assert rid not in {r["id"] for r in page["items"]}, "the victim's record shows in the attacker's search"
    resp = await client.get("/v1/audit", params={"record": rid}, headers=auth(scene.attacker_token))
    await expect_error(resp, 404, "record_not_found")  # naming a record in the audit needs read access to it
    resp = await client.delete(f"/v1/records/{rid}", headers=auth(scene.attacker_token))
    await expect_error(resp, 404, "record_not_found")  # the attacker's DELETE


async def assert_victim_can_write(scene: Scene, before_victim: dict) -> None:
    rid = scene.record["id"]
    # the attacker's DELETE above must not have erased anything either
    assert (await _victim_view(scene))["view"]["cid"] == before_victim["view"]["cid"]
    fresh = os.urandom(5000)
    resp = await scene.client.put(f"/v1/records/{rid}", data=fresh,
                                  headers={**auth(scene.victim_token), "Content-Type": "application/pdf"})
    assert resp.status == 200, f"the victim can no longer write their record: {resp.status} {await resp.text()}"
    assert (await resp.json())["version"] == before_victim["view"]["version"] + 1
    resp = await scene.client.get(f"/v1/records/{rid}/content", headers=auth(scene.victim_token))
    assert resp.status == 200 and await resp.read() == fresh


async def expect_error(resp, status: int, code: str | None = None) -> str:
    text = await resp.text()
    assert resp.status == status, f"expected {status} {code or ''}, got {resp.status}: {text}"
    body = await resp.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


# ---- sending -----------------------------------------------------------------

async def send_car(scene: Scene, archive: bytes, token: str | None = None):
    return await scene.client.post("/v1/imports/car", data=archive,
                                   headers={**auth(token or scene.attacker_token), "Content-Type": CAR_TYPE})


def car_for(forged: forge.Forged) -> bytes:
    """The usual shape: one root envelope (the attacker's), then every block."""
    return forge.car_of([forged.envelopes[0]], forged.all_blocks)


async def send_share(scene: Scene, remote_store, forged: forge.Forged, token: str | None = None):
    """Puts the forged blocks into the other node's Kubo and imports the token on the victim node."""
    await remote_store.put_many(forged.all_blocks)
    return await scene.client.post("/v1/imports", json={"share": forged.share()},
                                   headers=auth(token or scene.attacker_token))


def author_key(scene: Scene, kind: str) -> Principal:
    """Who signs the forged manifest: a key made offline, or the attacker's own
    local key (a principal with `write` on this node, but not on this record)."""
    return scene.offline if kind == "offline" else scene.attacker


def takeover(scene: Scene, author: Principal, version: int, *, prev="current", patient="victim",
             **fields) -> forge.Forged:
    """A forged version of the victim's record id, sealed to the attacker."""
    prev_cid = {"current": scene.record["cid"], "none": None}.get(prev, prev)
    patient_did = {"victim": scene.victim.did, "attacker": scene.attacker.did}.get(patient, patient)
    forged = forge.forge(author, scene.record["id"], version, prev=prev_cid, patient=patient_did,
                         title="forged by the attacker", tags=["owned"], **fields)
    forge.seal_to(forged, scene.attacker.did, author)
    return forged


# ---- CAR: takeovers of an existing record ------------------------------------

@pytest.mark.parametrize("patient", ["victim", "attacker"])
async def test_car_same_version_other_manifest_is_not_a_continuation(local, patient):
    """Attack: the victim's record id at the version the node holds, signed
    offline. Today the node adds an envelope row for the attacker, who then
    reads the victim's title, tags, patient and audit trail."""
    before = await snapshot(local)
    forged = takeover(local, local.offline, local.record["version"], prev="none", patient=patient)
    await expect_error(await send_car(local, car_for(forged)), 409, "not_a_continuation")
    await assert_untouched(local, before, forged.cids)


@pytest.mark.parametrize("author", ["offline", "local-writer"])
async def test_car_next_version_by_unauthorised_author_is_refused(local, author):
    """Attack: a correct continuation (prev = the current manifest, version+1)
    whose author has no write authority on the record. Today it replaces the
    victim's record and the patient gets 404 on it."""
    before = await snapshot(local)
    forged = takeover(local, author_key(local, author), local.record["version"] + 1)
    await expect_error(await send_car(local, car_for(forged)), 403, "not_authorized")
    await assert_untouched(local, before, forged.cids)


async def test_car_next_version_by_a_reader_is_refused(local):
    """Attack: someone the patient let *read* (holds the DEK of the current
    version) signs the next version. Reading is not writing."""
    reader_did, _ = await local.api.principal("reader", ("read",))
    resp = await local.client.post(f"/v1/records/{local.record['id']}/grants", json={"recipient": reader_did},
                                   headers=auth(local.victim_token))
    assert resp.status == 201, await resp.text()
    before = await snapshot(local)
    forged = takeover(local, local.vault.keys.get(reader_did), local.record["version"] + 1)
    await expect_error(await send_car(local, car_for(forged)), 403, "not_authorized")
    await assert_untouched(local, before, forged.cids)


@pytest.mark.parametrize("how", ["prev-missing-link", "prev-null", "version-skip"])
async def test_car_version_that_does_not_continue_the_current_one(local, how):
    """Attack: the next version number with a `prev` that is not the current
    manifest, or a version that skips ahead. Today the record is replaced."""
    before = await snapshot(local)
    current = local.record["version"]
    if how == "prev-missing-link":
        other = forge.forge(local.offline, local.record["id"], current)
        forged = takeover(local, local.offline, current + 1, prev=str(other.manifest.cid))
    elif how == "prev-null":
        forged = takeover(local, local.offline, current + 1, prev="none")
    else:
        forged = takeover(local, local.offline, current + 2)
    # A later version without prev is malformed metadata (FORMAT.md: prev is null iff version is 1),
    # refused by the schema before authority is weighed.
    status, code = (422, "bad_metadata") if how == "prev-null" else (409, "not_a_continuation")
    await expect_error(await send_car(local, car_for(forged)), status, code)
    await assert_untouched(local, before, forged.cids)


async def test_car_claimed_patient_grants_nothing(local):
    """Attack: the next version names the attacker as patient. Today it is
    accepted, and the attacker then reads, grants, revokes and erases
    (blocks included) the victim's record."""
    before = await snapshot(local)
    forged = takeover(local, local.offline, local.record["version"] + 1, patient="attacker")
    await expect_error(await send_car(local, car_for(forged)), 403, "not_authorized")
    rid = local.record["id"]
    resp = await local.client.post(f"/v1/records/{rid}/grants", json={"recipient": local.offline.did},
                                   headers=auth(local.attacker_share_token))
    await expect_error(resp, 404, "record_not_found")  # the self-declared patient granting the record
    resp = await local.client.delete(f"/v1/records/{rid}/grants/{local.victim.did}",
                                     headers=auth(local.attacker_share_token))
    await expect_error(resp, 404, "record_not_found")  # the self-declared patient revoking
    await assert_untouched(local, before, forged.cids)


async def test_car_author_cannot_reassign_the_patient(local):
    """Attack from inside: the record's creator (who may write it) signs a
    correct continuation that names itself as patient, to take the patient's
    control. The patient of a record does not change: 403."""
    record = await local.api.put(os.urandom(6000), "application/pdf", patient=local.victim.did, title=VICTIM_TITLE)
    scene = dataclasses.replace(local, record=record)
    owner = local.vault.keys.get(local.api.owner_did)
    before = await snapshot(scene)
    forged = forge.forge(owner, record["id"], record["version"] + 1, prev=record["cid"], patient=owner.did)
    forge.seal_to(forged, owner.did, owner)
    await expect_error(await send_car(scene, car_for(forged), token=local.api.owner_token), 403, "not_authorized")
    await assert_untouched(scene, before, forged.cids)


async def test_car_stale_version_is_refused(local):
    """Attack: a forged copy of an older version than the node holds."""
    resp = await local.client.put(f"/v1/records/{local.record['id']}", data=b"version two",
                                  headers={**auth(local.victim_token), "Content-Type": "text/plain"})
    assert resp.status == 200, await resp.text()
    before = await snapshot(local)
    forged = takeover(local, local.offline, 1, prev="none")
    await expect_error(await send_car(local, car_for(forged)), 409, "stale_share")
    await assert_untouched(local, before, forged.cids)


async def test_car_malleable_manifest_is_refused(local):
    """Attack: the same signed version under a second manifest CID (an unknown
    clear key the signature does not cover). A schema with exact keys refuses it."""
    before = await snapshot(local)
    forged = forge.with_clear_field(forge.forge(local.offline, new_record_id(), 1), "x", 1)
    forge.seal_to(forged, local.attacker.did, local.offline)
    resp = await send_car(local, car_for(forged))
    await expect_error(resp, 422, "bad_manifest")
    await assert_untouched(local, before, forged.cids)


async def test_car_legitimate_continuation_by_the_patient_imports(local):
    """Control: the patient's own next version, prev = current, imports (the
    rules must not refuse everything)."""
    forged = takeover(local, local.victim, local.record["version"] + 1, data=b"the patient's own update")
    forged.envelopes.clear()
    forge.seal_to(forged, local.victim.did, local.victim)
    resp = await send_car(local, car_for(forged), token=local.victim_token)
    assert resp.status == 201, await resp.text()
    resp = await local.client.get(f"/v1/records/{local.record['id']}", headers=auth(local.victim_token))
    view = await resp.json()
    assert view["version"] == local.record["version"] + 1 and view["cid"] == str(forged.manifest.cid)
    resp = await local.client.get(f"/v1/records/{local.record['id']}/content", headers=auth(local.victim_token))
    assert await resp.read() == b"the patient's own update"
    await _audit_ok(local)


# ---- CAR: signed metadata of the wrong shape -----------------------------------

DROP = object()  # the key is left out of the body


def _bad(field_name: str, **fields):
    return field_name, fields


BAD_METADATA = {
    "record-id-number": _bad("record", record=123456),
    "record-id-format": _bad("record", record="../../etc/passwd"),
    "version-zero": _bad("version", version=0),
    "version-negative": _bad("version", version=-1),
    "version-string": _bad("version", version="1"),
    "version-bool": _bad("version", version=True),
    "size-negative": _bad("size", size=-1),
    "size-vs-chunks": _bad("size", size=10 * 4096),
    "tags-not-list": _bad("tags", tags="a,b"),
    "tags-not-strings": _bad("tags", tags=[1, 2]),
    "tags-too-long": _bad("tags", tags=["x" * 10_000]),
    "created-not-time": _bad("created", created="yesterday"),
    "created-number": _bad("created", created=1_700_000_000),
    "patient-number": _bad("patient", patient=42),
    "content-type-number": _bad("content_type", content_type=5),
    "unknown-key": _bad("is_admin", is_admin=True),
    "prev-missing": _bad("prev", version=2, prev=DROP),
    "prev-not-cid": _bad("prev", version=2, prev="not-a-cid"),
}


def bad_metadata_record(author: Principal, recipient: str, case: str) -> forge.Forged:
    """A new record (unknown to the node) whose signed metadata has one bad field."""
    _, fields = BAD_METADATA[case]
    fields = dict(fields)
    record_id = fields.pop("record", new_record_id())
    version = fields.pop("version", 1)
    data = os.urandom(3000)
    size = fields.pop("size", len(data))
    prev = fields.pop("prev", None)
    later = isinstance(version, int) and not isinstance(version, bool) and version > 1
    if later and prev is None:  # a later version of a record new here: prev names its predecessor
        prev = str(forge.forge(author, record_id, 1).manifest.cid)
    body = forge.body_for(record_id, version, author.did, size=size, prev=None if prev is DROP else prev, **fields)
    body.update(fields)  # the bad values exactly as given (body_for makes a list of a tags string)
    if prev is DROP:
        del body["prev"]
    forged = forge.forge(author, record_id, version, data=data, body=body)
    forge.seal_to(forged, recipient, author)
    return forged


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
async def test_car_bad_signed_metadata_is_422(local, case):
    """Attack: validly signed metadata of the wrong type/shape. Today most are
    stored as they are (a number as record id then breaks /v1/audit/verify)."""
    before = await snapshot(local)
    forged = bad_metadata_record(local.offline, local.attacker.did, case)
    message = await expect_error(await send_car(local, car_for(forged)), 422, "bad_metadata")
    assert BAD_METADATA[case][0] in message, f"the message does not name the field: {message!r}"
    await assert_untouched(local, before, forged.cids)


async def test_car_empty_record_is_refused(local):
    """Attack: a validly signed record of size 0 with one empty chunk (the API
    never writes one). It was imported, and reading its content was a 500."""
    before = await snapshot(local)
    forged = forge.forge(local.offline, new_record_id(), 1, data=b"")
    forge.seal_to(forged, local.attacker.did, local.offline)
    message = await expect_error(await send_car(local, car_for(forged)), 422, "bad_metadata")
    assert "size" in message
    await assert_untouched(local, before, forged.cids)


async def test_number_record_id_cannot_break_audit_verify(local):
    """Attack: a validly signed record whose id is the number 123456. Today it
    is imported and its audit entry (hashed with the number, stored as text)
    breaks /v1/audit/verify for good. The chain is checked before the status."""
    forged = bad_metadata_record(local.offline, local.attacker.did, "record-id-number")
    resp = await send_car(local, car_for(forged))
    await _audit_ok(local)
    await expect_error(resp, 422, "bad_metadata")


# ---- CAR: blocks that don't belong ------------------------------------------

async def test_car_block_not_matching_its_cid_stores_nothing(local):
    """Attack: a CAR whose last block lies about its CID. Today it is 400, but
    the blocks before it (more than one write batch of them) are already in
    the store."""
    before = await snapshot(local)
    forged = forge.forge(local.offline, new_record_id(), 1, data=os.urandom(40 * 4096))
    forge.seal_to(forged, local.attacker.did, local.offline)
    liar = Block.raw(b"what the CID names")
    archive = car_for(forged) + forge.frame_raw(liar.cid, b"something else entirely")
    await expect_error(await send_car(local, archive), 400, "bad_car")
    await assert_untouched(local, before, forged.cids | {str(liar.cid)})


async def test_car_unreachable_blocks_are_never_stored(local):
    """Attack: a genuine record plus blocks no accepted root reaches (stowaways
    to make the node host them). The record imports; the stowaways do not."""
    forged = forge.forge(local.offline, new_record_id(), 1)
    forge.seal_to(forged, local.attacker.did, local.offline)
    stowaways = [Block.raw(os.urandom(2000)), Block.dag_cbor({"links": [forged.chunks[0].cid.to_link()]})]
    before = _local_blocks(local)
    resp = await send_car(local, forge.car_of([forged.envelopes[0]], [*forged.all_blocks, *stowaways]))
    assert resp.status == 201, await resp.text()
    assert [r["id"] for r in (await resp.json())["items"]] == [forged.body["record"]]
    added = _local_blocks(local) - before
    assert added == forged.cids, f"unreachable blocks were stored: {sorted(added - forged.cids)}"
    await _audit_ok(local)


@pytest.mark.parametrize("root", ["envelope-for-another", "manifest", "chunk"])
async def test_car_root_not_addressed_to_caller_stores_nothing(local, root):
    """Attack: a CAR whose only root is an envelope for somebody else (or not
    an envelope at all): a way to make the node keep arbitrary blocks. The
    first is skipped (README: roots sealed to others are counted), the others
    are not envelopes (422)."""
    before = await snapshot(local)
    forged = forge.forge(local.offline, new_record_id(), 1)
    forge.seal_to(forged, local.offline.did, local.offline)  # sealed to a stranger
    block = {"envelope-for-another": forged.envelopes[0], "manifest": forged.manifest, "chunk": forged.chunks[0]}
    resp = await send_car(local, forge.car_of([block[root]], forged.all_blocks))
    if root == "envelope-for-another":
        assert resp.status == 201, await resp.text()
        assert await resp.json() == {"items": [], "skipped": 1}
    else:
        await expect_error(resp, 422, "bad_envelope")
    await assert_untouched(local, before, forged.cids)


@pytest.mark.parametrize("how, code", [("chunk-under-other-key", "bad_content"), ("chunk-missing", "incomplete_car"),
                                       ("chunks-swapped", "bad_content")])
async def test_car_record_with_bad_chunks_stores_nothing(local, how, code):
    """Attack: a signed manifest whose chunks do not open (spliced from another
    record, missing, or reordered). Today every block is stored before the
    chunks are checked, and the refusal is a 201 with `skipped`."""
    before = await snapshot(local)
    data = os.urandom(3 * 4096)
    forged = forge.forge(local.offline, new_record_id(), 1, data=data)
    if how == "chunk-under-other-key":
        other = forge.forge(local.offline, new_record_id(), 1, data=os.urandom(3 * 4096))
        forged = forge.relink(forged, [forged.chunks[0], other.chunks[1], forged.chunks[2]], local.offline)
        blocks = forged.blocks
    elif how == "chunk-missing":
        blocks = [forged.manifest, *forged.chunks[:-1]]
    else:
        forged = forge.relink(forged, [forged.chunks[1], forged.chunks[0], forged.chunks[2]], local.offline)
        blocks = forged.blocks
    envelope = forge.seal_to(forged, local.attacker.did, local.offline)
    resp = await send_car(local, forge.car_of([envelope], [envelope, *blocks]))
    assert_no_new_blocks(local, before)
    await expect_error(resp, 422, code)
    await assert_untouched(local, before, forged.cids)


async def test_car_over_the_size_cap_is_413(local):
    """Attack: a CAR larger than the node's cap (set to 8 MiB here through
    config `max_car_bytes`). Today there is no cap: it is read and stored."""
    before = await snapshot(local)
    forged = forge.forge(local.offline, new_record_id(), 1, data=os.urandom(9 * 1024 * 1024),
                         chunk_size=256 * 1024)
    forge.seal_to(forged, local.attacker.did, local.offline)
    archive = car_for(forged)
    assert len(archive) > local.vault.config.max_car_bytes
    await expect_error(await send_car(local, archive), 413, "too_large")
    await assert_untouched(local, before, forged.cids)


# ---- share tokens over the swarm (two real Kubo nodes) ---------------------------

async def test_share_same_version_takeover_is_refused(on_kubo):
    scene, remote = on_kubo
    before = await snapshot(scene)
    forged = takeover(scene, scene.offline, scene.record["version"], prev="none", patient="attacker")
    await expect_error(await send_share(scene, remote, forged), 409, "not_a_continuation")
    await assert_untouched(scene, before, forged.cids)


async def test_share_next_version_takeover_is_refused(on_kubo):
    scene, remote = on_kubo
    before = await snapshot(scene)
    forged = takeover(scene, scene.attacker, scene.record["version"] + 1)
    await expect_error(await send_share(scene, remote, forged), 403, "not_authorized")
    await assert_untouched(scene, before, forged.cids)


async def test_share_claimed_patient_cannot_erase(on_kubo):
    scene, remote = on_kubo
    before = await snapshot(scene)
    forged = takeover(scene, scene.offline, scene.record["version"] + 1, patient="attacker")
    await expect_error(await send_share(scene, remote, forged), 403, "not_authorized")
    await assert_untouched(scene, before, forged.cids)


async def test_share_skipping_versions_is_refused(on_kubo):
    scene, remote = on_kubo
    before = await snapshot(scene)
    forged = takeover(scene, scene.offline, scene.record["version"] + 5)
    await expect_error(await send_share(scene, remote, forged), 409, "not_a_continuation")
    await assert_untouched(scene, before, forged.cids)


@pytest.mark.parametrize("case", ["record-id-number", "version-string", "unknown-key", "size-vs-chunks"])
async def test_share_bad_signed_metadata_is_422(on_kubo, case):
    scene, remote = on_kubo
    before = await snapshot(scene)
    forged = bad_metadata_record(scene.offline, scene.attacker.did, case)
    message = await expect_error(await send_share(scene, remote, forged), 422, "bad_metadata")
    assert BAD_METADATA[case][0] in message, message
    await assert_untouched(scene, before, forged.cids)


async def test_share_envelope_for_someone_else_leaves_nothing_in_kubo(on_kubo):
    """Attack: a share token whose envelope is sealed to another principal.
    Refused as `not_recipient` today, but the envelope block the victim node
    fetched over the swarm stays in its Kubo."""
    scene, remote = on_kubo
    before = await snapshot(scene)
    forged = forge.forge(scene.offline, new_record_id(), 1)
    forge.seal_to(forged, scene.offline.did, scene.offline)
    await expect_error(await send_share(scene, remote, forged), 403, "not_recipient")
    await assert_untouched(scene, before, forged.cids)


# ---- attacks the rules above do not name -------------------------------------

async def test_revoked_reader_cannot_reimport_its_old_envelope(local):
    """Attack: a reader exports the record as a CAR while granted, is revoked
    without rotation (the patient chose not to re-encrypt), then imports the
    saved CAR: the patient-signed envelope is genuine and names the current
    manifest. A revoked envelope must stay revoked. Today the import stores
    the blocks again and answers 500."""
    reader_did, reader_token = await local.api.principal("reader", ("read", "write"))
    rid = local.record["id"]
    resp = await local.client.post(f"/v1/records/{rid}/grants", json={"recipient": reader_did},
                                   headers=auth(local.victim_token))
    assert resp.status == 201, await resp.text()
    resp = await local.client.get("/v1/exports", params={"patient": local.victim.did}, headers=auth(reader_token))
    assert resp.status == 200, await resp.text()
    saved = await resp.read()
    resp = await local.client.delete(f"/v1/records/{rid}/grants/{reader_did}", params={"rotate": "false"},
                                     headers=auth(local.victim_token))
    assert resp.status == 200, await resp.text()
    before = await snapshot(local)
    resp = await send_car(local, saved, token=reader_token)
    await expect_error(resp, 403, "grant_revoked")
    for path in ("", "/content"):
        resp = await local.client.get(f"/v1/records/{rid}{path}", headers=auth(reader_token))
        await expect_error(resp, 404, "record_not_found")  # the revoked reader reading the record again
    await assert_untouched(local, before)


async def test_reused_id_of_an_erased_record_reveals_no_history(local):
    """Attack: the victim erases a record; the attacker imports a new record of
    its own under the erased id. The id is new on the node, so the import may
    be taken (or refused), but it must not open the victim's audit trail of
    that id (who wrote, viewed, was granted, erased). Today it does."""
    rid = local.record["id"]
    other_did, _ = await local.api.principal("clinician", ("read",))
    resp = await local.client.post(f"/v1/records/{rid}/grants", json={"recipient": other_did},
                                   headers=auth(local.victim_token))
    assert resp.status == 201
    assert (await local.client.delete(f"/v1/records/{rid}", headers=auth(local.victim_token))).status == 204
    forged = forge.forge(local.offline, rid, 1)
    forge.seal_to(forged, local.attacker.did, local.offline)
    resp = await send_car(local, car_for(forged))
    assert resp.status == 201, await resp.text()  # the erased id is new to the node again (SECURITY.md, known limits)
    assert [(r["id"], r["cid"]) for r in (await resp.json())["items"]] == [(rid, str(forged.manifest.cid))]
    trail = await (await local.client.get("/v1/audit", params={"record": rid},
                                          headers=auth(local.attacker_token))).json()
    leaked = [(e["action"], e["actor"]) for e in trail["items"] if e["actor"] != local.attacker.did]
    assert leaked == [], f"the attacker reads the erased record's history: {leaked}"
    await _audit_ok(local)


# ---- no revocation race ------------------------------------------------------

@pytest.mark.parametrize(("first", "rotate"), [("put", "true"), ("revoke", "true"), ("put", "false")])
async def test_revoke_racing_a_put_leaves_no_live_envelope(tmp_path, aiohttp_client, first, rotate):
    """A large PUT (new version) in flight while the patient revokes a reader.
    Today, PUT first: the PUT re-issues envelopes to the reader list it read
    before the revocation and commits between the revocation and the
    rotation, so the revoked reader reads the new version (with rotate=false
    the revoke even answers 200). Revoke first: the rotation loses to the PUT
    (409) and a retry answers `grant_not_found` though the rotation is owed."""
    vault, info = await make_node(str(tmp_path / "race"), chunk_size=4096)
    try:
        client = await aiohttp_client(make_app(vault))
        with open(info["token_file"]) as handle:
            api = Api(client, vault, handle.read().strip(), info["did"])
        patient, patient_token = await api.principal("patient", ("read", "write", "share"))
        reader, reader_token = await api.principal("reader", ("read",))
        original = os.urandom(4 * 1024 * 1024)  # 1024 chunks: the rotation takes a while
        record = await api.put(original, "application/pdf", token=patient_token, patient=patient)
        rid = record["id"]
        resp = await client.post(f"/v1/records/{rid}/grants", json={"recipient": reader},
                                 headers=auth(patient_token))
        assert resp.status == 201
        assert (await client.get(f"/v1/records/{rid}", headers=auth(reader_token))).status == 200

        gate = asyncio.Event()
        head, tail = os.urandom(1024 * 1024), os.urandom(4096)

        async def body():
            yield head
            await gate.wait()
            yield tail

        async def put():
            resp = await client.put(f"/v1/records/{rid}", data=body(),
                                    headers={**auth(patient_token), "Content-Type": "application/pdf"})
            return resp.status, await resp.text()

        async def revoke():
            resp = await client.delete(f"/v1/records/{rid}/grants/{reader}", params={"rotate": rotate},
                                       headers=auth(patient_token))
            return resp.status, await resp.text()

        async def revocation_seen() -> bool:
            resp = await client.get(f"/v1/records/{rid}/grants", headers=auth(patient_token))
            return resp.status == 200 and reader not in {g["recipient"] for g in (await resp.json())["items"]}

        async def revoke_landed() -> None:
            """The revocation is committed (or the revoke answered). Waited for at
            most 3 s: a node that makes the revoke wait for the PUT is also fine."""
            await poll(lambda: revoke_task.done() or revocation_seen(), 3)

        if first == "put":
            put_task = asyncio.create_task(put())
            await until(lambda: vault.services.inflight, what="the PUT to read the record and stream its body")
            revoke_task = asyncio.create_task(revoke())
            await revoke_landed()  # then the PUT finishes right after the revocation
            gate.set()
        else:
            revoke_task = asyncio.create_task(revoke())
            await revoke_landed()
            put_task = asyncio.create_task(put())  # lands while the rotation runs
            gate.set()
        (put_status, put_text), (revoke_status, revoke_text) = await asyncio.gather(put_task, revoke_task)
        assert put_status in (200, 409), put_text
        assert revoke_status in (200, 409), revoke_text
        outcome = f"PUT {put_status}, revoke {revoke_status}"

        async def reader_locked_out(when: str) -> None:
            for path in ("", "/content"):
                resp = await client.get(f"/v1/records/{rid}{path}", headers=auth(reader_token))
                assert resp.status == 404, \
                    f"{when}, the revoked reader reads the current version ({path or '/'}; {outcome})"

        await reader_locked_out("once both answered")
        if revoke_status != 200:  # the rotation is owed: a retry finishes it, never grant_not_found
            resp = await client.delete(f"/v1/records/{rid}/grants/{reader}", params={"rotate": rotate},
                                       headers=auth(patient_token))
            assert resp.status == 200, f"a retried revoke answered {resp.status}: {await resp.text()} ({outcome})"
            await reader_locked_out("after the retry")
        page = await (await client.get("/v1/records", headers=auth(reader_token))).json()
        assert rid not in {r["id"] for r in page["items"]}, f"the revoked reader still finds the record ({outcome})"
        content = await (await client.get(f"/v1/records/{rid}/content", headers=auth(patient_token))).read()
        assert content == (head + tail if put_status == 200 else original), f"the patient's data was lost ({outcome})"
        resp = await client.get("/v1/audit/verify", headers=api.auth())
        assert (await resp.json())["ok"] is True
    finally:
        await close_vault(vault)
