"""API tokens and the caller they stand for.

A token is 32 random bytes (``mvt_`` + base64url). Only its SHA-256 is
stored; a token is shown once, at creation. Lookups hash the presented token
and compare the stored hash in constant time (``indexer.principals``).
"""
from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from indexer import principals as principal_rows
from indexer.db import Database

from . import timeutil
from .errors import BadRequest, Unauthorized

SCOPES = ("read", "write", "share", "operator", "admin", "emergency")
_PREFIX = "mvt_"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the principal a valid token stands for, and its scopes."""

    did: str
    scopes: frozenset[str]
    token_id: str

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_scopes(scopes) -> list[str]:
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise BadRequest("scopes must be a non-empty list of strings", "bad_scopes")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise BadRequest(f"unknown scopes: {', '.join(unknown)} (known: {', '.join(SCOPES)})", "bad_scopes")
    return sorted(set(scopes))


async def issue_token(db: Database, principal: str, scopes: list[str], expires: str | None) -> tuple[str, str]:
    """Creates a token; returns (token id, the token itself: shown once)."""
    token = _PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    token_id = secrets.token_hex(8)
    await db.write(principal_rows.add_token, token_id, _hash(token), principal, check_scopes(scopes),
                   timeutil.now(), expires)
    return token_id, token


async def authenticate(db: Database, header: str | None) -> Caller:
    """The Caller for an ``Authorization: Bearer`` header, or Unauthorized."""
    if not header:
        raise Unauthorized("this endpoint needs an Authorization: Bearer token", "missing_token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(_PREFIX) or len(token) > 200:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", "bad_token")
    row = await db.read_auth(principal_rows.find_token, _hash(token))
    if row is None:
        raise Unauthorized("the token is not valid", "bad_token")
    if row["revoked"]:
        raise Unauthorized("the token has been revoked", "token_revoked")
    if row["expires"] and row["expires"] <= timeutil.now():
        raise Unauthorized("the token has expired", "token_expired")
    return Caller(row["principal"], frozenset(row["scopes"]), row["id"])
