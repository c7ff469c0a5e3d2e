"""Test vectors for format version 1 (docs/FORMAT.md, docs/vectors/format-v1.json
and docs/vectors/format-v1-negative.json).

Everything but the positive envelope is deterministic from the fixed inputs
below (Ed25519 signatures are deterministic; ``crypto_box_seal`` picks a random
ephemeral key, so that envelope is generated once and committed, and checked
by opening it). The negative vectors seal their boxes with a fixed ephemeral
key (``_seal``, the same construction) so they reproduce byte for byte.
Run ``python scripts/format_vectors.py`` to rewrite both JSON files.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dag_cbor  # noqa: E402
from multiformats import CID, varint  # noqa: E402
from nacl.bindings import crypto_box, crypto_scalarmult_base  # noqa: E402
from nacl.encoding import RawEncoder  # noqa: E402
from nacl.hash import blake2b  # noqa: E402

from daemon import car, crypto  # noqa: E402
from daemon.blocks import Block  # noqa: E402
from daemon.cid import DAG_CBOR, RAW, Cid  # noqa: E402
from daemon.envelope import build_envelope  # noqa: E402
from daemon.identity import Principal, box_public_key_of  # noqa: E402
from daemon.manifest import MAX_LINKS, build_link_tree, build_manifest  # noqa: E402

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
NEGATIVE_OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "vectors", "format-v1-negative.json")


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


# ---- negative vectors: inputs every decoder must refuse --------------------

def _seal(plaintext: bytes, recipient_did: str, ephemeral_seed: bytes) -> bytes:
    """crypto_box_seal with a fixed ephemeral key: epk ‖ crypto_box(m, blake2b-24(epk ‖ pk), esk, pk)."""
    pk = bytes(box_public_key_of(recipient_did))
    epk = crypto_scalarmult_base(ephemeral_seed)
    return epk + crypto_box(plaintext, blake2b(epk + pk, digest_size=24, encoder=RawEncoder), pk, ephemeral_seed)


def _block(kind: str, data: bytes, codec: int = DAG_CBOR) -> dict:
    return {"object": kind, "cid": str(Cid.for_data(codec, data)), "hex": data.hex()}


def _swap(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, old
    return data.replace(old, new)


def negative() -> dict:
    author = Principal.from_seed("author", AUTHOR_SEED)
    recipient = Principal.from_seed("recipient", RECIPIENT_SEED)
    good = deterministic()
    manifest = dag_cbor.decode(bytes.fromhex(good["manifest"]["hex"]))
    chunk_cids = [Cid.parse(c["cid"]) for c in good["chunks"]]
    body = {**BODY, "author": author.did}
    out = []

    def add(name, reason, error, vector, path=None):
        out.append({"name": name, "reason": reason, "error": error, "path": path, **vector})

    def manifest_with(**changes):
        node = {**manifest, **changes}
        return _block("manifest", dag_cbor.encode({k: v for k, v in node.items() if v is not _DROP}))

    # Manifest, clear part
    add("manifest-unknown-key", "a key the format does not define", "FormatError", manifest_with(x=1), "manifest.x")
    add("manifest-missing-key", "no depth", "FormatError", manifest_with(depth=_DROP), "manifest.depth")
    add("manifest-version-2", "v must be 1", "FormatError", manifest_with(v=2), "manifest.v")
    add("manifest-sid-short", "sid is 15 bytes", "FormatError", manifest_with(sid=STREAM_ID[:15]), "manifest.sid")
    add("manifest-sid-text", "sid is text, not bytes", "FormatError", manifest_with(sid=STREAM_ID.hex()),
        "manifest.sid")
    add("manifest-cs-zero", "chunk size 0", "FormatError", manifest_with(cs=0), "manifest.cs")
    add("manifest-cs-oversize", "chunk size above 1048560", "FormatError",
        manifest_with(cs=crypto.MAX_CHUNK_SIZE + 1), "manifest.cs")
    add("manifest-cs-bool", "chunk size is a boolean", "FormatError", manifest_with(cs=True), "manifest.cs")
    add("manifest-depth-5", "depth above 4", "FormatError", manifest_with(depth=5), "manifest.depth")
    add("manifest-no-links", "links is empty", "FormatError", manifest_with(links=[]), "manifest.links")
    add("manifest-too-many-links", "4097 links", "FormatError",
        manifest_with(links=[Cid.for_data(RAW, i.to_bytes(2, "big")).to_link() for i in range(MAX_LINKS + 1)]),
        "manifest.links")
    add("manifest-depth0-dag-cbor-link", "at depth 0 links must be raw CIDs", "FormatError",
        manifest_with(links=[Cid.for_data(DAG_CBOR, b"x").to_link()]), "manifest.links[0]")
    add("manifest-depth1-raw-link", "at depth > 0 links must be dag-cbor CIDs", "FormatError",
        manifest_with(depth=1), "manifest.links[0]")
    add("manifest-link-as-text", "a link written as a CID string, not tag 42", "FormatError",
        manifest_with(links=[str(c) for c in chunk_cids]), "manifest.links[0]")
    add("manifest-link-dag-pb", "a CIDv0 (dag-pb) link", "FormatError",
        manifest_with(links=[CID.decode("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")]), "manifest.links[0]")
    add("manifest-meta-short", "meta shorter than nonce + tag + 1", "FormatError",
        manifest_with(meta=bytes(40)), "manifest.meta")
    add("manifest-not-a-map", "a list, not a map", "FormatError", _block("manifest", dag_cbor.encode([1])),
        "manifest")
    canonical = bytes.fromhex(good["manifest"]["hex"])
    add("manifest-non-minimal-int", "cs 1024 written in 4 bytes instead of 2", "FormatError",
        _block("manifest", _swap(canonical, b"\x62cs\x19\x04\x00", b"\x62cs\x1a\x00\x00\x04\x00")), "manifest")
    fields = {key: dag_cbor.encode(value) for key, value in manifest.items()}
    add("manifest-keys-unsorted", "map keys not in dag-cbor order (v must come first)", "FormatError",
        _block("manifest", _map([(k, fields[k]) for k in ("cs", "v", "sid", "meta", "depth", "links")])),
        "manifest")
    indefinite = b"\x9f" + b"".join(dag_cbor.encode(link) for link in manifest["links"]) + b"\xff"
    add("manifest-indefinite-list", "links as an indefinite-length list", "FormatError",
        _block("manifest", _map([(k, indefinite if k == "links" else fields[k])
                                 for k in ("v", "cs", "sid", "meta", "depth", "links")])), "manifest")
    add("manifest-raw-codec", "a manifest under a raw CID", "FormatError",
        _block("manifest", canonical, RAW), None)

    # Link blocks
    links = [c.to_link() for c in chunk_cids]
    add("link-block-unknown-key", "a key besides links", "FormatError",
        _block("link_block", dag_cbor.encode({"links": links, "x": 1})), "link block.x")
    add("link-block-empty", "no links", "FormatError", _block("link_block", dag_cbor.encode({"links": []})),
        "link block.links")
    add("link-block-mixed-codecs", "a dag-cbor link among raw ones", "FormatError",
        _block("link_block", dag_cbor.encode({"links": [*links, Cid.for_data(DAG_CBOR, b"x").to_link()]})),
        "link block.links[3]")

    # Envelopes: the clear part
    manifest_cid = Cid.parse(good["manifest"]["cid"])
    granted = "2024-01-01T00:00:00.000Z"

    def inner(**changes):
        signed = _envelope_signed(manifest_cid, DEK, recipient.did, author, granted, None)
        node = {"dek": DEK, "to": recipient.did, "from": author.did, "granted": granted, "expires": None,
                "sig": signed, **changes}
        return dag_cbor.encode({k: v for k, v in node.items() if v is not _DROP})

    def envelope_with(box_plain=None, raw_box=None, **changes):
        box = raw_box if raw_box is not None else _seal(box_plain or inner(), recipient.did, bytes([9]) * 32)
        node = {"v": 1, "manifest": manifest_cid.to_link(), "box": box, **changes}
        return _block("envelope", dag_cbor.encode({k: v for k, v in node.items() if v is not _DROP}))

    add("envelope-unknown-key", "a key the format does not define", "FormatError", envelope_with(x=b""),
        "envelope.x")
    add("envelope-version-2", "v must be 1", "FormatError", envelope_with(v=2), "envelope.v")
    add("envelope-manifest-raw", "manifest links to a raw block", "FormatError",
        envelope_with(manifest=chunk_cids[0].to_link()), "envelope.manifest")
    add("envelope-box-text", "box is text", "FormatError", envelope_with(box="x" * 100), "envelope.box")
    add("envelope-box-short", "box shorter than a sealed box can be", "FormatError",
        envelope_with(raw_box=bytes(48)), "envelope.box")
    add("envelope-box-oversize", "box longer than 1024 bytes", "FormatError",
        envelope_with(raw_box=bytes(1025)), "envelope.box")
    add("envelope-no-box", "box missing", "FormatError", envelope_with(box=_DROP), "envelope.box")
    # ... and the sealed box (open with the recipient's key)
    add("box-unknown-key", "the box holds a key the format does not define", "FormatError",
        envelope_with(inner(x=1)), "box.x")
    add("box-dek-short", "dek is 31 bytes", "FormatError", envelope_with(inner(dek=DEK[:31])), "box.dek")
    add("box-to-not-did", "to is not a did:key", "FormatError", envelope_with(inner(to="mallory")), "box.to")
    add("box-granted-other-spelling", "granted without milliseconds", "FormatError",
        envelope_with(inner(granted="2024-01-01T00:00:00Z")), "box.granted")
    add("box-expires-int", "expires is an integer", "FormatError", envelope_with(inner(expires=0)), "box.expires")
    add("box-sig-short", "sig is 63 bytes", "FormatError", envelope_with(inner(sig=bytes(63))), "box.sig")
    add("box-not-canonical", "box contents with unsorted keys", "FormatError",
        envelope_with(_map([(k, dag_cbor.encode(v)) for k, v in dag_cbor.decode(inner()).items()][::-1])), "box")
    add("box-bad-signature", "the granter's signature covers another DEK", "SignatureError",
        envelope_with(inner(dek=bytes(32))), None)

    # Signed metadata: each body is correctly signed by the author, so only the schema refuses it
    def meta(vector_body, signature=None, extra=None, *, cs=CHUNK_SIZE, depth=0, top=None):
        top = chunk_cids if top is None else top
        if signature is None:
            built = build_manifest(DEK, STREAM_ID, cs, depth, top, vector_body, author, META_NONCE)
            return _block("manifest", built.data)
        sealed = crypto.seal_metadata(DEK, STREAM_ID, dag_cbor.encode({"body": vector_body, "sig": signature,
                                                                       **(extra or {})}), META_NONCE)
        node = {**manifest, "meta": sealed}
        return _block("manifest", dag_cbor.encode(node))

    bad_bodies = [
        ("unknown-key", {**body, "is_admin": True}, "body.is_admin"),
        ("unknown-key-not-named", {**body, "Jane Doe, HIV+": 1}, "body"),
        ("missing-created", {k: v for k, v in body.items() if k != "created"}, "body.created"),
        ("record-id", {**body, "record": "A" * 26}, "body.record"),
        ("record-int", {**body, "record": 7}, "body.record"),
        ("version-0", {**body, "version": 0}, "body.version"),
        ("version-bool", {**body, "version": True}, "body.version"),
        ("version-2-31", {**body, "version": 2**31, "prev": good["manifest"]["cid"]}, "body.version"),
        ("prev-on-version-1", {**body, "prev": good["manifest"]["cid"]}, "body.prev"),
        ("prev-missing-on-version-2", {**body, "version": 2}, "body.prev"),
        ("prev-raw-cid", {**body, "version": 2, "prev": good["chunks"][0]["cid"]}, "body.prev"),
        ("content-type", {**body, "content_type": "not a media type"}, "body.content_type"),
        ("size-negative", {**body, "size": -1}, "body.size"),
        ("size-zero", {**body, "size": 0}, "body.size"),
        ("size-chunk-count", {**body, "size": CHUNK_SIZE * 5}, "body.size"),
        ("patient-not-did", {**body, "patient": "patient-1"}, "body.patient"),
        ("type-pattern", {**body, "type": "1Note"}, "body.type"),
        ("title-empty", {**body, "title": ""}, "body.title"),
        ("title-oversize", {**body, "title": "t" * 501}, "body.title"),
        ("title-nul", {**body, "title": "a\x00b"}, "body.title"),
        ("tags-33", {**body, "tags": [f"t{i}" for i in range(33)]}, "body.tags"),
        ("tags-repeated", {**body, "tags": ["a", "a"]}, "body.tags"),
        ("tag-unprintable", {**body, "tags": ["ok", "line\nbreak"]}, "body.tags[1]"),
        ("tag-int", {**body, "tags": [1]}, "body.tags[0]"),
        ("date", {**body, "date": "yesterday"}, "body.date"),
        ("subject-oversize", {**body, "subject": "s" * 201}, "body.subject"),
        ("codes-triple", {**body, "codes": [["http://loinc.org", "1-8", "x"]]}, "body.codes[0]"),
        ("code-empty", {**body, "codes": [["http://loinc.org", ""]]}, "body.codes[0][1]"),
        ("codes-1001", {**body, "codes": [["", str(i)] for i in range(1001)]}, "body.codes"),
        ("identifiers-not-pairs", {**body, "identifiers": ["MRN-1"]}, "body.identifiers[0]"),
        ("identifiers-101", {**body, "identifiers": [["", str(i)] for i in range(101)]}, "body.identifiers"),
        ("text-oversize", {**body, "text": "x" * 4001}, "body.text"),
        ("created-no-offset", {**body, "created": "2024-01-01T00:00:00.000"}, "body.created"),
        ("created-other-spelling", {**body, "created": "2024-01-01T01:00:00.000+01:00"}, "body.created"),
    ]
    for name, vector_body, path in bad_bodies:
        add(f"metadata-{name}", f"signed metadata breaks the schema at {path}", "MetadataError",
            meta(vector_body), path)
    add("metadata-bytes-value", "a body value canonical JSON cannot hold (bytes)", "MetadataError",
        meta({**body, "title": b"x"}, bytes(64)), "body")
    add("metadata-sealed-unknown-key", "the sealed map holds a key besides body and sig", "FormatError",
        meta(body, bytes(64), {"x": 1}), "meta.x")
    add("metadata-sig-short", "sig is 63 bytes", "FormatError", meta(body, bytes(63)), "meta.sig")
    add("metadata-author-not-did", "the author is not a did:key, so nothing verifies", "SignatureError",
        meta({**body, "author": "someone"}, bytes(64)), None)

    # CAR archives (read to the end)
    chunk = bytes.fromhex(good["chunks"][0]["hex"])
    head = car.header([chunk_cids[0]])
    section = car.frame(Block(chunk_cids[0], chunk))

    def car_vector(data):
        return {"object": "car", "hex": data.hex()}

    add("car-empty", "no bytes at all", "FormatError", car_vector(b""))
    add("car-truncated", "the archive ends inside a block", "FormatError", car_vector(head + section[:-1]))
    add("car-block-cid-mismatch", "a block whose bytes do not hash to its CID", "FormatError",
        car_vector(head + section[:-1] + bytes([section[-1] ^ 1])))
    add("car-version-2", "header version 2", "FormatError",
        car_vector(_car_head({"roots": [chunk_cids[0].to_link()], "version": 2}) + section), "CAR header.version")
    add("car-header-unknown-key", "a header key besides version and roots", "FormatError",
        car_vector(_car_head({"roots": [], "version": 1, "x": 1}) + section), "CAR header.x")
    add("car-non-minimal-varint", "a section length in a non-minimal varint", "FormatError",
        car_vector(head + b"\x80\x00"))
    add("car-oversize-section", "a section longer than 2 MiB + 36", "FormatError",
        car_vector(head + varint.encode(car.MAX_BLOCK + 37) + section[2:]))
    add("car-dag-pb-block", "a block under a CIDv0 (dag-pb) CID", "FormatError",
        car_vector(head + varint.encode(34 + 4) + bytes.fromhex("1220") + bytes(32) + b"data"))
    return {
        "about": "Inputs a format v1 decoder must refuse (docs/FORMAT.md, 'Decoder rules'). 'object' says "
                 "which decoder: manifest (then its metadata, opened with inputs.dek), link_block, envelope "
                 "(then its box, opened with inputs.recipient_seed) or car (read to the end). 'error' is "
                 "the class medvault raises, 'path' the field it names.",
        "inputs": {"dek": DEK.hex(), "recipient_seed": RECIPIENT_SEED.hex(), "author_seed": AUTHOR_SEED.hex()},
        "vectors": out,
    }


_DROP = object()


def _map(pairs: list[tuple[str, bytes]]) -> bytes:
    """A CBOR map of already-encoded values, in exactly the order given."""
    return bytes([0xa0 + len(pairs)]) + b"".join(dag_cbor.encode(key) + value for key, value in pairs)


def _car_head(value) -> bytes:
    encoded = dag_cbor.encode(value)
    return varint.encode(len(encoded)) + encoded


def _envelope_signed(manifest, dek, recipient, granter, granted, expires) -> bytes:
    from daemon.envelope import _signed_fields
    return granter.sign(_signed_fields(manifest, dek, recipient, granter.did, granted, expires))



def main() -> None:
    vectors = deterministic()
    author = Principal.from_seed("author", AUTHOR_SEED)
    envelope = build_envelope(Cid.parse(vectors["manifest"]["cid"]), DEK, vectors["recipient_did"], author,
                              "2024-01-01T00:00:00.000Z", None)
    vectors["envelope"] = {"cid": str(envelope.cid), "hex": envelope.data.hex(), "opens_to_dek": DEK.hex(),
                           "granted": "2024-01-01T00:00:00.000Z", "expires": None}
    for path, value in ((OUT, vectors), (NEGATIVE_OUT, negative())):
        with open(path, "w") as handle:
            json.dump(value, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
