"""The worker process for CPU work that holds the GIL (daemon.worker): calls,
big bytes arguments, errors, a worker that dies, a caller that gives up, and
a FHIR body over 1 MiB parsed there end to end."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import types

import pytest

from daemon import fhir
from daemon.errors import InvalidRecord
from daemon.worker import RAW_ABOVE, RemoteTraceback, Worker, WorkerCrashed

from .test_api_records import FHIR_OBS


@pytest.fixture
async def worker():
    w = Worker(nice=0)
    yield w
    await asyncio.get_running_loop().run_in_executor(None, w.close)


def big_observation(notes: int) -> bytes:
    return json.dumps({**FHIR_OBS, "note": [{"text": "n" * 1024} for _ in range(notes)]}).encode()


async def test_a_call_runs_in_another_process(worker):
    assert await worker.run(os.getpid) == worker.pid != os.getpid()


async def test_big_bytes_arrive_whole_and_answers_come_back(worker):
    body = big_observation(2048)
    assert len(body) > RAW_ABOVE
    summary = await worker.run(fhir.summarize, body)
    assert summary == fhir.summarize(body)
    assert await worker.run(bytearray.count, body, b"n") == body.count(b"n")  # raw, not the first argument
    assert await worker.run(len, b"small") == 5
    assert await worker.run(fhir.summarize, bytearray(body)) == summary  # bytes-like: arrives as a bytearray
    assert await worker.run(bytearray.count, memoryview(body)[1:], b"n") == body.count(b"n")


async def test_the_worker_parses_its_own_copy_of_a_big_body_and_frees_it(worker):
    body = bytearray(big_observation(2048))
    assert await worker.run(fhir.summarize_buffer, body) == fhir.summarize(bytes(body))
    assert body == bytearray(big_observation(2048))  # the caller's buffer is untouched: the worker had a copy
    with pytest.raises(InvalidRecord):
        await worker.run(fhir.summarize_buffer, b"{" + b"\xff" * RAW_ABOVE + b"}")  # not UTF-8: 422, as in-process


async def test_an_exception_is_raised_in_the_caller_with_the_workers_traceback(worker):
    with pytest.raises(InvalidRecord) as caught:
        await worker.run(fhir.summarize, b"{not json" * 10_000)
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "summarize" in str(caught.value.__cause__)
    assert await worker.run(len, b"abc") == 3  # and the worker goes on


async def test_what_cannot_travel_fails_only_that_call(worker):
    with pytest.raises(Exception):
        await worker.run(len, lambda: 0)  # cannot be pickled here
    only_here = types.ModuleType("only_here")  # a module the worker cannot import
    exec("def f():\n    return 1\n", only_here.__dict__)
    sys.modules["only_here"] = only_here
    try:
        with pytest.raises(ModuleNotFoundError):
            await worker.run(only_here.f)
    finally:
        del sys.modules["only_here"]
    assert await worker.run(len, b"abcd") == 4


async def test_a_worker_that_dies_fails_the_call_and_is_started_again(worker):
    first = await worker.run(os.getpid)
    with pytest.raises(WorkerCrashed):
        await worker.run(os._exit, 3)
    assert await worker.run(os.getpid) != first


async def test_a_caller_that_gives_up_leaves_the_pipe_in_step(worker):
    task = asyncio.create_task(worker.run(time.sleep, 0.3))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await worker.run(len, b"abcde") == 5  # not the answer of the call given up


async def test_the_worker_imports_only_what_its_calls_need(worker):
    await worker.run(fhir.summarize, big_observation(100))
    loaded = await worker.run(eval, "sorted(__import__('sys').modules)")
    for heavy in ("aiohttp", "asyncio", "multiformats", "dag_cbor", "nacl", "numpy", "sqlite_utils", "pydantic",
                  "multiprocessing", "daemon.metadata", "daemon.cli"):
        assert heavy not in loaded, heavy
    assert "daemon.fhir" in loaded


async def test_a_fhir_body_over_a_mebibyte_is_parsed_in_the_worker_and_indexed(api):
    body = big_observation(1100)
    assert len(body) > 1024 * 1024
    record = await api.put(body, "application/fhir+json")
    assert record["type"] == "Observation" and record["date"] == "2024-03-01T09:30:00Z"
    stored = await api.client.get(f"/v1/records/{record['id']}/content", headers=api.auth())
    assert await stored.read() == body  # the worker freed its copy, never the one that was sealed
    assert api.vault.services._worker.pid is not None
    resp = await api.client.post("/v1/records", data=b"[" * 2 * 1024 * 1024,
                                 headers={**api.auth(), "Content-Type": "application/fhir+json"})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_record"


async def test_a_worker_killed_mid_parse_is_a_503_and_the_next_upload_works(api):
    """A dead worker is a server-side, passing failure: 503, never a 500,
    nothing stored, and the next big body parses in a new worker."""
    services = api.vault.services
    first = await api.put(big_observation(1100), "application/fhir+json")
    real_run = services._worker.run

    async def killed(fn, *args):  # the worker process dies during this body's call
        return await real_run(os._exit, 9)

    services._worker.run = killed
    resp = await api.client.post("/v1/records", data=big_observation(1100),
                                 headers={**api.auth(), "Content-Type": "application/fhir+json"})
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "worker_unavailable"
    services._worker.run = real_run
    listed = await (await api.client.get("/v1/records", headers=api.auth())).json()
    assert [r["id"] for r in listed["items"]] == [first["id"]]  # nothing half-written
    again = await api.put(big_observation(1100), "application/fhir+json")
    assert again["type"] == "Observation"
