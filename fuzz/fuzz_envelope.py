"""atheris target: envelope decoding, opening the box and the receipt."""
import atheris
from _harness import fuzz, vectors

with atheris.instrument_imports():
    from daemon.blocks import FormatError
    from daemon.cid import DAG_CBOR, Cid
    from daemon.envelope import NotForUs, envelope_manifest, open_envelope, open_receipt
    from daemon.identity import Principal
    from daemon.manifest import SignatureError

INPUTS = vectors()["inputs"]
RECIPIENT = Principal.from_seed("recipient", bytes.fromhex(INPUTS["recipient_seed"]))
AUTHOR = Principal.from_seed("author", bytes.fromhex(INPUTS["author_seed"]))


def parse(data: bytes) -> None:
    cid = Cid.for_data(DAG_CBOR, data)
    envelope_manifest(cid, data)
    try:
        open_receipt(cid, data, AUTHOR)
    except (FormatError, NotForUs):
        pass
    open_envelope(cid, data, RECIPIENT)


if __name__ == "__main__":
    fuzz("envelope", parse, (FormatError, NotForUs, SignatureError), [bytes.fromhex(vectors()["envelope"]["hex"])])
