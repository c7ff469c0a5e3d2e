"""Schema checks for dag-cbor objects read from outside (FORMAT.md, "Decoder rules").

Everything medvault decodes from a block, a sealed box or a CAR is hostile
until it passes here: the bytes must be the one canonical dag-cbor encoding
of the value (so a CID names exactly one object and cannot be re-encoded into
a second, "equal" one), maps must hold exactly the documented keys, and each
value must have exactly the documented type. Errors name the field by its
path and never repeat the value, which may be a patient's data.
"""
from __future__ import annotations

import re

import dag_cbor
import libipld
from multiformats import CID as _MfCID

from . import cbor, timeutil
from .blocks import FormatError
from .cid import Cid
from .identity import InvalidDid, check_did

# The one time format medvault writes (timeutil.format_time); expiries are
# compared as strings, so no other spelling of the same moment is accepted.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


class FieldError(FormatError):
    """A decoded object breaks its schema at ``path`` (e.g. ``manifest.links[3]``)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def decode_canonical(data: bytes, what: str):
    """Decodes dag-cbor and refuses any encoding but the canonical one."""
    try:
        value = dag_cbor.decode(bytes(data))
        canonical = cbor.encode(value) == bytes(data)
    except Exception:  # dag_cbor raises its own types, and RecursionError on deep nesting
        raise FieldError(what, "is not valid dag-cbor") from None
    if not canonical:
        raise FieldError(what, "is not canonical dag-cbor")
    return value


def decode_canonical_links(data: bytes, what: str):
    """``decode_canonical`` for a map whose ``links`` key holds a list of
    links (manifests, link blocks), with the links as ``Cid``.

    The pure-Python dag-cbor decoder takes ~1 s of CPU for 4,096 links; this
    decodes with libipld (Rust, ~0.2 ms) and then rebuilds the one canonical
    encoding of what it read, with every ``links`` item as a tag-42 link, and
    takes the result only if that is exactly ``data``. libipld returns links
    and byte strings alike as bytes, so the rebuilt bytes are what tells them
    apart: a byte string where a link belongs, or a link where bytes belong,
    no longer matches. Anything that does not match goes through
    ``decode_canonical``, which gives the same answer or the same error as
    before (only more slowly)."""
    value = _fast_links(bytes(data))
    return value if value is not None else decode_canonical(data, what)


def _fast_links(data: bytes) -> dict | None:
    try:
        value = libipld.decode_dag_cbor(data)
    except Exception:  # ValueError, RecursionError; the careful decoder names the fault
        return None
    if type(value) is not dict or type(value.get("links")) is not list:
        return None
    raw = value["links"]
    try:
        cids = [Cid(item) for item in raw]  # type(item) is bytes, else Cid() refuses it
        parts = [_header(5, len(value))]
        for key in sorted(value, key=lambda k: (len(k.encode()), k.encode())):  # DAG-CBOR key order
            name = key.encode()
            parts.append(_header(3, len(name)) + name)
            if key == "links":
                parts += [_header(4, len(cids)), *(_LINK_PREFIX + bytes(cid) for cid in cids)]
            else:  # not libipld's encoder: it writes 36-byte strings that parse as CIDs as links
                parts.append(cbor.encode(value[key]))
    except Exception:  # Cid() refuses what is not one of our CIDs; a non-text key
        return None
    if b"".join(parts) != data:
        return None
    value["links"] = cids
    return value


_LINK_PREFIX = b"\xd8\x2a\x58\x25\x00"  # tag 42, a 37-byte string: the 0x00 multibase prefix and a 36-byte CID


def _header(major: int, length: int) -> bytes:
    """The shortest CBOR head for ``major`` type and ``length``."""
    if length < 24:
        return bytes((major << 5 | length,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + length.to_bytes(size, "big")
    raise OverflowError(length)


def exact_map(value, path: str, required: frozenset[str], optional: frozenset[str] = frozenset()) -> dict:
    """``value`` as a map holding every required key, and no key outside required | optional."""
    if type(value) is not dict:
        raise FieldError(path, "must be a map")
    keys = set(value)
    for key in sorted(required - keys):
        raise FieldError(f"{path}.{key}", "is missing")
    unknown = sorted(keys - required - optional)
    if unknown:  # named only when it is a plain identifier: it is the sender's text
        name = unknown[0]
        raise FieldError(f"{path}.{name}" if _PLAIN_KEY.fullmatch(name) else path,
                         "is not a field this format defines")
    return value


def integer(value, path: str, low: int, high: int) -> int:
    """An int (never a bool) with low <= value <= high."""
    if type(value) is not int:
        raise FieldError(path, "must be an integer")
    if not low <= value <= high:
        raise FieldError(path, f"must be between {low} and {high}")
    return value


def byte_string(value, path: str, low: int, high: int | None = None) -> bytes:
    """Bytes of length low..high (exactly ``low`` when high is None)."""
    high = low if high is None else high
    if type(value) is not bytes:
        raise FieldError(path, "must be a byte string")
    if not low <= len(value) <= high:
        raise FieldError(path, f"must be {low} bytes" if low == high else f"must be {low} to {high} bytes")
    return value


def text(value, path: str, low: int = 0, high: int = 1000) -> str:
    """A text string of low..high characters without NUL."""
    if type(value) is not str:
        raise FieldError(path, "must be a text string")
    if not low <= len(value) <= high:
        raise FieldError(path, f"must be {low} to {high} characters")
    if "\x00" in value:
        raise FieldError(path, "must not contain NUL")
    return value


def did(value, path: str) -> str:
    """An Ed25519 did:key."""
    text(value, path, 1, 100)
    try:
        return check_did(value)
    except InvalidDid:
        raise FieldError(path, "must be an Ed25519 did:key") from None


def time(value, path: str) -> str:
    """An RFC 3339 UTC time in medvault's one spelling: YYYY-MM-DDTHH:MM:SS.mmmZ."""
    text(value, path, 24, 24)
    try:
        valid = _TIME.fullmatch(value) is not None and timeutil.parse_time(value) == value
    except ValueError:
        valid = False
    if not valid:
        raise FieldError(path, "must be an RFC 3339 UTC time like 2024-01-31T12:00:00.000Z")
    return value


def any_link(value, path: str) -> Cid:
    """A tag-42 link to a CIDv1 sha2-256 raw or dag-cbor block."""
    if type(value) is Cid:  # from decode_canonical_links: already checked
        return value
    if not isinstance(value, _MfCID):
        raise FieldError(path, "must be a CID link")
    try:
        return Cid(bytes(value))
    except ValueError:
        raise FieldError(path, "is a CID this format does not use") from None


def link(value, path: str, codec: int) -> Cid:
    """A tag-42 link to a CIDv1 sha2-256 block of ``codec``."""
    cid = any_link(value, path)
    if cid.codec != codec:
        raise FieldError(path, "links to a block of the wrong codec")
    return cid


def links(value, path: str, codec: int, most: int) -> tuple[Cid, ...]:
    """A list of 1..most links, all to blocks of ``codec``."""
    if type(value) is not list:
        raise FieldError(path, "must be a list of CID links")
    if not 1 <= len(value) <= most:
        raise FieldError(path, f"must hold 1 to {most} links")
    return tuple(link(item, f"{path}[{i}]", codec) for i, item in enumerate(value))
