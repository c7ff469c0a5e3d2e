"""Sharing between two medvault nodes, each with its own real Kubo connected
over the swarm: grants, imports, revocation with rotation, expiry, erasure,
break-glass, reindex, CAR portability and forged envelopes."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import dag_cbor
import pytest
from nacl.public import SealedBox

from api.app import make_app
from daemon import crypto, timeutil
from daemon.blocks import Block
from daemon.cid import Cid
from daemon.config import Config
from daemon.envelope import build_envelope, open_envelope
from daemon.identity import Principal, box_public_key_of
from daemon.manifest import decode_manifest, open_metadata
from daemon.node import close_vault, open_vault
from daemon.reindex import reindex

from .conftest import Api, make_node


class Node:
    """One hospital: a Vault on its own Kubo, its HTTP client, and helpers."""

    def __init__(self, api: Api, path: str):
        self.api, self.path = api, path

    @property
    def client(self):
        return self.api.client

    async def principal(self, name, scopes=("read", "write", "share")):
        return await self.api.principal(name, scopes)


async def _node(tmp_path, name, aiohttp_client, **config) -> Node:
    path = str(tmp_path / name)
    vault, info = await make_node(path, **config)
    client = await aiohttp_client(make_app(vault))
    with open(info["token_file"]) as handle:
        token = handle.read().strip()
    return Node(Api(client, vault, token, info["did"]), path)


@pytest.fixture
async def hospitals(tmp_path, aiohttp_client, kubo_pair):
    a_kubo, b_kubo = kubo_pair
    a = await _node(tmp_path, "a", aiohttp_client, backend="kubo", ipfs_api=a_kubo.api_url)
    b = await _node(tmp_path, "b", aiohttp_client, backend="kubo", ipfs_api=b_kubo.api_url)
    yield a, b
    for node in (a, b):
        await close_vault(node.api.vault)


def auth(token):
    return {"Authorization": f"Bearer {token}"}


async def _grant(node: Node, token: str, record_id: str, recipient: str, expires=None):
    resp = await node.client.post(f"/v1/records/{record_id}/grants", headers=auth(token),
                                  json={"recipient": recipient, **({"expires": expires} if expires else {})})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def _import(node: Node, token: str, share: str):
    return await node.client.post("/v1/imports", headers=auth(token), json={"share": share})


async def _content(node: Node, token: str, record_id: str):
    return await node.client.get(f"/v1/records/{record_id}/content", headers=auth(token))


async def _setup_shared(a: Node, b: Node, data: bytes = b"", **put):
    """Patient on A, clinician on B; A's owner writes a record for the patient."""
    patient, patient_token = await a.principal("patient")
    clinician, clinician_token = await b.principal("clinician")
    record = await a.api.put(data or os.urandom(300_000), "application/pdf", patient=patient, **put)
    return patient, patient_token, clinician, clinician_token, record


async def test_grant_import_read_and_strangers_see_nothing(hospitals):
    a, b = hospitals
    data = os.urandom(1_200_000)
    patient, patient_token, clinician, clinician_token, record = await _setup_shared(a, b, data, title="MRI report")
    grant = await _grant(a, patient_token, record["id"], clinician)  # the patient shares it
    assert grant["share"] == f"mv1.{record['cid']}.{grant['envelope']}"
    resp = await _import(b, clinician_token, grant["share"])
    assert resp.status == 201, await resp.text()
    imported = await resp.json()
    assert imported["id"] == record["id"] and imported["cid"] == record["cid"] and imported["title"] == "MRI report"
    resp = await _content(b, clinician_token, record["id"])
    assert resp.status == 200 and await resp.read() == data
    # the grant is listed on A; the clinician's node shows the import in its audit
    grants = await (await a.client.get(f"/v1/records/{record['id']}/grants", headers=auth(patient_token))).json()
    assert clinician in {g["recipient"] for g in grants["items"]}
    trail = await (await b.client.get("/v1/audit", headers=auth(clinician_token))).json()
    assert (clinician, "import", record["id"], "ok") in {(e["actor"], e["action"], e["record"], e["outcome"])
                                                         for e in trail["items"]}
    # a third principal, on either node, gets 404 everywhere
    for node in (a, b):
        _, stranger = await node.principal("stranger")
        for path in ("", "/content", "/versions", "/grants"):
            resp = await node.client.get(f"/v1/records/{record['id']}{path}", headers=auth(stranger))
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "record_not_found", path
        page = await (await node.client.get("/v1/records", headers=auth(stranger))).json()
        assert page["items"] == []
        resp = await _import(node, stranger, grant["share"])
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "not_recipient"
    # nothing of a refused import is left on B
    rows = await b.api.vault.db.read(lambda c: c.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])
    assert rows == 1


