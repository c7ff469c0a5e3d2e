"""The worker process's entry: reads calls on stdin, answers on stdout.

Started by ``daemon.worker.Worker`` as ``python -c`` with this module's
``main``; imports nothing of medvault itself: each call's function is
pickled by reference, so the worker imports only the modules of the
functions it is asked to run (``daemon.fhir`` for a FHIR summary). Not
``multiprocessing``: a spawned worker re-imports its parent's ``__main__``
and needs a resource tracker process beside it (13 MB) for semaphores a
single worker never shares.

Wire format, both ways, all lengths unsigned 64-bit big-endian:

- call: ``len(pickle)``, ``count`` of raw arguments, each raw argument's
  length, the pickle of ``(fn, args)`` with ``None`` in each raw
  argument's place, then each raw argument's bytes. Big bytes-like
  arguments travel raw and arrive as a ``bytearray`` of the worker's own:
  no pickled copy on either side, and the reader allocates each one once,
  at its final size.
- answer: ``len(pickle)`` then the pickle of ``(ok, value)``: the result,
  or the exception the call raised.
"""
from __future__ import annotations

import os
import pickle
import signal
import struct
import sys

LENGTH = struct.Struct("!Q")


def read_exact(stream, size: int) -> bytes:
    """``size`` bytes from a buffered binary stream (one allocation); EOFError on a short read."""
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the other end closed the pipe")
    return data


def read_length(stream) -> int:
    return LENGTH.unpack(read_exact(stream, LENGTH.size))[0]


def _raw(arg, raw_above: int) -> memoryview | None:
    if type(arg) in (bytes, bytearray, memoryview):
        view = memoryview(arg).cast("B")
        if view.nbytes >= raw_above:
            return view
    return None


def write_call(stream, fn, args: tuple, raw_above: int) -> None:
    """Writes one call. ``bytes``, ``bytearray`` or contiguous ``memoryview``
    arguments of ``raw_above`` bytes or more go raw (and arrive as a ``bytearray``)."""
    views = {i: view for i, arg in enumerate(args) if (view := _raw(arg, raw_above)) is not None}
    raw = list(views)
    rest = [None if i in views else arg for i, arg in enumerate(args)]
    call = pickle.dumps((fn, rest, raw), protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(LENGTH.pack(len(call)) + LENGTH.pack(len(raw)) + b"".join(LENGTH.pack(views[i].nbytes) for i in raw))
    stream.write(call)
    for i in raw:
        stream.write(views[i])  # a buffered writer hands a big write straight to the pipe
    stream.flush()


def read_buffer(stream, size: int) -> bytearray:
    """``size`` bytes into a bytearray of exactly that size (one allocation,
    which the called function may free early: ``fhir.summarize_buffer``)."""
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            raise EOFError("the other end closed the pipe")
        done += got
    return data


def read_call(stream) -> tuple[bytes, list[bytearray]]:
    """One call as its pickle and its raw arguments (unpickled by the caller:
    a function that cannot be imported still leaves the pipe in step)."""
    size = read_length(stream)
    sizes = [read_length(stream) for _ in range(read_length(stream))]
    call = read_exact(stream, size)
    return call, [read_buffer(stream, length) for length in sizes]


def unpickle_call(call: bytes, raws: list[bytes]) -> tuple:
    fn, args, raw = pickle.loads(call)
    for i, data in zip(raw, raws):
        args[i] = data
    return fn, args


def write_answer(stream, ok: bool, value, trace: str = "") -> None:
    try:
        answer = pickle.dumps((ok, value, trace), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an unpicklable result or exception still answers
        answer = pickle.dumps((False, RuntimeError(f"the worker's answer could not be pickled: {exc!r}"), trace))
    stream.write(LENGTH.pack(len(answer)))
    stream.write(answer)
    stream.flush()


def read_answer(stream) -> tuple[bool, object, str]:
    """(ok, the result or the exception raised, the worker's traceback text)."""
    return pickle.loads(read_exact(stream, read_length(stream)))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C reaches the daemon, which closes our pipe
    nice = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if nice:
        try:
            os.nice(nice)  # bulk work: below the event loop's priority (daemon.priority)
        except OSError:
            pass
    # The pipes become private descriptors; fd 1 goes to stderr, so nothing a
    # called function prints can corrupt an answer.
    calls = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    while True:
        try:
            call, raws = read_call(calls)
        except EOFError:  # the daemon closed the pipe: stop
            return
        try:
            fn, args = unpickle_call(call, raws)
            del call, raws
            result = fn(*args)
        except Exception as exc:  # noqa: BLE001  (handed back to the caller, which re-raises it)
            import traceback

            fn = args = call = raws = None
            write_answer(answers, False, exc, "".join(traceback.format_exception(exc)))
            continue
        fn = args = None
        write_answer(answers, True, result)
        result = None


if __name__ == "__main__":
    main()
