"""An attacker's workbench: forged records, envelopes and CARs built offline
with the project's own builders (and by hand where a builder would refuse the
shape we want to send). Nothing here talks to a node.

A forged record is what someone outside the node can make with a key of
their own: chunks sealed under a DEK they chose, a manifest whose metadata
they signed, and an envelope sealing that DEK to whichever did they like
(sealing needs only the recipient's public did).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import dag_cbor

from daemon import car, crypto, timeutil
from daemon.blocks import Block
from daemon.cid import Cid
from daemon.envelope import build_envelope
from daemon.identity import Principal
from daemon.manifest import build_link_tree, build_manifest


@dataclass
class Forged:
    """Every block of one forged record version, plus what opens it."""

    dek: bytes
    stream_id: bytes
    body: dict
    manifest: Block
    chunks: list[Block]
    links: list[Block] = field(default_factory=list)
    envelopes: list[Block] = field(default_factory=list)

    @property
    def blocks(self) -> list[Block]:
        """Manifest, link blocks and chunks (not the envelopes)."""
        return [self.manifest, *self.links, *self.chunks]

    @property
    def all_blocks(self) -> list[Block]:
        return [*self.envelopes, *self.blocks]

    @property
    def cids(self) -> set[str]:
        return {str(b.cid) for b in self.all_blocks}

    def share(self, envelope: Block | None = None) -> str:
        envelope = envelope or self.envelopes[0]
        return f"mv1.{self.manifest.cid}.{envelope.cid}"


def body_for(record_id, version, author: str, *, prev=None, patient=None, size: int,
             content_type: str = "application/octet-stream", title="forged", tags=None, **extra) -> dict:
    """A metadata body shaped like the ones the node writes (FORMAT.md)."""
    body = {
        "record": record_id, "version": version, "prev": prev, "content_type": content_type, "size": size,
        "patient": patient, "type": None, "title": title, "tags": list(tags or []), "date": None,
        "subject": None, "codes": [], "text": None, "author": author, "created": timeutil.now(),
    }
    body.update(extra)
    return body


def seal_chunks(dek: bytes, stream_id: bytes, data: bytes, chunk_size: int) -> list[Block]:
    pieces = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    return [Block.raw(crypto.seal_chunk(dek, stream_id, i, i == len(pieces) - 1, piece))
            for i, piece in enumerate(pieces)]


def forge(author: Principal, record_id, version, *, data: bytes | None = None, chunk_size: int = 4096,
          fanout: int | None = None, body: dict | None = None, size: int | None = None, **fields) -> Forged:
    """A complete record version signed by ``author``: chunks, link tree, manifest.

    ``body`` replaces the metadata wholesale (for shapes ``body_for`` would not
    make); otherwise ``fields`` go into ``body_for``. ``size`` overrides the
    signed size (the chunks always hold ``data``).
    """
    data = os.urandom(3000) if data is None else data
    dek, stream_id = crypto.new_data_key(), crypto.new_stream_id()
    chunks = seal_chunks(dek, stream_id, data, chunk_size)
    depth, top, link_blocks = build_link_tree([c.cid for c in chunks], *([fanout] if fanout else []))
    if body is None:
        body = body_for(record_id, version, author.did, size=len(data) if size is None else size, **fields)
    manifest = build_manifest(dek, stream_id, chunk_size, depth, top, body, author)
    return Forged(dek, stream_id, body, manifest, chunks, link_blocks)


def relink(forged: Forged, chunks: list[Block], author: Principal, chunk_size: int = 4096) -> Forged:
    """The same version re-signed over another chunk list (spliced, reordered):
    the manifest verifies, the chunks do not open in that place."""
    manifest = build_manifest(forged.dek, forged.stream_id, chunk_size, 0, [c.cid for c in chunks], forged.body,
                              author)
    return Forged(forged.dek, forged.stream_id, forged.body, manifest, chunks)


def with_clear_field(forged: Forged, key: str, value) -> Forged:
    """The same manifest re-encoded by hand with an extra clear field. The
    author's signature does not cover unknown clear keys, so it still verifies:
    a second CID for the same signed version (a malleable manifest)."""
    node = dag_cbor.decode(forged.manifest.data)
    node[key] = value
    return Forged(forged.dek, forged.stream_id, forged.body, Block.dag_cbor(node), forged.chunks, forged.links)


def seal_to(forged: Forged, recipient: str, granter: Principal, expires: str | None = None) -> Block:
    """An envelope sealing the forged DEK to ``recipient``, signed by ``granter``."""
    block = build_envelope(forged.manifest.cid, forged.dek, recipient, granter, timeutil.now(), expires)
    forged.envelopes.append(block)
    return block


def car_of(roots: list[Block | Cid], blocks: list[Block]) -> bytes:
    """A CAR v1 with these roots and these blocks, in this order."""
    root_cids = [r.cid if isinstance(r, Block) else r for r in roots]
    return car.header(root_cids) + b"".join(car.frame(b) for b in blocks)


def frame_raw(cid: Cid, data: bytes) -> bytes:
    """A CAR section claiming ``cid`` for ``data`` whether or not they match."""
    return car.frame(Block(cid, data))
