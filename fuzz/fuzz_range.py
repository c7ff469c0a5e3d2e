"""atheris target: Range headers (api.routes_records.parse_range)."""
import atheris
from _harness import fuzz

with atheris.instrument_imports():
    from api.routes_records import parse_range


def parse(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    size = provider.ConsumeIntInRange(0, 2**53)
    span = parse_range(provider.ConsumeUnicodeNoSurrogates(64), size)
    assert span is None or 0 <= span[0] <= span[1] < size


if __name__ == "__main__":
    fuzz("range", parse, (ValueError,), [b"\x00" * 8 + b"bytes=0-99", b"\x10" * 8 + b"bytes=-5"])
