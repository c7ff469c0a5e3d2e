"""Search latency at scale: p50/p99 per query shape over a realistic index.

    python bench/search.py --records 1000000 [--json FILE] [--runs 40] [--keep DIR]

Builds a node (``medvault init`` layout) and bulk-loads ``--records``
synthetic FHIR Observations: 100 records per patient, an owner envelope
and a patient envelope on every record, 50 grants to one clinician. The
loader writes exactly the rows an ingest commit writes (record, version,
envelopes, roles, search terms, pin jobs, the audit entry) with the same
indexer functions (``indexer.records.save_version``, ``indexer.pins.want``,
``indexer.audit.append``), only without sealing content: search never
touches blocks. Then each query shape runs ``--runs`` times through the
engine (``vault.records.search``: parse, plan, run, render) and its answer
is checked against one computed independently in Python from the
generated data; a wrong answer exits 1. Prints a table; asserts no time.

``--keep DIR`` keeps the built node in DIR and reuses it on the next run
with the same ``--records`` (the data is generated from fixed seeds), so
a change to the planner or a new migration is measured without another
ten-minute build: opening the node applies any new migration first.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from daemon.auth import SCOPES, Caller  # noqa: E402
from daemon.config import Config  # noqa: E402
from daemon.identity import did_for  # noqa: E402
from daemon.masterkey import index_key  # noqa: E402
from daemon.node import close_vault, init_data_dir, open_vault, unlock  # noqa: E402
from indexer import audit, dates, pins, records  # noqa: E402
from indexer.db import connect  # noqa: E402

PER_PATIENT = 100
GRANTS = 50
LOINC = "http://loinc.org"
WORDS = ("glucose hemoglobin platelet sodium potassium creatinine cholesterol bilirubin albumin calcium "
         "ferritin lactate troponin insulin cortisol thyroid vitamin magnesium phosphate urea").split()
RARE = "zymogram"  # appears in one record in ten thousand
START = datetime(2015, 1, 1, tzinfo=timezone.utc)
DAYS = 10 * 365


def fake_did(rng: random.Random) -> str:
    return did_for(rng.randbytes(32))


def generate(count: int, seed: int = 7):
    """The synthetic records, in ingest order (seq = index + 1)."""
    rng = random.Random(seed)
    codes = [f"{1000 + i}-{i % 10}" for i in range(300)]
    weights = [1 / (rank + 1) for rank in range(len(codes))]  # Zipf-like: a few very common codes
    patients = [fake_did(rng) for _ in range(max(1, count // PER_PATIENT))]
    rows = []
    for n in range(count):
        code = rng.choices(codes, weights)[0]
        when = START + timedelta(days=rng.randrange(DAYS), seconds=rng.randrange(86400))
        words = rng.sample(WORDS, 3) + ([RARE] if n % 10_000 == 5 else [])
        rows.append({
            "n": n, "patient": patients[n % len(patients)], "code": code,
            "date": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "tags": ["lab"] if n % 3 else ["vitals"],
            "type": "Observation" if n % 10 else "DiagnosticReport",
            "title": f"{words[0]} panel", "text": " ".join(words),
        })
    return patients, rows


def node_index(data_dir: str) -> tuple[str, bytes]:
    """The node's index file and its key (the bench writes it directly)."""
    config = Config.load(data_dir)
    return config.index_path, index_key(unlock(config))


def granted_rows(count: int) -> set[int]:
    """The records granted to the clinician (fixed seed: the same on every run)."""
    return set(random.Random(11).sample(range(count), min(GRANTS, count)))


