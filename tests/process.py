"""Helpers to run the real ``medvault`` command and daemon as subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

MEDVAULT = [sys.executable, "-m", "daemon.cli"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([*MEDVAULT, *args], cwd=ROOT, capture_output=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"medvault {args[0]} failed: {result.stderr.decode()[-2000:]}")
    return result


def run_json(*args: str) -> dict:
    return json.loads(run(*args).stdout)


class Daemon:
    """``medvault daemon`` on a free loopback port; logs go to a file."""

    def __init__(self, data_dir: str, log_path: str, args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = args  # e.g. ("--passphrase-file", path)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "Daemon":
        api_file = os.path.join(self.data_dir, "api")
        if os.path.exists(api_file):
            os.unlink(api_file)  # a killed daemon leaves it behind
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*MEDVAULT, "daemon", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0",
                                      *self.args], cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not os.path.exists(api_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("daemon did not start: " + open(self.log_path).read()[-2000:])
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0


def upload(api: str, token: str, data: bytes, content_type: str) -> dict:
    """POSTs one record to a running daemon; returns the record's JSON."""
    request = urllib.request.Request(f"{api}/v1/records", data=data, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=600) as resp:
        return json.loads(resp.read())


def download(api: str, token: str, record_id: str) -> int:
    """Reads a record's content in 1 MiB pieces; returns its length."""
    request = urllib.request.Request(f"{api}/v1/records/{record_id}/content",
                                     headers={"Authorization": f"Bearer {token}"})
    size = 0
    with urllib.request.urlopen(request, timeout=600) as resp:
        while piece := resp.read(1 << 20):
            size += len(piece)
    return size


def set_chunk_size(data_dir: str, size: int) -> None:
    """Rewrites a stopped node's chunk size (a small one makes wide manifests)."""
    path = os.path.join(data_dir, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    config["chunk_size"] = size
    with open(path, "w") as handle:
        json.dump(config, handle)
