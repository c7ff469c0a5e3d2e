"""Record size hidden (format 2): the sealed stream is padded to a size
bucket, so a block holder learns only the bucket; v1 records still read;
byte ranges of padded records are exact; docs/vectors/format-v2.json."""
from __future__ import annotations

import json
import os
import pathlib

import dag_cbor
import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from daemon import crypto
from daemon.blocks import FormatError
from daemon.cid import Cid
from daemon.errors import IntegrityError
from daemon.manifest import SignatureError, decode_manifest, open_metadata
from daemon.metadata import MetadataError
from daemon.padding import DEFAULT_BUCKETS, check_buckets, padded_length
from daemon.reader import chunk_cids, plaintext

from . import forge

VECTORS = json.loads((pathlib.Path(__file__).parent.parent / "docs" / "vectors" / "format-v2.json").read_text())
CS = 1024
BUCKETS = [1000, 3000, 8192]
_ERRORS = {"FormatError": FormatError, "MetadataError": MetadataError, "SignatureError": SignatureError,
           "IntegrityError": IntegrityError}


def test_default_buckets_and_their_edges():
    assert DEFAULT_BUCKETS[0] == 1024 and DEFAULT_BUCKETS[-1] == 64 * 1024 ** 2
    for bucket in DEFAULT_BUCKETS:
        assert padded_length(bucket - 1, DEFAULT_BUCKETS) == bucket
        assert padded_length(bucket, DEFAULT_BUCKETS) == bucket
        assert padded_length(bucket + 1, DEFAULT_BUCKETS) == (bucket * 2 if bucket < DEFAULT_BUCKETS[-1]
                                                              else 2 * DEFAULT_BUCKETS[-1])
    assert padded_length(1, DEFAULT_BUCKETS) == 1024
    assert padded_length(3 * 64 * 1024 ** 2 + 1, DEFAULT_BUCKETS) == 4 * 64 * 1024 ** 2
    assert padded_length(12345, []) == 12345  # padding off


@pytest.mark.parametrize("bad", [[0], [10, 10], [10, 5], "1024", [1.5], [True]])
def test_bad_bucket_lists_are_refused(bad):
    with pytest.raises(ValueError):
        check_buckets(bad)


class _Store:
    """An in-memory ``get`` for the reader (blocks are CID-checked here too)."""

    def __init__(self, blocks: dict[str, bytes]):
        self.blocks = blocks

    async def get(self, cid: Cid) -> bytes:
        data = self.blocks[str(cid)]
        assert cid.matches(data)
        return data


async def _read(record: dict, size: int, start: int = 0, end: int | None = None) -> bytes:
    manifest_cid = Cid.parse(record["manifest"]["cid"])
    manifest = decode_manifest(manifest_cid, bytes.fromhex(record["manifest"]["hex"]))
    open_metadata(manifest, bytes.fromhex(VECTORS["inputs"]["dek"]))
    store = _Store({c["cid"]: bytes.fromhex(c["hex"]) for c in record["chunks"]})
    return b"".join([p async for p in plaintext(manifest, bytes.fromhex(VECTORS["inputs"]["dek"]), size, store,
                                                None, start, end)])


