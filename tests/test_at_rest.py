"""Nothing readable from a copied data dir (issue 10), from outside: the real
daemon with a passphrase file, every file of its data dir scanned for every
marker and the patient's did in UTF-8 and UTF-16 (LE and BE); a wrong
passphrase changes nothing; rekey; the demo setup says where its key is."""
from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request

from .process import Daemon, run, run_json

ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")


def _markers(tag: str) -> dict[str, str]:
    return {"title": f"QX{tag}TITLE-Zanzibar-Okonkwo", "tag": f"qx{tag}tag-okapi",
            "narrative": f"QX{tag}NARR-Wilhelmina-Vandersloot", "code": f"QX{tag}CODE-99173",
            "display": f"QX{tag}DISPLAY-Hyperquuxemia", "subject": f"QX{tag}SUBJ-Ostrowski"}


def _fhir(m: dict[str, str]) -> bytes:
    return json.dumps({
        "resourceType": "Observation", "status": "final",
        "text": {"status": "generated", "div": f"<div xmlns=\"http://www.w3.org/1999/xhtml\">{m['narrative']}</div>"},
        "subject": {"reference": f"Patient/{m['subject']}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": m["code"], "display": m["display"]}],
                 "text": m["display"]},
        "effectiveDateTime": "2024-03-01T09:30:00Z", "valueQuantity": {"value": 13.2, "unit": "g/dL"},
    }).encode()


def _found(data_dir: str, needles: list[str]) -> list[tuple[str, str, str]]:
    """(file, needle, encoding) for every needle in any file's content or name."""
    hits = []
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                raw = open(path, "rb").read()
            except FileNotFoundError:  # a temp file gone meanwhile
                continue
            for needle in needles:
                if needle in path:
                    hits.append((path, needle, "name"))
                for encoding in ENCODINGS:
                    if needle.encode(encoding) in raw or needle.lower().encode(encoding) in raw:
                        hits.append((path, needle, encoding))
    return hits


def _http(data_dir: str, method: str, path: str) -> tuple[int, dict | None]:
    api = open(os.path.join(data_dir, "api")).read().strip()
    token = open(os.path.join(data_dir, "owner.token")).read().strip()
    request = urllib.request.Request(api + path, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _put(data_dir: str, tmp_path, m: dict[str, str], patient: str) -> dict:
    path = tmp_path / f"{m['code']}.fhir.json"
    path.write_bytes(_fhir(m))
    return run_json("put", str(path), "--data-dir", data_dir, "--content-type", "application/fhir+json",
                    "--patient", patient, "--title", m["title"], "--tag", m["tag"])


def _passphrase(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def _snapshot(data_dir: str) -> dict[str, tuple[int, int, str]]:
    out = {}
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(root, name)
            stat = os.stat(path)
            out[path] = (stat.st_mtime_ns, stat.st_size, hashlib.sha256(open(path, "rb").read()).hexdigest())
    return out


def test_a_copied_data_dir_shows_no_marker_and_no_patient(tmp_path):
    secret = _passphrase(tmp_path, "passphrase", "correct horse battery staple")
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir, "--passphrase-file", secret)
    assert not os.path.exists(os.path.join(data_dir, "master.key"))
    daemon = Daemon(data_dir, os.path.join(data_dir, "daemon.log"), ("--passphrase-file", secret)).start()
    try:
        patient = run_json("principal", "add", "QXPATIENT-Ostrowska Jadwiga", "--data-dir", data_dir)["did"]
        kept, erased = _markers("KEEP"), _markers("GONE")
        _put(data_dir, tmp_path, kept, patient)
        doomed = _put(data_dir, tmp_path, erased, patient)
        found = run_json("search", "--data-dir", data_dir, "--q", erased["narrative"].split("-")[0])
        assert [r["id"] for r in found["items"]] == [doomed["id"]]  # the narrative was indexed
        status, _ = _http(data_dir, "DELETE", f"/v1/records/{doomed['id']}")
        assert status == 204
        deadline = time.monotonic() + 5  # while the daemon runs: gone from every file within seconds
        while hits := _found(data_dir, list(erased.values())):
            assert time.monotonic() < deadline, hits
            time.sleep(0.2)
        status, health = _http(data_dir, "GET", "/v1/health")
        assert health["key_storage"] == "passphrase"
    finally:
        assert daemon.stop() == 0
    assert os.path.getsize(os.path.join(data_dir, "daemon.log")) > 0  # the scan covers our own log
    needles = [*kept.values(), *erased.values(), "QXPATIENT-Ostrowska", patient, patient.rsplit(":", 1)[-1]]
    assert _found(data_dir, needles) == []


def test_a_wrong_passphrase_exits_2_and_changes_nothing(tmp_path):
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir, "--passphrase-file", _passphrase(tmp_path, "right", "right one"))
    before = _snapshot(data_dir)
    for args in (("--passphrase-file", _passphrase(tmp_path, "wrong", "wrong one")), ()):
        result = run("daemon", "--data-dir", data_dir, "--listen", "127.0.0.1:0", *args, check=False, timeout=60,
                     env={**os.environ, "MEDVAULT_PASSPHRASE": "", "MEDVAULT_PASSPHRASE_FILE": ""})
        assert result.returncode == 2
        message = result.stderr.decode()
        assert message.count("\n") == 1 and message.startswith("medvault: ") and "passphrase" in message
        assert "right one" not in message and "wrong one" not in message
        assert _snapshot(data_dir) == before  # no lock file, no api file, no index touched