def load(index: tuple[str, bytes], owner: str, clinician: str, patients: list[str], rows: list[dict]) -> list[int]:
    """Writes every row as an ingest commit would; returns the records granted to the clinician."""
    conn = connect(*index)
    # Loading only: a big page cache for the random index inserts, and no
    # fsync per commit (the bench's index is thrown away; ingest keeps FULL).
    conn.execute("PRAGMA cache_size = -2000000")
    conn.execute("PRAGMA synchronous = OFF")
    granted = granted_rows(len(rows))
    now = "2026-01-01T00:00:00.000Z"
    conn.execute("BEGIN")
    for row in rows:
        rid = f"{row['n']:026d}".translate(str.maketrans("0123456789", "abcdefghij"))
        cid = f"bafymanifest{row['n']}"
        record = {"id": rid, "version": 1, "cid": cid, "patient": row["patient"], "type": row["type"],
                  "content_type": "application/fhir+json", "title": row["title"], "text": row["text"],
                  "subject": None, "date": row["date"], "tags": row["tags"], "size": 2048, "created": now,
                  "updated": now, "author": owner}
        envelopes = [{"cid": f"{cid}-{who}", "record_id": rid, "version": 1, "manifest": cid, "recipient": did,
                      "granter": owner, "role": role, "granted": now, "expires": None}
                     for who, did, role in (("a", owner, "author"), ("p", row["patient"], "patient"))]
        if row["n"] in granted:
            envelopes.append({"cid": f"{cid}-c", "record_id": rid, "version": 1, "manifest": cid,
                              "recipient": clinician, "granter": owner, "role": "grant", "granted": now,
                              "expires": None})
        records.save_version(conn, record, envelopes, [(LOINC, row["code"])],
                             roles=[(owner, "creator"), (row["patient"], "patient")])
        for c, kind in ((cid, "manifest"), *((e["cid"], "envelope") for e in envelopes)):
            pins.want(conn, c, rid, kind, 2, 3, now, "pinned", 1)
        audit.append(conn, now, owner, "write", rid, "ok", {"version": 1, "size": 2048})
        if row["n"] % 50_000 == 49_999:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sorted(granted)


