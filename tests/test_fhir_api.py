"""FHIR R4 REST at /fhir (issue 11), over HTTP against a real node (local
backend). Every JSON answer is checked against R4 by fhirclient's models
(tests/fhir_check.py), which the server does not use; each happy path has
its hostile twin next to it."""
from __future__ import annotations

import asyncio

import json
from datetime import datetime, timedelta, timezone

import pytest

from daemon.blockstore import local as local_store

from .fhir_check import check_r4

LOINC = "http://loinc.org"
FHIR_JSON = "application/fhir+json"


class Fhir:
    """Calls /fhir as one principal; every JSON answer must be valid R4."""

    def __init__(self, api, token: str | None = None):
        self.api, self.token = api, token

    async def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
                   content_type: str = FHIR_JSON, auth: bool = True):
        sent = {**(self.api.auth(self.token) if auth else {}), **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", content_type)
        resp = await self.api.client.request(method, path, data=data, headers=sent)
        text = await resp.text()
        doc = None
        if text:
            assert resp.headers["Content-Type"].startswith(FHIR_JSON), (resp.status, text[:300])
            doc = check_r4(json.loads(text))
        return resp, doc

    async def create(self, resource: dict) -> dict:
        resp, doc = await self.call("POST", f"/fhir/{resource['resourceType']}", resource)
        assert resp.status == 201, doc
        return doc


def observation(code: str, when: str, subject: str = "Patient/p1", **more) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": subject}, "effectiveDateTime": when, **more}


def patient(did: str | None = None, family: str = "Doe") -> dict:
    res = {"resourceType": "Patient", "name": [{"family": family}], "birthDate": "1970-01-01"}
    if did:
        res["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": did}]
    return res


def issue_code(doc: dict) -> str:
    assert doc["resourceType"] == "OperationOutcome"
    return doc["issue"][0]["details"]["coding"][0]["code"]


def later(days: int) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat(timespec="seconds")


async def test_metadata_is_an_r4_capability_statement_naming_security_and_only_served_types(api):
    fhir = Fhir(api)
    resp, cap = await fhir.call("GET", "/fhir/metadata", auth=False)
    assert resp.status == 200
    assert cap["fhirVersion"] == "4.0.1" and cap["format"][0] == "json"
    rest = cap["rest"][0]
    assert "read" in rest["security"]["description"] and "share" in rest["security"]["description"]
    types = {r["type"] for r in rest["resource"]}
    assert {"Observation", "Patient", "Consent", "AuditEvent", "Provenance"} <= types
    import fhirclient.models as r4
    import importlib
    for rtype in types:  # every type we claim is one R4 defines (fhirclient's modules are R4's)
        module = importlib.import_module(f"{r4.__name__}.{rtype.lower()}")
        assert hasattr(module, rtype)
    assert {i["code"] for i in rest["interaction"]} == {"batch", "transaction"}
    resp, doc = await fhir.call("GET", "/fhir/metadata?_format=xml", auth=False)
    assert resp.status == 406 and issue_code(doc) == "not_acceptable"
    resp, doc = await fhir.call("GET", "/fhir/metadata", headers={"Accept": "application/fhir+xml"}, auth=False)
    assert resp.status == 406


