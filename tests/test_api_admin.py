"""Principals, tokens, scopes, audit routes, health, metrics, OpenAPI."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from api.openapi import document
from daemon import timeutil


async def test_principals_are_created_and_listed(api):
    did, _ = await api.principal("Dr. Grey")
    resp = await api.client.get("/v1/principals", headers=api.auth())
    names = {p["did"]: p["name"] for p in (await resp.json())["items"]}
    assert names[did] == "Dr. Grey" and names[api.owner_did] == "owner"
    assert len(names) == 2  # the node key is not a principal
    assert api.vault.keys.get(did) is not None


@pytest.mark.parametrize("body,status,code", [
    ({"name": ""}, 400, "bad_name"), ({"name": 5}, 400, "bad_name"), ({}, 400, "bad_name"),
    ("[]", 400, "bad_json"), ("{oops", 400, "bad_json")])
async def test_bad_principal_bodies(api, body, status, code):
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body, "headers": {"Content-Type": "application/json"}}
    headers = {**api.auth(), **kwargs.pop("headers", {})}
    resp = await api.client.post("/v1/principals", headers=headers, **kwargs)
    assert resp.status == status and (await resp.json())["error"]["code"] == code


async def test_token_scopes_are_enforced(api):
    _, reader = await api.principal("reader", scopes=("read",))
    assert (await api.client.get("/v1/records", headers=api.auth(reader))).status == 200
    for method, path in (("POST", "/v1/records"), ("POST", "/v1/principals"), ("GET", "/v1/principals"),
                         ("POST", "/v1/tokens"), ("GET", "/v1/audit/verify"), ("GET", "/metrics")):
        resp = await api.client.request(method, path, data=b"{}", headers={**api.auth(reader),
                                                                          "Content-Type": "application/json"})
        assert resp.status == 403, (method, path)
        assert (await resp.json())["error"]["code"] == "missing_scope"


@pytest.mark.parametrize("body,status,code", [
    ({"principal": "did:key:nope", "scopes": ["read"]}, 400, "bad_principal"),
    ({"principal": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "scopes": ["read"]}, 404,
     "unknown_principal"),
    ({"scopes": ["read"]}, 400, "bad_principal"),
    ({"principal": None, "scopes": ["read"]}, 400, "bad_principal"),
])
async def test_bad_token_requests(api, body, status, code):
    resp = await api.client.post("/v1/tokens", json=body, headers=api.auth())
    assert resp.status == status and (await resp.json())["error"]["code"] == code


@pytest.mark.parametrize("scopes,expires,code", [
    (["root"], None, "bad_scopes"), ([], None, "bad_scopes"), ("read", None, "bad_scopes"),
    (["read"], "yesterday", "bad_expires"), (["read"], "2001-01-01T00:00:00Z", "bad_expires")])
async def test_bad_token_fields(api, scopes, expires, code):
    resp = await api.client.post("/v1/tokens", json={"principal": api.owner_did, "scopes": scopes,
                                                     "expires": expires}, headers=api.auth())
    assert resp.status == 400 and (await resp.json())["error"]["code"] == code


@pytest.mark.parametrize("header,code", [(None, "missing_token"), ("Basic abc", "bad_token"),
                                         ("Bearer mvt_notarealtoken", "bad_token"), ("Bearer", "bad_token")])
async def test_missing_or_bad_tokens_are_401(api, header, code):
    resp = await api.client.get("/v1/records", headers={"Authorization": header} if header else {})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == code
    assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_revoked_and_expired_tokens_are_401(api):
    resp = await api.client.post("/v1/tokens", json={"principal": api.owner_did, "scopes": ["read"]},
                                 headers=api.auth())
    created = await resp.json()
    assert (await api.client.get("/v1/records", headers=api.auth(created["token"]))).status == 200
    assert (await api.client.delete(f"/v1/tokens/{created['id']}", headers=api.auth())).status == 204
    resp = await api.client.get("/v1/records", headers=api.auth(created["token"]))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "token_revoked"
    resp = await api.client.delete(f"/v1/tokens/{created['id']}", headers=api.auth())
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "token_not_found"

    # expiry: valid up to the moment named, refused from then on (the clock is moved, not waited for)
    start = datetime.now(timezone.utc)
    with timeutil.frozen_at(start):
        expires = timeutil.format_time(start + timedelta(hours=1))
        resp = await api.client.post("/v1/tokens", json={"principal": api.owner_did, "scopes": ["read"],
                                                         "expires": expires}, headers=api.auth())
        assert resp.status == 201, await resp.text()
        short = (await resp.json())["token"]
        assert (await api.client.get("/v1/records", headers=api.auth(short))).status == 200
    with timeutil.frozen_at(start + timedelta(hours=1, milliseconds=-1)):
        assert (await api.client.get("/v1/records", headers=api.auth(short))).status == 200
    with timeutil.frozen_at(start + timedelta(hours=1)):
        resp = await api.client.get("/v1/records", headers=api.auth(short))
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "token_expired"


async def test_tokens_are_stored_hashed(api):
    resp = await api.client.post("/v1/tokens", json={"principal": api.owner_did, "scopes": ["read"]},
                                 headers=api.auth())
    token = (await resp.json())["token"]
    with open(api.vault.config.index_path, "rb") as handle:
        raw = handle.read()
    assert token.encode() not in raw and api.owner_token.encode() not in raw


async def test_audit_views_and_verify(api):
    patient, patient_token = await api.principal("patient")
    _, other_token = await api.principal("other")
    mine = await api.put(b"for the patient", "text/plain", patient=patient)
    await api.put(b"not for the patient", "text/plain")
    await api.client.get(f"/v1/records/{mine['id']}/content", headers=api.auth(other_token))  # denied
    own = await (await api.client.get("/v1/audit", headers=api.auth(patient_token))).json()
    assert {e["record"] for e in own["items"]} == {mine["id"]}
    assert ("read", "denied") in [(e["action"], e["outcome"]) for e in own["items"]]
    everything = await (await api.client.get("/v1/audit", headers=api.auth())).json()
    assert len(everything["items"]) > len(own["items"])
    resp = await api.client.get("/v1/audit/verify", headers=api.auth())
    result = await resp.json()
    assert result["ok"] and result["broken_at"] is None and result["count"] == len(everything["items"])
    await api.vault.db.write(lambda c: c.execute("UPDATE audit SET outcome = 'ok' WHERE outcome = 'denied'"))
    result = await (await api.client.get("/v1/audit/verify", headers=api.auth())).json()
    assert result["ok"] is False and isinstance(result["broken_at"], int)
    resp = await api.client.get("/v1/audit", params={"since": "junk"}, headers=api.auth())
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_since"


async def test_health_is_public_and_metrics_need_operator(api):
    resp = await api.client.get("/v1/health")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}  # nothing more without operator
    _, reader = await api.principal("reader", scopes=("read",))
    resp = await api.client.get("/v1/health", headers=api.auth(reader))
    assert await resp.json() == {"status": "ok"}
    resp = await api.client.get("/v1/health", headers=api.auth("mvt_not-a-token"))
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await api.client.get("/v1/health", headers=api.auth())
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ok" and body["backend"] == "local"
    assert body["checks"]["index"]["status"] == "ok"
    await api.put(b"x", "text/plain")
    resp = await api.client.get("/metrics", headers=api.auth())
    text = await resp.text()
    assert resp.status == 200
    assert "medvault_records_written_total 1.0" in text
    assert 'medvault_pins{status="pinned"} 2.0' in text  # manifest + author envelope
    assert 'route="/v1/records"' in text and "did:key" not in text


async def test_openapi_names_every_route_and_only_those(api):
    resp = await api.client.get("/openapi.json")
    doc = await resp.json()
    assert doc == document() and doc["openapi"].startswith("3.")
    served = set()
    for route in api.client.app.router.routes():
        if route.method != "HEAD" and not route.resource.canonical.startswith("/fhir"):  # FHIR's own contract
            served.add((route.resource.canonical, route.method.lower()))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops if method != "parameters"}
    assert served == documented


async def test_unknown_route_and_method_get_json_errors(api):
    resp = await api.client.get("/v1/nothing-here")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await api.client.patch("/v1/records", headers=api.auth())
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
