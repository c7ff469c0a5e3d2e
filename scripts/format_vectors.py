"""Test vectors for format version 1 (docs/FORMAT.md, docs/vectors/format-v1.json).

Everything but the envelope is deterministic from the fixed inputs below
(Ed25519 signatures are deterministic; the sealed box is not, so the envelope
is generated once and committed, and checked by opening it).
Run ``python scripts/format_vectors.py`` to rewrite the JSON file.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from daemon import crypto  # noqa: E402
from daemon.blocks import Block  # noqa: E402
from daemon.envelope import build_envelope  # noqa: E402
from daemon.identity import Principal  # noqa: E402
from daemon.manifest import build_link_tree, build_manifest  # noqa: E402

DEK = bytes(range(32))
STREAM_ID = bytes(range(0x10, 0x20))
META_NONCE = bytes(range(0x20, 0x38))
AUTHOR_SEED = bytes([1]) * 32
RECIPIENT_SEED = bytes([2]) * 32
CHUNK_SIZE = 1024
PLAINTEXT = (b"medvault format v1 test vector. " * 80)[:2500]
BODY = {"record": "aaaaaaaaaaaaaaaaaaaaaaaaaa", "version": 1, "prev": None, "content_type": "text/plain",
        "size": len(PLAINTEXT), "patient": None, "type": "Note", "title": "vector", "tags": ["test"],
        "date": "2024-01-01", "subject": None, "codes": [], "text": None, "created": "2024-01-01T00:00:00.000Z"}
OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "vectors", "format-v1.json")


def deterministic() -> dict:
    author = Principal.from_seed("author", AUTHOR_SEED)
    recipient = Principal.from_seed("recipient", RECIPIENT_SEED)
    pieces = [PLAINTEXT[i:i + CHUNK_SIZE] for i in range(0, len(PLAINTEXT), CHUNK_SIZE)]
    chunks = [Block.raw(crypto.seal_chunk(DEK, STREAM_ID, i, i == len(pieces) - 1, p)) for i, p in enumerate(pieces)]
    depth, links, _ = build_link_tree([c.cid for c in chunks])
    body = {**BODY, "author": author.did}
    manifest = build_manifest(DEK, STREAM_ID, CHUNK_SIZE, depth, links, body, author, META_NONCE)
    return {
        "inputs": {"dek": DEK.hex(), "stream_id": STREAM_ID.hex(), "meta_nonce": META_NONCE.hex(),
                   "author_seed": AUTHOR_SEED.hex(), "recipient_seed": RECIPIENT_SEED.hex(),
                   "chunk_size": CHUNK_SIZE, "plaintext_hex": PLAINTEXT.hex(), "metadata_body": body},
        "author_did": author.did,
        "recipient_did": recipient.did,
        "chunks": [{"cid": str(c.cid), "hex": c.data.hex()} for c in chunks],
        "manifest": {"cid": str(manifest.cid), "hex": manifest.data.hex()},
    }


def main() -> None:
    vectors = deterministic()
    author = Principal.from_seed("author", AUTHOR_SEED)
    from daemon.cid import Cid
    envelope = build_envelope(Cid.parse(vectors["manifest"]["cid"]), DEK, vectors["recipient_did"], author,
                              "2024-01-01T00:00:00.000Z", None)
    vectors["envelope"] = {"cid": str(envelope.cid), "hex": envelope.data.hex(), "opens_to_dek": DEK.hex(),
                           "granted": "2024-01-01T00:00:00.000Z", "expires": None}
    with open(OUT, "w") as handle:
        json.dump(vectors, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
