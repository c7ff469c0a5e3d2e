"""Key envelopes (format version 1): how a principal learns a version's DEK.

Clear: ``v`` and ``manifest`` (an IPLD link, so pinning the envelope keeps the
record). Everything that names a person — recipient, granter, times — is
inside ``box``, an X25519 sealed box (``crypto_box_seal``) to the recipient,
together with the DEK and the granter's Ed25519 signature over all of it and
the manifest CID. When granter and recipient differ, ``receipt`` seals
{to, granted, expires} (no key) to the granter, so the granting node can
rebuild its list of grants from pinned envelopes alone. Someone holding the
block learns only that it points at a manifest. A recipient finds its
envelopes by trying its own keys. The envelope, box and receipt are decoded
strictly (daemon.strict): exact keys and types, canonical dag-cbor only.
"""
from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from . import cbor, crypto, strict
from .blocks import Block, FormatError
from .cid import DAG_CBOR, Cid
from .identity import Principal, box_public_key_of, verify
from .manifest import SIGNATURE_BYTES, SignatureError, canonical_json

_SIG_DOMAIN = b"medvault/v1/envelope-sig\x00"
_SEAL_OVERHEAD = 48  # crypto_box_seal: ephemeral X25519 key (32) + Poly1305 tag (16)
MAX_SEALED = 1024  # a box holds a key, two did:keys, two times and a signature: ~300 bytes
_ENVELOPE_FIELDS = frozenset({"v", "manifest", "box"})
_BOX_FIELDS = frozenset({"dek", "to", "from", "granted", "expires", "sig"})
_RECEIPT_FIELDS = frozenset({"to", "granted", "expires"})


@dataclass(frozen=True, repr=False)
class Grant:
    """An opened envelope. Holds the DEK: never log it (repr hides it)."""

    envelope: Cid
    manifest: Cid
    dek: bytes
    recipient: str
    granter: str
    granted: str
    expires: str | None

    def __repr__(self) -> str:
        return f"Grant(envelope={self.envelope}, manifest={self.manifest})"


def _signed_fields(manifest: Cid, dek: bytes, recipient: str, granter: str, granted: str,
                   expires: str | None) -> bytes:
    return _SIG_DOMAIN + canonical_json({
        "manifest": str(manifest), "dek": dek.hex(), "to": recipient, "from": granter,
        "granted": granted, "expires": expires,
    })


def build_envelope(manifest: Cid, dek: bytes, recipient: str, granter: Principal, granted: str,
                   expires: str | None = None, manifest_link=None) -> Block:
    """Seals ``dek`` to ``recipient`` for ``manifest``, signed by ``granter``.

    ``manifest_link`` lets a caller that seals several envelopes for one
    manifest reuse one multiformats CID object (they are slow to build).
    """
    signature = granter.sign(_signed_fields(manifest, dek, recipient, granter.did, granted, expires))
    inner = cbor.encode({"dek": dek, "to": recipient, "from": granter.did, "granted": granted,
                             "expires": expires, "sig": signature})
    box = SealedBox(box_public_key_of(recipient)).encrypt(inner)
    link = manifest_link if manifest_link is not None else manifest.to_link()
    node = {"v": crypto.FORMAT_VERSION, "manifest": link, "box": box}
    if recipient != granter.did:
        node["receipt"] = SealedBox(box_public_key_of(granter.did)).encrypt(
            cbor.encode({"to": recipient, "granted": granted, "expires": expires}))
    return Block.dag_cbor(node)


def _envelope_node(cid: Cid, data: bytes) -> dict:
    if cid.codec != DAG_CBOR:
        raise FormatError("an envelope must be a dag-cbor block")
    node = strict.exact_map(strict.decode_canonical(data, "envelope"), "envelope", _ENVELOPE_FIELDS,
                            frozenset({"receipt"}))
    strict.integer(node["v"], "envelope.v", crypto.FORMAT_VERSION, crypto.FORMAT_VERSION)
    strict.byte_string(node["box"], "envelope.box", _SEAL_OVERHEAD + 1, MAX_SEALED)
    if "receipt" in node:
        strict.byte_string(node["receipt"], "envelope.receipt", _SEAL_OVERHEAD + 1, MAX_SEALED)
    return node


def envelope_manifest(cid: Cid, data: bytes) -> tuple[Cid, bytes]:
    """The manifest CID and sealed box of an envelope block (no key needed)."""
    node = _envelope_node(cid, data)
    return strict.link(node["manifest"], "envelope.manifest", DAG_CBOR), node["box"]


class NotForUs(Exception):
    """The envelope is not sealed to this principal."""


def _unseal(sealed: bytes, principal: Principal, what: str, fields: frozenset[str]) -> dict:
    """Opens a sealed box with ``principal``'s key and decodes its map strictly."""
    try:
        plain = SealedBox(principal.box_key).decrypt(sealed)
    except CryptoError as exc:
        raise NotForUs(f"the {what} is not sealed to this principal") from exc
    node = strict.exact_map(strict.decode_canonical(plain, what), what, fields)
    strict.did(node["to"], f"{what}.to")
    strict.time(node["granted"], f"{what}.granted")
    if node["expires"] is not None:
        strict.time(node["expires"], f"{what}.expires")
    return node


def open_envelope(cid: Cid, data: bytes, principal: Principal) -> Grant:
    """Opens an envelope with ``principal``'s key and checks the granter's signature."""
    manifest, box = envelope_manifest(cid, data)
    inner = _unseal(box, principal, "box", _BOX_FIELDS)
    dek = strict.byte_string(inner["dek"], "box.dek", crypto.KEY_BYTES)
    granter = strict.did(inner["from"], "box.from")
    signature = strict.byte_string(inner["sig"], "box.sig", SIGNATURE_BYTES)
    recipient, granted, expires = inner["to"], inner["granted"], inner["expires"]
    if recipient != principal.did:
        raise SignatureError("envelope names another recipient")
    if not verify(granter, _signed_fields(manifest, dek, recipient, granter, granted, expires), signature):
        raise SignatureError("envelope signature does not verify")
    return Grant(cid, manifest, dek, recipient, granter, granted, expires)


@dataclass(frozen=True)
class Receipt:
    """What a granter can read back from an envelope it made for someone else:
    whom it was for, and when (no key). Lets ``reindex`` restore outgoing grants."""

    envelope: Cid
    manifest: Cid
    recipient: str
    granted: str
    expires: str | None


def open_receipt(cid: Cid, data: bytes, granter: Principal) -> Receipt:
    node = _envelope_node(cid, data)
    manifest = strict.link(node["manifest"], "envelope.manifest", DAG_CBOR)
    if "receipt" not in node:
        raise NotForUs("the envelope carries no receipt")
    inner = _unseal(node["receipt"], granter, "receipt", _RECEIPT_FIELDS)
    return Receipt(cid, manifest, inner["to"], inner["granted"], inner["expires"])
