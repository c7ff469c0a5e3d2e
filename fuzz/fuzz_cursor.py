"""atheris target: list cursors (daemon.views.decode_cursor)."""
import atheris
from _harness import fuzz

with atheris.instrument_imports():
    from daemon.errors import BadRequest
    from daemon.views import decode_cursor, encode_cursor


def parse(data: bytes) -> None:
    assert 0 <= decode_cursor(data.decode("utf-8", "surrogateescape")) < 2**63


if __name__ == "__main__":
    fuzz("cursor", parse, (BadRequest,), [encode_cursor(12345).encode()])
