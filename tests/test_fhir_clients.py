"""/fhir driven by a FHIR client nobody here wrote (fhirpy, from PyPI)
against a real ``medvault daemon`` process, and loaded with synthetic R4
data from another (carebundle) as transaction Bundles, then searched."""
from __future__ import annotations

import json
import os
from datetime import date

import carebundle
import pytest
import requests

from .fhir_check import check_r4

fhirpy = pytest.importorskip("fhirpy")
LOINC = "http://loinc.org"


@pytest.fixture
def server(node, monkeypatch):
    """The daemon's FHIR base and the owner's token; every FHIR answer the
    clients receive from it is also checked against R4 (fhirclient's models)."""
    real = requests.request
    checked = []

    def checking(method, url, **kwargs):
        resp = real(method, url, **kwargs)
        if resp.headers.get("Content-Type", "").startswith("application/fhir+json"):
            checked.append(check_r4(resp.json())["resourceType"])
        return resp

    monkeypatch.setattr(requests, "request", checking)
    monkeypatch.setattr(requests, "post", lambda url, **kw: checking("post", url, **kw))
    monkeypatch.setattr(requests, "get", lambda url, **kw: checking("get", url, **kw))
    yield from _server(node)
    assert checked, "no FHIR answer was checked"


def _server(node):
    data_dir, _, _ = node
    with open(os.path.join(data_dir, "api")) as handle:
        url = handle.read().strip()
    with open(os.path.join(data_dir, "owner.token")) as handle:
        token = handle.read().strip()
    yield f"{url}/fhir", f"Bearer {token}"


def test_fhirpy_creates_reads_searches_pages_updates_and_sends_a_transaction(server):
    base, auth = server
    client = fhirpy.SyncFHIRClient(base, authorization=auth)
    person = client.resource("Patient", name=[{"family": "Client"}], birthDate="1980-02-03")
    person.save()
    assert person.id and person["meta"]["versionId"] == "1"
    for day in range(1, 6):
        client.resource("Observation", status="final", code={"coding": [{"system": LOINC, "code": "8867-4"}]},
                        subject={"reference": f"Patient/{person.id}"},
                        effectiveDateTime=f"2024-03-0{day}", valueQuantity={"value": 60 + day, "unit": "/min"}).save()
    found = (client.resources("Observation").search(patient=person.id, code=f"{LOINC}|8867-4")
             .search(date="ge2024-03-02").sort("date").limit(2).fetch_all())  # three pages of next links
    assert [o["effectiveDateTime"] for o in found] == [f"2024-03-0{d}" for d in range(2, 6)]

    first = client.reference("Observation", found[0].id).to_resource()
    first["status"] = "amended"
    first.save()
    again = client.reference("Observation", found[0].id).to_resource()
    assert again["status"] == "amended" and again["meta"]["versionId"] == "2"

    lenient = fhirpy.SyncFHIRClient(base, authorization=auth, extra_headers={"Prefer": "handling=lenient"})
    assert lenient.resources("Observation").search(patient=person.id).count() == 5  # fhirpy adds _totalMethod
    with pytest.raises(fhirpy.base.exceptions.OperationOutcome):
        client.resources("Observation").search(patient=person.id).count()  # strict: an unknown parameter is a 400

    answer = client.execute("", data={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b8a5e2c-39a4-4d0c-9d0e-0a4c4b6f1a01", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:0b8a5e2c-39a4-4d0c-9d0e-0a4c4b6f1a01"},
                      "code": {"text": "asthma"}}, "request": {"method": "POST", "url": "Condition"}}]})
    check_r4(answer)
    new_patient = answer["entry"][0]["response"]["location"].split("/")[1]
    conditions = client.resources("Condition").search(subject=f"Patient/{new_patient}").fetch_all()
    assert [c["code"]["text"] for c in conditions] == ["asthma"]
    with pytest.raises(fhirpy.base.exceptions.ResourceNotFound):
        client.reference("Observation", "aaaaaaaaaaaaaaaaaaaaaaaaaa").to_resource()


def test_carebundle_transactions_load_and_search_like_the_data_says(server):
    base, auth = server
    headers = {"Authorization": auth, "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    client = fhirpy.SyncFHIRClient(base, authorization=auth)
    for seed in (3, 4):
        bundle = json.loads(carebundle.to_json(carebundle.generate_bundle(seed=seed, reference_date=date(2026, 1, 1))))
        resp = requests.post(base, data=json.dumps(bundle), headers=headers, timeout=120)
        assert resp.status_code == 200, resp.text[:2000]
        answer = check_r4(resp.json())
        assert len(answer["entry"]) == len(bundle["entry"])
        ids = {e["fullUrl"]: e2["response"]["location"].split("/_history")[0]
               for e, e2 in zip(bundle["entry"], answer["entry"])}
        patient = next(ids[e["fullUrl"]] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
        code = observations[0]["code"]["coding"][0]
        expected = sum(1 for o in observations if any((c.get("system"), c.get("code")) == (code["system"], code["code"])
                                                      for c in o["code"].get("coding", [])))
        hits = client.resources("Observation").search(patient=patient, code=f"{code['system']}|{code['code']}") \
            .limit(5).fetch_all()
        assert len(hits) == expected and all(h["subject"]["reference"] == patient for h in hits)
        everything = requests.get(f"{base}/{patient}/$everything", headers=headers, timeout=60)
        assert len(check_r4(everything.json())["entry"]) == len(bundle["entry"]) - 1  # all but the Practitioner
