"""Principal names and API tokens.

Tokens are stored only as their SHA-256; a presented token is hashed, looked
up by that hash, and the stored hash compared again in constant time.
"""
from __future__ import annotations

import hmac
import json

from .sql import sqlite3


def add_principal(conn: sqlite3.Connection, did: str, name: str, role: str, created: str) -> None:
    conn.execute("INSERT OR IGNORE INTO principals (did, name, role, created) VALUES (?, ?, ?, ?)",
                 (did, name, role, created))


def list_principals(conn: sqlite3.Connection) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT did, name, created FROM principals WHERE role = 'principal' ORDER BY created, did")]


def add_token(conn: sqlite3.Connection, token_id: str, token_hash: bytes, principal: str, scopes: list[str],
              created: str, expires: str | None) -> None:
    conn.execute(
        "INSERT INTO tokens (id, hash, principal, scopes, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
        (token_id, token_hash, principal, json.dumps(sorted(scopes)), created, expires))


def find_token(conn: sqlite3.Connection, token_hash: bytes) -> dict | None:
    row = conn.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
    if row is None or not hmac.compare_digest(row["hash"], token_hash):
        return None
    token = dict(row)
    token["scopes"] = json.loads(token["scopes"])
    return token


def revoke_token(conn: sqlite3.Connection, token_id: str, when: str) -> bool:
    return conn.execute("UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                        (when, token_id)).rowcount == 1