def shapes(patients: list[str], rows: list[dict], owner: str, clinician: str) -> dict:
    """name → (caller, query items, expected predicate over a row)."""
    rng = random.Random(3)
    common = max(set(r["code"] for r in rows), key=lambda c: sum(1 for r in rows if r["code"] == c))
    patient = patients[len(patients) // 2]
    day = rows[len(rows) // 3]["date"][:10]
    month = rows[len(rows) // 3]["date"][:7]
    year = "2020"

    def in_range(row, since, until):
        lo, hi = dates.date_range(row["date"])
        return hi >= dates.date_range(since)[0] and lo <= dates.date_range(until)[1]

    del rng
    return {
        "newest_owner": (owner, [], lambda r: True),
        "by_patient": (owner, [("patient", patient)], lambda r: r["patient"] == patient),
        "by_code_system": (owner, [("code", f"{LOINC}|{common}")], lambda r: r["code"] == common),
        "by_code_bare": (owner, [("code", common)], lambda r: r["code"] == common),
        "text_common": (owner, [("q", "glucose")], lambda r: "glucose" in r["text"].split()),
        "text_rare": (owner, [("q", RARE)], lambda r: RARE in r["text"].split()),
        "date_day": (owner, [("since", day), ("until", day)], lambda r: in_range(r, day, day)),
        "date_month": (owner, [("since", month), ("until", month)], lambda r: in_range(r, month, month)),
        "date_year": (owner, [("since", year), ("until", year)], lambda r: in_range(r, year, year)),
        "type_tag": (owner, [("type", "DiagnosticReport"), ("tag", "vitals")],
                     lambda r: r["type"] == "DiagnosticReport" and "vitals" in r["tags"]),
        "grants_50": (clinician, [], "granted"),
        "patient_own": (patient, [], lambda r: r["patient"] == patient),
        "two_filters": (owner, [("code", common), ("since", month), ("until", month)],
                        lambda r: r["code"] == common and in_range(r, month, month)),
        "three_filters": (owner, [("patient", patient), ("code", common), ("since", "2018"), ("until", "2023")],
                          lambda r: r["patient"] == patient and r["code"] == common and in_range(r, "2018", "2023")),
    }


def expected_ids(rows: list[dict], predicate, granted: set[int], limit: int) -> list[int]:
    test = (lambda r: r["n"] in granted) if predicate == "granted" else predicate
    return [r["n"] for r in reversed(rows) if test(r)][:limit]


def row_number(record_id: str) -> int:
    return int(record_id.translate(str.maketrans("abcdefghij", "0123456789")))


async def build(data_dir: str, patients: list[str], rows: list[dict], clinician: str,
                keep: str | None) -> tuple[str, float | None]:
    """(the owner's did, build seconds or None when a kept node was reused)."""
    marker = os.path.join(data_dir, "bench-built.json")
    if keep and os.path.exists(marker):
        with open(marker) as handle:
            built = json.load(handle)
        if built["records"] == len(rows):
            return built["owner"], None
        shutil.rmtree(data_dir)
    info = await init_data_dir(Config(data_dir=data_dir))
    started = time.perf_counter()
    load(node_index(data_dir), info["did"], clinician, patients, rows)
    build_s = time.perf_counter() - started
    with open(marker, "w") as handle:
        json.dump({"records": len(rows), "owner": info["did"], "build_seconds": round(build_s, 1)}, handle)
    return info["did"], build_s


async def measure(args) -> dict:
    work = args.keep or tempfile.mkdtemp(prefix="mv-search-")
    try:
        data_dir = os.path.join(work, "node")
        patients, rows = generate(args.records)
        clinician = fake_did(random.Random(99))
        owner, build_s = await build(data_dir, patients, rows, clinician, args.keep)
        granted = granted_rows(len(rows))
        size = sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir)
                   if f.startswith("index.sqlite"))
        vault = await open_vault(Config.load(data_dir))
        results, wrong = {}, []
        try:
            for name, (did, items, predicate) in shapes(patients, rows, owner, clinician).items():
                caller = Caller(did, frozenset(SCOPES), "bench")
                limit = 100
                answer = await vault.records.search(caller, items)
                got = [row_number(r["id"]) for r in answer["items"]]
                if got != expected_ids(rows, predicate, granted, limit):
                    wrong.append(name)
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    await vault.records.search(caller, items)
                    times.append((time.perf_counter() - t0) * 1000)
                results[name] = {"p50_ms": round(statistics.median(times), 2),
                                 "p99_ms": round(sorted(times)[max(0, int(len(times) * 0.99) - 1)], 2),
                                 "rows": len(got)}
            caller = Caller(owner, frozenset(SCOPES), "bench")
            items, cursor = [("limit", "20")], None
            for _ in range(49):
                page = await vault.records.search(caller, items + ([("cursor", cursor)] if cursor else []))
                cursor = page["next"]
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                page = await vault.records.search(caller, items + [("cursor", cursor)])
                times.append((time.perf_counter() - t0) * 1000)
            got = [row_number(r["id"]) for r in page["items"]]
            if got != [r["n"] for r in reversed(rows)][49 * 20:50 * 20]:
                wrong.append("page_50")
            results["page_50"] = {"p50_ms": round(statistics.median(times), 2),
                                  "p99_ms": round(sorted(times)[max(0, int(len(times) * 0.99) - 1)], 2),
                                  "rows": len(got)}
        finally:
            await close_vault(vault)
        return {"records": args.records, "build_seconds": None if build_s is None else round(build_s, 1),
                "index_bytes": size, "shapes": results, "wrong": wrong}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--keep", metavar="DIR", help="keep the built node here and reuse it next time")
    args = parser.parse_args()
    report = asyncio.run(measure(args))
    built = "reused a kept build" if report["build_seconds"] is None else f"built in {report['build_seconds']} s"
    print(f"records {report['records']:,}; {built}; "
          f"index {report['index_bytes'] / 1e6:.0f} MB on disk; goal p99 <= 20 ms")
    print(f"{'shape':<16}{'p50 ms':>9}{'p99 ms':>9}{'rows':>7}")
    for name, figures in report["shapes"].items():
        print(f"{name:<16}{figures['p50_ms']:>9}{figures['p99_ms']:>9}{figures['rows']:>7}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    if report["wrong"]:
        print("WRONG ANSWERS: " + ", ".join(report["wrong"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
