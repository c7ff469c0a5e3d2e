"""The ``kubo`` backend: blocks and pins in a Kubo node over its RPC API.

Every RPC is ``POST /api/v0/<command>``. Blocks go up in batches (several
multipart parts named ``file`` per ``block/put``, one request per codec),
and every CID Kubo reports is compared with the one we computed. Reads hash
what ``block/get`` returns before anyone sees it. Records are protected from
Kubo's GC by a recursive pin of the manifest (and envelopes) before the
Vault acknowledges them: a record's last blocks and its pins go in one
``dag/import`` (kubo_import.py).
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp

from ..blocks import Block
from ..cid import DAG_CBOR, RAW, Cid
from ..errors import BackendUnavailable, BlockNotFound, IntegrityError, NotFoundOnNetwork
from .base import BlockStore, Pinner, PinStatus
from .http import BackendError, HttpBackend
from .kubo_import import ImportBatcher

_CODEC_NAMES = {RAW: "raw", DAG_CBOR: "dag-cbor"}
_BATCH_BYTES = 4 * 1024 * 1024
_BATCH_BLOCKS = 64
_RPC_SLACK = 5.0  # seconds past Kubo's own deadline before we stop waiting for its answer
_HASH_INLINE = 64 * 1024  # larger blocks are hashed off the event loop (hashlib releases the GIL)
_DEADLINE = "context deadline exceeded"  # how Kubo reports its ``timeout`` option running out


class KuboRpc(HttpBackend):
    """The handful of Kubo RPC commands medvault uses."""

    def __init__(self, api_url: str, metrics=None, **kwargs):
        super().__init__(api_url.rstrip("/") + "/api/v0", "kubo", metrics, **kwargs)

    async def block_put(self, blocks: list[Block]) -> list[str]:
        codec = _CODEC_NAMES[blocks[0].cid.codec]

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            for block in blocks:
                data.add_field("file", block.data, filename="block", content_type="application/octet-stream")
            return data

        answers = await self.request("POST", "/block/put", "block_put", parse="ndjson", data=form,
                                     params={"cid-codec": codec, "mhtype": "sha2-256", "pin": "false"})
        return [a["Key"] for a in answers]

    async def dag_import(self, body: bytes, pin_wait: float) -> list:
        """Imports a CAR and pins its roots; Kubo gives up pinning after ``pin_wait``.
        No ``fast-provide-root``: it made each import wait ~3x longer here, and
        the roots are announced through Kubo's regular provide queue anyway,
        as blocks from ``block/put`` always were."""
        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("file", body, filename="record.car", content_type="application/vnd.ipld.car")
            return data

        return await self.request("POST", "/dag/import", "dag_import", parse="ndjson", data=form,
                                  params={"pin-roots": "true", "stats": "true", "fast-provide-root": "false",
                                          "timeout": f"{pin_wait:g}s"},
                                  timeout=pin_wait + _RPC_SLACK)

    async def block_get(self, cid: Cid, wait: float) -> bytes:
        """Kubo itself gives up after ``wait`` (its ``timeout`` option: it looks
        for providers forever otherwise); our own deadline is a few seconds
        later, so "no peer has it" and "Kubo hangs" stay distinguishable."""
        return await self.request("POST", "/block/get", "block_get", parse="bytes",
                                  params={"arg": str(cid), "timeout": f"{wait:g}s"}, timeout=wait + _RPC_SLACK)

    async def block_has(self, cid: Cid) -> bool:
        try:
            await self.request("POST", "/block/stat", "block_stat", params={"arg": str(cid), "offline": "true"})
            return True
        except BackendError:
            return False

    async def block_rm(self, cids: list[Cid]) -> None:
        params = [("arg", str(c)) for c in cids] + [("force", "true")]
        await self.request("POST", "/block/rm", "block_rm", parse="none", params=params)

    async def pin_add(self, *cids: Cid) -> None:
        """Recursive pins; several roots in one call."""
        await self.request("POST", "/pin/add", "pin_add", timeout=600,
                           params=[("arg", str(c)) for c in cids] + [("recursive", "true")])

    async def pin_rm(self, cid: Cid) -> None:
        try:
            await self.request("POST", "/pin/rm", "pin_rm", params={"arg": str(cid), "recursive": "true"})
        except BackendError as exc:
            if "not pinned" not in exc.message:
                raise

    async def pin_ls(self, cid: Cid | None = None) -> dict[str, str]:
        params = {"type": "recursive", "stream": "true"}
        if cid is not None:
            params = {"arg": str(cid), "type": "all", "stream": "true"}
        try:
            answers = await self.request("POST", "/pin/ls", "pin_ls", parse="ndjson", params=params)
        except BackendError as exc:
            if cid is not None and "not pinned" in exc.message:
                return {}
            raise
        return {a["Cid"]: a["Type"] for a in answers}

    async def node_id(self) -> dict:
        return await self.request("POST", "/id", "id", retry=False, timeout=5)

    async def version(self) -> dict:
        return await self.request("POST", "/version", "version", retry=False, timeout=5)

    async def repo_stat(self) -> dict:
        return await self.request("POST", "/repo/stat", "repo_stat", retry=False, timeout=10)


def _batches(blocks: list[Block]):
    """Same-codec batches of bounded size (block/put takes one codec per request)."""
    ordered = sorted(blocks, key=lambda b: b.cid.codec)
    for _, group in itertools.groupby(ordered, key=lambda b: b.cid.codec):
        batch, size = [], 0
        for block in group:
            if batch and (size + len(block.data) > _BATCH_BYTES or len(batch) >= _BATCH_BLOCKS):
                yield batch
                batch, size = [], 0
            batch.append(block)
            size += len(block.data)
        if batch:
            yield batch


class KuboBlockStore(BlockStore):
    name = "kubo"
    batch_blocks = 16  # one block/put request of up to 4 MiB

    def __init__(self, rpc: KuboRpc, fetch_timeout: float = 30.0):
        self.rpc = rpc
        self._fetch_timeout = fetch_timeout
        self._imports = ImportBatcher(rpc)

    async def put_protected(self, blocks: list[Block], roots: list[Cid]) -> None:
        await self._imports.put_protected(blocks, roots)

    async def put_many(self, blocks: list[Block]) -> None:
        for batch in _batches(blocks):
            await self._put_batch(batch)

    async def _put_batch(self, batch: list[Block]) -> None:
        keys = await self.rpc.block_put(batch)
        if keys != [str(b.cid) for b in batch][:len(keys)]:
            raise IntegrityError("Kubo stored a block under a different CID than medvault computed")
        if len(keys) < len(batch):
            # The answer stopped early: Kubo put its reason (a full disk, say) in an
            # HTTP trailer aiohttp cannot read. Alone, the next block's failure
            # comes back as an ordinary error answer.
            if len(batch) == 1:
                raise BackendUnavailable("Kubo did not confirm a block it was sent")
            for block in batch[len(keys):]:
                await self._put_batch([block])

    async def get(self, cid: Cid) -> bytes:
        try:
            data = await self.rpc.block_get(cid, self._fetch_timeout)
        except BackendError as exc:
            if _DEADLINE in exc.message:
                raise NotFoundOnNetwork(f"no IPFS peer provided a block within {self._fetch_timeout:g} s") from None
            raise BlockNotFound("a block of this record could not be fetched from IPFS") from exc
        # A 256 KiB chunk's SHA-256 was 6% of the event loop's time during a big GET.
        matches = cid.matches(data) if len(data) <= _HASH_INLINE else await asyncio.to_thread(cid.matches, data)
        if not matches:
            raise IntegrityError("IPFS returned a block that does not match its content ID")
        return data

    async def has(self, cid: Cid) -> bool:
        return await self.rpc.block_has(cid)

    async def delete_many(self, cids: list[Cid]) -> None:
        for start in range(0, len(cids), 100):
            try:
                await self.rpc.block_rm(cids[start:start + 100])
            except BackendError:
                pass  # pinned elsewhere or already gone: best effort by contract

    async def protect(self, roots: list[Cid]) -> None:
        for start in range(0, len(roots), 100):
            await self.rpc.pin_add(*roots[start:start + 100])

    async def release(self, roots: list[Cid]) -> None:
        for root in roots:
            await self.rpc.pin_rm(root)

    async def all_cids(self) -> AsyncIterator[tuple[Cid, float]]:
        """Kubo collects its own garbage (``ipfs repo gc``); medvault lists nothing."""
        for item in ():
            yield item

    async def health(self) -> dict:
        version, ident, repo = await self.rpc.version(), await self.rpc.node_id(), await self.rpc.repo_stat()
        return {"status": "ok", "version": version.get("Version"), "peer_id": ident.get("ID"),
                "repo_bytes": repo.get("RepoSize"), "repo_max_bytes": repo.get("StorageMax")}

    async def close(self) -> None:
        await self.rpc.close()


class KuboPinner(Pinner):
    """Desired pins become recursive pins in the one Kubo node."""

    name = "kubo"
    pinned_on_protect = True

    def __init__(self, rpc: KuboRpc):
        self.rpc = rpc

    async def pin(self, cid: Cid, replication_min: int, replication_max: int) -> None:
        await self.rpc.pin_add(cid)

    async def unpin(self, cid: Cid) -> None:
        await self.rpc.pin_rm(cid)

    @staticmethod
    def _of(kind: str | None) -> PinStatus:
        return PinStatus(1, {"kubo": "pinned"}) if kind == "recursive" else PinStatus(0, {"kubo": "unpinned"})

    async def status(self, cid: Cid) -> PinStatus:
        return self._of((await self.rpc.pin_ls(cid)).get(str(cid)))

    async def statuses(self, cids: list[Cid], population: int | None = None) -> dict[Cid, PinStatus]:
        pinned = await self.rpc.pin_ls()  # one streamed listing beats a call per pin
        return {c: self._of(pinned.get(str(c))) for c in cids}

    async def health(self) -> dict:
        return {"status": "ok"}
