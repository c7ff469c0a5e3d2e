"""Format version 1: published vectors, and every tampering fails to open."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import dag_cbor
import pytest
from multiformats import CID
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from daemon import car, crypto
from daemon.blocks import Block, FormatError
from daemon.cid import DAG_CBOR, RAW, Cid
from daemon.envelope import NotForUs, build_envelope, open_envelope
from daemon.identity import Principal
from daemon.manifest import (SignatureError, build_link_tree, build_manifest, decode_link_block, decode_manifest,
                             open_metadata)
from daemon.metadata import MetadataError

ROOT = os.path.join(os.path.dirname(__file__), "..")
with open(os.path.join(ROOT, "docs", "vectors", "format-v1.json")) as _f:
    VECTORS = json.load(_f)
_spec = importlib.util.spec_from_file_location("format_vectors", os.path.join(ROOT, "scripts", "format_vectors.py"))
format_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(format_vectors)


def test_vectors_reproduce_exactly():
    fresh = format_vectors.deterministic()
    for key in ("inputs", "author_did", "recipient_did", "chunks", "manifest"):
        assert fresh[key] == VECTORS[key], key


def test_chunk_vector_opens_with_plain_libsodium():
    """An independent reading of the STREAM construction from FORMAT.md."""
    inputs = VECTORS["inputs"]
    dek, sid = bytes.fromhex(inputs["dek"]), bytes.fromhex(inputs["stream_id"])
    plaintext = b""
    for i, chunk in enumerate(VECTORS["chunks"]):
        data = bytes.fromhex(chunk["hex"])
        assert chunk["cid"] == CID("base32", 1, "raw", ("sha2-256", hashlib.sha256(data).digest())).encode()
        last = i == len(VECTORS["chunks"]) - 1
        aad = b"medvault/v1/chunk\x00" + sid + i.to_bytes(8, "big") + bytes([last])
        plaintext += crypto_aead_xchacha20poly1305_ietf_decrypt(data, aad, sid + i.to_bytes(8, "big"), dek)
    assert plaintext.hex() == inputs["plaintext_hex"]


def test_envelope_vector_opens_to_the_dek():
    env = VECTORS["envelope"]
    recipient = Principal.from_seed("r", bytes.fromhex(VECTORS["inputs"]["recipient_seed"]))
    cid = Cid.parse(env["cid"])
    data = bytes.fromhex(env["hex"])
    assert cid.matches(data)
    grant = open_envelope(cid, data, recipient)
    assert grant.dek.hex() == env["opens_to_dek"]
    assert str(grant.manifest) == VECTORS["manifest"]["cid"]
    assert grant.granter == VECTORS["author_did"]
    node = dag_cbor.decode(data)
    assert set(node) == {"v", "manifest", "box", "receipt"}  # no names or ids in clear


def test_manifest_vector_decodes_and_verifies():
    m = VECTORS["manifest"]
    manifest = decode_manifest(Cid.parse(m["cid"]), bytes.fromhex(m["hex"]))
    body = open_metadata(manifest, bytes.fromhex(VECTORS["inputs"]["dek"]))
    assert body["author"] == VECTORS["author_did"]
    assert [str(c) for c in manifest.links] == [c["cid"] for c in VECTORS["chunks"]]
    assert set(dag_cbor.decode(bytes.fromhex(m["hex"]))) == {"v", "sid", "cs", "depth", "links", "meta"}


def test_our_cids_equal_multiformats():
    for codec, name in ((RAW, "raw"), (DAG_CBOR, "dag-cbor")):
        for n in (0, 1, 1000):
            data = os.urandom(n)
            ours = Cid.for_data(codec, data)
            theirs = CID("base32", 1, name, ("sha2-256", hashlib.sha256(data).digest()))
            assert str(ours) == theirs.encode() and bytes(ours) == bytes(theirs)
            assert Cid.parse(theirs.encode()) == ours


def test_cid_parse_fast_path_takes_only_the_canonical_form():
    ours = Cid.for_data(RAW, b"x")
    text = str(ours)
    assert Cid.parse(text) == ours
    assert Cid.parse(CID.decode(text).encode("base58btc")) == ours  # other bases: through multiformats
    for other in (text.upper(), "B" + text[1:], text[:-1] + ("a" if text[-1] != "a" else "b"), text[:-1] + "1"):
        try:
            parsed = Cid.parse(other)
        except ValueError:
            continue
        assert str(CID.decode(other)) and bytes(parsed) == bytes(CID.decode(other))  # same answer as multiformats


@pytest.mark.parametrize("text", ["", "nope", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
                                  "bafkqaaa", "bagaaierasords4njcts6vs7qvdjfcvgnume4hqohf65zsfguprqphs3icwea"])
def test_cid_parse_refuses_what_v1_does_not_write(text):
    with pytest.raises(ValueError):
        Cid.parse(text)


# ---- tampering ------------------------------------------------------------

AUTHOR = Principal.from_seed("a", bytes([7]) * 32)
READER = Principal.from_seed("b", bytes([8]) * 32)


def _sealed(n_chunks: int = 4, cs: int = 64):
    dek, sid = crypto.new_data_key(), crypto.new_stream_id()
    plain = [os.urandom(cs) for _ in range(n_chunks)]
    blocks = [Block.raw(crypto.seal_chunk(dek, sid, i, i == n_chunks - 1, p)) for i, p in enumerate(plain)]
    return dek, sid, plain, blocks


def _open_all(dek, sid, blocks):
    return [crypto.open_chunk(dek, sid, i, i == len(blocks) - 1, b.data) for i, b in enumerate(blocks)]


def test_chunks_round_trip():
    dek, sid, plain, blocks = _sealed()
    assert _open_all(dek, sid, blocks) == plain


@pytest.mark.parametrize("index", [0, 2, 3])
def test_flipped_bit_in_any_chunk_fails(index):
    dek, sid, _, blocks = _sealed()
    data = bytearray(blocks[index].data)
    data[len(data) // 2] ^= 0x01
    blocks[index] = Block.raw(bytes(data))
    with pytest.raises(crypto.DecryptError):
        _open_all(dek, sid, blocks)


def test_swapped_chunks_fail():
    dek, sid, _, blocks = _sealed()
    blocks[0], blocks[1] = blocks[1], blocks[0]
    with pytest.raises(crypto.DecryptError):
        _open_all(dek, sid, blocks)


def test_dropped_last_chunk_fails():
    dek, sid, _, blocks = _sealed()
    with pytest.raises(crypto.DecryptError):
        _open_all(dek, sid, blocks[:-1])  # the new last chunk was not sealed as last


def test_chunk_from_another_stream_fails():
    dek, sid, _, blocks = _sealed()
    _, _, _, others = _sealed()
    with pytest.raises(crypto.DecryptError):
        _open_all(dek, sid, [others[0], *blocks[1:]])


def _manifest(links, dek=None, sid=None, author=AUTHOR):
    dek, sid = dek or crypto.new_data_key(), sid or crypto.new_stream_id()
    body = {**format_vectors.BODY, "record": "x" * 26, "author": author.did, "size": 64 * len(links)}
    return dek, build_manifest(dek, sid, 64, 0, links, body, author)


def test_flipped_bit_in_manifest_fails():
    _, _, _, blocks = _sealed()
    dek, manifest = _manifest([b.cid for b in blocks])
    assert open_metadata(decode_manifest(manifest.cid, manifest.data), dek)["record"] == "x" * 26  # control
    for pos in range(10, len(manifest.data), 7):
        data = bytearray(manifest.data)
        data[pos] ^= 0x04
        data = bytes(data)
        assert not manifest.cid.matches(data)  # served under the genuine CID: every store's read check refuses it
        with pytest.raises((FormatError, SignatureError, crypto.DecryptError, ValueError)):
            open_metadata(decode_manifest(Cid.for_data(DAG_CBOR, data), data), dek)  # re-addressed: does not open


def test_manifest_with_swapped_links_fails_signature():
    _, _, _, blocks = _sealed()
    dek, manifest = _manifest([b.cid for b in blocks])
    node = dag_cbor.decode(manifest.data)
    node["links"] = [node["links"][1], node["links"][0], *node["links"][2:]]
    forged = Block.dag_cbor(node)
    with pytest.raises(SignatureError):
        open_metadata(decode_manifest(forged.cid, forged.data), dek)


def test_link_tree_spans_levels():
    cids = [Cid.for_data(RAW, bytes([i % 256, i // 256])) for i in range(300)]
    depth, top, link_blocks = build_link_tree(cids, fanout=16)
    assert depth == 2 and len(top) <= 16
    assert len(link_blocks) == 19 + 2  # 19 leaves of 16, then 2 parents


def test_envelope_refuses_other_recipient_and_tampering():
    dek = crypto.new_data_key()
    manifest_cid = Cid.for_data(DAG_CBOR, b"m")
    env = build_envelope(manifest_cid, dek, READER.did, AUTHOR, "2024-01-01T00:00:00.000Z")
    assert open_envelope(env.cid, env.data, READER).dek == dek
    with pytest.raises(NotForUs):
        open_envelope(env.cid, env.data, AUTHOR)
    node = dag_cbor.decode(env.data)
    box = bytearray(node["box"])
    box[-3] ^= 1
    node["box"] = bytes(box)
    bad = Block.dag_cbor(node)
    with pytest.raises(NotForUs):
        open_envelope(bad.cid, bad.data, READER)
    # re-pointed at another manifest: the granter's signature no longer covers it
    node = dag_cbor.decode(env.data)
    node["manifest"] = Cid.for_data(DAG_CBOR, b"other").to_link()
    moved = Block.dag_cbor(node)
    with pytest.raises(SignatureError):
        open_envelope(moved.cid, moved.data, READER)


# ---- negative vectors: what every decoder must refuse ---------------------

with open(os.path.join(ROOT, "docs", "vectors", "format-v1-negative.json")) as _f:
    NEGATIVE = json.load(_f)
_ERRORS = {"FormatError": FormatError, "MetadataError": MetadataError, "SignatureError": SignatureError}


def test_negative_vectors_reproduce_exactly():
    assert format_vectors.negative() == NEGATIVE


async def _read_car(data: bytes) -> None:
    async def source():
        yield data

    _, blocks = await car.read(source())
    async for _ in blocks:
        pass


async def _decode(vector: dict) -> None:
    """Runs the decoder (and opener) a vector names, as a node reading it from outside would."""
    keys = NEGATIVE["inputs"]
    data = bytes.fromhex(vector["hex"])
    if vector["object"] == "car":
        return await _read_car(data)
    cid = Cid.parse(vector["cid"])
    assert cid.matches(data)  # the refusal is about the content, never a CID mismatch
    if vector["object"] == "manifest":
        open_metadata(decode_manifest(cid, data), bytes.fromhex(keys["dek"]))
    elif vector["object"] == "link_block":
        decode_link_block(cid, data)
    elif vector["object"] == "envelope":
        open_envelope(cid, data, Principal.from_seed("r", bytes.fromhex(keys["recipient_seed"])))


@pytest.mark.parametrize("vector", NEGATIVE["vectors"], ids=[v["name"] for v in NEGATIVE["vectors"]])
async def test_negative_vector_is_refused(vector):
    with pytest.raises(_ERRORS[vector["error"]]) as refused:
        await _decode(vector)
    if vector["path"] is not None:
        assert refused.value.path == vector["path"]


def test_negative_vectors_cover_every_decoder_and_rule():
    objects = {v["object"] for v in NEGATIVE["vectors"]}
    assert objects == {"manifest", "link_block", "envelope", "car"}
    names = {v["name"] for v in NEGATIVE["vectors"]}
    for rule in ("unknown-key", "non-minimal", "unsorted", "too-many-links", "raw-link", "truncated",
                 "cid-mismatch", "oversize", "metadata-"):
        assert any(rule in name for name in names), rule


def test_metadata_errors_name_the_field_but_never_the_value():
    body = {**format_vectors.BODY, "author": AUTHOR.did, "title": "Jane Doe's HIV test\x00"}
    dek, sid = bytes(32), bytes(16)
    cids = [Cid.for_data(RAW, b"c") for _ in range(3)]
    block = build_manifest(dek, sid, 1024, 0, cids, body, AUTHOR)
    with pytest.raises(MetadataError) as refused:
        open_metadata(decode_manifest(block.cid, block.data), dek)
    assert refused.value.path == "body.title"
    assert "Jane" not in str(refused.value) and "HIV" not in str(refused.value)


def test_a_signed_body_of_the_vault_shape_opens():
    """What the vault writes (format_vectors.BODY has its keys) passes the schema on the way back."""
    dek, sid = bytes(32), bytes(16)
    body = {**format_vectors.BODY, "author": AUTHOR.did, "version": 2, "prev": VECTORS["manifest"]["cid"],
            "patient": READER.did, "codes": [["http://loinc.org", "1-8"]], "subject": "Patient/1",
            "text": "Observation", "size": 2500}
    cids = [Cid.for_data(RAW, bytes([i])) for i in range(3)]
    block = build_manifest(dek, sid, 1024, 0, cids, body, AUTHOR)
    assert open_metadata(decode_manifest(block.cid, block.data), dek) == body


@pytest.mark.parametrize("count", [1, 23, 24, 256, 300])
def test_fast_link_decoding_agrees_with_the_careful_decoder(count):
    """Manifests and link blocks decode through libipld when the bytes are
    exactly the canonical encoding; the answer is the careful decoder's."""
    from daemon import strict
    cids = [Cid.for_data(RAW, os.urandom(8)) for _ in range(count)]
    for value in ({"links": [c.to_link() for c in cids]},
                  {"v": 1, "sid": os.urandom(24), "cs": 1024, "depth": 0, "links": [c.to_link() for c in cids],
                   "meta": os.urandom(300)},
                  # format 2: "padded" sorts after "links"
                  {"v": 2, "sid": os.urandom(24), "cs": 1024, "depth": 0, "links": [c.to_link() for c in cids],
                   "meta": os.urandom(300), "padded": 4096 * count}):
        data = dag_cbor.encode(value)
        fast = strict._fast_links(data)
        careful = strict.decode_canonical(data, "x")
        assert fast is not None
        assert list(fast["links"]) == [Cid(bytes(link)) for link in careful["links"]]
        assert {k: v for k, v in fast.items() if k != "links"} == {k: v for k, v in careful.items() if k != "links"}