def test_rekey_keeps_the_records_and_retires_the_old_passphrase(tmp_path):
    old = _passphrase(tmp_path, "old", "old passphrase")
    new = _passphrase(tmp_path, "new", "a new and longer passphrase")
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir, "--passphrase-file", old)
    daemon = Daemon(data_dir, str(tmp_path / "daemon.log"), ("--passphrase-file", old)).start()
    try:
        note = tmp_path / "note.txt"
        note.write_bytes(b"kept across a rekey")
        record = run_json("put", str(note), "--data-dir", data_dir, "--title", "rekeyed")
        busy = run("rekey", "--data-dir", data_dir, "--passphrase-file", old, "--new-passphrase-file", new,
                   check=False)
        assert busy.returncode != 0 and b"stop it" in busy.stderr
    finally:
        daemon.stop()
    keys_before = {p: v for p, v in _snapshot(data_dir).items() if "/keys/" in p or p.endswith("index.sqlite")}
    assert run_json("rekey", "--data-dir", data_dir, "--passphrase-file", old,
                    "--new-passphrase-file", new) == {"key_storage": "passphrase"}
    after = _snapshot(data_dir)
    assert all(after[p] == v for p, v in keys_before.items())  # nothing re-encrypted: only config.json changed
    refused = run("daemon", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--passphrase-file", old,
                  check=False, timeout=60)
    assert refused.returncode == 2
    daemon = Daemon(data_dir, str(tmp_path / "daemon2.log"), ("--passphrase-file", new)).start()
    try:
        out = tmp_path / "back.txt"
        run("get", record["id"], "-o", str(out), "--data-dir", data_dir)
        assert out.read_bytes() == b"kept across a rekey"
    finally:
        daemon.stop()
    before = _snapshot(data_dir)
    assert run("reindex", "--data-dir", data_dir, "--passphrase-file", old, check=False).returncode == 2
    assert _snapshot(data_dir) == before  # the index was not moved aside for a key that cannot open it
    assert run_json("reindex", "--data-dir", data_dir, "--passphrase-file", new)["records"] == 1


def test_the_demo_setup_says_its_key_is_beside_the_data_and_rekey_moves_it(tmp_path):
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir)  # what `make run` does: no passphrase
    assert os.path.exists(os.path.join(data_dir, "master.key"))
    log = tmp_path / "daemon.log"
    daemon = Daemon(data_dir, str(log)).start()
    try:
        status, health = _http(data_dir, "GET", "/v1/health")
        assert status == 200 and health["key_storage"] == "beside-data"
    finally:
        daemon.stop()
    warnings = [line for line in log.read_text().splitlines() if "master key file is in the data dir" in line]
    assert len(warnings) == 1 and json.loads(warnings[0])["level"].lower().startswith("warn")

    key_file = str(tmp_path / "outside" / "master.key")
    os.makedirs(os.path.dirname(key_file), mode=0o700)
    assert run_json("rekey", "--data-dir", data_dir, "--new-key-file", key_file) == {"key_storage": "key-file"}
    assert not os.path.exists(os.path.join(data_dir, "master.key"))  # no key left beside the data
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    inside = run("rekey", "--data-dir", data_dir, "--key-file", key_file,
                 "--new-key-file", os.path.join(data_dir, "k"), check=False)
    assert inside.returncode == 2 and b"outside the data dir" in inside.stderr
    daemon = Daemon(data_dir, str(tmp_path / "daemon2.log"), ("--key-file", key_file)).start()
    try:
        assert _http(data_dir, "GET", "/v1/health")[1]["key_storage"] == "key-file"
    finally:
        daemon.stop()
