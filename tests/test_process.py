"""The real daemon process and CLI: a 64 MiB round trip, a crash mid-upload,
and no plaintext in any stored block or log line."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request


from .process import MEDVAULT, ROOT, download, run, run_json, upload

MiB = 1024 * 1024


def _block_files(data_dir: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(os.path.join(data_dir, "blocks")) for f in files]



def test_init_layout_and_refusal(node):
    data_dir, info, _ = node
    assert oct(os.stat(data_dir).st_mode & 0o777) == "0o700"
    assert info["token_file"] == os.path.join(os.path.abspath(data_dir), "owner.token")
    assert oct(os.stat(info["token_file"]).st_mode & 0o777) == "0o600"
    assert info["did"].startswith("did:key:z6Mk")
    again = run("init", "--data-dir", data_dir, check=False)
    assert again.returncode != 0 and b"refusing to overwrite" in again.stderr


def test_64mib_round_trip_then_crash_mid_upload(node, tmp_path):
    data_dir, _, daemon = node
    first = tmp_path / "first.bin"
    first.write_bytes(os.urandom(64 * MiB))
    record = run_json("put", str(first), "--data-dir", data_dir, "--title", "first")
    assert record["size"] == 64 * MiB
    out = tmp_path / "first.out"
    run("get", record["id"], "-o", str(out), "--data-dir", data_dir)
    assert out.read_bytes() == first.read_bytes()
    blocks_of_first = set(_block_files(data_dir))
    assert len(blocks_of_first) == 256 + 2  # chunks + manifest + envelope

    second = tmp_path / "second.bin"
    second.write_bytes(os.urandom(256 * MiB))
    upload = subprocess.Popen([*MEDVAULT, "put", str(second), "--data-dir", data_dir, "--title", "second"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_block_files(data_dir)) < len(blocks_of_first) + 20:  # the second upload is under way
        assert time.monotonic() < deadline and upload.poll() is None, "second upload did not start"
        time.sleep(0.02)
    daemon.kill()
    assert upload.wait(30) != 0  # the client saw the failure: nothing was acknowledged
    assert len(_block_files(data_dir)) > len(blocks_of_first)

    daemon.start()
    deadline = time.monotonic() + 30
    while set(_block_files(data_dir)) != blocks_of_first:  # the start-up sweep collects the orphans
        assert time.monotonic() < deadline, "orphaned blocks of the cut-off upload were not collected"
        time.sleep(0.1)
    found = run_json("search", "--data-dir", data_dir)
    assert [r["id"] for r in found["items"]] == [record["id"]]
    run("get", record["id"], "-o", str(out), "--data-dir", data_dir)
    assert out.read_bytes() == first.read_bytes()
    verify = run("search", "--data-dir", data_dir, "--q", "second")
    assert json.loads(verify.stdout)["items"] == []


def test_a_read_answered_just_before_a_crash_is_in_the_audit_after_restart(node):
    """Read audits are staged without waiting for their fsync
    (indexer/audit_stage.py): still committed before the reader is
    answered, so a killed daemon keeps them and chains them when it starts
    again (only a power loss within 0.1 s could lose one)."""
    data_dir, _, daemon = node
    api = open(os.path.join(data_dir, "api")).read().strip()
    token = open(os.path.join(data_dir, "owner.token")).read().strip()
    record = upload(api, token, b"read me once", "text/plain")
    assert download(api, token, record["id"]) == len(b"read me once")
    daemon.kill()
    daemon.start()
    api = open(os.path.join(data_dir, "api")).read().strip()  # a new port
    request = urllib.request.Request(f"{api}/v1/audit?record={record['id']}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        actions = [entry["action"] for entry in json.loads(resp.read())["items"]]
    assert "read" in actions, actions


def test_no_plaintext_marker_in_blocks_or_logs(node, tmp_path):
    data_dir, _, daemon = node
    marker = b"MARKER-Jane-Doe-1961-04-12-MRN-0042"
    body = (b"lorem ipsum " * 1000 + marker) * 300 + marker
    path = tmp_path / "note.txt"
    path.write_bytes(body)
    patient = run_json("principal", "add", "Jane Doe", "--data-dir", data_dir)["did"]
    record = run_json("put", str(path), "--data-dir", data_dir, "--patient", patient,
                      "--title", marker.decode(), "--tag", marker.decode()[:60])
    fhir = {"resourceType": "Patient", "name": [{"text": marker.decode()}], "birthDate": "1961-04-12"}
    fhir_path = tmp_path / "patient.fhir.json"
    fhir_path.write_text(json.dumps(fhir))
    run_json("put", str(fhir_path), "--data-dir", data_dir)
    run("get", record["id"], "-o", str(tmp_path / "back.txt"), "--data-dir", data_dir)
    assert (tmp_path / "back.txt").read_bytes() == body
    files = _block_files(data_dir)
    assert len(files) >= 5
    token = open(os.path.join(data_dir, "owner.token"), "rb").read().strip()
    for file in files:
        raw = open(file, "rb").read()
        assert marker not in raw and marker.lower() not in raw
        assert patient.encode() not in raw  # no patient identifier in any block either
        assert token not in raw
    daemon.stop()
    log = open(daemon.log_path, "rb").read()
    assert log and marker not in log and token not in log and patient.encode() not in log
    for line in log.splitlines():
        json.loads(line)  # every log line is JSON


def test_cli_errors_are_one_line_and_nonzero(node, tmp_path):
    data_dir, _, _ = node
    out = tmp_path / "x.out"
    result = run("get", "a" * 26, "-o", str(out), "--data-dir", data_dir, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and "record_not_found" in result.stderr.decode()
    assert sorted(os.listdir(tmp_path)) == ["daemon.log", "node"]  # no output file, not even a partial one


def test_sigterm_stops_cleanly(node):
    data_dir, _, daemon = node
    assert daemon.stop() == 0
    assert not os.path.exists(os.path.join(data_dir, "api"))


def test_put_detects_fhir_by_its_double_extension(node, tmp_path):
    """`.fhir.json` is FHIR (validated and indexed), not plain application/json."""
    data_dir, _, _ = node
    path = tmp_path / "obs.fhir.json"
    path.write_text(json.dumps({"resourceType": "Observation", "status": "final",
                                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}))
    record = run_json("put", str(path), "--data-dir", data_dir)
    assert record["content_type"] == "application/fhir+json" and record["type"] == "Observation"
    plain = tmp_path / "notes.json"
    plain.write_text("{}")
    assert run_json("put", str(plain), "--data-dir", data_dir)["content_type"] == "application/json"
