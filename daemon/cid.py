"""CIDv1 / sha2-256 for the two codecs medvault writes (raw chunks, dag-cbor nodes).

multiformats' ``CID`` constructor validates every argument at run time and
manages about 8,000 CIDs a second; the small-record path needs several per
record, so CIDs we create ourselves are built from hashlib bytes directly and
converted to ``multiformats.CID`` only where dag-cbor needs a link object.
Untrusted CID strings are still parsed by multiformats and then narrowed to
what format version 1 allows. The equivalence is checked in the unit tests.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from multiformats import CID as _MfCID, multibase, multicodec, multihash

RAW = 0x55
DAG_CBOR = 0x71
_SHA2_256 = 0x12
_DIGEST_LEN = 32
_TEXT_LEN = 1 + 58  # "b" + base32 of the 36 bytes, unpadded
_CODECS = {RAW: "raw", DAG_CBOR: "dag-cbor"}
_BASE32 = multibase.get("base32")
_MF_CODECS = {code: multicodec.get(name) for code, name in _CODECS.items()}
_MF_SHA2_256 = multihash.get("sha2-256")


class Cid:
    """An immutable CIDv1 (sha2-256, raw or dag-cbor), kept as its binary form."""

    __slots__ = ("_bytes", "_str")

    def __init__(self, binary: bytes):
        if (
            len(binary) != 4 + _DIGEST_LEN
            or binary[0] != 1
            or binary[1] not in _CODECS
            or binary[2] != _SHA2_256
            or binary[3] != _DIGEST_LEN
        ):
            raise ValueError("not a CIDv1 sha2-256 raw/dag-cbor CID")
        self._bytes = bytes(binary)
        self._str: str | None = None

    @classmethod
    def for_data(cls, codec: int, data: bytes | bytearray | memoryview) -> "Cid":
        """The CID of ``data`` under ``codec`` (sha2-256)."""
        return cls(bytes((1, codec, _SHA2_256, _DIGEST_LEN)) + hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> "Cid":
        """Parses a CID string; anything but CIDv1 sha2-256 raw/dag-cbor is a ValueError.

        The form we write (``b`` + 58 lower-case base32 characters) is decoded
        here and accepted only if it encodes back to exactly ``text``; any
        other form goes through multiformats (about a millisecond each, most
        of it run-time type checks: every envelope opened parses one)."""
        if isinstance(text, str) and len(text) == _TEXT_LEN and text[0] == "b":
            try:
                cid = cls(base64.b32decode(text[1:].upper() + "======"))
            except ValueError:  # binascii.Error is a ValueError
                cid = None
            if cid is not None and str(cid) == text:
                return cid
        try:
            mf = _MfCID.decode(text)
        except Exception as exc:  # multiformats raises several unrelated types
            raise ValueError("not a valid CID") from exc
        return cls(bytes(mf))

    @property
    def codec(self) -> int:
        return self._bytes[1]

    @property
    def digest(self) -> bytes:
        return self._bytes[4:]

    def to_link(self) -> _MfCID:
        """The multiformats CID that dag-cbor encodes as a tag-42 link.

        Our bytes are already validated, so we use multiformats' internal
        constructor that skips re-validation (~130,000/s against ~8,000/s);
        if a future multiformats drops it, the public decoder still works.
        """
        try:
            return _MfCID._new_instance(_MfCID, _BASE32, 1, _MF_CODECS[self.codec], _MF_SHA2_256, self._bytes[2:])
        except AttributeError:  # pragma: no cover - only on an incompatible multiformats
            return _MfCID.decode(self._bytes)

    def matches(self, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` hashes to this CID (constant-time digest compare)."""
        return hmac.compare_digest(hashlib.sha256(data).digest(), self.digest)

    def __bytes__(self) -> bytes:
        return self._bytes

    def __str__(self) -> str:
        if self._str is None:
            self._str = "b" + base64.b32encode(self._bytes).decode("ascii").lower().rstrip("=")
        return self._str

    def __repr__(self) -> str:
        return f"Cid({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cid) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)
