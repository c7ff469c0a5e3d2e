"""Schemathesis hooks for the contract test (loaded via SCHEMATHESIS_HOOKS):
a CAR body is bytes on the wire, which schemathesis has no serializer for."""
from __future__ import annotations

import schemathesis


@schemathesis.serializer("application/vnd.ipld.car")
def car_bytes(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")
