"""Record manifests (format version 1): the clear storage fields plus one
encrypted metadata field carrying the author's signature.

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
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import dag_cbor

from . import crypto
from .blocks import Block, FormatError, decode_node
from .cid import Cid
from .identity import InvalidDid, Principal, verify

MAX_LINKS = 4096  # ~170 KB link block; 4096 x 256 KiB = 1 GiB per level
_SIG_DOMAIN = b"medvault/v1/manifest-sig\x00"


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


def canonical_json(value) -> bytes:
    """The byte form signatures cover: JSON, keys sorted, no spaces, ASCII only.
    (Signed values hold only strings, integers, null, lists and maps.)"""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _signing_input(stream_id: bytes, chunk_size: int, depth: int, links: list[Cid], body: dict) -> bytes:
    links_digest = hashlib.sha256(b"".join(bytes(c) for c in links)).hexdigest()
    return _SIG_DOMAIN + canonical_json(
        {"v": crypto.FORMAT_VERSION, "sid": stream_id.hex(), "cs": chunk_size, "depth": depth,
         "links": links_digest, "body": body}
    )


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
                   body: dict, author: Principal, meta_nonce: bytes | None = None) -> Block:
    """Signs ``body`` as ``author`` and seals it under the DEK into a manifest block."""
    signature = author.sign(_signing_input(stream_id, chunk_size, depth, links, body))
    sealed = crypto.seal_metadata(dek, stream_id, dag_cbor.encode({"body": body, "sig": signature}), meta_nonce)
    return Block.dag_cbor({
        "v": crypto.FORMAT_VERSION, "sid": stream_id, "cs": chunk_size, "depth": depth,
        "links": [c.to_link() for c in links], "meta": sealed,
    })


def decode_manifest(cid: Cid, data: bytes) -> Manifest:
    node = decode_node(cid, data)
    try:
        if node["v"] != crypto.FORMAT_VERSION:
            raise FormatError("unsupported manifest version")
        sid, cs, depth, sealed = node["sid"], node["cs"], node["depth"], node["meta"]
        links = tuple(Cid.from_link(link) for link in node["links"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError("malformed manifest") from exc
    if not (isinstance(sid, bytes) and len(sid) == crypto.STREAM_ID_BYTES and isinstance(sealed, bytes)
            and isinstance(cs, int) and 0 < cs <= crypto.MAX_CHUNK_SIZE
            and isinstance(depth, int) and 0 <= depth <= 4 and links):
        raise FormatError("malformed manifest")
    return Manifest(cid, sid, cs, depth, links, sealed)


def decode_link_block(cid: Cid, data: bytes) -> tuple[Cid, ...]:
    node = decode_node(cid, data)
    try:
        links = tuple(Cid.from_link(link) for link in node["links"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError("malformed link block") from exc
    if not links:
        raise FormatError("empty link block")
    return links


def open_metadata(manifest: Manifest, dek: bytes) -> dict:
    """Decrypts the metadata and checks the author's signature; returns the body."""
    try:
        sealed = dag_cbor.decode(crypto.open_metadata(dek, manifest.stream_id, manifest.sealed_meta))
        body, signature = sealed["body"], sealed["sig"]
        author = body["author"]
    except crypto.DecryptError:
        raise
    except Exception as exc:
        raise FormatError("malformed manifest metadata") from exc
    message = _signing_input(manifest.stream_id, manifest.chunk_size, manifest.depth, list(manifest.links), body)
    try:
        ok = verify(author, message, signature)
    except InvalidDid:
        ok = False
    if not ok:
        raise SignatureError("manifest signature does not verify")
    return body
