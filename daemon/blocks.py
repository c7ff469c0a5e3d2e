"""The unit every store moves: a CID and the bytes it names."""
from __future__ import annotations

from typing import NamedTuple

import dag_cbor

from . import cbor
from .cid import DAG_CBOR, RAW, Cid


class Block(NamedTuple):
    cid: Cid
    data: bytes

    @classmethod
    def raw(cls, data: bytes) -> "Block":
        return cls(Cid.for_data(RAW, data), data)

    @classmethod
    def dag_cbor(cls, value: object) -> "Block":
        data = cbor.encode(value)
        return cls(Cid.for_data(DAG_CBOR, data), data)


class FormatError(ValueError):
    """A block is not a well-formed medvault object of the expected kind."""


def decode_node(block_cid: Cid, data: bytes) -> dict:
    """Decodes a dag-cbor block we are about to interpret as a map."""
    if block_cid.codec != DAG_CBOR:
        raise FormatError("expected a dag-cbor block")
    try:
        value = dag_cbor.decode(data)
    except Exception as exc:
        raise FormatError("block is not valid dag-cbor") from exc
    if not isinstance(value, dict):
        raise FormatError("expected a dag-cbor map")
    return value