async def test_v2_vector_reads_back_and_hides_the_size():
    inputs = VECTORS["inputs"]
    manifest = decode_manifest(Cid.parse(VECTORS["manifest"]["cid"]), bytes.fromhex(VECTORS["manifest"]["hex"]))
    body = open_metadata(manifest, bytes.fromhex(inputs["dek"]))
    assert body == inputs["metadata_body"] and manifest.version == 2 and manifest.padded == VECTORS["padded"] == 4096
    assert set(dag_cbor.decode(bytes.fromhex(VECTORS["manifest"]["hex"]))) == {
        "v", "sid", "cs", "padded", "depth", "links", "meta"}
    assert await _read(VECTORS, body["size"]) == bytes.fromhex(inputs["plaintext_hex"])
    # What a block holder sees: four full chunks, whatever the size inside the bucket.
    assert [len(c["hex"]) // 2 for c in VECTORS["chunks"]] == [CS + crypto.TAG_BYTES] * 4


def test_v2_vector_chunks_open_with_libsodium_alone():
    dek, sid = bytes.fromhex(VECTORS["inputs"]["dek"]), bytes.fromhex(VECTORS["inputs"]["stream_id"])
    stream = b""
    for i, chunk in enumerate(VECTORS["chunks"]):
        last = i == len(VECTORS["chunks"]) - 1
        aad = b"medvault/v2/chunk\x00" + sid + i.to_bytes(8, "big") + bytes([last])
        stream += crypto_aead_xchacha20poly1305_ietf_decrypt(bytes.fromhex(chunk["hex"]), aad,
                                                             sid + i.to_bytes(8, "big"), dek)
    plain = bytes.fromhex(VECTORS["inputs"]["plaintext_hex"])
    assert stream == plain + bytes(VECTORS["padded"] - len(plain))


@pytest.mark.parametrize("vector", VECTORS["negative"], ids=lambda v: v["name"])
async def test_v2_negative_vector_is_refused(vector):
    with pytest.raises(_ERRORS[vector["error"]]) as refused:
        if vector["object"] == "manifest":
            manifest = decode_manifest(Cid.parse(vector["manifest"]["cid"]), bytes.fromhex(vector["manifest"]["hex"]))
            open_metadata(manifest, bytes.fromhex(VECTORS["inputs"]["dek"]))
        else:
            await _read(vector, len(bytes.fromhex(VECTORS["inputs"]["plaintext_hex"])))
    if vector["path"] is not None:
        assert refused.value.path == vector["path"]


# ---- through a node ---------------------------------------------------------

def _edges() -> list[int]:
    sizes = {1, 2}
    for bucket in BUCKETS:
        sizes.update({bucket - 1, bucket, bucket + 1})
    sizes.update({3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1})  # above the largest: multiples of it, many chunks
    return sorted(sizes)


@pytest.fixture
async def padded(node_api):
    return await node_api("padded", chunk_size=CS, pad_buckets=BUCKETS)


async def _chunk_lengths(api, record: dict) -> tuple[dict, list[int]]:
    """The manifest's clear fields and every chunk's length: what a block holder sees."""
    blocks = api.vault.blocks
    manifest = decode_manifest(Cid.parse(record["cid"]), await blocks.get(Cid.parse(record["cid"])))
    return ({"v": manifest.version, "padded": manifest.padded},
            [len(await blocks.get(c)) for c in await chunk_cids(manifest, blocks)])


async def test_padding_round_trips_at_every_bucket_edge(padded):
    seen: dict[int, set] = {}
    for size in _edges():
        data = os.urandom(size)
        record = await padded.put(data)
        assert record["size"] == size
        resp = await padded.client.get(f"/v1/records/{record['id']}/content", headers=padded.auth())
        assert resp.status == 200 and await resp.read() == data
        clear, lengths = await _chunk_lengths(padded, record)
        bucket = padded_length(size, BUCKETS)
        assert clear == {"v": 2, "padded": bucket}
        full, rest = divmod(bucket, CS)
        assert lengths == [CS + 16] * full + ([rest + 16] if rest else [])
        seen.setdefault(bucket, set()).add((tuple(lengths), size))
    for bucket, views in seen.items():  # every size of a bucket looks the same to a block holder
        assert len({lengths for lengths, _ in views}) == 1, bucket


# (record size, Range header, first and last byte answered): 3000 fills its
# bucket's three chunks; 3001 is padded to 8192, its chunks 3.. padding alone.
_RANGES = [(3000, "bytes=0-0", 0, 0), (3000, "bytes=1000-1030", 1000, 1030), (3000, "bytes=2047-", 2047, 2999),
           (3000, "bytes=-1", 2999, 2999), (3000, "bytes=2900-999999", 2900, 2999),
           (3000, "bytes=1024-2047", 1024, 2047), (3001, "bytes=-5", 2996, 3000), (3001, "bytes=3000-", 3000, 3000),
           (3001, "bytes=2040-3000", 2040, 3000)]


async def test_range_reads_of_padded_records_never_return_padding(padded):
    records = {}
    for size in sorted({size for size, *_ in _RANGES}):
        data = os.urandom(size)
        records[size] = (data, (await padded.put(data))["id"])
    for size, header, first, last in _RANGES:
        data, record_id = records[size]
        resp = await padded.client.get(f"/v1/records/{record_id}/content", headers={**padded.auth(), "Range": header})
        assert (resp.status, resp.headers["Content-Range"]) == (206, f"bytes {first}-{last}/{size}"), header
        assert await resp.read() == data[first:last + 1], header


async def test_a_v1_record_still_reads(padded):
    """A record written before padding (format 1, exact chunk lengths) imports and reads as before."""
    owner = padded.vault.keys.get(padded.owner_did)
    data = os.urandom(2500)
    record_id = "a" * 26
    forged = forge.forge(owner, record_id, 1, data=data, chunk_size=CS, patient=owner.did)
    forge.seal_to(forged, owner.did, owner)
    assert dag_cbor.decode(forged.manifest.data)["v"] == 1
    resp = await padded.client.post("/v1/imports/car", data=forge.car_of([forged.envelopes[0]], forged.all_blocks),
                                    headers={**padded.auth(), "Content-Type": "application/vnd.ipld.car"})
    assert resp.status == 201, await resp.text()
    for headers, want in (({}, data), ({"Range": "bytes=1000-2100"}, data[1000:2101])):
        resp = await padded.client.get(f"/v1/records/{record_id}/content", headers={**padded.auth(), **headers})
        assert resp.status in (200, 206) and await resp.read() == want
