"""Schemathesis hooks for the contract test (loaded via SCHEMATHESIS_HOOKS):
a CAR body is bytes on the wire, which schemathesis has no serializer for."""
from __future__ import annotations

import schemathesis


@schemathesis.serializer("application/vnd.ipld.car")
def car_bytes(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


@schemathesis.deserializer("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
def tolerant_yaml(ctx, response):
    """A record's content is served in whatever media type it was stored with:
    random bytes stored as YAML are not YAML. Their schema is none, so the raw
    text is enough (schemathesis's own loader crashed a worker thread on them)."""
    import yaml
    text = response.content.decode("utf-8", "replace")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