async def test_create_read_vread_update_with_if_match_history_and_delete(api):
    fhir = Fhir(api)
    created = await fhir.create(observation("1234-5", "2021-03-04"))
    rid = created["id"]
    assert created["meta"]["versionId"] == "1"
    resp, read = await fhir.call("GET", f"/fhir/Observation/{rid}")
    assert resp.status == 200 and resp.headers["ETag"] == 'W/"1"' and read == created
    # the same record through /v1: sealed and indexed like any FHIR upload
    v1 = await api.client.get(f"/v1/records/{rid}", headers=api.auth())
    assert (await v1.json())["content_type"] == FHIR_JSON and (await v1.json())["type"] == "Observation"
    content = await api.client.get(f"/v1/records/{rid}/content", headers=api.auth())
    assert json.loads(await content.read())["id"] == rid

    changed = {**read, "status": "amended"}
    resp, doc = await fhir.call("PUT", f"/fhir/Observation/{rid}", changed, headers={"If-Match": 'W/"1"'})
    assert resp.status == 200 and doc["meta"]["versionId"] == "2" and resp.headers["ETag"] == 'W/"2"'
    resp, doc = await fhir.call("PUT", f"/fhir/Observation/{rid}", changed, headers={"If-Match": 'W/"1"'})
    assert resp.status == 412 and issue_code(doc) == "version_mismatch"
    resp, doc = await fhir.call("PUT", f"/fhir/Observation/{rid}", changed, headers={"If-Match": "garbage"})
    assert resp.status == 400 and issue_code(doc) == "bad_if_match"
    resp, doc = await fhir.call("PUT", f"/fhir/Observation/{rid}", {**changed, "id": "someoneelse"})
    assert resp.status == 400 and issue_code(doc) == "id_mismatch"
    resp, doc = await fhir.call("PUT", f"/fhir/Condition/{rid}", {**changed, "resourceType": "Condition"})
    assert resp.status in (400, 422)
    resp, doc = await fhir.call("PUT", "/fhir/Observation/aaaaaaaaaaaaaaaaaaaaaaaaaa", {**changed, "id":
                                                                                        "aaaaaaaaaaaaaaaaaaaaaaaaaa"})
    assert resp.status == 404  # no update-as-create

    resp, v1_doc = await fhir.call("GET", f"/fhir/Observation/{rid}/_history/1")
    assert resp.status == 200 and v1_doc["status"] == "final" and v1_doc["meta"]["versionId"] == "1"
    resp, doc = await fhir.call("GET", f"/fhir/Observation/{rid}/_history/9")
    assert resp.status == 404
    resp, hist = await fhir.call("GET", f"/fhir/Observation/{rid}/_history")
    assert hist["type"] == "history" and [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]
    resp, prov = await fhir.call("GET", f"/fhir/Provenance?target=Observation/{rid}")
    assert [p["target"][0]["reference"] for p in (e["resource"] for e in prov["entry"])] == [
        f"Observation/{rid}/_history/1", f"Observation/{rid}/_history/2"]
    assert prov["entry"][0]["resource"]["signature"][0]["who"]["identifier"]["value"] == api.owner_did
    resp, one = await fhir.call("GET", f"/fhir/Provenance/{rid}-2")
    assert resp.status == 200 and one["recorded"] == doc_time(hist, "2")

    resp, _ = await fhir.call("GET", f"/fhir/Patient/{rid}")
    assert resp.status == 404  # an Observation is not a Patient
    pdf = await api.put(b"%PDF-1.7 " + b"x" * 100, "application/pdf", type="Observation")
    resp, doc = await fhir.call("GET", f"/fhir/Observation/{pdf['id']}")
    assert resp.status == 404  # a /v1 record that is not a FHIR resource is none here
    resp, found = await fhir.call("GET", "/fhir/Observation?_count=1000")
    assert pdf["id"] not in {e["resource"]["id"] for e in found["entry"]}
    resp, doc = await fhir.call("DELETE", f"/fhir/Observation/{rid}")
    assert resp.status == 204 and doc is None
    resp, doc = await fhir.call("GET", f"/fhir/Observation/{rid}")
    assert resp.status == 404 and doc["resourceType"] == "OperationOutcome"
    v1 = await api.client.get(f"/v1/records/{rid}", headers=api.auth())
    assert v1.status == 404  # erased for both APIs


def doc_time(history: dict, version: str) -> str:
    return next(e["resource"]["meta"]["lastUpdated"] for e in history["entry"]
                if e["resource"]["meta"]["versionId"] == version)