def test_fast_link_decoding_leaves_links_and_bytes_apart():
    """libipld returns a link and a byte string alike as bytes: a byte string
    in ``links``, or a link where bytes belong, is not taken by the fast path,
    and the careful decoder refuses it as before."""
    from daemon import strict
    cid = Cid.for_data(RAW, b"x")
    bytes_for_link = dag_cbor.encode({"links": [b"\x00" + bytes(cid)]})
    link_for_bytes = dag_cbor.encode({"v": 1, "sid": cid.to_link(), "cs": 1024, "depth": 0,
                                      "links": [cid.to_link()], "meta": os.urandom(300)})
    assert strict._fast_links(bytes_for_link) is None
    assert strict._fast_links(link_for_bytes) is None
    with pytest.raises(FormatError):
        decode_link_block(Block.dag_cbor({"links": [b"\x00" + bytes(cid)]}).cid, bytes_for_link, RAW)
    with pytest.raises(FormatError):
        decode_manifest(Block.dag_cbor({}).cid, link_for_bytes)


def test_fast_encoder_writes_what_dag_cbor_writes():
    """daemon/cbor.py must write the very bytes dag_cbor does (CIDs depend on it)."""
    import random

    from daemon import cbor
    rng = random.Random(9)

    def value(depth: int = 0):
        roll = rng.random()
        if depth > 3 or roll < 0.5:
            return rng.choice([lambda: rng.randint(-2 ** 64, 2 ** 64 - 1), lambda: rng.randint(-30, 300),
                               lambda: rng.randbytes(rng.randint(0, 300)), lambda: None, lambda: True, lambda: False,
                               lambda: "".join(rng.choice("abé€😀z") for _ in range(rng.randint(0, 30))),
                               lambda: Cid.for_data(RAW, rng.randbytes(4)).to_link(), lambda: 1.5])()
        if roll < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 6))]
        return {"".join(rng.choice("abcé€z") for _ in range(rng.randint(0, 6))): value(depth + 1)
                for _ in range(rng.randint(0, 6))}

    for _ in range(500):
        item = value()
        assert cbor.encode(item) == dag_cbor.encode(item)
