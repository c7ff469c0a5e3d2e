"""atheris target: manifest and link-block decoding, then opening the metadata
(the format vectors' DEK, so well-formed mutations reach the schema check)."""
import atheris
from _harness import fuzz, vectors

with atheris.instrument_imports():
    from daemon import crypto
    from daemon.blocks import FormatError
    from daemon.cid import DAG_CBOR, Cid
    from daemon.manifest import SignatureError, decode_link_block, decode_manifest, open_metadata

DEK = bytes.fromhex(vectors()["inputs"]["dek"])


def parse(data: bytes) -> None:
    cid = Cid.for_data(DAG_CBOR, data)
    try:
        decode_link_block(cid, data)
    except FormatError:
        pass
    open_metadata(decode_manifest(cid, data), DEK)


if __name__ == "__main__":
    fuzz("manifest", parse, (FormatError, SignatureError, crypto.DecryptError),
         [bytes.fromhex(vectors()["manifest"]["hex"])])
