"""Audit anchor blocks (anchor format version 1): a segment of the audit
chain, signed by the node and sealed to the node's owner, pinned like a record.

Clear: ``v``, ``prev`` (the previous anchor, an IPLD link, or null for the
first) and ``box``, a ``crypto_box_seal`` to the owner of dag-cbor
``{"node", "first", "prev_head", "entries", "sig"}``. Nothing naming a
person, a record or an action is in clear; a block holder learns that an
anchor exists, its size and which anchor it follows.

``entries`` are the audit rows ``first``, ``first + 1``, ... as lists
``[seq, time, actor, action, record, outcome, detail, hash]`` (detail is the
row's JSON text), ``prev_head`` the hash of the row before ``first``
(GENESIS for the first anchor). ``sig`` is the node key's Ed25519 signature
over the domain ‖ canonical JSON of everything else, the ``prev`` anchor's
CID included, so an anchor cannot be moved to another place in the chain.
Opening checks, in order: strict decode, the box opens for the owner, the
inner map's schema, the signer is the node, the signature, and that the
entries chain from ``prev_head`` (indexer.audit's hash).
"""
from __future__ import annotations

from dataclasses import dataclass

import dag_cbor
from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from indexer.audit import GENESIS, entry_hash

from . import strict
from .blocks import Block, FormatError
from .cid import DAG_CBOR, Cid
from .identity import Principal, box_public_key_of, verify
from .manifest import SIGNATURE_BYTES, SignatureError, canonical_json
from .strict import FieldError

ANCHOR_VERSION = 1
MAX_ENTRIES = 1000
MAX_BOX = 1024 * 1024  # a block stays under the 1 MiB every Kubo accepts
SEGMENT_BYTES = 512 * 1024  # a writer cuts a segment before its entries reach this
_SIG_DOMAIN = b"medvault/v1/audit-anchor-sig\x00"
_FIELDS = frozenset({"v", "prev", "box"})
_BOX_FIELDS = frozenset({"node", "first", "prev_head", "entries", "sig"})
_SEAL_OVERHEAD = 48
_HASH_HEX = 64


class AnchorError(FormatError):
    """The anchor is not one this node wrote: malformed, not sealed to the
    owner, signed by another key, or its entries do not chain."""


@dataclass(frozen=True)
class Anchor:
    cid: Cid
    prev: Cid | None
    first: int
    prev_head: str
    entries: tuple[tuple, ...]  # (seq, time, actor, action, record, outcome, detail, hash)

    @property
    def last(self) -> int:
        return self.first + len(self.entries) - 1

    @property
    def head(self) -> str:
        return self.entries[-1][7]


def _signed(prev: Cid | None, node: str, first: int, prev_head: str, entries: list) -> bytes:
    return _SIG_DOMAIN + canonical_json({"prev": None if prev is None else str(prev), "node": node, "first": first,
                                         "prev_head": prev_head, "entries": entries})


def row_entry(row: dict) -> list:
    """An audit row as an anchor holds it."""
    return [row["seq"], row["time"], row["actor"], row["action"], row["record"], row["outcome"], row["detail"],
            row["hash"]]


def _sealed_box(plaintext: bytes, recipient_did: str) -> bytes:
    return SealedBox(box_public_key_of(recipient_did)).encrypt(plaintext)


def build_anchor(prev: Cid | None, rows: list[dict], prev_head: str, node: Principal, owner_did: str,
                 seal=_sealed_box) -> Block:
    """Seals audit ``rows`` (consecutive, after ``prev_head``) to the owner,
    signed by ``node``. ``seal`` is only replaced by the test vectors (a
    fixed ephemeral key, so they reproduce)."""
    entries = [row_entry(r) for r in rows]
    first = entries[0][0]
    sig = node.sign(_signed(prev, node.did, first, prev_head, entries))
    inner = dag_cbor.encode({"node": node.did, "first": first, "prev_head": prev_head, "entries": entries,
                             "sig": sig})
    box = seal(inner, owner_did)
    return Block.dag_cbor({"v": ANCHOR_VERSION, "prev": None if prev is None else prev.to_link(), "box": box})


