"""Canonical dag-cbor encoding of the values medvault writes, fast.

The ``dag_cbor`` package validates every value it encodes against type
annotations at run time: ~65 µs for a manifest, ~45 ms for a 4,096-link
block, all of it holding the GIL. A small-record write encodes five objects
(manifest, its sealed metadata, two envelopes and their inner boxes), about a
tenth of the GIL time a record costs. This encoder writes the same bytes for
the types medvault builds: maps with text keys, lists, text, bytes, integers,
booleans, null and multiformats CIDs (tag 42); for anything else (floats,
which we never write) it hands the whole value to ``dag_cbor.encode``.
``tests/test_format.py`` checks the two agree byte for byte.
"""
from __future__ import annotations

import dag_cbor
from multiformats import CID

_MAX = 1 << 64


class _Other(Exception):
    """A value this encoder leaves to dag_cbor."""


def encode(value: object) -> bytes:
    out = bytearray()
    try:
        _encode(value, out)
    except _Other:
        return dag_cbor.encode(value)
    return bytes(out)


def _head(major: int, n: int, out: bytearray) -> None:
    if n < 24:
        out.append(major << 5 | n)
    elif n < 0x100:
        out += bytes((major << 5 | 24, n))
    elif n < 0x10000:
        out.append(major << 5 | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(major << 5 | 26)
        out += n.to_bytes(4, "big")
    else:
        out.append(major << 5 | 27)
        out += n.to_bytes(8, "big")


def _encode(value: object, out: bytearray) -> None:
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8")
        _head(3, len(data), out)
        out += data
    elif kind is bytes:
        _head(2, len(value), out)
        out += value
    elif kind is int:
        if 0 <= value < _MAX:
            _head(0, value, out)
        elif -_MAX <= value < 0:
            _head(1, -1 - value, out)
        else:
            raise _Other
    elif kind is dict:
        items = []
        for key, item in value.items():
            if type(key) is not str:
                raise _Other
            items.append((key.encode("utf-8"), item))
        items.sort(key=lambda pair: (len(pair[0]), pair[0]))  # DAG-CBOR: shorter keys first, then bytewise
        _head(5, len(items), out)
        for key, item in items:
            _head(3, len(key), out)
            out += key
            _encode(item, out)
    elif kind is list:
        _head(4, len(value), out)
        for item in value:
            _encode(item, out)
    elif value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, CID):
        data = b"\x00" + bytes(value)
        out += b"\xd8\x2a"  # tag 42
        _head(2, len(data), out)
        out += data
    else:
        raise _Other
