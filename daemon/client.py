"""The HTTP client behind the command line (``medvault put`` etc.), like
``ipfs`` talking to its daemon. Finds the daemon and token from --data-dir
or MEDVAULT_API / MEDVAULT_TOKEN, streams bodies, shows progress on a TTY."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator

import aiohttp

from .config import DEFAULT_LISTEN

PIECE = 1024 * 1024


class ClientError(Exception):
    """One line for the user: what failed and the server's error code."""


def resolve(data_dir: str | None) -> tuple[str, str | None]:
    """(API base URL, token) from the environment, else the data dir."""
    data_dir = data_dir or os.environ.get("MEDVAULT_DATA_DIR") or (".medvault" if os.path.isdir(".medvault")
                                                                   else None)
    api = os.environ.get("MEDVAULT_API")
    token = os.environ.get("MEDVAULT_TOKEN")
    if data_dir and not api:
        try:
            with open(os.path.join(data_dir, "api")) as handle:
                api = handle.read().strip()
        except FileNotFoundError:
            raise ClientError(f"no daemon is running for {data_dir} (start `medvault daemon`)") from None
    if data_dir and not token:
        try:
            with open(os.path.join(data_dir, "owner.token")) as handle:
                token = handle.read().strip()
        except FileNotFoundError:
            pass
    return (api or f"http://{DEFAULT_LISTEN}").rstrip("/"), token


def progress(total: int | None, label: str):
    from tqdm import tqdm  # here: the daemon imports this module but never shows progress (~2 MB resident)

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)


class Client:
    def __init__(self, api: str, token: str | None):
        self.api = api
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Client":
        self._session = aiohttp.ClientSession(headers=self._headers,
                                              timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    @staticmethod
    async def _fail(response: aiohttp.ClientResponse) -> None:
        try:
            error = (await response.json())["error"]
            raise ClientError(f"{error['message']} ({error['code']}, HTTP {response.status})")
        except (aiohttp.ContentTypeError, KeyError, TypeError, ValueError):
            raise ClientError(f"HTTP {response.status} from the daemon") from None

    async def request(self, method: str, path: str, **kwargs) -> dict | None:
        try:
            async with self._session.request(method, self.api + path, **kwargs) as response:
                if response.status >= 400:
                    await self._fail(response)
                return None if response.status == 204 else await response.json()
        except aiohttp.ClientConnectionError:
            raise ClientError(f"cannot reach the daemon at {self.api}") from None

    async def upload(self, path: str, source, size: int | None, content_type: str, params) -> dict:
        bar = progress(size, "upload")

        async def body() -> AsyncIterator[bytes]:
            while piece := source.read(PIECE):
                bar.update(len(piece))
                yield piece

        try:
            headers = {"Content-Type": content_type}
            if size is not None:
                headers["Content-Length"] = str(size)
            return await self.request("POST", path, data=body(), params=params, headers=headers)
        finally:
            bar.close()

    async def download(self, path: str, sink) -> int:
        try:
            async with self._session.get(self.api + path) as response:
                if response.status >= 400:
                    await self._fail(response)
                total, received = response.content_length, 0
                bar = progress(total, "download")
                try:
                    async for piece in response.content.iter_chunked(PIECE):
                        sink.write(piece)
                        received += len(piece)
                        bar.update(len(piece))
                finally:
                    bar.close()
                if total is not None and received != total:
                    raise ClientError("the download was cut off before the end")
                return received
        except aiohttp.ClientPayloadError:
            raise ClientError("the download was cut off (the daemon aborted it)") from None
        except aiohttp.ClientConnectionError:
            raise ClientError(f"cannot reach the daemon at {self.api}") from None


def print_json(doc) -> None:
    print(json.dumps(doc, indent=2))
