"""Record manifests (format versions 1 and 2): the clear storage fields plus
one encrypted metadata field carrying the author's signature.

Version 2 adds one clear field, ``padded``: the length of the sealed stream,
the record plus the zero padding that rounds it up to a size bucket
(daemon/padding.py). The true size stays in the signed, encrypted body.

Clear: ``v`` (format version), ``sid`` (stream id), ``cs`` (chunk size),
``depth`` and ``links``. At depth 0 ``links`` are the chunk CIDs in order;
at depth d > 0 they are link blocks (``{"links": [...]}``) of depth d - 1,
so a recursive pin of the manifest pins every chunk and records too large for
one block still fit. ``meta`` = nonce ‖ XChaCha20-Poly1305(dag-cbor
``{"body": {...}, "sig": ed25519}``). The signature covers the clear fields
(links by the SHA-256 of their concatenated binary CIDs) and the body, so a
manifest cannot be re-pointed at other chunks or other metadata. Signatures
cover canonical JSON (``canonical_json``), not dag-cbor: it is only hashed,
never stored, and costs a tenth of a dag-cbor encode on the small-record path.

Every manifest and link block read is decoded strictly (daemon.strict) and
every metadata body checked against its schema (daemon.metadata) before use.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from . import cbor, crypto, strict
from .blocks import Block, FormatError
from .cid import DAG_CBOR, RAW, Cid
from .identity import Principal, verify
from .metadata import MAX_SIZE, MetadataError, check_body
from .strict import FieldError

MAX_LINKS = 4096  # ~170 KB link block; 4096 x 256 KiB = 1 GiB per level
MAX_DEPTH = 4  # 4096**4 chunks: far beyond any record, and a bound on how deep a reader walks
MAX_META = 1536 * 1024  # the largest body the schema allows, sealed, with room to spare
SIGNATURE_BYTES = 64
_MIN_META = crypto.NONCE_BYTES + crypto.TAG_BYTES + 1
_MANIFEST_FIELDS = {1: frozenset({"v", "sid", "cs", "depth", "links", "meta"}),
                    2: frozenset({"v", "sid", "cs", "padded", "depth", "links", "meta"})}
_LINK_BLOCK_FIELDS = frozenset({"links"})
_SEALED_FIELDS = frozenset({"body", "sig"})
_SIG_DOMAINS = {1: b"medvault/v1/manifest-sig\x00", 2: b"medvault/v2/manifest-sig\x00"}


class SignatureError(Exception):
    """The author's signature over a manifest (or a granter's over an envelope) is wrong."""


@dataclass(frozen=True)
class Manifest:
    cid: Cid
    stream_id: bytes
    chunk_size: int
    depth: int
    links: tuple[Cid, ...]
    sealed_meta: bytes
    version: int = 1
    padded: int | None = None  # format 2: the sealed stream's length (record + padding)

    def stream_length(self, size: int) -> int:
        """How many plaintext bytes the chunks hold, for a record of ``size`` bytes."""
        return size if self.padded is None else self.padded


def canonical_json(value) -> bytes:
    """The byte form signatures cover: JSON, keys sorted, no spaces, ASCII only.
    (Signed values hold only strings, integers, null, lists and maps.)"""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _signing_input(stream_id: bytes, chunk_size: int, depth: int, links: list[Cid], body: dict,
                   padded: int | None = None) -> bytes:
    links_digest = hashlib.sha256(b"".join(bytes(c) for c in links)).hexdigest()
    signed = {"v": crypto.FORMAT_VERSION, "sid": stream_id.hex(), "cs": chunk_size, "depth": depth,
              "links": links_digest, "body": body}
    if padded is not None:
        signed.update(v=crypto.PADDED_FORMAT, padded=padded)
    return _SIG_DOMAINS[signed["v"]] + canonical_json(signed)


def build_link_tree(chunk_cids: list[Cid], fanout: int = MAX_LINKS) -> tuple[int, list[Cid], list[Block]]:
    """Groups chunk CIDs into link blocks until the top level fits one manifest.

    Returns (depth, top-level links, link blocks to store).
    """
    depth, level, blocks = 0, list(chunk_cids), []
    while len(level) > fanout:
        parents = []
        for start in range(0, len(level), fanout):
            node = Block.dag_cbor({"links": [c.to_link() for c in level[start:start + fanout]]})
            blocks.append(node)
            parents.append(node.cid)
        level, depth = parents, depth + 1
    return depth, level, blocks


def build_manifest(dek: bytes, stream_id: bytes, chunk_size: int, depth: int, links: list[Cid],
                   body: dict, author: Principal, meta_nonce: bytes | None = None,
                   padded: int | None = None) -> Block:
    """Signs ``body`` as ``author`` and seals it under the DEK into a manifest
    block: format 2 when the stream was padded to ``padded`` bytes, else 1."""
    version = crypto.FORMAT_VERSION if padded is None else crypto.PADDED_FORMAT
    signature = author.sign(_signing_input(stream_id, chunk_size, depth, links, body, padded))
    sealed = crypto.seal_metadata(dek, stream_id, cbor.encode({"body": body, "sig": signature}), meta_nonce,
                                  version)
    node = {"v": version, "sid": stream_id, "cs": chunk_size, "depth": depth,
            "links": [c.to_link() for c in links], "meta": sealed}
    if padded is not None:
        node["padded"] = padded
    return Block.dag_cbor(node)


def decode_manifest(cid: Cid, data: bytes) -> Manifest:
    """Decodes a manifest block under the strict schema (FORMAT.md, "Decoder rules")."""
    if cid.codec != DAG_CBOR:
        raise FormatError("a manifest must be a dag-cbor block")
    node = strict.decode_canonical_links(data, "manifest")
    # The key set says the format: only a padded (v2) manifest has ``padded``, and its ``v`` must agree.
    version = crypto.PADDED_FORMAT if type(node) is dict and "padded" in node else crypto.FORMAT_VERSION
    node = strict.exact_map(node, "manifest", _MANIFEST_FIELDS[version])
    strict.integer(node["v"], "manifest.v", version, version)
    padded = strict.integer(node["padded"], "manifest.padded", 1, MAX_SIZE) if version == 2 else None
    sid = strict.byte_string(node["sid"], "manifest.sid", crypto.STREAM_ID_BYTES)
    cs = strict.integer(node["cs"], "manifest.cs", 1, crypto.MAX_CHUNK_SIZE)
    depth = strict.integer(node["depth"], "manifest.depth", 0, MAX_DEPTH)
    links = strict.links(node["links"], "manifest.links", RAW if depth == 0 else DAG_CBOR, MAX_LINKS)
    sealed = strict.byte_string(node["meta"], "manifest.meta", _MIN_META, MAX_META)
    return Manifest(cid, sid, cs, depth, links, sealed, version, padded)


def decode_link_block(cid: Cid, data: bytes, codec: int | None = None) -> tuple[Cid, ...]:
    """The links of a link block; ``codec`` is what they must point at (raw one
    level above the chunks, dag-cbor higher up). All links of a block share one codec."""
    if cid.codec != DAG_CBOR:
        raise FormatError("a link block must be a dag-cbor block")
    node = strict.exact_map(strict.decode_canonical_links(data, "link block"), "link block", _LINK_BLOCK_FIELDS)
    raw = node["links"]
    if codec is None:  # a caller that does not know the level: all links share the first one's codec
        codec = strict.any_link(raw[0], "link block.links[0]").codec if type(raw) is list and raw else RAW
    return strict.links(raw, "link block.links", codec, MAX_LINKS)


def _sealed_fields(plaintext: bytes) -> tuple[dict, bytes]:
    node = strict.exact_map(strict.decode_canonical(plaintext, "meta"), "meta", _SEALED_FIELDS)
    if type(node["body"]) is not dict:
        raise FieldError("meta.body", "must be a map")
    return node["body"], strict.byte_string(node["sig"], "meta.sig", SIGNATURE_BYTES)


def open_metadata(manifest: Manifest, dek: bytes) -> dict:
    """Decrypts the metadata, checks the author's signature, then the body's
    schema (daemon.metadata); returns the body."""
    body, signature = _sealed_fields(crypto.open_metadata(dek, manifest.stream_id, manifest.sealed_meta,
                                                          manifest.version))
    try:
        message = _signing_input(manifest.stream_id, manifest.chunk_size, manifest.depth, list(manifest.links),
                                 body, manifest.padded)
    except (TypeError, ValueError, RecursionError):  # values canonical JSON cannot hold (bytes, links)
        raise MetadataError("body", "holds a value that is not text, integer, null, list or map") from None
    if not verify(body.get("author"), message, signature):  # a malformed author simply fails here
        raise SignatureError("manifest signature does not verify")
    return check_body(body, manifest.chunk_size, manifest.depth, len(manifest.links), MAX_LINKS, manifest.padded)
