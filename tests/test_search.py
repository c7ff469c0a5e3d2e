"""Search semantics a health app can trust (issue 8): FHIR R4 data from a
generator nobody here wrote, answers computed independently in the test,
dates as instants with precision, parameters never silently ignored, plans
that start from the smallest set, and the benchmark's own answer check."""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import carebundle
import pytest

from daemon.config import Config
from daemon.node import init_data_dir
from daemon import search_params
from indexer import search
from indexer.db import connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import search as bench  # noqa: E402  (bench/search.py: generator and bulk loader)

FHIR = "application/fhir+json"


def _resources(seed: int) -> list[dict]:
    """One synthetic patient's resources, urn:uuid references rewritten to
    Type/id as a FHIR server would on a transaction."""
    bundle = json.loads(carebundle.to_json(carebundle.generate_bundle(seed=seed, reference_date=date(2026, 1, 1))))
    for i, entry in enumerate(bundle["entry"]):
        entry["resource"].setdefault("id", f"s{seed}-{i}")
    names = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    for urn, ref in names.items():
        text = text.replace(f'"{urn}"', json.dumps(ref))
    return json.loads(text)


def _instant(text: str) -> tuple[datetime, datetime]:
    """The test's own reading of a FHIR date: its first and last instant."""
    if len(text) == 4:
        start = datetime(int(text), 1, 1, tzinfo=timezone.utc)
        return start, start.replace(year=start.year + 1) - timedelta(milliseconds=1)
    if len(text) == 7:
        start = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=timezone.utc)
        nxt = start.replace(month=start.month % 12 + 1, year=start.year + (start.month == 12))
        return start, nxt - timedelta(milliseconds=1)
    if len(text) == 10:
        start = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
        return start, start + timedelta(days=1) - timedelta(milliseconds=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment, moment + timedelta(seconds=1) - timedelta(milliseconds=1)


def _codes(resource: dict) -> set[tuple[str, str]]:
    found = set()
    concepts = [resource.get(k) for k in ("code", "category", "type", "valueCodeableConcept")]
    concepts += [c.get("code") for c in resource.get("component", [])]
    for concept in concepts:
        for item in concept if isinstance(concept, list) else [concept]:
            for coding in (item or {}).get("coding", []):
                found.add((coding.get("system", ""), coding["code"]))
    return found


@pytest.fixture
async def loaded(api):
    """Three synthetic patients' records, posted one resource at a time."""
    stored = []
    for seed in (1, 2, 3):
        for resource in _resources(seed):
            resp = await api.client.post("/v1/records", data=json.dumps(resource).encode(),
                                         headers={**api.auth(), "Content-Type": FHIR})
            assert resp.status == 201, await resp.text()
            stored.append(((await resp.json())["id"], resource))
    return stored


async def _ids(api, params) -> set[str]:
    found, cursor = set(), None
    while True:
        page = await api.client.get("/v1/records", params=params + ([("cursor", cursor)] if cursor else []),
                                    headers=api.auth())
        assert page.status == 200, await page.text()
        body = await page.json()
        found |= {r["id"] for r in body["items"]}
        if not (cursor := body["next"]):
            return found


async def test_fhir_searches_match_answers_computed_independently(api, loaded):
    by_id = dict(loaded)
    observations = {i: r for i, r in loaded if r["resourceType"] == "Observation"}
    common = max({c for r in observations.values() for c in _codes(r)},
                 key=lambda c: sum(c in _codes(r) for r in observations.values()))
    system, code = common
    expect = {i for i, r in by_id.items() if common in _codes(r)}
    assert expect and await _ids(api, [("code", f"{system}|{code}")]) == expect
    assert await _ids(api, [("code", code)]) == {i for i, r in by_id.items() if code in {c for _, c in _codes(r)}}
    assert await _ids(api, [("code", f"http://not-that-system|{code}")]) == set()
    # a comma is OR, a repeated parameter AND
    other = sorted({c for r in observations.values() for c in _codes(r)} - {common})[0]
    either = {i for i, r in by_id.items() if _codes(r) & {common, other}}
    assert await _ids(api, [("code", f"{system}|{code},{other[0]}|{other[1]}")]) == either
    both = {i for i, r in by_id.items() if {common, other} <= _codes(r)}
    assert await _ids(api, [("code", f"{system}|{code}"), ("code", f"{other[0]}|{other[1]}")]) == both
    # references: the patient's FHIR id reaches every resource about them
    patient_ref = next(f"Patient/{r['id']}" for r in by_id.values() if r["resourceType"] == "Patient")
    about = {i for i, r in by_id.items() if (r.get("subject") or r.get("patient") or {}).get("reference") == patient_ref}
    assert about and await _ids(api, [("patient", patient_ref)]) == about
    # dates: the observations of one year, compared as instants
    year = sorted(r["effectiveDateTime"][:4] for r in observations.values() if "effectiveDateTime" in r)[0]
    lo, hi = _instant(year)
    in_year = {i for i, r in observations.items()
               if "effectiveDateTime" in r and _instant(r["effectiveDateTime"])[1] >= lo
               and _instant(r["effectiveDateTime"])[0] <= hi}
    assert in_year and await _ids(api, [("type", "Observation"), ("date", f"ge{year}"), ("date", f"le{year}")]) \
        == in_year
    assert await _ids(api, [("type", "Observation"), ("since", year), ("until", year)]) == in_year
    # identifiers, where the generator gives any
    idents = {(x.get("system", ""), x["value"]) for r in by_id.values() for x in r.get("identifier", [])}
    if idents:
        ident = sorted(idents)[0]
        assert await _ids(api, [("identifier", f"{ident[0]}|{ident[1]}")]) == {
            i for i, r in by_id.items() if ident in {(x.get("system", ""), x["value"]) for x in r.get("identifier", [])}}


@pytest.mark.parametrize("stored, params, hit", [
    ("2020-12-31T10:00:00Z", [("until", "2020-12-31")], True),  # a day covers its whole day
    ("2021-01-01T02:00:00+05:00", [("since", "2021-01-01T00:00:00Z")], False),  # 2020-12-31T21:00Z
    ("2021-01-01T02:00:00+05:00", [("until", "2020-12-31")], True),
    ("2021-03", [("date", "eq2021")], True),  # a month inside the year
    ("2021", [("date", "eq2021-03")], False),  # a year is not inside a month
    ("2021", [("date", "ge2021-03")], True),  # but overlaps what follows its start
    ("2021-05-01", [("date", "sa2021-04-30")], True),
    ("2021-05-01", [("date", "eb2021-05-01")], False),
    ("2021-05-01", [("date", "ne2021-05-01")], False),
    ("2021-05-01", [("date", "gt2021-04"), ("date", "lt2021-06")], True),
])
async def test_dates_compare_as_instants_with_precision(api, stored, params, hit):
    record = await api.put(b"x", "text/plain", date=stored)
    found = await _ids(api, params)
    assert (record["id"] in found) is hit


@pytest.mark.parametrize("params, code", [
    ([("subject", "did:key:z6MkBAD")], "bad_subject"),
    ([("since", "2021-13-45")], "bad_since"),
    ([("date", "ge2021-02-30")], "bad_date"),
    ([("frobnicate", "1")], "unknown_parameter"),
    ([("limit", "5"), ("limit", "6")], "bad_limit"),
    ([("_sort", "title")], "bad_sort"),
    ([("q", "a\x00b")], "bad_q"),
    ([("_count", "0")], "bad_count"),
])
async def test_bad_or_unknown_parameters_are_400_naming_them(api, params, code):
    resp = await api.client.get("/v1/records", params=params, headers=api.auth())
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == code


async def test_count_and_sort_by_date(api):
    written = [await api.put(b"x", "text/plain", date=d) for d in ("2021-05-01", "2019", "2024-01-02T03:04:05Z")]
    by_date = sorted(written, key=lambda r: r["date"])
    seen, cursor = [], None
    while True:
        resp = await api.client.get("/v1/records", params=[("_sort", "date"), ("_count", "1")]
                                    + ([("cursor", cursor)] if cursor else []), headers=api.auth())
        body = await resp.json()
        assert len(body["items"]) <= 1
        seen += [r["id"] for r in body["items"]]
        if not (cursor := body["next"]):
            break
    assert seen == [r["id"] for r in by_date]
    newest_first = await (await api.client.get("/v1/records", params={"_sort": "-date"}, headers=api.auth())).json()
    assert [r["id"] for r in newest_first["items"]] == [r["id"] for r in reversed(by_date)]
    wrong = await api.client.get("/v1/records", params={"_sort": "-date", "cursor": cursor or "x"}, headers=api.auth())
    assert wrong.status == 400


@pytest.fixture(scope="module")
def big_index(tmp_path_factory):
    """5,000 records loaded the way bench/search.py loads a million."""
    path = str(tmp_path_factory.mktemp("plans") / "node")
    info = asyncio.run(init_data_dir(Config(data_dir=path)))
    patients, rows = bench.generate(5000)
    clinician = bench.fake_did(random.Random(99))
    index = bench.node_index(path)
    bench.load(index, info["did"], clinician, patients, rows)
    conn = connect(*index)
    yield conn, info["did"], clinician, patients, rows
    conn.close()


@pytest.mark.parametrize("who, items, strategy, uses", [
    # access per candidate from one covering entry each (schema m006), never the record or envelope row
    ("owner", [], "walk:seq", "SEARCH e EXISTS USING COVERING INDEX envelopes_access (recipient=? AND manifest=?"),
    ("clinician", [], "set:envelopes", "envelopes_access (recipient=?)"),
    ("patient", [], "set:envelopes", "idx_records_cid"),
    ("owner", [("code", "1000-0")], "walk:code", "search_terms_value (kind=? AND value=?)"),
    ("owner", [("code", "http://loinc.org|1000-0")], "walk:code", "search_terms_system"),
    ("owner", [("q", bench.RARE)], "set:text", "records_fts"),
    ("owner", [("since", "2018-03-04"), ("until", "2018-03-04")], "set:date", "idx_records_date_lo_seq"),
    ("owner", [("patient", "PATIENT")], "set:ref", "(kind=? AND value=?)"),
    ("owner", [("code", "1000-0"), ("since", "2018-03"), ("until", "2018-03")], "set:code@date",
     "search_terms_dated (kind=? AND value=? AND date_lo>? AND date_lo<?)"),
])
def test_plans_start_from_the_smallest_set(big_index, who, items, strategy, uses):
    conn, owner, clinician, patients, _ = big_index
    caller = {"owner": owner, "clinician": clinician, "patient": patients[7]}[who]
    items = [(k, patients[7] if v == "PATIENT" else v) for k, v in items]
    query = search_params.parse(items, caller, "2026-06-01T00:00:00.000Z", False)
    chosen, sql, params = search.plan(conn, query)
    assert chosen == strategy
    steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    assert uses in " | ".join(steps)
    if chosen.startswith("set:"):  # never a walk over the records table
        assert not [s for s in steps if s in ("SCAN r", "SCAN records") or s.startswith("SCAN r USING")]
        # newest first: the set is walked as a sorted IN-list and stops when the page is full
        assert "USE TEMP B-TREE FOR ORDER BY" not in steps
    assert "USING COVERING INDEX records_probe" in " | ".join(steps) or chosen == "walk:date"
    assert not [s for s in steps if s.startswith("SEARCH e") and "COVERING INDEX envelopes_access" not in s]


def test_bench_builds_an_index_and_every_shape_answers_right(tmp_path):
    out = tmp_path / "search.json"
    result = subprocess.run([sys.executable, "bench/search.py", "--records", "20000", "--runs", "2", "--json",
                             str(out)], cwd=ROOT, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads(out.read_text())
    assert report["records"] == 20000 and report["wrong"] == []
    assert {"newest_owner", "by_patient", "by_code_system", "by_code_bare", "text_common", "text_rare", "date_day",
            "date_month", "date_year", "type_tag", "grants_50", "patient_own", "two_filters", "three_filters",
            "page_50"} <= set(report["shapes"])
    assert all(s["rows"] > 0 for s in report["shapes"].values())
