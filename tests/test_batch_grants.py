"""POST /v1/grants (README: one recipient, many records, one call): every
record readable by the recipient after a 201; any bad element refuses the
whole batch and stores nothing (no envelope, block, pin or audit grant)."""
from __future__ import annotations

import os

import pytest

from .errors import assert_error


async def _grant_many(api, token, body):
    return await api.client.post("/v1/grants", json=body, headers=api.auth(token))


async def _stored(api) -> dict:
    """What a refused batch must not change."""
    def counts(conn):
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("envelopes", "pins")}
    state = await api.vault.db.read(counts)
    state["blocks"] = sorted(f for _, _, files in os.walk(api.vault.config.blocks_dir) for f in files)
    audit = await (await api.client.get("/v1/audit", params={"limit": "1000"}, headers=api.auth())).json()
    state["grants_audited"] = [e for e in audit["items"] if e["action"] == "grant" and e["outcome"] == "ok"]
    return state


async def test_batch_grant_shares_every_record_in_one_call(api):
    patient, patient_token = await api.principal("patient")
    clinician, clinician_token = await api.principal("clinician")
    datas = [os.urandom(n) for n in (10, 5000, 20_000)]
    records = [await api.put(d, "application/octet-stream", patient=patient) for d in datas]
    other = await api.put(b"not in the batch", "text/plain", patient=patient)
    resp = await _grant_many(api, patient_token, {"records": [r["id"] for r in records], "recipient": clinician})
    assert resp.status == 201, await resp.text()
    items = (await resp.json())["items"]
    assert [i["record"] for i in items] == [r["id"] for r in records]
    for item, record, data in zip(items, records, datas):
        assert item["recipient"] == clinician and item["expires"] is None and item["write"] is False
        assert item["share"] == f"mv1.{record['cid']}.{item['envelope']}"
        got = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth(clinician_token))
        assert got.status == 200 and await got.read() == data
        grants = await (await api.client.get(f"/v1/records/{record['id']}/grants",
                                             headers=api.auth(patient_token))).json()
        assert (clinician, item["envelope"]) in {(g["recipient"], g["envelope"]) for g in grants["items"]}
    resp = await api.client.get(f"/v1/records/{other['id']}", headers=api.auth(clinician_token))
    await assert_error(resp, 404, "record_not_found")  # only what was named is shared
    found = await (await api.client.get("/v1/records", headers=api.auth(clinician_token))).json()
    assert sorted(r["id"] for r in found["items"]) == sorted(r["id"] for r in records)


@pytest.mark.parametrize("records", ["a" * 26, {"id": "a" * 26}, None, [], ["a" * 26] * 1001, [1], ["a" * 26, 1]],
                         ids=["string", "object", "null", "empty", "1001", "number", "one-number"])
async def test_batch_grant_refuses_a_bad_list_whole(api, records):
    patient, patient_token = await api.principal("patient")
    clinician, _ = await api.principal("clinician")
    mine = await api.put(b"x", "text/plain", patient=patient)
    if isinstance(records, list) and records:
        records = [mine["id"] if r == "a" * 26 else r for r in records]  # real, shareable records beside the bad
    before = await _stored(api)
    resp = await _grant_many(api, patient_token, {"records": records, "recipient": clinician})
    await assert_error(resp, 400, "bad_records")
    assert await _stored(api) == before


@pytest.mark.parametrize("whose", ["unreadable", "read-only"])
async def test_batch_grant_with_a_record_the_caller_cannot_share_stores_nothing(api, whose):
    """The caller may share two of the three records; the third is someone
    else's (the caller cannot read it: 404) or one it only reads (a grantee,
    not patient or writer: 403). The whole batch is refused."""
    caller, caller_token = await api.principal("patient")
    clinician, clinician_token = await api.principal("clinician")
    own = [await api.put(f"own {i}".encode(), "text/plain", patient=caller) for i in range(2)]
    foreign = await api.put(b"someone else's", "text/plain")  # the owner's, patient unset
    if whose == "read-only":
        resp = await api.client.post(f"/v1/records/{foreign['id']}/grants", json={"recipient": caller},
                                     headers=api.auth())
        assert resp.status == 201, await resp.text()
    before = await _stored(api)
    resp = await _grant_many(api, caller_token,
                             {"records": [own[0]["id"], foreign["id"], own[1]["id"]], "recipient": clinician})
    if whose == "unreadable":
        await assert_error(resp, 404, "record_not_found")
    else:
        await assert_error(resp, 403, "not_owner")
    assert await _stored(api) == before  # no envelope, block, pin or grant entry (the denial is audited)
    for record in (*own, foreign):
        resp = await api.client.get(f"/v1/records/{record['id']}", headers=api.auth(clinician_token))
        await assert_error(resp, 404, "record_not_found")
