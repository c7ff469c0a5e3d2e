"""Slow and greedy clients against the real daemon, over raw sockets: headers
or a body sent too slowly are cut off, and connections past the cap get a
503 at once. Times are generous upper bounds only."""
from __future__ import annotations

import json
import os
import socket
import time
from urllib.parse import urlparse

import pytest

from .process import Daemon, run_json

BOUND = 15.0  # seconds; the limits below are 1 s


@pytest.fixture
def daemon(tmp_path):
    data_dir = str(tmp_path / "node")
    run_json("init", "--data-dir", data_dir)
    path = os.path.join(data_dir, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    config.update(header_timeout=1.0, body_timeout=1.0, max_connections=4)
    with open(path, "w") as handle:
        json.dump(config, handle)
    node = Daemon(data_dir, str(tmp_path / "daemon.log")).start()
    yield node
    node.stop()


def _connect(node: Daemon) -> socket.socket:
    with open(os.path.join(node.data_dir, "api")) as handle:
        url = urlparse(handle.read().strip())
    sock = socket.create_connection((url.hostname, url.port), timeout=BOUND)
    return sock


def _token(node: Daemon) -> str:
    with open(os.path.join(node.data_dir, "owner.token")) as handle:
        return handle.read().strip()


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset counts as closed."""
    received = b""
    try:
        while piece := sock.recv(65536):
            received += piece
    except ConnectionResetError:
        pass
    return received


def test_headers_sent_too_slowly_are_cut_off(daemon):
    sock = _connect(daemon)
    started = time.monotonic()
    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for byte in b"X-Slow: " + b"a" * 100:  # one byte every 0.2 s: forever, for a server without a limit
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.2)
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                closed = True
                break
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
    assert closed and time.monotonic() - started < BOUND
    sock.close()


def test_a_body_sent_too_slowly_gets_408_and_is_cut_off(daemon):
    sock = _connect(daemon)
    started = time.monotonic()
    sock.sendall(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 + f"Authorization: Bearer {_token(daemon)}\r\nContent-Length: 100000\r\n\r\n".encode()
                 + os.urandom(1000))  # then silence
    answer = _read_until_closed(sock)
    assert time.monotonic() - started < BOUND
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
    sock.close()
    records = run_json("search", "--data-dir", daemon.data_dir)
    assert records["items"] == []


def test_connections_past_the_cap_get_503_at_once(daemon):
    idle = [_connect(daemon) for _ in range(4)]  # the cap
    time.sleep(0.2)
    extra = _connect(daemon)
    extra.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = _read_until_closed(extra)
    assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
    for sock in idle:
        sock.close()
    time.sleep(0.2)
    again = _connect(daemon)
    again.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"too_many_connections" not in _read_until_closed(again)


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # a header over 8 KiB
    b"GET /v1/records?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a request line over the limit
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n",  # not a header at all
])
def test_what_the_http_parser_refuses_is_a_json_400(daemon, request_bytes):
    sock = _connect(daemon)
    sock.sendall(request_bytes)
    head, _, body = _read_until_closed(sock).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head[:100]  # (aiohttp answers a request it cannot parse as HTTP/1.0)
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and "aaaa" not in error["message"]
