"""What the Kubo RPC and Cluster REST clients share: one aiohttp session,
timeouts, retries with backoff on fast transport errors only (never on an
answer the backend gave, nor on a timeout: a request that used its whole
deadline would triple the caller's wait if tried again), latency/error metrics, and the mapping of "cannot reach"
to BackendUnavailable (HTTP 503) so the daemon keeps running and recovers
on its own when the backend returns."""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator

import aiohttp

from ..errors import BackendFailed, BackendUnavailable, InsufficientStorage, VaultError

_NO_SPACE = "no space left on device"  # Go's text for ENOSPC, as Kubo and Cluster pass it on


class BackendError(BackendFailed):
    """The backend answered with an error (not a transport failure)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class HttpBackend:
    """A small JSON-over-HTTP client for one backend endpoint."""

    def __init__(self, base_url: str, name: str, metrics=None, *, timeout: float = 60.0, retries: int = 3,
                 headers: dict | None = None, auth: aiohttp.BasicAuth | None = None):
        self.base_url = base_url.rstrip("/")
        self.name = name
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=5)
        self._retries = retries
        self._headers = headers or {}
        self._auth = auth
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers, auth=self._auth,
                                                  connector=aiohttp.TCPConnector(limit=32))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _observe(self, op: str, started: float, failed: bool) -> None:
        if self._metrics is not None:
            self._metrics.backend_seconds.labels(self.name, op).observe(time.perf_counter() - started)
            if failed:
                self._metrics.backend_errors.labels(self.name, op).inc()

    async def _error_from(self, response: aiohttp.ClientResponse) -> VaultError:
        """Kubo answers ``{"Message","Code","Type"}``; Cluster ``{"code","message"}``.
        A full disk on the backend's side is the node's 507, like our own."""
        text = await response.text()
        try:
            doc = json.loads(text)
            message = doc.get("Message") or doc.get("message") or text
        except (ValueError, AttributeError):
            message = text
        if _NO_SPACE in str(message):
            return InsufficientStorage(f"{self.name}'s disk is full; erase records (then collect its garbage) "
                                       "or add space, then retry")
        return BackendError(f"{self.name} refused the request: {str(message)[:300]}", response.status)

    async def request(self, method: str, path: str, op: str, *, parse: str = "json", params=None, data=None,
                      timeout: float | None = None, retry: bool = True):
        """One call with retries on transport errors. ``parse``: json | bytes | ndjson | none.
        ``data`` may be a callable returning a fresh body for each attempt."""
        attempts = self._retries if retry else 1
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                body = data() if callable(data) else data
                kwargs = {"timeout": aiohttp.ClientTimeout(total=timeout, sock_connect=5)} if timeout else {}
                async with self._get_session().request(method, self.base_url + path, params=params, data=body,
                                                       **kwargs) as response:
                    if response.status >= 400:
                        error = await self._error_from(response)
                        self._observe(op, started, True)
                        raise error
                    result = await self._parse(response, parse)
                    self._observe(op, started, False)
                    return result
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError,
                    ConnectionError) as exc:
                self._observe(op, started, True)
                if attempt + 1 >= attempts or isinstance(exc, asyncio.TimeoutError):
                    raise BackendUnavailable(f"{self.name} is unavailable ({type(exc).__name__})") from None
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def _parse(self, response: aiohttp.ClientResponse, parse: str):
        if parse == "json":
            return await response.json(content_type=None)
        if parse == "bytes":
            return await response.read()
        if parse == "ndjson":
            items = [item async for item in self.ndjson(response)]
            return items
        await response.read()
        return None

    async def ndjson(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict]:
        """Newline-delimited JSON. Kubo and Cluster report a failure part-way
        through a stream in an ``X-Stream-Error`` HTTP trailer, which aiohttp
        drops (aio-libs/aiohttp#1652), so we check the header form here and
        callers check completeness (every CID they asked about answered)."""
        buffer = b""
        async for piece in response.content.iter_any():
            buffer += piece
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
        if buffer.strip():
            yield json.loads(buffer)
        trailer = response.headers.get("X-Stream-Error")
        if trailer:
            raise BackendError(f"{self.name} stream failed: {trailer[:300]}", response.status)
