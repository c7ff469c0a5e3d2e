"""The contract's three copies agree: API.md's route table (../shared/API.md
beside the repository, as CI lays it out), the OpenAPI document, and the
routes the app serves; the only routes beyond API.md are the extensions the
README's "API changes and extensions" section names. And every `medvault`
command in the README's code blocks parses with the real CLI parser.

``/fhir`` is outside these copies on purpose: FHIR R4 and the
CapabilityStatement at /fhir/metadata specify it (tests/test_fhir_api.py
checks it against R4); the last test here keeps it to that prefix."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex

import pytest

from api.app import ROUTE_MODULES
from api.openapi import document
from daemon.cli import _parser

from .ipfs import missing
from .process import ROOT

_ROW = re.compile(r"^\|\s*(GET|POST|PUT|DELETE|PATCH)\s*\|\s*(/\S+?)\s*\|")
_MENTION = re.compile(r"`(GET|POST|PUT|DELETE|PATCH) (/[^`?\s]+)")
_PARAM = re.compile(r"\{[^}]+\}")

Route = tuple[str, str]


def _norm(method: str, path: str) -> Route:
    return method.upper(), _PARAM.sub("{}", path)


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def _api_md() -> str:
    path = os.environ.get("MEDVAULT_API_MD") or os.path.join(ROOT, "..", "shared", "API.md")
    if not os.path.exists(path):
        missing(f"API.md is not at {path} (set MEDVAULT_API_MD)")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def api_md_routes(text: str) -> set[Route]:
    return {_norm(*m.groups()) for line in text.splitlines() if (m := _ROW.match(line))}


def readme_extensions(text: str) -> set[Route]:
    section = text.split("## API changes and extensions", 1)[1].split("\n## ", 1)[0]
    return {_norm(*m.groups()) for m in _MENTION.finditer(section)}


def served_routes() -> set[Route]:
    return {_norm(route.method, route.path) for module in ROUTE_MODULES for route in module.routes}


def documented_routes() -> set[Route]:
    return {_norm(method, path) for path, item in document()["paths"].items() for method in item
            if method != "parameters"}


def readme_commands(text: str) -> list[list[str]]:
    """Each `medvault ...` command in the README's indented code blocks, with
    continued lines joined, comments dropped, `[optional]` parts kept and
    `a && b` split."""
    commands = []
    code = "\n".join(line.strip() for line in text.splitlines() if line.startswith("    "))
    for line in code.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s#.*$", "", line).replace("[", "").replace("]", "")
        for part in line.split("&&"):
            words = shlex.split(part)
            if words and words[0] == "medvault":
                commands.append(words[1:])
    return commands


def test_app_and_openapi_name_the_same_routes():
    assert served_routes() == documented_routes()


def test_api_md_routes_are_served_and_the_rest_are_readme_extensions():
    served, contract = served_routes(), api_md_routes(_api_md())
    assert len(contract) >= 20  # the table was found
    assert contract - served == set(), "API.md routes the app does not serve"
    extras = served - contract
    assert extras - readme_extensions(_readme()) == set(), "served routes neither in API.md nor in the README"


def test_readme_extensions_are_real_routes():
    assert readme_extensions(_readme()) - served_routes() == set()


def test_readme_commands_are_real_medvault_commands():
    commands = readme_commands(_readme())
    assert len(commands) >= 15
    parser = _parser()
    for argv in commands:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"README: `medvault {' '.join(argv)}` is not a valid command: {err.getvalue()}")


def test_the_drift_checks_can_fail():
    assert api_md_routes("| GET | /v1/nothing | read | x |") - served_routes() == {("GET", "/v1/nothing")}
    assert readme_extensions("## API changes and extensions\n`POST /v1/x/{id}` and more\n## Next") == {
        ("POST", "/v1/x/{}")}
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        _parser().parse_args(readme_commands("    medvault put x --no-such-option\n")[0])


def test_the_only_routes_outside_the_contract_are_fhir_ones():
    from api.fhir.routes import routes as fhir_routes
    paths = {route.path for route in fhir_routes}
    assert paths and all(p == "/fhir" or p.startswith("/fhir/") for p in paths)
    assert not {_norm(r.method, r.path) for r in fhir_routes} & served_routes()
