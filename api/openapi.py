"""The OpenAPI 3 document of the v1 API (served at /openapi.json).

Written by hand so it says what the contract promises (API.md), not what a
generator guesses; ``tests/test_api_openapi.py`` checks it names every route
the application serves and nothing more.
"""
from __future__ import annotations

from functools import lru_cache

_ERROR = {"$ref": "#/components/responses/Error"}


def _op(summary: str, scope: str | None, responses: dict, params: list | None = None, body: dict | None = None,
        op_id: str = "") -> dict:
    op = {"summary": summary, "operationId": op_id, "responses": {**responses, "4XX": _ERROR, "5XX": _ERROR}}
    op["security"] = [] if scope is None else [{"bearer": []}]
    if scope:
        op["x-medvault-scope"] = scope
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    return op


def _q(name: str, description: str, schema: dict | None = None, repeat: bool = False) -> dict:
    s = schema or {"type": "string"}
    return {"name": name, "in": "query", "description": description, "required": False,
            "schema": {"type": "array", "items": s} if repeat else s, **({"explode": True} if repeat else {})}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z2-7]{26}$"}}
_CID = {"name": "cid", "in": "path", "required": True, "schema": {"type": "string"}}
_body = lambda props, required: {"required": True, "content": {"application/json": {"schema": {  # noqa: E731
    "type": "object", "required": required, "properties": props}}}}
_JSON = lambda ref: {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}  # noqa: E731
_LIST = lambda ref: {"content": {"application/json": {"schema": {  # noqa: E731
    "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}},
                                     "next": {"nullable": True}}}}}}
_RECORD_FIELDS = [
    _q("patient", "the patient's did:key"), _q("type", "resource type, e.g. Observation"),
    _q("title", "a title for search"), _q("tag", "a tag (repeatable)", repeat=True),
    _q("date", "clinical date (ISO 8601)"),
]