def is_anchor(node) -> bool:
    """Whether a decoded dag-cbor root has an anchor's keys (envelopes have ``manifest``)."""
    return type(node) is dict and set(node) == _FIELDS


def _hex_hash(value, path: str) -> str:
    text = strict.text(value, path, _HASH_HEX, _HASH_HEX)
    if text.strip("0123456789abcdef"):
        raise FieldError(path, "must be 64 lowercase hex digits")
    return text


def _entry(value, path: str) -> tuple:
    if type(value) is not list or len(value) != 8:
        raise FieldError(path, "must be a list of 8 fields")
    seq, time, actor, action, record, outcome, detail, digest = value
    strict.integer(seq, f"{path}[0]", 1, 2**62)
    for i, field in ((1, time), (3, action), (5, outcome), (6, detail)):
        strict.text(field, f"{path}[{i}]", 0, 1024 * 1024)
    for i, field in ((2, actor), (4, record)):
        if field is not None:
            strict.text(field, f"{path}[{i}]", 0, 1024 * 1024)
    _hex_hash(digest, f"{path}[7]")
    return tuple(value)


def open_anchor(cid: Cid, data: bytes, owner: Principal, node_did: str) -> Anchor:
    """Decodes, opens and verifies an anchor block; AnchorError (a FormatError)
    or SignatureError when it is not a valid anchor by ``node_did``."""
    if cid.codec != DAG_CBOR:
        raise AnchorError("an anchor must be a dag-cbor block")
    node = strict.exact_map(strict.decode_canonical(data, "anchor"), "anchor", _FIELDS)
    strict.integer(node["v"], "anchor.v", ANCHOR_VERSION, ANCHOR_VERSION)
    prev = None if node["prev"] is None else strict.link(node["prev"], "anchor.prev", DAG_CBOR)
    box = strict.byte_string(node["box"], "anchor.box", _SEAL_OVERHEAD + 1, MAX_BOX)
    try:
        plain = SealedBox(owner.box_key).decrypt(box)
    except CryptoError:
        raise AnchorError("the anchor is not sealed to this node's owner") from None
    inner = strict.exact_map(strict.decode_canonical(plain, "anchor.box"), "anchor.box", _BOX_FIELDS)
    signer = strict.did(inner["node"], "anchor.box.node")
    first = strict.integer(inner["first"], "anchor.box.first", 1, 2**62)
    prev_head = _hex_hash(inner["prev_head"], "anchor.box.prev_head")
    raw = inner["entries"]
    if type(raw) is not list or not 1 <= len(raw) <= MAX_ENTRIES:
        raise FieldError("anchor.box.entries", f"must be a list of 1 to {MAX_ENTRIES} entries")
    entries = tuple(_entry(e, f"anchor.box.entries[{i}]") for i, e in enumerate(raw))
    sig = strict.byte_string(inner["sig"], "anchor.box.sig", SIGNATURE_BYTES)
    if signer != node_did:
        raise SignatureError("the anchor is signed by another key than this node's")
    if not verify(signer, _signed(prev, signer, first, prev_head, [list(e) for e in entries]), sig):
        raise SignatureError("the anchor's signature does not verify")
    head = prev_head
    for i, entry in enumerate(entries):
        row = dict(zip(("seq", "time", "actor", "action", "record", "outcome", "detail"), entry))
        if entry[0] != first + i or entry_hash(head, row) != entry[7]:
            raise AnchorError("the anchor's entries do not chain")
        head = entry[7]
    return Anchor(cid, prev, first, prev_head, entries)


def follows(anchor: Anchor, earlier: Anchor | None) -> bool:
    """Whether ``anchor`` continues ``earlier`` (None: it must start the chain)."""
    if earlier is None:
        return anchor.prev is None and anchor.first == 1 and anchor.prev_head == GENESIS
    return anchor.prev == earlier.cid and anchor.first == earlier.last + 1 and anchor.prev_head == earlier.head