async def test_writes_that_are_not_valid_r4_are_refused_naming_the_element(api):
    fhir = Fhir(api)
    resp, doc = await fhir.call("POST", "/fhir/Observation", {"resourceType": "Observation", "code": {"text": "x"}})
    assert resp.status == 422 and doc["issue"][0]["expression"] == ["Observation.status"]
    resp, doc = await fhir.call("POST", "/fhir/Observation", {**observation("1", "2020"), "colour": "red"})
    assert resp.status == 422 and doc["issue"][0]["expression"] == ["Observation.colour"]
    resp, doc = await fhir.call("POST", "/fhir/Observation", {"resourceType": "Wizard", "status": "final"})
    assert resp.status == 422 and doc["issue"][0]["expression"] == ["resourceType"]
    resp, doc = await fhir.call("POST", "/fhir/Wizard", {"resourceType": "Wizard"})
    assert resp.status == 404 and issue_code(doc) == "unknown_resource_type"
    resp, doc = await fhir.call("POST", "/fhir/Observation", patient())
    assert resp.status == 400 and issue_code(doc) == "type_mismatch"
    resp, doc = await fhir.call("POST", "/fhir/Observation", raw=b"{not json")
    assert resp.status == 400
    resp, doc = await fhir.call("POST", "/fhir/Observation", raw=b"[1, 2]")
    assert resp.status == 422
    resp, doc = await fhir.call("POST", "/fhir/Observation", raw=b"[" * 100_000)
    assert resp.status == 400
    resp, doc = await fhir.call("POST", "/fhir/Observation", observation("1", "2020"), content_type="text/plain")
    assert resp.status == 415 and doc["issue"][0]["code"] == "not-supported"
    resp, doc = await fhir.call("POST", "/fhir/AuditEvent", {"resourceType": "AuditEvent"})
    assert resp.status in (400, 422)
    secret = "Jane-Secret-Name"
    resp, doc = await fhir.call("POST", "/fhir/Patient", {"resourceType": "Patient", "birthDate": secret})
    assert resp.status == 422 and secret not in json.dumps(doc)  # the value is never echoed
    # application/json with a resourceType is FHIR here: validated and indexed
    resp, doc = await fhir.call("POST", "/fhir/Observation", observation("json-1", "2020-01-01"),
                                content_type="application/json")
    assert resp.status == 201
    resp, found = await fhir.call("GET", "/fhir/Observation?code=json-1")
    assert found["total"] == 1
    resp = await api.client.get("/v1/records?limit=1000", headers=api.auth())
    assert len((await resp.json())["items"]) == 1  # nothing of the refused writes was stored


