"""A searchset is served from the index's copy of each small FHIR resource
(issue 11's speed), and that copy is only ever served under the one access
rule: a live envelope of the caller's for the record's current manifest.
Happy paths next to the hostile ones: a revoked reader, a replaced version,
an erased record, a record imported without a copy."""
from __future__ import annotations

from indexer import audit, records

from .test_fhir_api import Fhir, observation


async def _copies(api, record_id: str) -> dict[str, bytes]:
    """manifest CID → kept copy, for one record."""
    return await api.vault.db.read(lambda conn: {r["cid"]: r["body"] for r in conn.execute(
        "SELECT cid, body FROM resource_copies WHERE record_id = ?", (record_id,))})


async def _cid(api, record_id: str) -> str:
    """The record's current manifest CID, as /v1 says."""
    resp = await api.client.get(f"/v1/records/{record_id}", headers=api.auth())
    assert resp.status == 200
    return (await resp.json())["cid"]


async def _search(fhir: Fhir, code: str) -> list[dict]:
    resp, doc = await fhir.call("GET", f"/fhir/Observation?code={code}")
    assert resp.status == 200, doc
    return [e["resource"] for e in doc.get("entry", [])]


async def test_a_searchset_comes_from_the_index_copy_and_every_read_is_audited(api, monkeypatch):
    fhir = Fhir(api)
    made = await fhir.create(observation("copy-1", "2024-01-02"))
    copies = await _copies(api, made["id"])
    assert list(copies) == [await _cid(api, made["id"])]

    async def no_opening(*args, **kwargs):
        raise AssertionError("a resource with a copy was opened")

    monkeypatch.setattr(api.vault.records._s, "open_version", no_opening)
    found = await _search(fhir, "copy-1")
    assert [r["id"] for r in found] == [made["id"]] and found[0]["meta"]["versionId"] == "1"
    for path in (f"/fhir/Observation/{made['id']}", f"/fhir/Observation/{made['id']}/_history/1"):
        resp, read = await fhir.call("GET", path)  # a read of the current version: the copy too
        assert resp.status == 200 and read["code"] == made["code"]
    await api.vault.db.flush_audit()  # read audits are staged, then chained (indexer/audit_stage.py)
    reads = [e for e in await api.vault.db.read(audit.entries)
             if e["action"] == "read" and e["record"] == made["id"]]
    assert len(reads) == 3 and {e["actor"] for e in reads} == {api.owner_did}


async def test_a_revoked_reader_gets_nothing_although_the_copy_stays(api):
    fhir = Fhir(api)
    made = await fhir.create(observation("copy-2", "2024-01-03"))
    reader_did, reader_token = await api.principal("reader", scopes=("read",))
    resp = await api.client.post(f"/v1/records/{made['id']}/grants", json={"recipient": reader_did},
                                 headers=api.auth())
    assert resp.status == 201
    reader = Fhir(api, reader_token)
    assert [r["id"] for r in await _search(reader, "copy-2")] == [made["id"]]

    resp = await api.client.delete(f"/v1/records/{made['id']}/grants/{reader_did}", params={"rotate": "false"},
                                   headers=api.auth())
    assert resp.status == 200
    assert await _copies(api, made["id"])  # the content did not change: its copy is still kept ...
    assert await _search(reader, "copy-2") == []  # ... and never served without a live envelope
    resp, _ = await reader.call("GET", f"/fhir/Observation/{made['id']}")
    assert resp.status == 404
    cid = await _cid(api, made["id"])
    envelopes, copies = await api.vault.db.read(records.live_contents, [cid], reader_did, "2024-01-01T00:00:00Z")
    assert envelopes == {} and copies == {}


async def test_a_new_version_replaces_the_copy_and_an_erase_removes_it(api):
    fhir = Fhir(api)
    made = await fhir.create(observation("copy-3", "2024-01-04", valueString="first"))
    resp, updated = await fhir.call("PUT", f"/fhir/Observation/{made['id']}",
                                    {**made, "valueString": "second", "meta": {}})
    assert resp.status == 200, updated
    current = await _cid(api, made["id"])
    copies = await _copies(api, made["id"])
    assert list(copies) == [current] and b"second" in copies[current] and b"first" not in copies[current]
    assert [r.get("valueString") for r in await _search(fhir, "copy-3")] == ["second"]

    resp, _ = await fhir.call("DELETE", f"/fhir/Observation/{made['id']}")
    assert resp.status == 204
    assert await _copies(api, made["id"]) == {}
    assert await _search(fhir, "copy-3") == []


async def test_a_resource_without_a_copy_is_opened_and_its_copy_kept(api):
    """Records imported from another node or restored by reindex have no copy: the first read makes one."""
    fhir = Fhir(api)
    made = await fhir.create(observation("copy-4", "2024-01-05", valueString="opened"))
    await api.vault.db.write(lambda conn: conn.execute("DELETE FROM resource_copies"))
    found = await _search(fhir, "copy-4")
    assert [r.get("valueString") for r in found] == ["opened"]
    copies = await _copies(api, made["id"])
    assert len(copies) == 1 and b"opened" in next(iter(copies.values()))


async def test_no_copy_is_kept_above_the_configured_size(api):
    api.vault.config.index_copy_max_bytes = 0
    fhir = Fhir(api)
    made = await fhir.create(observation("copy-5", "2024-01-06"))
    assert [r["id"] for r in await _search(fhir, "copy-5")] == [made["id"]]  # opened instead
    assert await _copies(api, made["id"]) == {}


async def test_copies_made_before_they_were_turned_off_are_neither_served_nor_kept(api, monkeypatch):
    """index_copy_max_bytes = 0 "turns copies off" (docs/DECISIONS.md), but
    only new versions obeyed it: every copy already in the index kept being
    served, and kept at rest, until its record changed."""
    fhir = Fhir(api)
    made = await fhir.create(observation("review-off", "2024-01-02"))
    assert await _copies(api, made["id"])
    api.vault.config.index_copy_max_bytes = 0
    opened = []
    real_open = api.vault.records._s.open_version

    async def counting(*args, **kwargs):
        opened.append(args[1]["id"])
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(api.vault.records._s, "open_version", counting)
    assert [r["id"] for r in await _search(fhir, "review-off")] == [made["id"]]
    assert opened == [made["id"]]  # opened with the envelope, not served from the old copy
    assert await _copies(api, made["id"]) == {}
