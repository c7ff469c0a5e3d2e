"""FHIR's side of errors and media types: OperationOutcome bodies and the
content negotiation FHIR's REST rules ask for (JSON only here).

Every error on ``/fhir`` goes through ``api.errors``' one mapping of engine
errors to status codes; only the body differs (``render_error``). Messages
are the engine's, which never carry plaintext, keys, tokens or patient ids.
"""
from __future__ import annotations

import json

from aiohttp import web

from daemon.errors import BadRequest, InvalidRecord, NotAcceptable, VaultError

BASE = "/fhir"
MEDIA_TYPE = "application/fhir+json"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_ACCEPTED = _JSON_TYPES | {"*/*", "application/*"}
_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
# An HTTP status → FHIR's issue-type code (https://hl7.org/fhir/R4/valueset-issue-type.html).
_ISSUE_TYPE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-costly",
               415: "not-supported", 422: "processing", 502: "exception", 503: "transient", 504: "timeout",
               507: "exception"}


def is_fhir(request: web.Request) -> bool:
    return request.path == BASE or request.path.startswith(BASE + "/")


def outcome(status: int, code: str, message: str, expression: list[str] | None = None,
            issues: list[dict] | None = None) -> dict:
    """An OperationOutcome: one issue saying what went wrong (or ``issues``)."""
    if issues is None:
        issue = {"severity": "error" if status >= 400 else "information",
                 "code": _ISSUE_TYPE.get(status, "exception"),
                 "details": {"coding": [{"system": "urn:medvault:error", "code": code}], "text": message},
                 "diagnostics": message}
        if expression:
            issue["expression"] = expression
        issues = [issue]
    return {"resourceType": "OperationOutcome", "issue": issues}


def fhir_json(body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type=MEDIA_TYPE, charset="utf-8", headers=headers)


def render_error(status: int, code: str, message: str, headers: dict | None = None,
                 error: VaultError | None = None) -> web.Response:
    """The error answer of a ``/fhir`` request (api.errors calls this for them)."""
    expression = getattr(error, "expression", None)
    issues = getattr(error, "issues", None)
    return fhir_json(outcome(status, code, message, expression, issues), status, headers)


class InvalidResource(InvalidRecord):
    """A body that is not a valid R4 resource (422), with one issue per
    element at fault (``expression`` is FHIRPath-like: ``Observation.status``)."""

    code = "invalid_resource"

    def __init__(self, message: str, issues: list[dict] | None = None, code: str | None = None):
        super().__init__(message, code)
        self.issues = issues


def negotiate(request: web.Request) -> None:
    """406 unless the client accepts JSON (``Accept`` or ``_format``)."""
    formats = request.query.getall("_format", [])
    if len(formats) > 1:
        raise BadRequest("_format may be given only once", "bad_format")
    if formats:
        if formats[0].strip().lower() not in _FORMATS:
            raise NotAcceptable("this server speaks FHIR JSON only (_format=json)")
        return
    accept = request.headers.get("Accept")
    if not accept:
        return
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    if not any(t in _ACCEPTED for t in types):
        raise NotAcceptable("this server answers application/fhir+json only")


def is_json_body(content_type: str | None) -> bool:
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return base in _JSON_TYPES
