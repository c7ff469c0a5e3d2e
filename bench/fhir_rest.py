"""FHIR over medvault: /fhir search against the same /v1 search, and
transaction Bundles of 100 entries.

    python bench/fhir_rest.py [--bundles 20] [--runs 200] [--count 10]

(Not ``fhir.py``: tests put bench/ on sys.path, where that name would
shadow the ``fhir`` package fhir.resources lives in.)

Starts a real daemon (local backend), loads ``--bundles`` transaction
Bundles of 100 entries each (a Patient and 99 Observations referencing it
by ``urn:uuid``) through ``POST /fhir`` and times each commit; then runs
each search shape ``--runs`` times through both APIs over keep-alive HTTP
and prints p50/p99. The /v1 search answers record metadata; the /fhir one
also opens and returns each resource (decrypts it), which is the
difference measured. Asserts nothing about time; checks that both APIs
find the same records.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid

import aiohttp

from common import start_node

LOINC = "http://loinc.org"
CODES = [f"{2000 + i}-{i % 10}" for i in range(20)]


def transaction(n: int) -> dict:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": patient_url, "resource": {"resourceType": "Patient", "name": [{"family": f"Bench{n}"}]},
                "request": {"method": "POST", "url": "Patient"}}]
    for i in range(99):
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Observation"},
                        "resource": {"resourceType": "Observation", "status": "final",
                                     "code": {"coding": [{"system": LOINC, "code": CODES[i % len(CODES)]}]},
                                     "subject": {"reference": patient_url},
                                     "effectiveDateTime": f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10}",
                                     "valueQuantity": {"value": i, "unit": "mg/dL"}}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def timed(session: aiohttp.ClientSession, url: str, headers: dict, runs: int) -> tuple[list[float], dict]:
    samples, body = [], None
    for _ in range(runs):
        started = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 200, body
        samples.append((time.perf_counter() - started) * 1000)
    return samples, body


async def main(args) -> int:
    daemon, _, api, token = start_node()
    auth = {"Authorization": f"Bearer {token}"}
    fhir_headers = {**auth, "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    try:
        async with aiohttp.ClientSession() as session:
            commits, patients = [], []
            for n in range(args.bundles):
                body = json.dumps(transaction(n))
                started = time.perf_counter()
                async with session.post(f"{api}/fhir", data=body, headers=fhir_headers) as resp:
                    answer = await resp.json(content_type=None)
                    assert resp.status == 200, answer
                commits.append((time.perf_counter() - started) * 1000)
                patients.append(answer["entry"][0]["response"]["location"].split("/")[1])
            p50, p99 = percentiles(commits)
            print(f"transaction of 100 entries: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(commits)} Bundles "
                  f"({100 * len(commits) / (sum(commits) / 1000):.0f} resources/s)")
            count = args.count
            shapes = [
                ("code system|code", f"code={LOINC}|{CODES[3]}"),
                ("patient + code", f"patient=Patient/{patients[0]}&code={CODES[5]}"),
                ("code + date ge", f"code={CODES[7]}&date=ge2020"),
                ("patient, by date", f"patient=Patient/{patients[-1]}&_sort=date"),
            ]
            print(f"\n| shape ({count} per page) | /v1 p50 | /v1 p99 | /fhir p50 | /fhir p99 | Δp50 ms |")
            print("|---|---:|---:|---:|---:|---:|")
            for name, query in shapes:
                v1_query = query.replace("patient=Patient/", "subject=Patient/")
                v1, v1_body = await timed(session, f"{api}/v1/records?type=Observation&{v1_query}&_count={count}",
                                          auth, args.runs)
                fh, fh_body = await timed(session, f"{api}/fhir/Observation?{query}&_count={count}", fhir_headers,
                                          args.runs)
                same = [r["id"] for r in v1_body["items"]] == [e["resource"]["id"] for e in fh_body.get("entry", [])]
                if not same:
                    print(f"{name}: the two APIs found different records", file=sys.stderr)
                    return 1
                (a50, a99), (b50, b99) = percentiles(v1), percentiles(fh)
                print(f"| {name} | {a50:.2f} | {a99:.2f} | {b50:.2f} | {b99:.2f} | {b50 - a50:+.2f} |")
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--count", type=int, default=10)
    sys.exit(asyncio.run(main(parser.parse_args())))
