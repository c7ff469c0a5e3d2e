"""atheris target: search cursors (daemon.search_params, the ``cursor`` parameter)."""
import atheris
from _harness import fuzz

with atheris.instrument_imports():
    from daemon.errors import BadRequest
    from daemon.search_params import encode_cursor, parse as parse_search


def parse(data: bytes) -> None:
    cursor = data.decode("utf-8", "surrogateescape")
    after = parse_search([("cursor", cursor)], "did:key:z6Mk", "2024-01-01T00:00:00.000Z", False).after
    assert all(v is None or (type(v) is int and -2**63 <= v < 2**63) for v in after.values())


if __name__ == "__main__":
    fuzz("cursor", parse, (BadRequest,), [encode_cursor({"s": 12345, "d": None}, "-seq").encode()])
