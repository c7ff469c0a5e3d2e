"""Hostile input at the boundary (issue 7): every case beside a happy one.
Wrong input is a 400/413/415 in the error format, never a 500, and leaves
nothing stored."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest

from daemon import timeutil

OUT_OF_RANGE_TIMES = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]
NOT_A_POINT = "did:key:z6MkgZ6zJ8e23KFDTBaFD7kQP6QnUqVtNJDoctJM4dYX3bgg"  # well-formed, no curve point


async def _error(resp, status: int, code: str | None = None) -> None:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body


async def _rows(api, table: str) -> int:
    return await api.vault.db.read(lambda c: c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _cursor(doc) -> str:
    """A cursor as the server forms them (newest-first order), holding ``doc``."""
    return base64.urlsafe_b64encode(json.dumps({**doc, "o": "-seq"}).encode()).decode().rstrip("=")


@pytest.mark.parametrize("text", OUT_OF_RANGE_TIMES)
def test_parse_time_outside_utc_years_is_a_value_error(text):
    with pytest.raises(ValueError):
        timeutil.parse_time(text)
    assert timeutil.parse_time("9999-12-31T23:59:59+01:00") == "9999-12-31T22:59:59.000Z"


@pytest.mark.parametrize("expires", OUT_OF_RANGE_TIMES)
async def test_token_and_grant_expiry_out_of_range_is_400(api, expires):
    tokens = await _rows(api, "tokens")
    resp = await api.client.post("/v1/tokens", json={"principal": api.owner_did, "scopes": ["read"],
                                                     "expires": expires}, headers=api.auth())
    await _error(resp, 400, "bad_expires")
    assert await _rows(api, "tokens") == tokens
    record = await api.put(b"x", "text/plain")
    did, _ = await api.principal("reader")
    envelopes = await _rows(api, "envelopes")
    resp = await api.client.post(f"/v1/records/{record['id']}/grants", json={"recipient": did, "expires": expires},
                                 headers=api.auth())
    await _error(resp, 400, "bad_expires")
    assert await _rows(api, "envelopes") == envelopes
    happy = await api.client.post(f"/v1/records/{record['id']}/grants",
                                  json={"recipient": did, "expires": "9999-12-31T23:59:59+01:00"}, headers=api.auth())
    assert happy.status == 201, await happy.text()


@pytest.mark.parametrize("principal", [["did:key:x"], {"did": "x"}, 5, True])
async def test_token_principal_of_the_wrong_type_is_400(api, principal):
    resp = await api.client.post("/v1/tokens", json={"principal": principal, "scopes": ["read"]}, headers=api.auth())
    await _error(resp, 400, "bad_principal")


async def test_token_fields_unknown_or_mistyped_are_400(api):
    body = {"principal": api.owner_did, "scopes": ["read"]}
    await _error(await api.client.post("/v1/tokens", json={**body, "admin": True}, headers=api.auth()),
                 400, "unknown_field")
    await _error(await api.client.post("/v1/tokens", json={**body, "scopes": [1]}, headers=api.auth()),
                 400, "bad_scopes")
    resp = await api.client.post("/v1/tokens", json=body, headers=api.auth())
    assert resp.status == 201 and (await resp.json())["scopes"] == ["read"]


@pytest.mark.parametrize("records", [[1], [None], [["a" * 26]], "a" * 26, [], ["A" * 26]])
async def test_batch_grant_records_of_the_wrong_type_are_400(api, records):
    did, _ = await api.principal("reader")
    resp = await api.client.post("/v1/grants", json={"records": records, "recipient": did}, headers=api.auth())
    await _error(resp, 400, "bad_records")


async def test_batch_grant_happy_path_and_a_recipient_that_is_no_key(api):
    did, _ = await api.principal("reader")
    ids = [(await api.put(f"r{n}".encode(), "text/plain"))["id"] for n in range(3)]
    envelopes = await _rows(api, "envelopes")
    resp = await api.client.post("/v1/grants", json={"records": ids, "recipient": NOT_A_POINT}, headers=api.auth())
    await _error(resp, 400, "bad_recipient")
    assert await _rows(api, "envelopes") == envelopes
    resp = await api.client.post("/v1/grants", json={"records": ids, "recipient": did}, headers=api.auth())
    assert resp.status == 201, await resp.text()
    assert [g["record"] for g in (await resp.json())["items"]] == ids


@pytest.mark.parametrize("params,code", [
    ({"after": "1e30"}, "bad_after"), ({"after": str(2**63)}, "bad_after"), ({"after": "-1"}, "bad_after"),
    ({"since": OUT_OF_RANGE_TIMES[1]}, "bad_since"), ({"since": OUT_OF_RANGE_TIMES[0]}, "bad_since"),
    ({"limit": "1001"}, "bad_limit"), ({"format": "xml"}, "bad_format"), ({"record": "nope"}, "bad_record")])
async def test_bad_audit_queries_are_400(api, params, code):
    await _error(await api.client.get("/v1/audit", params=params, headers=api.auth()), 400, code)


async def test_audit_extremes_that_fit_are_fine(api):
    resp = await api.client.get("/v1/audit", params={"after": str(2**63 - 1), "since": "0001-01-02T00:00:00+23:59"},
                                headers=api.auth())
    assert resp.status == 200 and await resp.json() == {"items": [], "next": None}


@pytest.mark.parametrize("cursor", [_cursor({"s": 2**63}), _cursor({"s": 10**30}), _cursor({"s": -1}),
                                    _cursor({"s": True}), _cursor({"s": 1e308}), "a" * 201, "abc=="])
async def test_search_cursor_out_of_range_is_400(api, cursor):
    await _error(await api.client.get("/v1/records", params={"cursor": cursor}, headers=api.auth()), 400,
                 "bad_cursor")


async def test_search_cursor_issued_by_the_server_pages(api):
    for n in range(3):
        await api.put(f"r{n}".encode(), "text/plain")
    first = await (await api.client.get("/v1/records", params={"limit": "2"}, headers=api.auth())).json()
    assert len(first["items"]) == 2 and first["next"]
    resp = await api.client.get("/v1/records", params={"limit": "2", "cursor": first["next"]}, headers=api.auth())
    assert resp.status == 200 and len((await resp.json())["items"]) == 1
    # the largest position that fits int64 is well-formed (so the 400s above are the range check)
    resp = await api.client.get("/v1/records", params={"cursor": _cursor({"s": 2**63 - 1})}, headers=api.auth())
    assert resp.status == 200 and len((await resp.json())["items"]) == 3


async def test_nul_in_a_string_is_400(api):
    await _error(await api.client.get("/v1/records?q=%00", headers=api.auth()), 400, "bad_q")
    await _error(await api.client.get("/v1/records?tag=a%00b", headers=api.auth()), 400, "bad_tag")
    await _error(await api.client.post("/v1/principals", json={"name": "a\x00b"}, headers=api.auth()), 400,
                 "bad_name")
    await _error(await api.client.post("/v1/records?title=a%00", data=b"x",
                                       headers={**api.auth(), "Content-Type": "text/plain"}), 400, "bad_title")
    assert await _rows(api, "records") == 0
    resp = await api.client.get("/v1/records?q=x-ray", headers=api.auth())
    assert resp.status == 200


async def test_lone_surrogate_and_non_json_constants_are_400(api):
    for raw, code in ((b'{"name": "\\ud800"}', "bad_name"), (b'{"name": NaN}', "bad_json"),
                      (b'{"name": "a"', "bad_json"), (b"\xff\xfe", "bad_json")):
        resp = await api.client.post("/v1/principals", data=raw,
                                     headers={**api.auth(), "Content-Type": "application/json"})
        await _error(resp, 400, code)
    assert await _rows(api, "principals") == 2  # the node key and the owner


async def test_deep_json_is_400_not_a_recursion_error(api):
    with pytest.raises(RecursionError):  # what the server used to meet
        json.loads("[" * 100_000)
    for route, body in (("/v1/grants", b"[" * 100_000), ("/v1/principals", b"[" * 60_000),
                        ("/v1/principals", b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}")):
        resp = await api.client.post(route, data=body, headers={**api.auth(), "Content-Type": "application/json"})
        await _error(resp, 400, "bad_json")
    # brackets inside strings are text, not nesting
    resp = await api.client.post("/v1/principals", json={"name": "[" * 90}, headers=api.auth())
    assert resp.status == 201, await resp.text()


async def test_oversized_json_body_is_413(api):
    big = {"name": "x" * (70 * 1024)}
    await _error(await api.client.post("/v1/principals", json=big, headers=api.auth()), 413, "too_large")

    async def chunked():
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    resp = await api.client.post("/v1/principals", data=chunked(),
                                 headers={**api.auth(), "Content-Type": "application/json"})
    await _error(resp, 413, "too_large")
    assert await _rows(api, "principals") == 2


async def test_json_body_in_two_tcp_writes_is_read_whole(api):
    """``content.read(n)`` returned only the first segment: valid JSON was a 400."""
    body = json.dumps({"name": "Dr. Split"}).encode()
    reader, writer = await asyncio.open_connection(api.client.server.host, api.client.server.port)
    try:
        writer.write(b"POST /v1/principals HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {api.owner_token}\r\nContent-Length: {len(body)}\r\n"
                       "Connection: close\r\n\r\n".encode() + body[:7])
        await writer.drain()
        await asyncio.sleep(0.2)  # the server has the headers and 7 bytes before the rest arrives
        writer.write(body[7:])
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    assert b'"name": "Dr. Split"' in response


@pytest.mark.parametrize("path,query", [
    ("/v1/records", "limit=1&limit=2"), ("/v1/records", "q=a&q=b"), ("/v1/audit", "after=1&after=2"),
    ("/v1/pins", "status=queued&status=failed")])
async def test_repeated_single_parameters_are_400(api, path, query):
    resp = await api.client.get(f"{path}?{query}", headers=api.auth())
    assert resp.status == 400, await resp.text()


async def test_repeatable_tag_is_fine(api):
    await api.put(b"x", "text/plain", tag=["a"])
    resp = await api.client.post("/v1/records?tag=a&tag=b", data=b"y",
                                 headers={**api.auth(), "Content-Type": "text/plain"})
    assert resp.status == 201 and (await resp.json())["tags"] == ["a", "b"]
    resp = await api.client.get("/v1/records?tag=a&tag=b", headers=api.auth())
    assert [r["tags"] for r in (await resp.json())["items"]] == [["a", "b"]]


@pytest.mark.parametrize("route,body", [
    ("/v1/imports", {"share": ["mv1"]}), ("/v1/imports", {"share": "mv1.x.y", "extra": 1}),
    ("/v1/principals", {"name": {"first": "a"}})])
async def test_bodies_of_the_wrong_shape_are_400(api, route, body):
    await _error(await api.client.post(route, json=body, headers=api.auth()), 400)


async def test_emergency_reason_must_be_ten_characters(api):
    record = await api.put(b"x", "text/plain")
    path = f"/v1/records/{record['id']}/emergency"
    await _error(await api.client.post(path, json={"reason": "too short"}, headers=api.auth()), 400,
                 "reason_required")
    await _error(await api.client.post(path, json={"reason": ["a" * 20]}, headers=api.auth()), 400,
                 "reason_required")
    resp = await api.client.post(path, json={"reason": "patient unconscious in ER"}, headers=api.auth())
    assert resp.status == 201, await resp.text()


async def test_json_routes_refuse_other_media_types(api):
    resp = await api.client.post("/v1/principals", data=b"name=x",
                                 headers={**api.auth(), "Content-Type": "application/x-www-form-urlencoded"})
    await _error(resp, 415, "unsupported_media_type")


async def test_the_longest_valid_query_fits_the_request_line(api):
    """32 tags of 64 four-byte characters percent-encode to ~24 KiB: past aiohttp's 8 KiB default."""
    tags = [chr(0x1F600 + n) * 64 for n in range(32)]
    resp = await api.client.post("/v1/records", params=[("tag", t) for t in tags] + [("title", "\U0001F600" * 500)],
                                 data=b"x", headers={**api.auth(), "Content-Type": "text/plain"})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["tags"] == tags


