"""The contract checked from outside: /openapi.json passes an independent
validator, and schemathesis, run against a real ``medvault daemon`` with the
owner's token over every operation, finds no server error, no undocumented
status or media type, no response off its schema and no invalid input the
server accepted."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from api.openapi import document

from .ipfs import missing
from .process import ROOT, Daemon, run_json

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "negative_data_rejection")
# Bounded so `make test` stays quick on two cores (~25 s); raise it to hunt (300: ~4 min, ~8,700 cases).
MAX_EXAMPLES = int(os.environ.get("MEDVAULT_CONTRACT_EXAMPLES", "30"))


def test_openapi_document_passes_the_spec_validator():
    try:
        from openapi_spec_validator import OpenAPIV30SpecValidator
    except ImportError:
        missing("openapi-spec-validator is not installed: make venv")
    errors = [e.message for e in OpenAPIV30SpecValidator(document()).iter_errors()]
    assert errors == []


def test_every_operation_is_documented_with_its_errors():
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["responses"], (method, path)
            assert all("description" in r or "$ref" in r for r in op["responses"].values()), (method, path)
            if op["security"]:
                assert {"401", "403"} <= set(op["responses"]), (method, path)


@pytest.fixture
def live_daemon(tmp_path):
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir)
    daemon = Daemon(data_dir, str(tmp_path / "daemon.log")).start()
    with open(os.path.join(data_dir, "api")) as handle:
        url = handle.read().strip()
    with open(os.path.join(data_dir, "owner.token")) as handle:
        token = handle.read().strip()
    yield url, token
    daemon.stop()


def test_schemathesis_finds_nothing_against_a_live_daemon(live_daemon, tmp_path):
    # One worker: on Python 3.11 before 3.11.8, hypothesis's ast.parse in two threads at
    # once can raise "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905).
    url, token = live_daemon
    st = os.path.join(os.path.dirname(sys.executable), "st")
    if not os.path.exists(st):
        missing("schemathesis is not installed: make venv")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.monotonic()
    result = subprocess.run(
        [st, "run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {token}",
         "--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
         "--request-timeout", "30", "--no-color", "--suppress-health-check", "all"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    report = result.stdout + result.stderr
    print(f"schemathesis: {time.monotonic() - started:.1f} s")
    print(report[-6000:])
    assert result.returncode == 0, report[-20000:]
    operations = sum(1 for item in document()["paths"].values() for method in item if method != "parameters")
    # every operation but the one serving the schema itself (/openapi.json: the validator test covers it)
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", report)
    assert selected and int(selected[1]) == int(selected[2]) == operations - 1, report[:2000]
    assert re.search(rf"Tested:\s+{operations - 1}\b", report), "some operation was never tested"
