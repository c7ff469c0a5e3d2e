"""Principals, tokens and the audit log as administrators and auditors see
them (a Vault component), including the audit of failed authentications.
"""
from __future__ import annotations

import asyncio
import time

from indexer import audit, principals as principal_rows
from indexer.sql import sqlite3

from . import timeutil
from .access import Action
from .auth import Caller, issue_token
from .errors import BadRequest, NotFound
from .identity import InvalidDid, Principal, check_did
from .views import future_time, page_limit

AUTH_AUDIT_PER_MINUTE = 30  # failed authentications written to the chain; the rest are counted


class Admin:
    def __init__(self, services, access):
        self._s = services
        self._access = access
        self._auth_window = (0.0, 0, 0)  # (window start, entries written, entries suppressed)

    async def add_principal(self, caller: Caller, name) -> dict:
        if not isinstance(name, str) or not (0 < len(name) <= 100) or not name.isprintable():
            raise BadRequest("name must be 1 to 100 printable characters", "bad_name")
        s = self._s
        principal = Principal.generate(name)
        await asyncio.to_thread(s.keys.add, principal)
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> None:
            principal_rows.add_principal(conn, principal.did, name, "principal", now)
            audit.append(conn, now, caller.did, "principal_add", None, "ok", {"did": principal.did})

        await s.db.write(commit)
        return {"did": principal.did, "name": name, "created": now}

    async def list_principals(self) -> list[dict]:
        return await self._s.db.read(principal_rows.list_principals)

    async def create_token(self, caller: Caller, principal, scopes, expires=None) -> dict:
        try:
            check_did(principal)
        except (InvalidDid, TypeError):
            raise BadRequest("principal must be a did:key", "bad_principal") from None
        if self._s.keys.get(principal) is None:
            raise NotFound("this node has no such principal", "unknown_principal")
        if expires is not None:
            expires = future_time(expires)
        token_id, token = await issue_token(self._s.db, principal, scopes, expires)
        await self._s.audit(caller.did, "token_create", None, "ok", {"token": token_id, "principal": principal})
        return {"token": token, "id": token_id, "principal": principal, "scopes": sorted(set(scopes)),
                "expires": expires}

    async def revoke_token(self, caller: Caller, token_id: str) -> None:
        now = timeutil.now()

        def commit(conn: sqlite3.Connection) -> bool:
            if not principal_rows.revoke_token(conn, token_id, now):
                return False
            audit.append(conn, now, caller.did, "token_revoke", None, "ok", {"token": token_id})
            return True

        if not await self._s.db.write(commit):
            raise NotFound("no such active token", "token_not_found")

    async def audit_entries(self, caller: Caller, *, record: str | None = None, principal: str | None = None,
                            since: str | None = None, after: int = 0, limit: int = 100) -> dict:
        """Operators see everything; anyone else sees what ``indexer.audit.entries``
        allows a principal (its own actions, records it created or is patient
        of, and a grantee's window); naming a record needs read access to it."""
        if since is not None:
            try:
                since = timeutil.parse_time(since)
            except ValueError:
                raise BadRequest("since must be an RFC 3339 time", "bad_since") from None
        page_limit(limit)
        operator = caller.has("operator")
        if record is not None and not operator:
            await self._access.require(caller, Action.AUDIT, record)
        readable_by = None if operator else caller.did
        await self._s.db.flush_audit()  # reads audited a moment ago are in the chain too
        items = await self._s.db.read(lambda conn: audit.entries(
            conn, record=record, principal=principal, since=since, readable_by=readable_by, after_seq=after,
            limit=limit))
        return {"items": items, "next": items[-1]["seq"] if len(items) == limit else None}

    async def auth_failed(self, code: str, actor: str | None) -> None:
        """Counts a refused authentication, and writes it to the audit chain
        at most AUTH_AUDIT_PER_MINUTE times a minute (a flood of bad tokens
        must not flood the chain); the next entry says how many were left out."""
        s = self._s
        s.metrics.auth_failures.labels(code).inc()
        start, written, suppressed = self._auth_window
        now = time.monotonic()
        if now - start >= 60:
            start, written = now, 0
        if written >= AUTH_AUDIT_PER_MINUTE:
            self._auth_window = (start, written, suppressed + 1)
            return
        self._auth_window = (start, written + 1, 0)
        detail = {"code": code, **({"suppressed": suppressed} if suppressed else {})}
        await s.audit_access(actor, "auth_failed", None, "denied", detail)
