"""Symmetric sealing of record content (format versions 1 and 2).

Chunks use XChaCha20-Poly1305-IETF under the version's data key (DEK) with
the STREAM construction: nonce = 16-byte stream id ‖ 8-byte big-endian chunk
index, and associated data that binds the format version, the stream id, the
index and a last-chunk flag. Reordered, spliced or truncated chunk lists
therefore fail to open. The encrypted metadata field uses a random 24-byte
nonce (XChaCha's nonce space makes random nonces safe) and its own domain.
Format 2 (padded records) seals the same way under its own domains
(``medvault/v2/...``), so a chunk or metadata field of one format never opens
as the other.
"""
from __future__ import annotations

import os

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as _aead_open,
    crypto_aead_xchacha20poly1305_ietf_encrypt as _aead_seal,
)
from nacl.exceptions import CryptoError

FORMAT_VERSION = 1  # envelopes, and the records written before padding
PADDED_FORMAT = 2  # records whose stream is padded to a size bucket (daemon/padding.py)
KEY_BYTES = 32
STREAM_ID_BYTES = 16
TAG_BYTES = 16
NONCE_BYTES = 24
MAX_CHUNK_SIZE = 1024 * 1024 - TAG_BYTES  # ciphertext stays under 1 MiB
DEFAULT_CHUNK_SIZE = 256 * 1024

_CHUNK_DOMAINS = {1: b"medvault/v1/chunk\x00", 2: b"medvault/v2/chunk\x00"}
_META_DOMAINS = {1: b"medvault/v1/meta\x00", 2: b"medvault/v2/meta\x00"}


class DecryptError(Exception):
    """Ciphertext failed authentication (tampered, reordered, truncated or wrong key)."""


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def new_stream_id() -> bytes:
    return os.urandom(STREAM_ID_BYTES)


def _chunk_nonce(stream_id: bytes, index: int) -> bytes:
    return stream_id + index.to_bytes(8, "big")


def _chunk_aad(stream_id: bytes, index: int, last: bool, version: int) -> bytes:
    return _CHUNK_DOMAINS[version] + stream_id + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def seal_chunk(dek: bytes, stream_id: bytes, index: int, last: bool, plaintext: bytes, version: int = 1) -> bytes:
    return _aead_seal(bytes(plaintext), _chunk_aad(stream_id, index, last, version), _chunk_nonce(stream_id, index),
                      dek)


def open_chunk(dek: bytes, stream_id: bytes, index: int, last: bool, ciphertext: bytes, version: int = 1) -> bytes:
    try:
        return _aead_open(bytes(ciphertext), _chunk_aad(stream_id, index, last, version),
                          _chunk_nonce(stream_id, index), dek)
    except CryptoError as exc:
        raise DecryptError(f"chunk {index} failed to open") from exc


def seal_metadata(dek: bytes, stream_id: bytes, plaintext: bytes, nonce: bytes | None = None,
                  version: int = 1) -> bytes:
    """Returns nonce ‖ ciphertext; ``nonce`` is only fixed by the test vectors."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    return nonce + _aead_seal(plaintext, _META_DOMAINS[version] + stream_id, nonce, dek)


def open_metadata(dek: bytes, stream_id: bytes, sealed: bytes, version: int = 1) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise DecryptError("metadata too short")
    try:
        return _aead_open(sealed[NONCE_BYTES:], _META_DOMAINS[version] + stream_id, sealed[:NONCE_BYTES], dek)
    except CryptoError as exc:
        raise DecryptError("metadata failed to open") from exc
