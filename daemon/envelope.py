"""Key envelopes (format version 1): how a principal learns a version's DEK.

Clear: ``v`` and ``manifest`` (an IPLD link, so pinning the envelope keeps the
record). Everything that names a person — recipient, granter, times — is
inside ``box``, an X25519 sealed box (``crypto_box_seal``) to the recipient,
together with the DEK and the granter's Ed25519 signature over all of it and
the manifest CID. When granter and recipient differ, ``receipt`` seals
{to, granted, expires} (no key) to the granter, so the granting node can
rebuild its list of grants from pinned envelopes alone. Someone holding the block learns only that it points at a
manifest. A recipient finds its envelopes by trying its own keys.
"""
from __future__ import annotations

from dataclasses import dataclass

import dag_cbor
from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from . import crypto
from .blocks import Block, FormatError, decode_node
from .cid import DAG_CBOR, Cid
from .identity import InvalidDid, Principal, box_public_key_of, verify
from .manifest import SignatureError, canonical_json

_SIG_DOMAIN = b"medvault/v1/envelope-sig\x00"


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
    inner = dag_cbor.encode({"dek": dek, "to": recipient, "from": granter.did, "granted": granted,
                             "expires": expires, "sig": signature})
    box = SealedBox(box_public_key_of(recipient)).encrypt(inner)
    link = manifest_link if manifest_link is not None else manifest.to_link()
    node = {"v": crypto.FORMAT_VERSION, "manifest": link, "box": box}
    if recipient != granter.did:
        node["receipt"] = SealedBox(box_public_key_of(granter.did)).encrypt(
            dag_cbor.encode({"to": recipient, "granted": granted, "expires": expires}))
    return Block.dag_cbor(node)


def envelope_manifest(cid: Cid, data: bytes) -> tuple[Cid, bytes]:
    """The manifest CID and sealed box of an envelope block (no key needed)."""
    node = decode_node(cid, data)
    try:
        if node["v"] != crypto.FORMAT_VERSION:
            raise FormatError("unsupported envelope version")
        manifest, box = Cid.from_link(node["manifest"]), node["box"]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError("malformed envelope") from exc
    if manifest.codec != DAG_CBOR or not isinstance(box, bytes):
        raise FormatError("malformed envelope")
    return manifest, box


class NotForUs(Exception):
    """The envelope is not sealed to this principal."""


def open_envelope(cid: Cid, data: bytes, principal: Principal) -> Grant:
    """Opens an envelope with ``principal``'s key and checks the granter's signature."""
    manifest, box = envelope_manifest(cid, data)
    try:
        inner = dag_cbor.decode(SealedBox(principal.box_key).decrypt(box))
    except CryptoError as exc:
        raise NotForUs("envelope is not sealed to this principal") from exc
    except Exception as exc:
        raise FormatError("malformed envelope box") from exc
    try:
        dek, recipient, granter = inner["dek"], inner["to"], inner["from"]
        granted, expires, signature = inner["granted"], inner["expires"], inner["sig"]
    except (KeyError, TypeError) as exc:
        raise FormatError("malformed envelope box") from exc
    if not (isinstance(dek, bytes) and len(dek) == crypto.KEY_BYTES and isinstance(granted, str)
            and (expires is None or isinstance(expires, str))):
        raise FormatError("malformed envelope box")
    if recipient != principal.did:
        raise SignatureError("envelope names another recipient")
    try:
        ok = verify(granter, _signed_fields(manifest, dek, recipient, granter, granted, expires), signature)
    except (InvalidDid, TypeError):
        ok = False
    if not ok:
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
    manifest, _ = envelope_manifest(cid, data)
    sealed = decode_node(cid, data).get("receipt")
    if not isinstance(sealed, bytes):
        raise NotForUs("the envelope carries no receipt")
    try:
        inner = dag_cbor.decode(SealedBox(granter.box_key).decrypt(sealed))
        return Receipt(cid, manifest, str(inner["to"]), str(inner["granted"]), inner["expires"])
    except CryptoError as exc:
        raise NotForUs("the receipt is not sealed to this principal") from exc
    except Exception as exc:
        raise FormatError("malformed envelope receipt") from exc
