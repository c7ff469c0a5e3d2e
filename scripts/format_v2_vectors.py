"""Test vectors for format version 2, padded records (docs/FORMAT.md,
docs/vectors/format-v2.json).

Deterministic from the fixed inputs below (the same keys, stream id, nonce
and plaintext as format 1's vectors, so the two can be compared side by
side). ``negative`` holds records a reader must refuse: each names the
``object`` it is (``manifest``: refused by decode + open_metadata with the
DEK; ``record``: the manifest opens, reading the content is refused), the
``reason`` and the error class. Run ``python scripts/format_v2_vectors.py``
to rewrite the file.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dag_cbor  # noqa: E402

from daemon import crypto  # noqa: E402
from daemon.blocks import Block  # noqa: E402
from daemon.identity import Principal  # noqa: E402
from daemon.manifest import build_link_tree, build_manifest  # noqa: E402
from daemon.padding import padded_length  # noqa: E402

DEK = bytes(range(32))
STREAM_ID = bytes(range(0x10, 0x20))
META_NONCE = bytes(range(0x20, 0x38))
AUTHOR_SEED = bytes([1]) * 32
CHUNK_SIZE = 1024
BUCKETS = [1024, 4096, 16384]
PLAINTEXT = (b"medvault format v1 test vector. " * 80)[:2500]
BODY = {"record": "aaaaaaaaaaaaaaaaaaaaaaaaaa", "version": 1, "prev": None, "content_type": "text/plain",
        "size": len(PLAINTEXT), "patient": None, "type": "Note", "title": "vector", "tags": ["test"],
        "date": "2024-01-01", "subject": None, "codes": [], "text": None, "created": "2024-01-01T00:00:00.000Z"}
OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "vectors", "format-v2.json")


def _record(stream: bytes, padded: int, body: dict, version: int = crypto.PADDED_FORMAT):
    """Chunks of ``stream`` sealed under ``version``'s domain and a v2 manifest claiming ``padded``."""
    author = Principal.from_seed("author", AUTHOR_SEED)
    pieces = [stream[i:i + CHUNK_SIZE] for i in range(0, len(stream), CHUNK_SIZE)]
    chunks = [Block.raw(crypto.seal_chunk(DEK, STREAM_ID, i, i == len(pieces) - 1, p, version))
              for i, p in enumerate(pieces)]
    depth, links, _ = build_link_tree([c.cid for c in chunks])
    manifest = build_manifest(DEK, STREAM_ID, CHUNK_SIZE, depth, links, {**body, "author": author.did}, author,
                              META_NONCE, padded=padded)
    return {"chunks": [{"cid": str(c.cid), "hex": c.data.hex()} for c in chunks],
            "manifest": {"cid": str(manifest.cid), "hex": manifest.data.hex()}}


def deterministic() -> dict:
    padded = padded_length(len(PLAINTEXT), BUCKETS)
    author = Principal.from_seed("author", AUTHOR_SEED)
    return {
        "inputs": {"dek": DEK.hex(), "stream_id": STREAM_ID.hex(), "meta_nonce": META_NONCE.hex(),
                   "author_seed": AUTHOR_SEED.hex(), "chunk_size": CHUNK_SIZE, "buckets": BUCKETS,
                   "plaintext_hex": PLAINTEXT.hex(), "metadata_body": {**BODY, "author": author.did}},
        "padded": padded,
        **_record(PLAINTEXT + bytes(padded - len(PLAINTEXT)), padded, BODY),
    }


def negative() -> list[dict]:
    stream = PLAINTEXT + bytes(4096 - len(PLAINTEXT))
    out = []

    def add(name, obj, reason, error, record, path=None):
        out.append({"name": name, "object": obj, "reason": reason, "error": error, "path": path, **record})

    add("size-above-padded", "manifest", "the signed size (5000) is larger than padded (4096): negative padding",
        "MetadataError", _record(stream, 4096, {**BODY, "size": 5000}), "body.size")
    add("padded-beyond-chunks", "manifest", "padded (8192) needs 8 chunks, the tree has 4", "MetadataError",
        _record(stream, 8192, BODY), "body.size")
    good = _record(stream, 4096, BODY)
    node = dag_cbor.decode(bytes.fromhex(good["manifest"]["hex"]))
    node["padded"] = 4095  # a clear field the author's signature covers
    block = Block.dag_cbor(node)
    add("padded-edited", "manifest", "padded changed after signing", "SignatureError",
        {"chunks": good["chunks"], "manifest": {"cid": str(block.cid), "hex": block.data.hex()}})
    node = dag_cbor.decode(bytes.fromhex(good["manifest"]["hex"]))
    node["v"] = 1
    block = Block.dag_cbor(node)
    add("padded-in-v1", "manifest", "a v1 manifest has no padded field", "FormatError",
        {"chunks": good["chunks"], "manifest": {"cid": str(block.cid), "hex": block.data.hex()}}, "manifest.v")
    lying = bytearray(stream)
    lying[3000] = 1  # the padding claims the record is 2500 bytes, but byte 3000 is not padding
    add("padding-not-zero", "record", "a nonzero byte after the signed size", "IntegrityError",
        _record(bytes(lying), 4096, BODY))
    add("v1-chunks-under-v2", "record", "chunks sealed under format 1's domain", "IntegrityError",
        _record(stream, 4096, BODY, version=crypto.FORMAT_VERSION))
    return out


def main() -> None:
    with open(OUT, "w") as handle:
        json.dump({**deterministic(), "negative": negative()}, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