async def test_author_may_grant_unless_patient_only(hospitals):
    a, b = hospitals
    _, _, clinician, _, record = await _setup_shared(a, b)
    await _grant(a, a.api.owner_token, record["id"], clinician)  # the author
    a.api.vault.config.grant_policy = "patient"
    resp = await a.client.post(f"/v1/records/{record['id']}/grants", headers=auth(a.api.owner_token),
                               json={"recipient": clinician})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "patient_only"


async def test_revoke_rotates_and_old_share_cannot_reach_new_version(hospitals, kubo_pair):
    a, b = hospitals
    data = os.urandom(500_000)
    patient, patient_token, clinician, clinician_token, record = await _setup_shared(a, b, data)
    grant = await _grant(a, patient_token, record["id"], clinician)
    assert (await _import(b, clinician_token, grant["share"])).status == 201
    resp = await a.client.delete(f"/v1/records/{record['id']}/grants/{clinician}", headers=auth(patient_token))
    assert resp.status == 200, await resp.text()
    rotated = await resp.json()
    assert rotated["version"] == 2 and rotated["cid"] != record["cid"] and rotated["rotated"] is True
    assert "cannot be recalled" in rotated["notice"]
    # the remaining readers (patient, author) read the new version; the clinician is gone from the grants
    resp = await _content(a, patient_token, record["id"])
    assert await resp.read() == data
    grants = await (await a.client.get(f"/v1/records/{record['id']}/grants", headers=auth(patient_token))).json()
    assert clinician not in {g["recipient"] for g in grants["items"]}
    # the old version is unpinned on A
    pinned = kubo_pair[0].ipfs("pin", "ls", "--type=recursive").decode()
    assert record["cid"] not in pinned and grant["envelope"] not in pinned and rotated["cid"] in pinned
    # the old token still names only the old manifest, and its key does not open the new one
    clinician_key = b.api.vault.keys.get(clinician)
    env_cid = Cid.parse(grant["envelope"])
    old_grant = open_envelope(env_cid, await b.api.vault.blocks.get(env_cid), clinician_key)
    assert str(old_grant.manifest) == record["cid"]
    new_cid = Cid.parse(rotated["cid"])
    new_manifest = decode_manifest(new_cid, await b.api.vault.blocks.get(new_cid))
    with pytest.raises(crypto.DecryptError):
        open_metadata(new_manifest, old_grant.dek)
    resp = await _import(b, clinician_token, grant["share"])
    assert resp.status == 201, await resp.text()  # B still holds version 1: the old envelope is one it has
    again = await resp.json()
    assert (again["version"], again["cid"]) == (1, record["cid"])  # never the new version
    assert await (await _content(b, clinician_token, record["id"])).read() == data


async def test_revoke_without_rotation_and_owner_cannot_be_revoked(hospitals):
    a, b = hospitals
    patient, patient_token, clinician, _, record = await _setup_shared(a, b)
    await _grant(a, patient_token, record["id"], clinician)
    resp = await a.client.delete(f"/v1/records/{record['id']}/grants/{clinician}", params={"rotate": "false"},
                                 headers=auth(patient_token))
    body = await resp.json()
    assert resp.status == 200 and body["version"] == 1 and body["rotated"] is False
    resp = await a.client.delete(f"/v1/records/{record['id']}/grants/{patient}", headers=auth(a.api.owner_token))
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "cannot_revoke_owner"
    resp = await a.client.delete(f"/v1/records/{record['id']}/grants/{clinician}", headers=auth(patient_token))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "grant_not_found"


async def test_expired_grant_stops_access_at_expiry(hospitals):
    a, b = hospitals
    _, patient_token, clinician, clinician_token, record = await _setup_shared(a, b)
    start = datetime.now(timezone.utc)
    expiry = start + timedelta(days=1)
    with timeutil.frozen_at(start):
        grant = await _grant(a, patient_token, record["id"], clinician, expires=timeutil.format_time(expiry))
        assert (await _import(b, clinician_token, grant["share"])).status == 201
        assert (await _content(b, clinician_token, record["id"])).status == 200
    with timeutil.frozen_at(expiry - timedelta(milliseconds=1)):  # the last moment it is valid
        assert (await _content(b, clinician_token, record["id"])).status == 200
    with timeutil.frozen_at(expiry):
        resp = await _content(b, clinician_token, record["id"])
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "record_not_found"
        resp = await b.client.get("/v1/records", headers=auth(clinician_token))
        assert resp.status == 200 and (await resp.json())["items"] == []
        resp = await _import(b, clinician_token, grant["share"])
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "grant_expired"
        grants = await (await a.client.get(f"/v1/records/{record['id']}/grants", headers=auth(patient_token))).json()
        assert clinician not in {g["recipient"] for g in grants["items"]}  # A no longer counts it either


