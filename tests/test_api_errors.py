"""Every error row of API.md on the records routes; nothing half-written."""
from __future__ import annotations

import asyncio
import importlib
import logging
import os

import aiohttp
import pytest

from .errors import assert_error
from .waiting import until


async def _count_records(api) -> int:
    return await api.vault.db.read(lambda c: c.execute("SELECT COUNT(*) FROM records").fetchone()[0])


async def test_empty_body_is_400(api):
    resp = await api.client.post("/v1/records", data=b"", headers={**api.auth(), "Content-Type": "text/plain"})
    await assert_error(resp, 400, "empty_body")
    assert await _count_records(api) == 0


@pytest.mark.parametrize("content_type", [None, "", "nonsense", "text/", "a b/c"])
async def test_missing_or_bad_media_type_is_415(api, content_type):
    headers = api.auth()
    if content_type is not None:
        headers["Content-Type"] = content_type
    resp = await api.client.post("/v1/records", data=b"abc", headers=headers,
                                 skip_auto_headers=["Content-Type"])
    await assert_error(resp, 415, "unsupported_media_type")


async def test_oversize_is_413_by_length_and_by_stream(api):
    api.vault.config.max_record_bytes = 10_000
    resp = await api.client.post("/v1/records", data=os.urandom(20_000),
                                 headers={**api.auth(), "Content-Type": "application/octet-stream"})
    await assert_error(resp, 413, "too_large")

    async def chunked():
        for _ in range(10):
            yield os.urandom(4096)

    resp = await api.client.post("/v1/records", data=chunked(),
                                 headers={**api.auth(), "Content-Type": "application/octet-stream"})
    await assert_error(resp, 413, "too_large")
    assert await _count_records(api) == 0
    api.vault.config.max_fhir_bytes = 100
    resp = await api.client.post("/v1/records", data=b'{"resourceType": "Patient", "x": "' + b"a" * 200 + b'"}',
                                 headers={**api.auth(), "Content-Type": "application/fhir+json"})
    await assert_error(resp, 413, "too_large")


@pytest.mark.parametrize("params,code", [
    ({"patient": "bob"}, "bad_patient"), ({"type": "no spaces!"}, "bad_type"), ({"date": "last tuesday"}, "bad_date"),
    ({"tag": ""}, "bad_tag"), ({"wait": "forever"}, "bad_wait"), ({"title": "x" * 501}, "bad_title")])
async def test_bad_record_fields_are_400(api, params, code):
    resp = await api.client.post("/v1/records", data=b"x", params=params,
                                 headers={**api.auth(), "Content-Type": "text/plain"})
    await assert_error(resp, 400, code)
    assert await _count_records(api) == 0


@pytest.mark.parametrize("params,code", [
    ({"cursor": "garbage!"}, "bad_cursor"), ({"cursor": "eyJ4IjogMX0"}, "bad_cursor"), ({"limit": "0"}, "bad_limit"),
    ({"limit": "1001"}, "bad_limit"), ({"limit": "ten"}, "bad_limit"), ({"patient": "x"}, "bad_patient"),
    ({"since": "soon"}, "bad_since")])
async def test_bad_search_parameters_are_400(api, params, code):
    await assert_error(await api.client.get("/v1/records", params=params, headers=api.auth()), 400, code)


@pytest.mark.parametrize("path", ["/v1/records/short", "/v1/records/ABCDEFGHIJKLMNOPQRSTUVWXYZ/content",
                                  "/v1/records/00000000000000000000000000/versions"])
async def test_malformed_ids_are_400(api, path):
    await assert_error(await api.client.get(path, headers=api.auth()), 400, "bad_id")


async def test_concurrent_new_versions_are_serialized(api):
    """Writes to one record run one at a time: two PUTs at once both land,
    as versions 2 and 3, each continuing the one before; nothing is lost."""
    record = await api.put(b"v1", "text/plain")
    bodies = [os.urandom(200_000), os.urandom(200_000)]
    responses = await asyncio.gather(*[
        api.client.put(f"/v1/records/{record['id']}", data=body, headers={**api.auth(), "Content-Type": "text/plain"})
        for body in bodies])
    assert [r.status for r in responses] == [200, 200]
    written = sorted([await r.json() for r in responses], key=lambda r: r["version"])
    assert [r["version"] for r in written] == [2, 3]
    versions = await (await api.client.get(f"/v1/records/{record['id']}/versions", headers=api.auth())).json()
    assert [v["version"] for v in versions["items"]] == [1, 2, 3]
    assert versions["items"][2]["cid"] == written[1]["cid"]
    latest = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    assert await latest.read() in bodies


def _block_files(api) -> list[str]:
    return [f for _, _, files in os.walk(api.vault.config.blocks_dir) for f in files]


def _block_path(api, cid: str) -> str:
    return os.path.join(api.vault.config.blocks_dir, cid[-3:-1], cid)


async def _chunk_cids(api, record) -> list[str]:
    from daemon.cid import Cid
    from daemon.manifest import decode_manifest
    cid = Cid.parse(record["cid"])
    manifest = decode_manifest(cid, await api.vault.blocks.get(cid))
    return [str(c) for c in manifest.links]


async def test_tampered_first_chunk_is_502_json(api):
    record = await api.put(os.urandom(30_000))
    first = _block_path(api, (await _chunk_cids(api, record))[0])
    data = bytearray(open(first, "rb").read())
    data[100] ^= 0xFF
    with open(first, "wb") as handle:
        handle.write(data)
    resp = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    await assert_error(resp, 502, "integrity_error")


