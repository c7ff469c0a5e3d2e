"""/v1/records through the real app, real SQLite and the local block store."""
from __future__ import annotations

import json
import os

import pytest

FHIR_OBS = {
    "resourceType": "Observation", "status": "final",
    "subject": {"reference": "Patient/example"},
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}],
             "text": "Hemoglobin [Mass/volume] in Blood"},
    "effectiveDateTime": "2024-03-01T09:30:00Z",
    "valueQuantity": {"value": 13.2, "unit": "g/dL"},
}


async def test_upload_read_back_and_metadata(api):
    data = os.urandom(50_000)  # 13 chunks of 4 KiB
    record = await api.put(data, "image/png", title="Scan", tag="imaging")
    assert record["size"] == len(data) and record["version"] == 1
    assert record["content_type"] == "image/png" and record["tags"] == ["imaging"]
    assert record["pin"] == {"status": "pinned", "replicas": 1}
    assert record["cid"].startswith("bafy") and record["author"] == api.owner_did
    resp = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.read() == data
    resp = await api.client.get(f"/v1/records/{record['id']}", headers=api.auth())
    assert (await resp.json()) == record


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-0", 0, 0), ("bytes=4090-4100", 4090, 4100), ("bytes=8192-", 8192, 9999),
    ("bytes=-10", 9990, 9999), ("bytes=5000-999999", 5000, 9999)])
async def test_range_requests(api, header, start, end):
    data = os.urandom(10_000)
    record = await api.put(data)
    resp = await api.client.get(f"/v1/records/{record['id']}/content", headers={**api.auth(), "Range": header})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/10000"
    assert await resp.read() == data[start:end + 1]


async def test_unsatisfiable_range_is_416(api):
    record = await api.put(b"0123456789")
    resp = await api.client.get(f"/v1/records/{record['id']}/content", headers={**api.auth(), "Range": "bytes=10-"})
    assert resp.status == 416 and resp.headers["Content-Range"] == "bytes */10"
    assert (await resp.json())["error"]["code"] == "range_not_satisfiable"


async def test_fhir_is_validated_and_indexed(api):
    body = json.dumps(FHIR_OBS).encode()
    record = await api.put(body, "application/fhir+json")
    assert record["type"] == "Observation" and record["date"] == "2024-03-01T09:30:00Z"
    for query in ({"code": "718-7"}, {"code": "http://loinc.org|718-7"}, {"q": "hemoglobin"},
                  {"type": "Observation"}, {"since": "2024-01-01", "until": "2024-12-31"}):
        resp = await api.client.get("/v1/records", params=query, headers=api.auth())
        assert [r["id"] for r in (await resp.json())["items"]] == [record["id"]], query


@pytest.mark.parametrize("body,code", [(b"{not json", "invalid_record"), (b"[1,2]", "invalid_record"),
                                       (b'{"id": "x"}', "invalid_record"),
                                       (b'{"resourceType": "lowercase"}', "invalid_record")])
async def test_invalid_fhir_is_422_and_stores_nothing(api, body, code):
    resp = await api.client.post("/v1/records", data=body,
                                 headers={**api.auth(), "Content-Type": "application/fhir+json"})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == code
    assert (await (await api.client.get("/v1/records", headers=api.auth())).json())["items"] == []


