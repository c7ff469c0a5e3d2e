"""Typed keys for what the app and each request carry."""
from __future__ import annotations

from aiohttp import web

from daemon.auth import Caller
from daemon.vault import Vault

VAULT = web.AppKey("vault", Vault)
CALLER = web.RequestKey("caller", Caller)