@pytest.mark.parametrize("write", ["yes", 1, "true", [True]])
async def test_grant_write_must_be_a_boolean(api, write):
    record = await api.put(b"x", "text/plain")
    did, _ = await api.principal("reader")
    resp = await api.client.post(f"/v1/records/{record['id']}/grants", json={"recipient": did, "write": write},
                                 headers=api.auth())
    await _error(resp, 400, "bad_write")


@pytest.mark.parametrize("query,code", [("grace=nan", "bad_grace"), ("grace=inf", "bad_grace"),
                                        ("grace=-1", "bad_grace"), ("grace=1e400", "bad_grace"),
                                        ("force=yes", "bad_force"), ("force=true&force=false", "bad_force")])
async def test_gc_parameters_are_checked(api, query, code):
    await _error(await api.client.post(f"/v1/admin/gc?{query}", headers=api.auth()), 400, code)


async def test_gc_with_checked_parameters_runs(api):
    resp = await api.client.post("/v1/admin/gc?grace=0.5&force=true", headers=api.auth())
    assert resp.status == 200 and set(await resp.json()) == {"removed", "kept"}


async def test_an_unknown_query_parameter_is_refused_by_name(api):
    """A misspelt parameter (``limt`` for ``limit``) must not be silently
    ignored: the caller would get an answer to another question."""
    response = await api.client.get("/v1/audit", params={"limt": "5"}, headers=api.auth())
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "unknown_parameter" and "'limt'" in error["message"]
    assert (await api.client.get("/v1/audit", params={"limit": "5"}, headers=api.auth())).status == 200