async def test_search_pages_with_cursor(api):
    ids = [(await api.put(f"r{i}".encode(), "text/plain", title=f"note {i}"))["id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (await api.client.get("/v1/records", params=params, headers=api.auth())).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_search_by_patient_and_tag(api):
    patient, _ = await api.principal("patient")
    mine = await api.put(b"a", "text/plain", patient=patient, tag="cardio")
    await api.put(b"b", "text/plain", tag="cardio")
    page = await (await api.client.get("/v1/records", params={"patient": patient, "tag": "cardio"},
                                       headers=api.auth())).json()
    assert [r["id"] for r in page["items"]] == [mine["id"]]


async def test_a_search_page_is_audited_as_viewing_each_record_on_it(api):
    """A page shows titles and patients: the patient sees who looked, as for a
    GET of the record's metadata. A search that finds nothing is no view."""
    patient, patient_token = await api.principal("patient")
    clinician, clinician_token = await api.principal("clinician")
    record = await api.put(b"note", "text/plain", patient=patient, title="HIV test result")
    other = await api.put(b"other", "text/plain", title="unrelated")
    resp = await api.client.post(f"/v1/records/{record['id']}/grants", json={"recipient": clinician},
                                 headers=api.auth(patient_token))
    assert resp.status == 201, await resp.text()
    page = await (await api.client.get("/v1/records", headers=api.auth(clinician_token))).json()
    assert [r["id"] for r in page["items"]] == [record["id"]]
    stranger_did, stranger = await api.principal("stranger")
    assert (await (await api.client.get("/v1/records", headers=api.auth(stranger))).json())["items"] == []

    trail = await (await api.client.get("/v1/audit", params={"record": record["id"]},
                                        headers=api.auth(patient_token))).json()
    views = [e for e in trail["items"] if e["action"] == "view"]
    assert [(e["actor"], e["outcome"], e["detail"]) for e in views] == [(clinician, "ok", {"via": "search"})]
    everything = await (await api.client.get("/v1/audit", headers=api.auth())).json()
    assert not [e for e in everything["items"] if e["actor"] == stranger_did or
                (e["action"] == "view" and e["record"] == other["id"])]


async def test_new_version_keeps_readers_and_history(api):
    patient, patient_token = await api.principal("patient")
    v1 = await api.put(b"first", "text/plain", patient=patient, title="Letter")
    resp = await api.client.put(f"/v1/records/{v1['id']}", data=b"second version",
                                headers={**api.auth(), "Content-Type": "text/plain"})
    assert resp.status == 200
    v2 = await resp.json()
    assert v2["version"] == 2 and v2["cid"] != v1["cid"] and v2["title"] == "Letter"
    assert v2["created"] == v1["created"]
    # the patient's envelope was re-issued for the new version
    resp = await api.client.get(f"/v1/records/{v1['id']}/content", headers=api.auth(patient_token))
    assert await resp.read() == b"second version"
    resp = await api.client.get(f"/v1/records/{v1['id']}/versions", headers=api.auth(patient_token))
    versions = (await resp.json())["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert [v["cid"] for v in versions] == [v1["cid"], v2["cid"]]


async def test_erase_removes_record_and_its_blocks(api):
    record = await api.put(os.urandom(20_000), "application/pdf")
    blocks_dir = api.vault.config.blocks_dir
    count = sum(len(files) for _, _, files in os.walk(blocks_dir))
    assert count >= 5 + 2  # 5 chunks + manifest + envelope
    resp = await api.client.delete(f"/v1/records/{record['id']}", headers=api.auth())
    assert resp.status == 204
    for path in (f"/v1/records/{record['id']}", f"/v1/records/{record['id']}/content"):
        resp = await api.client.get(path, headers=api.auth())
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "record_not_found"
    assert sum(len(files) for _, _, files in os.walk(blocks_dir)) == 0
    pins = await api.vault.db.read(lambda c: c.execute("SELECT COUNT(*) FROM pins").fetchone()[0])
    assert pins == 0
    trail = await (await api.client.get("/v1/audit", params={"record": record["id"]}, headers=api.auth())).json()
    assert ("erase", "ok") in [(e["action"], e["outcome"]) for e in trail["items"]]  # the tombstone


async def test_other_principal_gets_404_on_record_and_content(api):
    record = await api.put(b"private", "text/plain")
    _, stranger = await api.principal("stranger")
    for method, path in (("GET", ""), ("GET", "/content"), ("GET", "/versions"), ("PUT", ""), ("DELETE", "")):
        resp = await api.client.request(method, f"/v1/records/{record['id']}{path}", data=b"x",
                                        headers={**api.auth(stranger), "Content-Type": "text/plain"})
        assert resp.status == 404, (method, path)
        assert (await resp.json())["error"]["code"] == "record_not_found"
    page = await (await api.client.get("/v1/records", headers=api.auth(stranger))).json()
    assert page["items"] == []
    trail = await (await api.client.get("/v1/audit", params={"record": record["id"]}, headers=api.auth())).json()
    assert {"denied"} <= {e["outcome"] for e in trail["items"]}


async def test_patient_reads_but_granted_reader_cannot_modify(api):
    patient, patient_token = await api.principal("patient")
    record = await api.put(b"note", "text/plain", patient=patient)
    rid = record["id"]
    resp = await api.client.get(f"/v1/records/{rid}/content", headers=api.auth(patient_token))
    assert await resp.read() == b"note"
    # a reader the patient granted, whose token has every scope a writer's has: reads, may not change
    reader, reader_token = await api.principal("reader", scopes=("read", "write", "share"))
    grant = await api.client.post(f"/v1/records/{rid}/grants", json={"recipient": reader},
                                  headers=api.auth(patient_token))
    assert grant.status == 201, await grant.text()
    resp = await api.client.get(f"/v1/records/{rid}/content", headers=api.auth(reader_token))
    assert resp.status == 200 and await resp.read() == b"note"
    for method in ("PUT", "DELETE"):
        resp = await api.client.request(method, f"/v1/records/{rid}", data=b"x",
                                        headers={**api.auth(reader_token), "Content-Type": "text/plain"})
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "not_owner", method
    resp = await api.client.post(f"/v1/records/{rid}/grants", json={"recipient": api.owner_did, "write": True},
                                 headers=api.auth(reader_token))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "not_owner"
    resp = await api.client.get(f"/v1/records/{rid}", headers=api.auth(patient_token))
    assert (await resp.json())["version"] == 1  # nothing the reader tried changed the record
    assert await (await api.client.get(f"/v1/records/{rid}/content", headers=api.auth(patient_token))).read() \
        == b"note"


async def test_wait_pinned_on_local_returns_pinned(api):
    resp = await api.client.post("/v1/records", data=b"x", params={"wait": "pinned"},
                                 headers={**api.auth(), "Content-Type": "text/plain"})
    assert resp.status == 201 and (await resp.json())["pin"]["status"] == "pinned"