async def test_search_dates_tokens_references_paging_sort_and_count(api):
    fhir = Fhir(api)
    for i, (code, when, subject) in enumerate([("a", "2019-06-01", "Patient/p1"), ("a", "2020-06-01", "Patient/p1"),
                                               ("b", "2021-06-01", "Patient/p1"), ("a", "2022-06-01", "Patient/p2"),
                                               ("c", "2023-06-01", "Patient/p1")]):
        await fhir.create(observation(code, when, subject))
    await fhir.create(patient(family="Searchable"))

    async def ids(query: str, **headers) -> list[str]:
        resp, doc = await fhir.call("GET", f"/fhir/Observation?{query}", headers=headers)
        assert resp.status == 200, doc
        return [e["resource"]["effectiveDateTime"][:4] for e in doc.get("entry", [])]

    assert sorted(await ids(f"code={LOINC}|a")) == ["2019", "2020", "2022"]
    assert sorted(await ids("code=a,b&date=ge2020")) == ["2020", "2021", "2022"]
    assert sorted(await ids("code=a&date=ge2020&date=lt2022")) == ["2020"]
    assert sorted(await ids("patient=Patient/p1&code=a")) == ["2019", "2020"]
    assert sorted(await ids("patient=p2")) == ["2022"]
    assert sorted(await ids("subject=Patient/p1&date=sa2020-12-31")) == ["2021", "2023"]
    assert await ids("_sort=date&date=le2021") == ["2019", "2020", "2021"]
    assert await ids("_sort=-date") == ["2023", "2022", "2021", "2020", "2019"]
    assert await ids("code=http://other|a") == []

    seen, url, pages = [], "/fhir/Observation?_sort=date&_count=2", 0
    while url:
        resp, page = await fhir.call("GET", url)
        pages += 1
        seen += [e["resource"]["effectiveDateTime"][:4] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].split("://", 1)[1].partition("/")[2] if nxt else None
        url = f"/{url}" if url else None
    assert seen == ["2019", "2020", "2021", "2022", "2023"] and pages == 3

    resp, doc = await fhir.call("GET", "/fhir/Observation?_summary=count&code=a")
    assert doc["total"] == 3 and "entry" not in doc
    resp, doc = await fhir.call("GET", "/fhir/Observation?_count=100000")
    assert resp.status == 200 and doc["total"] == 5 and "_count=1000" in doc["link"][0]["url"]
    resp, doc = await fhir.call("POST", "/fhir/Observation/_search", raw=b"code=a&date=ge2020",
                                content_type="application/x-www-form-urlencoded")
    assert resp.status == 200 and doc["total"] == 2

    async def in_pieces():  # a form arriving in several segments is read whole, not its first piece
        for piece in (b"code=a", b"&date=", b"ge2020"):
            yield piece
            await asyncio.sleep(0.01)
    resp = await api.client.post("/fhir/Observation/_search", data=in_pieces(),
                                 headers={**api.auth(), "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200 and check_r4(await resp.json(content_type=None))["total"] == 2

    for bad in ("status=final", "code:text=a", "date=2020-13", "_sort=status", "_count=-1", "patient=Robert'); DROP",
                "_cursor=zzz", "date=" + "9" * 600):
        resp, doc = await fhir.call("GET", f"/fhir/Observation?{bad}")
        assert resp.status == 400, (bad, doc)
    resp, doc = await fhir.call("GET", "/fhir/Observation?status=final&code=a",
                                headers={"Prefer": "handling=lenient"})
    assert resp.status == 200 and doc["total"] == 3 and "status" not in doc["link"][0]["url"]
    resp, doc = await fhir.call("GET", "/fhir/Wizard?code=a")
    assert resp.status == 404


async def test_transaction_is_all_or_nothing_and_rewrites_urn_uuid_references(api):
    fhir = Fhir(api)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": patient(family="Tx"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
         "resource": observation("tx-1", "2024-01-02", "urn:uuid:11111111-1111-4111-8111-111111111111"),
         "request": {"method": "POST", "url": "Observation"}}]}
    resp, doc = await fhir.call("POST", "/fhir", bundle)
    assert resp.status == 200 and doc["type"] == "transaction-response"
    assert [e["response"]["status"] for e in doc["entry"]] == ["201 Created", "201 Created"]
    patient_id = doc["entry"][0]["response"]["location"].split("/")[1]
    resp, found = await fhir.call("GET", f"/fhir/Observation?patient=Patient/{patient_id}")
    assert found["total"] == 1 and found["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    resp, every = await fhir.call("GET", f"/fhir/Patient/{patient_id}/$everything")
    assert [e["resource"]["resourceType"] for e in every["entry"]] == ["Patient", "Observation"]

    before = await count_records(api)
    broken = json.loads(json.dumps(bundle))
    broken["entry"][1]["resource"]["status"] = None
    broken["entry"][1]["resource"].pop("status")
    resp, doc = await fhir.call("POST", "/fhir", broken)
    assert resp.status == 422 and doc["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert await count_records(api) == before  # the valid Patient before it was not stored either

    obs_id = found["entry"][0]["resource"]["id"]
    stale = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("tx-2", "2024-01-03"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": {**found["entry"][0]["resource"], "status": "amended"},
         "request": {"method": "PUT", "url": f"Observation/{obs_id}", "ifMatch": 'W/"7"'}}]}
    resp, doc = await fhir.call("POST", "/fhir", stale)
    assert resp.status == 412 and await count_records(api) == before

    overwrite = {"resourceType": "Bundle", "type": "transaction", "entry": [  # an Observation over the Patient
        {"resource": {**observation("tx-3", "2024-01-03"), "id": patient_id},
         "request": {"method": "PUT", "url": f"Observation/{patient_id}"}}]}
    resp, doc = await fhir.call("POST", "/fhir", overwrite)
    assert resp.status == 404 and await count_records(api) == before
    resp, still = await fhir.call("GET", f"/fhir/Patient/{patient_id}")
    assert still["meta"]["versionId"] == "1"

    for hostile in ({"resourceType": "Bundle", "type": "transaction", "entry": {"x": 1}},
                    {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient()}]},
                    {"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"request": {"method": "DELETE", "url": f"Observation/{obs_id}"}}]},
                    {"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"resource": patient(), "request": {"method": "POST", "url": "Observation"}}]},
                    {"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"resource": found["entry"][0]["resource"],
                         "request": {"method": "PUT", "url": f"Observation/{obs_id}", "ifMatch": 1}}]},
                    {"resourceType": "Bundle", "type": "collection"},
                    {"resourceType": "Patient"}):
        resp, doc = await fhir.call("POST", "/fhir", hostile)
        assert resp.status in (400, 422), (hostile, doc)
    assert await count_records(api) == before


async def count_records(api) -> int:
    resp = await api.client.get("/v1/records?limit=1000", headers=api.auth())
    return len((await resp.json())["items"])


