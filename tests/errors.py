"""The error shape API.md promises for every failure, checked exactly."""
from __future__ import annotations


async def assert_error(resp, status: int, code: str) -> None:
    """Exactly the documented shape: this status, JSON, one "error" object
    holding exactly this code and a non-empty message for a person."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip(), body
