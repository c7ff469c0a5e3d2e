"""The OpenAPI 3 document of the v1 API (served at /openapi.json).

Written by hand so it says what the contract promises (API.md), not what a
generator guesses, except the request side: query parameters and JSON bodies
come from the input classes the handlers parse with (api/inputs.py), so the
two cannot drift. Response schemas are exact (required fields, no others,
nullable where the value can be null) and every error status a route can
answer is listed. Checked by openapi-spec-validator, a schemathesis run
against a live daemon (tests/test_api_contract.py) and the drift test.
"""
from __future__ import annotations

from functools import lru_cache

from daemon import search_params
from daemon.auth import SCOPES
from daemon.pin_admin import PIN_STATUSES
from daemon.views import MAX_PAGE

from . import inputs
from .params import body_schema, query_parameters

_REASONS = {400: "bad input", 401: "no or bad token", 403: "scope or access denied",
            404: "unknown (or not readable by the caller)", 409: "conflict", 413: "too large",
            415: "bad media type", 416: "range not satisfiable", 422: "invalid record",
            502: "backend integrity error, or the backend answered with an error", 503: "backend unavailable",
            504: "not_found_on_network: no peer answered for a block within the fetch timeout",
            507: "out of space"}
_AUTH = (401, 403)
# Any authenticated request reads the index under a time limit (503 query_timeout) and may
# append to the audit chain, which a full disk refuses (507).
_INDEX = (503, 507)
_BODY = (400, 413, 415)
_BACKEND = (502, 503, 504, 507)  # API.md's backend statuses: anything that reads or writes blocks

S = {"type": "string"}
NS = {"type": "string", "nullable": True}
I = {"type": "integer"}  # noqa: E741
B = {"type": "boolean"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict, optional: tuple = ()) -> dict:
    """An exact object: these properties, all required unless listed optional, no others."""
    return {"type": "object", "properties": props, "required": [k for k in props if k not in optional],
            "additionalProperties": False}


def _array(item: dict) -> dict:
    return {"type": "array", "items": item}


def _json(schema: dict, description: str, media: str = "application/json") -> dict:
    return {"description": description, "content": {media: {"schema": schema}}}


def _page(item: str, next_schema: dict) -> dict:
    return _obj({"items": _array(_ref(item)), "next": {**next_schema, "nullable": True}})


def _op(op_id: str, summary: str, scope: str | None, responses: dict, errors: tuple = (), *,
        query=None, body=None, params: list | None = None) -> dict:
    """One operation; ``errors`` are the statuses it may answer besides success."""
    statuses = set(errors) | (set(_AUTH) | set(_INDEX) if scope else set())
    op = {"operationId": op_id, "summary": summary,
          "responses": {**responses, **{str(s): {"$ref": f"#/components/responses/E{s}"} for s in sorted(statuses)}},
          "security": [{"bearer": []}] if scope else []}
    if scope:
        op["x-medvault-scope"] = scope
    parameters = [*(params or []), *(query_parameters(query) if query else [])]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body if isinstance(body, dict) else {
            "required": True, "content": {"application/json": {"schema": body_schema(body)}}}
    return op