async def test_batch_answers_each_entry_on_its_own(api):
    fhir = Fhir(api)
    kept = await fhir.create(observation("batch-0", "2020-01-01"))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": observation("batch-1", "2020-01-02"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": f"Observation/{kept['id']}"}},
        {"request": {"method": "GET", "url": "Observation?code=batch-0"}},
        {"request": {"method": "GET", "url": "Observation/aaaaaaaaaaaaaaaaaaaaaaaaaa"}},
        {"request": {"method": "DELETE", "url": f"Observation/{kept['id']}"}}]}
    resp, doc = await fhir.call("POST", "/fhir", bundle)
    assert resp.status == 200 and doc["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in doc["entry"]]
    assert statuses == ["201 Created", "422", "200 OK", "200 OK", "404", "204 No Content"]
    assert doc["entry"][2]["resource"]["id"] == kept["id"] and doc["entry"][3]["resource"]["total"] == 1


async def test_access_is_the_one_rule_and_scopes_map_to_interactions(api):
    fhir = Fhir(api)
    mine = await fhir.create(observation("private", "2020-01-01"))
    _, other_token = await api.principal("other")
    other = Fhir(api, other_token)
    resp, doc = await other.call("GET", f"/fhir/Observation/{mine['id']}")
    assert resp.status == 404 and issue_code(doc) == "record_not_found"
    resp, doc = await other.call("GET", "/fhir/Observation?code=private")
    assert resp.status == 200 and "entry" not in doc
    resp, doc = await other.call("PUT", f"/fhir/Observation/{mine['id']}", mine)
    assert resp.status == 404
    resp, doc = await other.call("DELETE", f"/fhir/Observation/{mine['id']}")
    assert resp.status == 404
    resp, doc = await other.call("GET", f"/fhir/Observation/{mine['id']}/_history")
    assert resp.status == 404

    _, reader_token = await api.principal("reader", scopes=("read",))
    reader = Fhir(api, reader_token)
    resp, doc = await reader.call("POST", "/fhir/Observation", observation("x", "2020"))
    assert resp.status == 403 and issue_code(doc) == "missing_scope"
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("x", "2020"), "request": {"method": "POST", "url": "Observation"}}]}
    resp, doc = await reader.call("POST", "/fhir", tx)
    assert resp.status == 403
    resp, doc = await reader.call("POST", "/fhir", {**tx, "type": "batch"})
    assert doc["entry"][0]["response"]["status"] == "403"
    resp, doc = await fhir.call("GET", "/fhir/Observation", headers={"Authorization": "Bearer mvt_nope"})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"


async def test_consent_grants_lists_and_revokes_with_rotation(api):
    fhir = Fhir(api)
    patient_did, patient_token = await api.principal("patient", scopes=("read", "write", "share"))
    doctor_did, doctor_token = await api.principal("doctor", scopes=("read",))
    person = await fhir.create(patient(patient_did, family="Consenting"))
    obs = await fhir.create(observation("consent-1", "2024-05-01", f"Patient/{person['id']}"))
    as_patient, as_doctor = Fhir(api, patient_token), Fhir(api, doctor_token)
    resp, _ = await as_patient.call("GET", f"/fhir/Observation/{obs['id']}")
    assert resp.status == 200  # the Observation is the patient's: sealed to them too
    resp, _ = await as_doctor.call("GET", f"/fhir/Observation/{obs['id']}")
    assert resp.status == 404

    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": f"Patient/{person['id']}"},
               "provision": {"type": "permit", "period": {"end": later(30)},
                             "actor": [{"role": {"text": "recipient"},
                                        "reference": {"identifier": {"system": "urn:ietf:rfc:3986",
                                                                     "value": doctor_did}}}]}}
    resp, doc = await as_doctor.call("POST", "/fhir/Consent", consent)
    assert resp.status == 403  # no share scope
    no_actor = json.loads(json.dumps(consent))
    no_actor["provision"]["actor"] = []
    resp, doc = await as_patient.call("POST", "/fhir/Consent", no_actor)
    assert resp.status == 422
    past = json.loads(json.dumps(consent))
    past["provision"]["period"]["end"] = "2001-01-01"
    resp, doc = await as_patient.call("POST", "/fhir/Consent", past)
    assert resp.status == 400

    resp, made = await as_patient.call("POST", "/fhir/Consent", consent)
    assert resp.status == 201, made
    granted = {d["reference"]["reference"] for d in made["provision"]["data"]}
    assert f"Observation/{obs['id']}" in granted
    resp, seen = await as_doctor.call("GET", f"/fhir/Observation/{obs['id']}")
    assert resp.status == 200 and seen["code"]["coding"][0]["code"] == "consent-1"
    resp, listed = await as_patient.call("GET", f"/fhir/Consent?patient=Patient/{person['id']}")
    assert [e["resource"]["id"] for e in listed["entry"]] == [made["id"]]

    resp, _ = await as_patient.call("DELETE", f"/fhir/Consent/{made['id']}")
    assert resp.status == 204
    resp, _ = await as_doctor.call("GET", f"/fhir/Observation/{obs['id']}")
    assert resp.status == 404
    resp, rotated = await fhir.call("GET", f"/fhir/Observation/{obs['id']}")
    assert rotated["meta"]["versionId"] == "2"  # re-encrypted under a new key for the remaining readers
    resp, listed = await as_patient.call("GET", f"/fhir/Consent?patient=Patient/{person['id']}")
    assert "entry" not in listed


