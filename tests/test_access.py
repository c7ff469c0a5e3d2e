"""The one access rule and what hangs off it (issue 12), on the local
backend: write authority, the revocation race, break-glass scope, audit
windows, failed authentication, content headers, keys at rest, deep trees."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import timedelta

import pytest

from daemon import car, timeutil
from daemon.cid import Cid
from daemon.identity import Principal
from daemon.keystore import FileKeyStore, KeyStoreError, create_master_key, load_master_key

from .waiting import until


async def _status(resp, status: int, code: str | None = None) -> None:
    assert resp.status == status, await resp.text()
    if code:
        assert (await resp.json())["error"]["code"] == code


async def test_only_writers_change_a_record_and_write_authority_is_the_patients_to_give(api):
    patient, patient_token = await api.principal("patient")
    reader, reader_token = await api.principal("reader")
    writer, writer_token = await api.principal("writer")
    record = await api.put(b"v1", "text/plain", patient=patient)
    rid = record["id"]
    grant = await api.client.post(f"/v1/records/{rid}/grants", json={"recipient": reader}, headers=api.auth())
    await _status(grant, 201)
    put = await api.client.put(f"/v1/records/{rid}", data=b"reader's", headers={**api.auth(reader_token),
                                                                                "Content-Type": "text/plain"})
    await _status(put, 403, "not_owner")
    # a reader (even a writer later) cannot hand out write authority; the patient can
    refused = await api.client.post(f"/v1/records/{rid}/grants", json={"recipient": writer, "write": True},
                                    headers=api.auth(reader_token))
    await _status(refused, 403, "not_owner")
    granted = await api.client.post(f"/v1/records/{rid}/grants", json={"recipient": writer, "write": True},
                                    headers=api.auth(patient_token))
    await _status(granted, 201)
    put = await api.client.put(f"/v1/records/{rid}", data=b"writer's", headers={**api.auth(writer_token),
                                                                               "Content-Type": "text/plain"})
    await _status(put, 200)
    assert (await put.json())["author"] == writer
    # revoking the writer takes the authority away with the key
    revoke = await api.client.delete(f"/v1/records/{rid}/grants/{writer}", headers=api.auth(patient_token))
    await _status(revoke, 200)
    put = await api.client.put(f"/v1/records/{rid}", data=b"again", headers={**api.auth(writer_token),
                                                                            "Content-Type": "text/plain"})
    await _status(put, 404, "record_not_found")
    content = await api.client.get(f"/v1/records/{rid}/content", headers=api.auth(patient_token))
    assert await content.read() == b"writer's"


@pytest.mark.parametrize("rotate", ["true", "false"])
async def test_a_revoke_racing_a_put_never_leaves_the_recipient_a_key(api, rotate):
    patient, patient_token = await api.principal("patient")
    clinician, clinician_token = await api.principal("clinician")
    record = await api.put(b"first", "text/plain", patient=patient)
    rid = record["id"]
    await _status(await api.client.post(f"/v1/records/{rid}/grants", json={"recipient": clinician},
                                        headers=api.auth()), 201)
    body = os.urandom(3_000_000)
    put = api.client.put(f"/v1/records/{rid}", data=body, headers={**api.auth(), "Content-Type": "text/plain"})
    revoke = api.client.delete(f"/v1/records/{rid}/grants/{clinician}", params={"rotate": rotate},
                               headers=api.auth(patient_token))
    put_resp, revoke_resp = await asyncio.gather(put, revoke)
    await _status(put_resp, 200)
    await _status(revoke_resp, 200)
    for path in (f"/v1/records/{rid}", f"/v1/records/{rid}/content"):
        await _status(await api.client.get(path, headers=api.auth(clinician_token)), 404)
    grants = await (await api.client.get(f"/v1/records/{rid}/grants", headers=api.auth())).json()
    assert clinician not in {g["recipient"] for g in grants["items"]}
    again = await api.client.delete(f"/v1/records/{rid}/grants/{clinician}", headers=api.auth(patient_token))
    await _status(again, 404, "grant_not_found")  # nothing owed: the revoke completed
    assert (await (await api.client.get("/v1/audit/verify", headers=api.auth())).json())["ok"]


async def test_break_glass_reads_need_the_emergency_scope(api):
    record = await api.put(b"allergies", "text/plain")
    medic, _ = await api.principal("medic", scopes=("read", "emergency"))
    token = (await (await api.client.post("/v1/tokens", json={"principal": medic, "scopes": ["read", "emergency"]},
                                          headers=api.auth())).json())["token"]
    plain = (await (await api.client.post("/v1/tokens", json={"principal": medic, "scopes": ["read"]},
                                          headers=api.auth())).json())["token"]
    resp = await api.client.post(f"/v1/records/{record['id']}/emergency", json={"reason": "unconscious in ER"},
                                 headers=api.auth(token))
    await _status(resp, 201)
    assert await (await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth(token))).read() \
        == b"allergies"
    await _status(await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth(plain)), 404)
    listed = await (await api.client.get("/v1/records", headers=api.auth(plain))).json()
    assert listed["items"] == []


async def test_a_grantee_sees_a_records_audit_only_while_its_grant_was_live(api):
    patient, patient_token = await api.principal("patient")
    clinician, clinician_token = await api.principal("clinician")
    record = await api.put(b"note", "text/plain", patient=patient)
    rid = record["id"]
    await api.client.get(f"/v1/records/{rid}", headers=api.auth(patient_token))  # before the grant
    with timeutil.shifted(timedelta(seconds=1)):  # the grant is a later moment than the view, not the same ms
        await _status(await api.client.post(f"/v1/records/{rid}/grants", json={"recipient": clinician},
                                            headers=api.auth(patient_token)), 201)
        await api.client.get(f"/v1/records/{rid}/content", headers=api.auth(clinician_token))
    seen = await (await api.client.get("/v1/audit", params={"record": rid}, headers=api.auth(clinician_token))).json()
    actions = [(e["actor"], e["action"]) for e in seen["items"]]
    assert (patient, "grant") in actions and (clinician, "read") in actions
    assert (patient, "view") not in actions and ("write" not in {a for _, a in actions})
    full = await (await api.client.get("/v1/audit", params={"record": rid}, headers=api.auth(patient_token))).json()
    assert {"write", "view", "grant", "read"} <= {e["action"] for e in full["items"]}
    stranger, stranger_token = await api.principal("stranger")
    await _status(await api.client.get("/v1/audit", params={"record": rid}, headers=api.auth(stranger_token)), 404)


async def test_failed_authentications_are_audited_at_a_bounded_rate_and_counted(api):
    for _ in range(50):
        assert (await api.client.get("/v1/records", headers=api.auth("mvt_forged"))).status == 401
    _, reader = await api.principal("reader", scopes=("read",))
    await _status(await api.client.get("/v1/pins", headers=api.auth(reader)), 403, "missing_scope")
    entries = (await (await api.client.get("/v1/audit", params={"limit": 1000}, headers=api.auth())).json())["items"]
    failed = [e for e in entries if e["action"] == "auth_failed"]
    assert len(failed) == 30 and failed[0]["detail"]["code"] == "bad_token"  # 51 failures in a minute: 30 written
    assert all(e["outcome"] == "denied" and "mvt_" not in json.dumps(e) for e in failed)
    metrics = await (await api.client.get("/metrics", headers=api.auth())).text()
    assert 'medvault_auth_failures_total{reason="bad_token"} 50.0' in metrics
    assert (await (await api.client.get("/v1/audit/verify", headers=api.auth())).json())["ok"]


@pytest.mark.parametrize("content_type, attachment", [("text/html", True), ("image/svg+xml", True),
                                                      ("image/png", False), ("text/plain", False)])
async def test_content_is_never_served_as_an_active_page(api, content_type, attachment):
    record = await api.put(b"<script>alert(1)</script>", content_type)
    resp = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    assert resp.status == 200
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    assert (resp.headers.get("Content-Disposition") == "attachment") is attachment
    meta = await api.client.get(f"/v1/records/{record['id']}", headers=api.auth())
    assert meta.headers["X-Content-Type-Options"] == "nosniff"


def test_key_files_authenticate_their_role(tmp_path):
    params = create_master_key(str(tmp_path))
    key = load_master_key(str(tmp_path), params)
    store = FileKeyStore(str(tmp_path / "keys"), key)
    store.add(Principal.generate("someone"))
    (path,) = [tmp_path / "keys" / f for f in os.listdir(tmp_path / "keys")]
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "role": "node"}))  # claim to be the node's own key
    with pytest.raises(KeyStoreError):
        FileKeyStore(str(tmp_path / "keys"), key)


async def test_no_repr_carries_a_key(api):
    record = await api.put(b"secret body", "text/plain")
    opened = await api.vault.records.open(_owner(api), record["id"])
    version = await api.vault.services.open_version(api.owner_did, opened.row)
    for text in (repr(opened), repr(version)):
        assert version.dek.hex() not in text and repr(version.dek) not in text and "secret" not in text


def _owner(api):
    from daemon.auth import SCOPES, Caller
    return Caller(api.owner_did, frozenset(SCOPES), "test")


async def test_a_crashed_background_task_is_logged_with_its_traceback_and_shown_in_health(api, caplog):
    secret = "".join(["Ja", "ne", " Doe"])  # built at run time: only a message could carry it

    async def doomed():
        raise RuntimeError(secret)

    with caplog.at_level(logging.ERROR, logger="medvault.vault"):
        task = api.vault.watch(asyncio.create_task(doomed(), name="doomed"))
        await asyncio.gather(task, return_exceptions=True)
        logged = await until(lambda: [r for r in caplog.records if r.getMessage() == "background task crashed"],
                             what="the crash to be logged")
    (entry,) = logged
    assert entry.task == "doomed" and "doomed" in entry.traceback and secret not in entry.traceback
    health = await (await api.client.get("/v1/health", headers=api.auth())).json()
    assert health["status"] == "degraded" and health["checks"]["background"]["crashed"] == {"doomed": "RuntimeError"}


async def test_export_and_import_walk_a_depth_two_tree_once(node_api):
    a = await node_api("a", chunk_size=1024, link_fanout=2, pad_buckets=[])  # the tree of exactly 9 chunks
    b = await node_api("b")
    patient, patient_token = await a.principal("patient")
    doctor, doctor_token = await b.principal("doctor")
    data = os.urandom(8 * 1024 + 5)  # 9 chunks → 5 → 3 → 2 links at the top: depth 3
    record = await a.put(data, "application/octet-stream", patient=patient)
    await _status(await a.client.post(f"/v1/records/{record['id']}/grants", json={"recipient": doctor},
                                      headers=a.auth(patient_token)), 201)
    resp = await a.client.get("/v1/exports", params={"patient": patient}, headers=a.auth(patient_token))
    archive = await resp.read()

    async def pieces():
        yield archive

    roots, blocks = await car.read(pieces())
    cids = [block.cid async for block in blocks]
    assert len(cids) == len(set(cids))  # every block once
    stored = {c async for c, _ in a.vault.blocks.all_cids()}
    manifest_blocks = await a.vault.services.blocks_of_manifest(Cid.parse(record["cid"]))
    assert len(manifest_blocks) == 1 + (2 + 3 + 5) + 9  # manifest, link blocks of every level, chunks
    assert set(manifest_blocks) <= set(cids) <= stored  # nothing omitted, nothing foreign
    resp = await b.client.post("/v1/imports/car", data=archive,
                               headers={**b.auth(doctor_token), "Content-Type": "application/vnd.ipld.car"})
    await _status(resp, 201)
    got = await b.client.get(f"/v1/records/{record['id']}/content", headers=b.auth(doctor_token))
    assert await got.read() == data