def _path(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _search_parameters() -> list[dict]:
    """GET /v1/records's parameters as daemon/search_params.py parses them (its
    docstring has the grammar: comma = OR inside one, repeated = AND)."""
    special = {"limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
               "_count": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
               "_sort": {"type": "string", "enum": ["date", "-date"]},
               "q": {"type": "string", "maxLength": search_params._MAX_VALUE}}
    text = {"type": "string", "minLength": 1, "maxLength": search_params._MAX_VALUE}
    out = []
    for name in sorted(search_params.KNOWN):
        if name in search_params._REPEAT:
            out.append({"name": name, "in": "query", "required": False, "style": "form", "explode": True,
                        "schema": {"type": "array", "items": text}})
        else:
            out.append({"name": name, "in": "query", "required": False, "schema": special.get(name, text)})
    return out


_ID = _path("id", {"type": "string", "pattern": "^[a-z2-7]{26}$", "minLength": 26, "maxLength": 26})
_CID = _path("cid", {"type": "string", "maxLength": 200})
_DID = _path("did", {"type": "string", "maxLength": 100})
_TOKEN_ID = _path("token_id", {"type": "string", "maxLength": 100})
_BINARY = {"type": "string", "format": "binary"}
_RECORD_BODY = {"required": True, "description": "the record's bytes; Content-Type is its media type",
                "content": {"*/*": {"schema": _BINARY}}}
_CAR = "application/vnd.ipld.car"


def _schemas() -> dict:
    pin = {"cid": S, "kind": {"type": "string", "enum": ["manifest", "envelope", "anchor"]},
           "status": {"type": "string", "enum": list(PIN_STATUSES)}, "replicas": I, "replication_min": I,
           "replication_max": I, "attempts": I, "error": NS, "updated": S}
    record = {"id": S, "version": I, "cid": S, "patient": NS, "type": NS, "content_type": S, "title": NS,
              "tags": _array(S), "size": I, "date": NS, "created": S, "updated": S, "author": S,
              "pin": _obj({"status": {"type": "string", "enum": list(PIN_STATUSES)}, "replicas": I})}
    grant = {"record": S, "envelope": S, "recipient": S, "expires": NS, "write": B, "share": S}
    return {
        "Error": _obj({"error": _obj({"code": S, "message": S})}),
        "Scope": {"type": "string", "enum": list(SCOPES)},
        "Record": _obj(record),
        "RevokeResult": _obj({**record, "revoked": S, "rotated": B, "notice": S}),
        "Version": _obj({"version": I, "cid": S, "size": I, "content_type": S, "created": S, "author": S}),
        "Grant": _obj(grant),
        "GrantEntry": _obj({"recipient": S, "role": {"type": "string", "enum": ["patient", "author", "grant",
                                                                                "emergency"]},
                            "granter": S, "granted": S, "expires": NS, "envelope": S,
                            "share": {**S, "nullable": True, "description": "null for roles other than grant"}}),
        "Emergency": _obj({"record": _ref("Record"), "expires": S}),
        "Principal": _obj({"did": S, "name": S, "created": S}),
        "Token": _obj({"token": S, "id": S, "principal": S, "scopes": _array(_ref("Scope")), "expires": NS}),
        "AuditEntry": _obj({"seq": I, "time": S, "actor": NS, "action": S, "record": NS, "outcome": S,
                            "detail": {"type": "object"}, "prev": S, "hash": S}),
        "AuditVerify": _obj({"ok": B, "count": I, "head": S, "broken_at": {**I, "nullable": True},
                             "anchors": _obj({
                                 "status": {"type": "string",
                                            "enum": ["ok", "none", "missing", "mismatch", "invalid", "unreachable"]},
                                 "latest": NS, "verified": I, "anchored": I, "unanchored": I, "error": NS})}),
        "FhirBundle": {"type": "object", "required": ["resourceType", "type", "entry"], "properties": {
            "resourceType": {"type": "string", "enum": ["Bundle"]}, "type": S,
            "entry": _array({"type": "object"})}},
        "Pin": _obj(pin),
        "PinDetail": _obj({**pin, "desired": _obj({"pinned": B, "replication_min": I, "replication_max": I}),
                           "actual": _obj({"status": S, "replicas": I,
                                           "peers": {"type": "object", "additionalProperties": S},
                                           "error": NS})}),
        # backend, key_storage and checks only for an operator's token
        "Health": _obj({"status": {"type": "string", "enum": ["ok", "degraded"]}, "backend": S,
                        "key_storage": {"type": "string", "enum": ["passphrase", "key-file", "beside-data", "unknown"]},
                        "checks": {"type": "object", "additionalProperties": {
                            "type": "object", "required": ["status"], "properties": {"status": S}}}},
                       optional=("backend", "key_storage", "checks")),
    }


@lru_cache(maxsize=1)
def document() -> dict:
    rec, j = _ref("Record"), _json
    paths = {
        "/v1/health": {"get": _op("health", "Node and backend health", None, {
            "200": j(_ref("Health"), "every check ok"), "503": j(_ref("Health"), "degraded")})},
        "/v1/records": {
            "post": _op("createRecord", "Store a new record", "write", {"201": j(rec, "stored")},
                        (*_BODY, 422, *_BACKEND), query=inputs.RecordUploadQuery, body=_RECORD_BODY),
            "get": _op("searchRecords", "Search records the caller can read", "read",
                       {"200": j(_page("Record", S), "a page; next is the cursor for the following one")},
                       (400,), params=_search_parameters()),
        },
        "/v1/records/{id}": {
            "parameters": [_ID],
            "get": _op("getRecord", "A record's metadata", "read", {"200": j(rec, "the record")}, (400, 404)),
            "put": _op("updateRecord", "Store a new version", "write", {"200": j(rec, "the new version")},
                       (*_BODY, 404, 409, 422, *_BACKEND), query=inputs.RecordFields, body=_RECORD_BODY),
            "delete": _op("eraseRecord", "Erase every version (right to erasure)", "write",
                          {"204": {"description": "erased"}}, (400, 404, *_BACKEND)),
        },
        "/v1/records/{id}/content": {
            "parameters": [_ID],
            "get": _op("getContent", "The plaintext, streamed and verified; Range honoured", "read", {
                # No schema: the bytes are the record's, in its own media type (a schema would
                # make checkers parse a "text/plain" record that holds no text).
                "200": {"description": "the content", "content": {"*/*": {}}},
                "206": {"description": "the requested range", "content": {"*/*": {}}}},
                (400, 404, 416, *_BACKEND),
                params=[{"name": "Range", "in": "header", "required": False, "schema": S,
                         "description": "one bytes= range; any other value is ignored (RFC 9110)"}]),
        },
        "/v1/records/{id}/versions": {"parameters": [_ID], "get": _op(
            "listVersions", "Versions of a record", "read", {"200": j(_page("Version", S), "every version")},
            (400, 404))},
        "/v1/records/{id}/grants": {
            "parameters": [_ID],
            "post": _op("grant", "Grant a principal read access (sealed envelope + share token)", "share",
                        {"201": j(_ref("Grant"), "granted")}, (*_BODY, 404, 409, *_BACKEND),
                        body=inputs.GrantBody),
            "get": _op("listGrants", "Current grants of the record", "share",
                       {"200": j(_page("GrantEntry", S), "live envelopes")}, (400, 404)),
        },
        "/v1/records/{id}/grants/{did}": {
            "parameters": [_ID, _DID],
            "delete": _op("revoke", "Revoke; rotates the key unless rotate=false", "share",
                          {"200": j(_ref("RevokeResult"), "revoked (and the new version if rotated)")},
                          (400, 404, 409, *_BACKEND), query=inputs.RevokeQuery),
        },
        "/v1/grants": {"post": _op("grantMany", "Grant one principal access to many records at once", "share",
                                   {"201": j(_obj({"items": _array(_ref("Grant"))}), "granted, in order")},
                                   (*_BODY, 404, 409, *_BACKEND), body=inputs.BatchGrantBody)},
        "/v1/records/{id}/emergency": {"parameters": [_ID], "post": _op(
            "emergency", "Break-glass access with a reason: audited, shown to the patient, expires", "emergency",
            {"201": j(_ref("Emergency"), "access granted until expires")}, (*_BODY, 404, 409, *_BACKEND),
            body=inputs.EmergencyBody)},
        "/v1/imports": {"post": _op("importShare", "Import a record from a share token", "write",
                                    {"201": j(rec, "the record on this node")}, (*_BODY, 404, 409, 422, *_BACKEND),
                                    body=inputs.ImportBody)},
        "/v1/imports/car": {"post": _op(
            "importCar", "Import the records in a CAR archive addressed to the caller", "write",
            {"201": j(_obj({"items": _array(rec), "skipped": I}), "imported records; others counted as skipped")},
            (400, 409, 413, 415, *_BACKEND),
            body={"required": True, "content": {_CAR: {"schema": _BINARY}}})},
        "/v1/exports": {"get": _op("exportCar", "A patient's records as a CAR archive", "read", {
            "200": {"description": "CAR v1", "content": {_CAR: {"schema": _BINARY}}}}, (400, *_BACKEND),
            query=inputs.ExportQuery)},
        "/v1/principals": {
            "post": _op("addPrincipal", "Create a principal whose keys this node keeps", "admin",
                        {"201": j(_ref("Principal"), "created")}, _BODY, body=inputs.PrincipalBody),
            "get": _op("listPrincipals", "List principals", "admin",
                       {"200": j(_page("Principal", S), "every principal")}),
        },
        "/v1/tokens": {"post": _op("createToken", "Create an API token (shown once)", "admin",
                                   {"201": j(_ref("Token"), "the token; shown only now")}, (*_BODY, 404),
                                   body=inputs.TokenBody)},
        "/v1/tokens/{token_id}": {"parameters": [_TOKEN_ID], "delete": _op(
            "revokeToken", "Revoke a token", "admin", {"204": {"description": "revoked"}}, (404,))},
        "/v1/audit": {"get": _op("listAudit", "Audit entries (own records with read; all with operator)",
                                 "read|operator", {"200": {"description": "a page of entries, or a FHIR Bundle", "content": {
                                     "application/json": {"schema": _page("AuditEntry", I)},
                                     "application/fhir+json": {"schema": _ref("FhirBundle")}}}},
                                 (400,), query=inputs.AuditQuery)},
        "/v1/audit/verify": {"get": _op("verifyAudit", "Recompute the audit hash chain", "operator",
                                        {"200": j(_ref("AuditVerify"), "the chain's state")})},
        "/v1/pins": {"get": _op("listPins", "Pin jobs with their status", "operator",
                                {"200": j(_page("Pin", S), "a page of pin jobs")}, (400,), query=inputs.PinsQuery)},
        "/v1/pins/{cid}": {"parameters": [_CID], "get": _op(
            "getPin", "Desired vs actual, per peer", "operator", {"200": j(_ref("PinDetail"), "the pin")},
            (400, 404, *_BACKEND))},
        "/v1/pins/{cid}/recover": {"parameters": [_CID], "post": _op(
            "recoverPin", "Re-pin now", "operator", {"200": j(_ref("PinDetail"), "re-pinning")},
            (400, 404, *_BACKEND))},
        "/v1/admin/gc": {"post": _op(
            "collectGarbage", "Collect unreferenced blocks, sparing uploads in flight", "operator",
            {"200": j(_obj({"removed": I, "kept": I}), "what was removed and kept")}, (400, 409, *_BACKEND),
            query=inputs.GcQuery)},
        "/metrics": {"get": _op("metrics", "Prometheus metrics", "operator", {
            "200": {"description": "text exposition", "content": {"text/plain": {"schema": S}}}})},
        "/openapi.json": {"get": _op("openapi", "This document", None,
                                     {"200": j({"type": "object"}, "OpenAPI 3.0")})},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "medvault", "version": "1", "description": "Encrypted medical records on IPFS. "
                 "Errors are {\"error\": {\"code\", \"message\"}}; lists are {\"items\", \"next\"}."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {f"E{s}": j(_ref("Error"), reason) for s, reason in _REASONS.items()},
            "schemas": _schemas(),
        },
    }