async def test_audit_events_by_entity_and_agent_mark_break_glass(api):
    fhir = Fhir(api)
    obs = await fhir.create(observation("audited", "2024-01-01"))
    await fhir.call("GET", f"/fhir/Observation/{obs['id']}")
    medic_did, medic_token = await api.principal("medic", scopes=("read", "emergency"))
    resp = await api.client.post(f"/v1/records/{obs['id']}/emergency", json={"reason": "unconscious in the ER"},
                                 headers=api.auth(medic_token))
    assert resp.status == 201
    resp, doc = await fhir.call("GET", f"/fhir/AuditEvent?entity=Observation/{obs['id']}")
    events = [e["resource"] for e in doc["entry"]]
    actions = [e["subtype"][0]["code"] for e in events]
    assert "write" in actions and "read" in actions and "break_glass" in actions
    glass = next(e for e in events if e["subtype"][0]["code"] == "break_glass")
    assert glass["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    resp, doc = await fhir.call("GET", f"/fhir/AuditEvent?agent={medic_did}")
    assert {e["resource"]["agent"][0]["who"]["identifier"]["value"] for e in doc["entry"]} == {medic_did}
    resp, doc = await fhir.call("GET", "/fhir/AuditEvent?entity=not a record")
    assert resp.status == 400
    _, stranger = await api.principal("stranger", scopes=("read",))
    resp, doc = await Fhir(api, stranger).call("GET", f"/fhir/AuditEvent?entity=Observation/{obs['id']}")
    assert resp.status == 404  # a record's trail needs read access to it


async def test_a_rotated_away_version_is_gone(api):
    fhir = Fhir(api)
    reader_did, _ = await api.principal("reader")
    obs = await fhir.create(observation("rot", "2024-01-01"))
    resp = await api.client.post(f"/v1/records/{obs['id']}/grants", json={"recipient": reader_did},
                                 headers=api.auth())
    assert resp.status == 201
    resp = await api.client.delete(f"/v1/records/{obs['id']}/grants/{reader_did}", headers=api.auth())
    assert resp.status == 200
    resp, doc = await fhir.call("GET", f"/fhir/Observation/{obs['id']}/_history/1")
    assert resp.status == 410 and doc["issue"][0]["code"] == "deleted"
    resp, hist = await fhir.call("GET", f"/fhir/Observation/{obs['id']}/_history")
    assert ["resource" in e for e in hist["entry"]] == [True, False]


@pytest.mark.parametrize("path", ["/fhir/Observation/x", "/fhir/Observation/" + "a" * 26 + "/_history/0",
                                  "/fhir/Provenance/nope", "/fhir/Patient/" + "a" * 26 + "/$everything"])
async def test_unknown_ids_are_404_operation_outcomes(api, path):
    resp, doc = await Fhir(api).call("GET", path)
    assert resp.status == 404 and doc["resourceType"] == "OperationOutcome"


async def test_a_transaction_of_100_entries_is_one_index_commit_with_one_durability_wait(api, monkeypatch):
    fhir = Fhir(api)
    existing = await fhir.create(patient(family="Existing"))
    vault, calls = api.vault, {"write": 0, "read audit": 0, "sync": 0}

    def spy(name, real):
        async def counted(*args, **kwargs):
            calls[name] += 1
            return await real(*args, **kwargs)
        return counted

    entries = [{"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000000", "resource": patient(family="New"),
                "request": {"method": "POST", "url": "Patient"}}]
    for i in range(99):  # half to the new Patient by urn:uuid, half to the existing one
        subject = entries[0]["fullUrl"] if i % 2 else f"Patient/{existing['id']}"
        entries.append({"resource": observation(f"c{i}", "2024-01-01", subject),
                        "request": {"method": "POST", "url": "Observation"}})
    monkeypatch.setattr(vault.db, "write", spy("write", vault.db.write))
    monkeypatch.setattr(vault.db, "audit_reads", spy("read audit", vault.db.audit_reads))
    # The durability wait itself: the local store's syncfs (since its
    # put_protected joins the group commit without calling sync()).
    real_sync = local_store.sync_filesystem

    def counted_sync(root):
        calls["sync"] += 1
        real_sync(root)

    monkeypatch.setattr(local_store, "sync_filesystem", counted_sync)
    resp, doc = await fhir.call("POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert resp.status == 200 and len(doc["entry"]) == 100
    # one durable commit for the 100 records; the audit entry of looking up
    # the existing Patient once is a read's (staged, indexer/audit_stage.py)
    assert calls == {"write": 1, "read audit": 1, "sync": 1}
    monkeypatch.undo()
    resp, found = await fhir.call("GET", f"/fhir/Observation?patient=Patient/{existing['id']}&_summary=count")
    assert found["total"] == 50


async def test_deeply_nested_bodies_are_400_not_500(api):
    fhir = Fhir(api)
    deep: dict = {"text": "x"}
    for _ in range(200):
        deep = {"extension": [{"url": "urn:x", "valueCodeableConcept": deep}]}
    for path, body in (("/fhir/Observation", {**observation("d", "2020"), **deep}),
                       ("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
                           {"resource": {**observation("d", "2020"), **deep},
                            "request": {"method": "POST", "url": "Observation"}}]})):
        resp, doc = await fhir.call("POST", path, body)
        assert resp.status == 400 and issue_code(doc) == "bad_json"


