"""atheris target: the signed-metadata schema (daemon.metadata.check_body) on
any dag-cbor value, as open_metadata would hand it over after the signature."""
import atheris
from _harness import fuzz, vectors

with atheris.instrument_imports():
    import dag_cbor
    from daemon.metadata import MetadataError, check_body


def parse(data: bytes) -> None:
    try:
        body = dag_cbor.decode(data)
    except Exception:  # not what this target explores
        return
    check_body(body, 1024, 0, 3, 4096)


if __name__ == "__main__":
    body = {**vectors()["inputs"]["metadata_body"]}
    fuzz("metadata", parse, (MetadataError,), [dag_cbor.encode(body)])