@lru_cache(maxsize=1)
def document() -> dict:
    record_body = {"required": True, "description": "the record's bytes; Content-Type is its media type",
                   "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    paths = {
        "/v1/health": {"get": _op("Node and backend health", None, {"200": _JSON("Health"), "503": _JSON("Health")},
                                  op_id="health")},
        "/v1/records": {
            "post": _op("Store a new record", "write", {"201": _JSON("Record")},
                        [*_RECORD_FIELDS, _q("wait", "'pinned' waits for the pin", {"enum": ["pinned"]})],
                        record_body, "createRecord"),
            "get": _op("Search records the caller can read", "read", {"200": _LIST("Record")}, [
                _q("patient", "patient did:key"), _q("type", "resource type"), _q("tag", "tag", repeat=True),
                _q("code", "code or system|code"), _q("since", "date lower bound"), _q("until", "date upper bound"),
                _q("q", "full text over title and indexed text"),
                _q("limit", "page size (1-1000)", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _q("cursor", "from the previous page's next")], op_id="searchRecords"),
        },
        "/v1/records/{id}": {
            "parameters": [_ID],
            "get": _op("A record's metadata", "read", {"200": _JSON("Record")}, op_id="getRecord"),
            "put": _op("Store a new version", "write", {"200": _JSON("Record")}, _RECORD_FIELDS, record_body,
                       "updateRecord"),
            "delete": _op("Erase every version (right to erasure)", "write", {"204": {"description": "erased"}},
                          op_id="eraseRecord"),
        },
        "/v1/records/{id}/content": {
            "parameters": [_ID],
            "get": _op("The plaintext, streamed and verified; Range honoured", "read", {
                "200": {"description": "content", "content": {"*/*": {"schema": {"type": "string",
                                                                                  "format": "binary"}}}},
                "206": {"description": "partial content"}}, op_id="getContent"),
        },
        "/v1/records/{id}/versions": {"parameters": [_ID], "get": _op("Versions of a record", "read",
                                                                      {"200": _LIST("Version")}, op_id="listVersions")},
        "/v1/records/{id}/grants": {
            "parameters": [_ID],
            "post": _op("Grant a principal read access (sealed envelope + share token)", "share",
                        {"201": _JSON("Grant")}, body=_body({"recipient": {"type": "string"},
                                                             "expires": {"type": "string", "format": "date-time"}},
                                                            ["recipient"]), op_id="grant"),
            "get": _op("Current grants of the record", "share", {"200": _LIST("Grant")}, op_id="listGrants"),
        },
        "/v1/records/{id}/grants/{did}": {
            "parameters": [_ID, {"name": "did", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": _op("Revoke; rotates the key unless rotate=false", "share", {"200": _JSON("Record")},
                          [_q("rotate", "re-encrypt as a new version (default true)", {"enum": ["true", "false"]})],
                          op_id="revoke"),
        },
        "/v1/grants": {"post": _op("Grant one principal access to many records at once", "share",
                                   {"201": _LIST("Grant")}, body=_body({
                                       "records": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                                       "recipient": {"type": "string"},
                                       "expires": {"type": "string", "format": "date-time"}}, ["records", "recipient"]),
                                   op_id="grantMany")},
        "/v1/records/{id}/emergency": {"parameters": [_ID], "post": _op(
            "Break-glass access with a reason: audited, shown to the patient, expires", "emergency",
            {"201": {"description": "access granted until expires"}},
            body=_body({"reason": {"type": "string", "minLength": 10}}, ["reason"]), op_id="emergency")},
        "/v1/imports": {"post": _op("Import a record from a share token", "write", {"201": _JSON("Record")},
                                    body=_body({"share": {"type": "string"}}, ["share"]), op_id="importShare")},
        "/v1/imports/car": {"post": _op("Import the records in a CAR archive addressed to the caller", "write",
                                        {"201": _LIST("Record")},
                                        body={"required": True, "content": {"application/vnd.ipld.car": {
                                            "schema": {"type": "string", "format": "binary"}}}}, op_id="importCar")},
        "/v1/exports": {"get": _op("A patient's records as a CAR archive", "read", {
            "200": {"description": "CAR v1", "content": {"application/vnd.ipld.car": {}}}},
            [{**_q("patient", "the patient's did:key"), "required": True}], op_id="exportCar")},
        "/v1/principals": {
            "post": _op("Create a principal whose keys this node keeps", "admin", {"201": _JSON("Principal")},
                        body={"required": True, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}},
                        op_id="addPrincipal"),
            "get": _op("List principals", "admin", {"200": _LIST("Principal")}, op_id="listPrincipals"),
        },
        "/v1/tokens": {"post": _op("Create an API token (shown once)", "admin", {"201": _JSON("Token")},
                                   body={"required": True, "content": {"application/json": {"schema": {
                                       "type": "object", "required": ["principal", "scopes"], "properties": {
                                           "principal": {"type": "string"},
                                           "scopes": {"type": "array", "items": {"$ref": "#/components/schemas/Scope"}},
                                           "expires": {"type": "string", "format": "date-time"}}}}}},
                                   op_id="createToken")},
        "/v1/tokens/{token_id}": {"delete": _op("Revoke a token", "admin", {"204": {"description": "revoked"}},
                                                [{"name": "token_id", "in": "path", "required": True,
                                                  "schema": {"type": "string"}}], op_id="revokeToken")},
        "/v1/audit": {"get": _op("Audit entries (own records with read; all with operator)", "read|operator",
                                 {"200": _LIST("AuditEntry")}, [
                                     _q("record", "record id"), _q("principal", "actor did"),
                                     _q("since", "RFC 3339 time"), _q("after", "seq to continue after",
                                                                       {"type": "integer"}),
                                     _q("limit", "page size", {"type": "integer"}),
                                     _q("format", "'fhir' for a Bundle of FHIR R4 AuditEvent resources",
                                        {"enum": ["fhir"]})], op_id="listAudit")},
        "/v1/audit/verify": {"get": _op("Recompute the audit hash chain", "operator", {"200": _JSON("AuditVerify")},
                                        op_id="verifyAudit")},
        "/v1/pins": {"get": _op("Pin jobs with their status", "operator", {"200": _LIST("Pin")}, [
            _q("status", "filter", {"enum": ["queued", "pinning", "pinned", "degraded", "failed"]}),
            _q("after", "cid to continue after"), _q("limit", "page size", {"type": "integer"})], op_id="listPins")},
        "/v1/pins/{cid}": {"parameters": [_CID], "get": _op("Desired vs actual, per peer", "operator",
                                                            {"200": _JSON("PinDetail")}, op_id="getPin")},
        "/v1/pins/{cid}/recover": {"parameters": [_CID], "post": _op("Re-pin now", "operator",
                                                                     {"200": _JSON("PinDetail")}, op_id="recoverPin")},
        "/v1/admin/gc": {"post": _op("Collect unreferenced blocks, sparing uploads in flight", "operator", {
            "200": {"description": "what was removed and kept", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"removed": {"type": "integer"}, "kept": {"type": "integer"}}}}}}},
            [_q("grace", "seconds a new block is spared (default: config)", {"type": "number", "minimum": 0}),
             _q("force", "collect even when the index pins nothing", {"enum": ["true", "false"]})],
            op_id="collectGarbage")},
        "/metrics": {"get": _op("Prometheus metrics", "operator", {"200": {"description": "text exposition",
                                                                           "content": {"text/plain": {}}}},
                                op_id="metrics")},
        "/openapi.json": {"get": _op("This document", None, {"200": {"description": "OpenAPI 3"}}, op_id="openapi")},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "medvault", "version": "1", "description": "Encrypted medical records on IPFS."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Scope": {"type": "string", "enum": ["read", "write", "share", "operator", "admin", "emergency"]},
                "Record": {"type": "object", "properties": {
                    **{k: {"type": "string", "nullable": True} for k in
                       ("id", "cid", "patient", "type", "content_type", "title", "date", "created", "updated",
                        "author")},
                    "version": {"type": "integer"}, "size": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "pin": {"type": "object", "properties": {
                        "status": {"type": "string",
                                   "enum": ["queued", "pinning", "pinned", "degraded", "failed"]},
                        "replicas": {"type": "integer"}}}}},
                "Version": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "cid": {"type": "string"}, "size": {"type": "integer"},
                    "content_type": {"type": "string"}, "created": {"type": "string"}, "author": {"type": "string"}}},
                "Grant": {"type": "object", "properties": {
                    "record": {"type": "string"}, "envelope": {"type": "string"}, "share": {"type": "string"},
                    "recipient": {"type": "string"}, "expires": {"type": "string", "nullable": True}}},
                "Principal": {"type": "object", "properties": {"did": {"type": "string"},
                                                                "name": {"type": "string"}}},
                "Token": {"type": "object", "properties": {"token": {"type": "string"}, "id": {"type": "string"},
                                                            "principal": {"type": "string"},
                                                            "scopes": {"type": "array", "items": {"type": "string"}},
                                                            "expires": {"type": "string", "nullable": True}}},
                "AuditEntry": {"type": "object", "properties": {
                    "seq": {"type": "integer"}, "time": {"type": "string"}, "actor": {"type": "string"},
                    "action": {"type": "string"}, "record": {"type": "string", "nullable": True},
                    "outcome": {"type": "string"}, "detail": {"type": "object"}, "hash": {"type": "string"}}},
                "AuditVerify": {"type": "object", "properties": {
                    "ok": {"type": "boolean"}, "count": {"type": "integer"}, "head": {"type": "string"},
                    "broken_at": {"type": "integer", "nullable": True}}},
                "Pin": {"type": "object", "properties": {
                    "cid": {"type": "string"}, "kind": {"type": "string", "enum": ["manifest", "envelope"]},
                    "status": {"type": "string"}, "replicas": {"type": "integer"},
                    "replication_min": {"type": "integer"}, "replication_max": {"type": "integer"},
                    "attempts": {"type": "integer"}, "error": {"type": "string", "nullable": True},
                    "updated": {"type": "string"}}},
                "PinDetail": {"allOf": [{"$ref": "#/components/schemas/Pin"}, {"type": "object", "properties": {
                    "desired": {"type": "object"}, "actual": {"type": "object", "properties": {
                        "status": {"type": "string"}, "replicas": {"type": "integer"},
                        "peers": {"type": "object", "additionalProperties": {"type": "string"}}}}}}]},
                "Health": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok", "degraded"]},
                                                             "backend": {"type": "string"},
                                                             "checks": {"type": "object"}}},
            },
        },
    }