@pytest.mark.parametrize("host", ["a:b:c", "", "x/y", "evil.example/path?", "a b"])
async def test_a_malformed_host_is_neither_a_500_nor_reflected_into_links(api, host):
    resp, doc = await Fhir(api).call("GET", "/fhir/Observation", headers={"Host": host})
    assert resp.status == 200 and doc["link"][0]["url"].startswith("http://127.0.0.1:")



async def test_everything_says_when_it_left_resources_out(api, monkeypatch):
    from api.fhir import query
    fhir = Fhir(api)
    person = await fhir.create(patient(family="Many"))
    for day in range(1, 5):
        await fhir.create(observation("many", f"2024-01-0{day}", f"Patient/{person['id']}"))
    monkeypatch.setattr(query, "MAX_EVERYTHING", 2)
    monkeypatch.setattr(query, "MAX_PAGE", 2)
    resp, doc = await fhir.call("GET", f"/fhir/Patient/{person['id']}/$everything")
    assert resp.status == 200 and "total" not in doc
    assert [e["resource"]["resourceType"] for e in doc["entry"]] == [
        "Patient", "Observation", "Observation", "OperationOutcome"]
    assert doc["entry"][-1]["search"]["mode"] == "outcome"


async def test_a_stored_resource_with_a_non_object_meta_does_not_turn_searches_into_500(api):
    """/v1 accepts application/fhir+json bodies checked only by fhir.summarize
    (and imports are not checked at all), so a stored resource may carry a
    "meta" that is not an object. with_meta then raised TypeError/ValueError:
    every searchset, read and $everything holding that record answered 500,
    for every reader it was shared with."""
    fhir = Fhir(api)
    body = {**observation("review-meta", "2024-01-02"), "meta": "ab"}
    resp = await api.client.post("/v1/records", data=json.dumps(body).encode(),
                                 headers={**api.auth(), "Content-Type": "application/fhir+json"})
    assert resp.status == 201, await resp.text()
    rid = (await resp.json())["id"]
    resp, doc = await fhir.call("GET", "/fhir/Observation?code=review-meta")
    assert resp.status == 200, doc
    assert [e["resource"]["meta"]["versionId"] for e in doc["entry"]] == ["1"]
    resp, doc = await fhir.call("GET", f"/fhir/Observation/{rid}")
    assert resp.status == 200, doc