async def test_tampered_later_chunk_cuts_the_stream_before_its_bytes(api):
    data = os.urandom(40_000)
    record = await api.put(data)
    chunks = await _chunk_cids(api, record)
    path = _block_path(api, chunks[5])
    raw = bytearray(open(path, "rb").read())
    raw[10] ^= 0x01
    with open(path, "wb") as handle:
        handle.write(raw)
    received = b""
    resp = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        async for piece in resp.content.iter_any():
            received += piece
    assert len(received) <= 5 * 4096 and data.startswith(received)  # only verified chunks before the bad one


async def test_missing_block_is_502(api):
    record = await api.put(os.urandom(10_000))
    os.unlink(_block_path(api, (await _chunk_cids(api, record))[0]))
    await assert_error(await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth()), 502,
                 "block_not_found")


async def test_cut_off_upload_leaves_no_record_and_no_blocks(api, caplog):
    """A client that disconnects mid-body: no index row, no orphan block (the
    upload removes what it stored), and a logged client abort, not a 500."""
    caplog.set_level(logging.INFO, logger="medvault")
    host, port = api.client.server.host, api.client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 + f"Authorization: Bearer {api.owner_token}\r\nContent-Length: 100000\r\n\r\n".encode()
                 + os.urandom(50_000))
    await writer.drain()
    services = api.vault.services
    await until(lambda: _block_files(api), what="the upload to store some of its chunks")
    writer.close()
    await until(lambda: not services.inflight and not _block_files(api), timeout=30,
                what="the cut-off upload to remove the blocks it stored")
    assert await _count_records(api) == 0
    aborts = [r for r in caplog.records if r.getMessage() == "request aborted by the client"]
    assert aborts and not [r for r in caplog.records if r.getMessage() == "unhandled error"]


# ---- the error table: every status API.md lists, provoked once -------------------------------

# API.md, "Errors": the statuses a client may see, each as {"error": {"code", "message"}}.
API_ERROR_STATUSES = {400, 401, 403, 404, 409, 413, 415, 422, 502, 503, 504, 507}
# 504 and 507 need a real Kubo and a real full disk; their tests check the same shape with assert_error.
PROVOKED_ELSEWHERE = {504: "tests/test_waits.py::test_share_naming_a_missing_block_is_504_within_the_fetch_timeout",
                      507: "tests/test_space.py::test_full_disk_is_507_erase_frees_it_and_uploads_resume"}


async def _bad_id(api, node_api):
    return await api.client.get("/v1/records/short", headers=api.auth()), "bad_id"


async def _no_token(api, node_api):
    return await api.client.get("/v1/records"), "missing_token"


async def _missing_scope(api, node_api):
    _, reader = await api.principal("reader", scopes=("read",))
    return await api.client.post("/v1/principals", json={"name": "x"}, headers=api.auth(reader)), "missing_scope"


async def _unknown_record(api, node_api):
    return await api.client.get("/v1/records/" + "a" * 26, headers=api.auth()), "record_not_found"


async def _revoke_the_patient(api, node_api):
    patient, _ = await api.principal("patient")
    record = await api.put(b"x", "text/plain", patient=patient)
    return await api.client.delete(f"/v1/records/{record['id']}/grants/{patient}",
                                   headers=api.auth()), "cannot_revoke_owner"


async def _too_large(api, node_api):
    api.vault.config.max_record_bytes = 1000
    return await api.client.post("/v1/records", data=os.urandom(2000),
                                 headers={**api.auth(), "Content-Type": "application/octet-stream"}), "too_large"


async def _no_media_type(api, node_api):
    return await api.client.post("/v1/records", data=b"abc", headers=api.auth(),
                                 skip_auto_headers=["Content-Type"]), "unsupported_media_type"


async def _invalid_fhir(api, node_api):
    return await api.client.post("/v1/records", data=b'{"resourceType": "lowercase"}',
                                 headers={**api.auth(), "Content-Type": "application/fhir+json"}), "invalid_record"


async def _tampered_block(api, node_api):
    record = await api.put(os.urandom(10_000))
    path = _block_path(api, (await _chunk_cids(api, record))[0])
    data = bytearray(open(path, "rb").read())
    data[50] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(data)
    return await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth()), "integrity_error"


async def _kubo_unreachable(api, node_api):
    from .ipfs import free_port
    down = await node_api("kubo-down", backend="kubo", ipfs_api=f"http://127.0.0.1:{free_port()}",
                          request_timeout=5.0)
    return await down.client.post("/v1/records", data=b"x",
                                  headers={**down.auth(), "Content-Type": "text/plain"}), "backend_unavailable"


ERROR_TABLE = {400: _bad_id, 401: _no_token, 403: _missing_scope, 404: _unknown_record, 409: _revoke_the_patient,
               413: _too_large, 415: _no_media_type, 422: _invalid_fhir, 502: _tampered_block,
               503: _kubo_unreachable}


def test_the_error_table_covers_every_status_api_md_lists():
    assert set(ERROR_TABLE) | set(PROVOKED_ELSEWHERE) == API_ERROR_STATUSES
    assert not set(ERROR_TABLE) & set(PROVOKED_ELSEWHERE)
    for where in PROVOKED_ELSEWHERE.values():  # the pointers name tests that exist
        path, name = where.split("::")
        module = importlib.import_module("tests." + os.path.basename(path).removesuffix(".py"))
        assert callable(getattr(module, name, None)), where


@pytest.mark.parametrize("status", sorted(ERROR_TABLE))
async def test_each_documented_error_status_has_the_error_shape(api, node_api, status):
    resp, code = await ERROR_TABLE[status](api, node_api)
    await assert_error(resp, status, code)