async def test_erase_leaves_no_pin_and_no_row(hospitals, kubo_pair):
    a, b = hospitals
    _, patient_token, clinician, _, record = await _setup_shared(a, b)
    grant = await _grant(a, patient_token, record["id"], clinician)
    assert (await a.client.delete(f"/v1/records/{record['id']}", headers=auth(patient_token))).status == 204
    pinned = kubo_pair[0].ipfs("pin", "ls", "--type=recursive").decode()
    assert record["cid"] not in pinned and grant["envelope"] not in pinned
    for table in ("records", "versions", "envelopes", "pins"):
        count = await a.api.vault.db.read(
            lambda c, t=table: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
        assert count == 0, table
    trail = await (await a.client.get("/v1/audit", params={"record": record["id"]},
                                      headers=auth(a.api.owner_token))).json()
    assert ("erase", "ok") in [(e["action"], e["outcome"]) for e in trail["items"]]


async def test_break_glass_is_audited_visible_to_patient_and_expires(hospitals):
    a, _ = hospitals
    patient, patient_token = await a.principal("patient")
    record = await a.api.put(b"allergy: penicillin", "text/plain", patient=patient)
    doctor, doctor_token = await a.principal("er-doctor", scopes=("read", "emergency"))
    _, plain_token = await a.principal("no-emergency", scopes=("read",))
    resp = await _content(a, doctor_token, record["id"])
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "record_not_found"
    resp = await a.client.post(f"/v1/records/{record['id']}/emergency", headers=auth(plain_token),
                               json={"reason": "unconscious patient in the ER"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "missing_scope"
    resp = await a.client.post(f"/v1/records/{record['id']}/emergency", headers=auth(doctor_token),
                               json={"reason": "x"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "reason_required"
    opened_at = datetime.now(timezone.utc)
    with timeutil.frozen_at(opened_at):
        resp = await a.client.post(f"/v1/records/{record['id']}/emergency", headers=auth(doctor_token),
                                   json={"reason": "unconscious patient in the ER, allergy check"})
        assert resp.status == 201, await resp.text()
    ends = opened_at + timedelta(minutes=a.api.vault.config.emergency_minutes)
    assert (await resp.json())["expires"] == timeutil.format_time(ends)
    with timeutil.frozen_at(opened_at):
        assert await (await _content(a, doctor_token, record["id"])).read() == b"allergy: penicillin"
    own = await (await a.client.get("/v1/audit", headers=auth(patient_token))).json()
    glass = [e for e in own["items"] if e["action"] == "break_glass"]
    assert glass and glass[0]["actor"] == doctor and "allergy check" in glass[0]["detail"]["reason"]
    fhir = await (await a.client.get("/v1/audit", params={"format": "fhir"}, headers=auth(patient_token))).json()
    events = [e["resource"] for e in fhir["entry"]]
    assert fhir["resourceType"] == "Bundle" and all(e["resourceType"] == "AuditEvent" for e in events)
    assert any(e.get("purposeOfEvent", [{}])[0].get("coding", [{}])[0].get("code") == "ETREAT" for e in events)
    # the access lasts until its expiry and ends there (the clock is moved, not waited for)
    with timeutil.frozen_at(ends - timedelta(milliseconds=1)):
        assert (await _content(a, doctor_token, record["id"])).status == 200
    with timeutil.frozen_at(ends):
        resp = await _content(a, doctor_token, record["id"])
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "record_not_found"


async def test_reindex_restores_records_grants_and_search(hospitals, aiohttp_client):
    a, b = hospitals
    patient, patient_token, clinician, _, record = await _setup_shared(a, b, title="Discharge letter", tag="cardio")
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
           "effectiveDateTime": "2024-03-01"}
    fhir = await a.api.put(json.dumps(obs).encode(), "application/fhir+json", patient=patient)
    resp = await a.client.put(f"/v1/records/{record['id']}", data=b"second version",
                              headers={**auth(a.api.owner_token), "Content-Type": "text/plain"})
    assert resp.status == 200
    await _grant(a, patient_token, record["id"], clinician)

    async def snapshot(token):
        searches = {}
        for params in ({}, {"q": "discharge"}, {"code": "718-7"}, {"tag": "cardio"}, {"patient": patient}):
            page = await (await a.client.get("/v1/records", params=params, headers=auth(token))).json()
            searches[json.dumps(params)] = sorted((r["id"], r["version"], r["cid"]) for r in page["items"])
        grants = await (await a.client.get(f"/v1/records/{record['id']}/grants", headers=auth(token))).json()
        versions = await (await a.client.get(f"/v1/records/{record['id']}/versions", headers=auth(token))).json()
        return searches, sorted((g["recipient"], g["role"]) for g in grants["items"]), \
            [v["cid"] for v in versions["items"]]

    before = await snapshot(patient_token)
    assert before[0]['{"code": "718-7"}'] == [(fhir["id"], 1, fhir["cid"])]
    vault = a.api.vault
    config = vault.config
    await close_vault(vault)
    os.unlink(config.index_path)
    result = await reindex(Config.load(a.path))
    assert result["records"] == 2
    reopened = await open_vault(Config.load(a.path))
    a.api.vault = reopened
    a.api.client = await aiohttp_client(make_app(reopened))  # the node restarted on the rebuilt index
    with open(os.path.join(a.path, "owner.token")) as handle:
        a.api.owner_token = handle.read().strip()  # tokens are not recoverable: reindex wrote a fresh one
    resp = await a.client.post("/v1/tokens", headers=auth(a.api.owner_token),
                               json={"principal": patient, "scopes": ["read", "share"]})
    assert resp.status == 201, await resp.text()
    patient_token = (await resp.json())["token"]
    after = await snapshot(patient_token)
    assert after == before
    assert await (await _content(a, patient_token, record["id"])).read() == b"second version"


async def test_car_export_imports_on_a_node_without_network(hospitals, tmp_path, aiohttp_client):
    a, _ = hospitals
    island = await _node(tmp_path, "island", aiohttp_client)  # local backend: no IPFS at all
    try:
        patient, patient_token = await a.principal("patient")
        doctor, doctor_token = await island.principal("island-doctor")
        datas = [os.urandom(n) for n in (10, 700_000, 3_000_000)]
        records = [await a.api.put(d, "application/octet-stream", patient=patient) for d in datas]
        await a.api.put(b"someone else's", "text/plain")  # not the patient's: not exported
        for r in records:
            await _grant(a, patient_token, r["id"], doctor)
        resp = await a.client.get("/v1/exports", params={"patient": patient}, headers=auth(patient_token))
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/vnd.ipld.car"
        archive = await resp.read()
        assert resp.headers["X-Medvault-Records"] == "3"
        resp = await island.client.post("/v1/imports/car", data=archive,
                                        headers={**auth(doctor_token), "Content-Type": "application/vnd.ipld.car"})
        assert resp.status == 201, await resp.text()
        result = await resp.json()
        assert sorted(r["id"] for r in result["items"]) == sorted(r["id"] for r in records)
        assert result["skipped"] == 6  # the patient's and the author's envelopes are not the doctor's
        for r, d in zip(records, datas):
            assert await (await _content(island, doctor_token, r["id"])).read() == d
        bad = await island.client.post("/v1/imports/car", data=archive[:-100],
                                       headers={**auth(doctor_token), "Content-Type": "application/vnd.ipld.car"})
        assert bad.status == 400 and (await bad.json())["error"]["code"] == "bad_car"
    finally:
        await close_vault(island.api.vault)


async def test_forged_envelopes_are_refused(hospitals):
    a, b = hospitals
    _, patient_token, clinician, clinician_token, record = await _setup_shared(a, b)
    grant = await _grant(a, patient_token, record["id"], clinician)
    env_cid = Cid.parse(grant["envelope"])
    genuine = await a.api.vault.blocks.get(env_cid)
    node = dag_cbor.decode(genuine)
    store = b.api.vault.blocks

    async def share_for(block: Block) -> str:
        await store.put_many([block])
        return f"mv1.{record['cid']}.{block.cid}"

    # 1. a flipped bit in the sealed box
    flipped = dict(node)
    box = bytearray(node["box"])
    box[40] ^= 0x01
    flipped["box"] = bytes(box)
    resp = await _import(b, clinician_token, await share_for(Block.dag_cbor(flipped)))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "not_recipient"  # the box no longer opens
    # 2. a swapped recipient: the clinician's box re-sealed to another principal (its "to" stays)
    other, other_token = await b.principal("other-clinician")
    inner = SealedBox(b.api.vault.keys.get(clinician).box_key).decrypt(node["box"])
    swapped = {**node, "box": SealedBox(box_public_key_of(other)).encrypt(inner)}
    resp = await _import(b, other_token, await share_for(Block.dag_cbor(swapped)))
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "bad_envelope"
    # 3. re-signed by a stranger who learned the key: signature valid, granter untrusted
    stranger = Principal.generate("stranger")
    dek = open_envelope(env_cid, genuine, b.api.vault.keys.get(clinician)).dek
    forged = build_envelope(Cid.parse(record["cid"]), dek, other, stranger, timeutil.now())
    resp = await _import(b, other_token, await share_for(forged))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "untrusted_granter"
    # 4. a token whose manifest does not match its envelope
    resp = await _import(b, clinician_token, f"mv1.{grant['envelope']}.{grant['envelope']}")
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "share_mismatch"
    for bad in ("mv1.nope.nope", "mv2." + grant["share"][4:], 42):
        resp = await _import(b, clinician_token, bad)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_share"
    for table in ("records", "envelopes"):
        count = await b.api.vault.db.read(lambda c, t=table: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
        assert count == 0, table
