"""One worker process for CPU work that holds the GIL for its whole length
(``json.loads`` of a 16 MiB FHIR body is one C call: on a thread it would
still stop the event loop).

The worker is a plain child process (``daemon.worker_main``) on two pipes,
not a ``multiprocessing`` pool: no resource tracker process beside it, no
re-import of the daemon's ``__main__``, and a big ``bytes`` argument goes
down the pipe as it is instead of being pickled into a second copy. Calls
run one at a time, in order, on one I/O thread; a caller that gives up
(a cancelled request) leaves the exchange to finish there, so the pipe
stays in step. A worker that dies fails the call in hand
(``WorkerCrashed``) and is started again for the next one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from . import worker_main
from .priority import BULK_NICE

log = logging.getLogger("medvault.worker")
RAW_ABOVE = 64 * 1024  # bytes arguments this big travel raw, not pickled
_ENTRY = "import sys; sys.path[:] = sys.argv[2:]; from daemon.worker_main import main; main()"


class WorkerCrashed(RuntimeError):
    """The worker process died during a call."""


class RemoteTraceback(Exception):
    """The worker's traceback, as the ``__cause__`` of the exception it raised."""

    def __str__(self) -> str:
        return self.args[0]


class Worker:
    def __init__(self, nice: int = BULK_NICE):
        self._nice = nice
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-io")
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def run(self, fn, *args):
        """``fn(*args)`` in the worker (both picklable; ``fn`` by reference)."""
        return await asyncio.get_running_loop().run_in_executor(self._io, self._call, fn, args)

    def _start(self) -> subprocess.Popen:
        # -S: no site module and .pth hooks (~2.4 MB resident); the parent's
        # sys.path instead, as multiprocessing's spawn would hand it over, with
        # the directory holding this package first (an editable install finds
        # it through a .pth hook, which -S skips).
        root = os.path.dirname(os.path.dirname(os.path.abspath(worker_main.__file__)))
        argv = [sys.executable, *subprocess._args_from_interpreter_flags(), "-S", "-c", _ENTRY, str(self._nice),
                root, *sys.path]
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        log.debug("worker started", extra={"pid": self._proc.pid})
        return self._proc

    def _call(self, fn, args: tuple):  # on the I/O thread only
        proc = self._proc
        if proc is None or proc.poll() is not None:
            proc = self._start()
        try:
            worker_main.write_call(proc.stdin, fn, args, RAW_ABOVE)
            ok, value, trace = worker_main.read_answer(proc.stdout)
        except (EOFError, OSError) as exc:  # BrokenPipeError: it died before reading the call
            code = self._reap()
            log.error("the worker process died", extra={"exit_code": code})
            raise WorkerCrashed(f"the worker process died (exit code {code})") from exc
        if ok:
            return value
        if trace:
            raise value from RemoteTraceback(trace)
        raise value

    def _reap(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:  # a broken pipe's unflushed buffer
                pass
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def close(self) -> None:
        """Waits for the call in hand; the worker exits when its pipe closes."""
        self._io.shutdown(wait=True)
        self._reap()
