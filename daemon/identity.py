"""Principals as Ed25519 keys named by did:key; their X25519 keys are derived.

A did:key for Ed25519 is ``did:key:z`` + base58btc(0xed 0x01 ‖ public key).
The node keeps private keys (32-byte seeds) only inside the KeyStore.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from multiformats import multibase
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import BadSignatureError
from nacl.exceptions import RuntimeError as NaclRuntimeError
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

_ED25519_PUB = b"\xed\x01"
_PREFIX = "did:key:z"


class InvalidDid(ValueError):
    """The text is not an Ed25519 did:key."""


@lru_cache(maxsize=4096)
def _public_key_of(did: str) -> bytes:
    if not isinstance(did, str) or not did.startswith(_PREFIX) or len(did) > 100:
        raise InvalidDid("not an Ed25519 did:key")
    try:
        raw = multibase.decode(did[len("did:key:"):])
    except Exception as exc:
        raise InvalidDid("not an Ed25519 did:key") from exc
    if len(raw) != 34 or raw[:2] != _ED25519_PUB:
        raise InvalidDid("not an Ed25519 did:key")
    try:  # 32 bytes that are no curve point would fail later, when a key is sealed to it
        crypto_sign_ed25519_pk_to_curve25519(raw[2:])
    except NaclRuntimeError:
        raise InvalidDid("not an Ed25519 public key") from None
    return raw[2:]


def did_for(verify_key: bytes) -> str:
    """The did:key naming an Ed25519 public key."""
    return "did:key:" + multibase.encode(_ED25519_PUB + bytes(verify_key), "base58btc")


def check_did(did: str) -> str:
    """Returns ``did`` when it is a well-formed Ed25519 did:key, else raises InvalidDid."""
    _public_key_of(did)
    return did


def verify_key_of(did: str) -> VerifyKey:
    return VerifyKey(_public_key_of(did))


@lru_cache(maxsize=4096)
def box_public_key_of(did: str) -> PublicKey:
    """The X25519 key a did:key's holder opens sealed boxes with."""
    return PublicKey(crypto_sign_ed25519_pk_to_curve25519(_public_key_of(did)))


def verify(did: str, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``did``'s Ed25519 signature over ``message``."""
    try:
        verify_key_of(did).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


@dataclass(frozen=True, repr=False)
class Principal:
    """A local principal with its private key; never logged (repr hides the key)."""

    did: str
    name: str
    signing_key: SigningKey

    @classmethod
    def generate(cls, name: str) -> "Principal":
        key = SigningKey.generate()
        return cls(did_for(bytes(key.verify_key)), name, key)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> "Principal":
        key = SigningKey(seed)
        return cls(did_for(bytes(key.verify_key)), name, key)

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @cached_property
    def box_key(self) -> PrivateKey:
        """Derived once per principal: the conversion and its public key cost
        about a millisecond, which every envelope opened used to pay again."""
        return self.signing_key.to_curve25519_private_key()

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Principal(did={self.did!r}, name=<hidden>)"
