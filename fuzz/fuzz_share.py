"""atheris target: share tokens (daemon.sharing.parse_share)."""
import atheris
from _harness import fuzz, vectors

with atheris.instrument_imports():
    from daemon.errors import BadRequest
    from daemon.sharing import parse_share


def parse(data: bytes) -> None:
    parse_share(data.decode("utf-8", "surrogateescape"))


if __name__ == "__main__":
    v = vectors()
    fuzz("share", parse, (BadRequest,), [f"mv1.{v['manifest']['cid']}.{v['envelope']['cid']}".encode()])
