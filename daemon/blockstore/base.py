"""The two storage interfaces every backend implements.

``BlockStore`` moves content-addressed blocks; ``Pinner`` turns the index's
desired pin state into the backend's actual state and reports it per peer.
Modelled on IPFS Cluster's component split so that ``local``, ``kubo`` and
``cluster`` are interchangeable behind the Vault.

Contracts:
- ``put_many`` stores blocks and checks that the backend stored each under
  the CID we computed; ``sync`` returns once every block put before it is
  durable. The Vault calls ``sync`` once per record, before the index
  commit, so a backend can make many records durable with one flush.
- ``get`` returns bytes whose hash matches the CID, or raises
  ``IntegrityError``; missing blocks raise ``BlockNotFound``; an unreachable
  backend raises ``BackendUnavailable``.
- ``delete_many`` is best-effort (erasure and garbage collection).
- ``put_made`` and ``get_blocking`` let a store whose I/O is blocking calls
  (local files) do a chunk's sealing and writing, or reading and opening, in
  one thread hop: each hop hands the GIL between threads, and a 256 MiB record
  has 1,024 chunks.
"""
from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from ..blocks import Block
from ..cid import Cid


class BlockStore(ABC):
    name: str = "abstract"
    batch_blocks: int = 8  # how many blocks ingest hands ``put_many`` at once
    # A read the caller may run on a worker thread of its own (same contract as
    # ``get``), or None where reads are not blocking calls.
    get_blocking: Callable[[Cid], bytes] | None = None

    @abstractmethod
    async def put_many(self, blocks: list[Block]) -> None: ...

    async def put_made(self, make: Callable[[], Block], pool: Executor) -> Block:
        """Runs ``make`` (CPU work: sealing a chunk) on ``pool`` and stores the
        block it returns; returns that block."""
        block = await asyncio.get_running_loop().run_in_executor(pool, make)
        await self.put_many([block])
        return block

    async def sync(self) -> None:
        """Makes every block put so far durable (a no-op where puts already are)."""
        return None

    async def protect(self, roots: list[Cid]) -> None:
        """Keeps these DAGs from the backend's own garbage collection (Kubo:
        a recursive pin on this node). Called before a record is acknowledged."""
        return None

    async def put_protected(self, blocks: list[Block], roots: list[Cid]) -> None:
        """``put_many``, ``sync`` and ``protect`` in one: what a write does last
        (Kubo does it in one call for many writers at once)."""
        await self.put_many(blocks)
        await self.sync()
        await self.protect(roots)

    async def release(self, roots: list[Cid]) -> None:
        """Undoes ``protect`` (erasure)."""
        return None

    @abstractmethod
    async def get(self, cid: Cid) -> bytes: ...

    @abstractmethod
    async def has(self, cid: Cid) -> bool: ...

    @abstractmethod
    async def delete_many(self, cids: list[Cid]) -> None: ...

    @abstractmethod
    def all_cids(self) -> AsyncIterator[tuple[Cid, float]]:
        """Every stored block with its write time (for garbage collection)."""

    @abstractmethod
    async def health(self) -> dict: ...

    async def close(self) -> None:
        return None


@dataclass
class PinStatus:
    """What the backend reports for one pin: how many peers hold it and each
    peer's own status (Cluster's names: pinned, pinning, pin_queued,
    pin_error, remote, cluster_error, ...). The reconciler turns this and the
    desired replication into the record's pin status."""

    replicas: int
    peers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class Pinner(ABC):
    """Turns desired pins into the backend's pins. ``max_replicas`` is how many
    copies the backend can hold at most (1 for a single node)."""

    name: str = "abstract"
    max_replicas: int = 1
    pinned_on_protect: bool = False  # protect() already pins all a record needs
    settles_later: bool = False  # pin() returns once accepted, before any copy is held (Cluster)

    @abstractmethod
    async def pin(self, cid: Cid, replication_min: int, replication_max: int) -> None:
        """Submits (or re-submits, to re-allocate) a pin; need not wait for it."""

    @abstractmethod
    async def unpin(self, cid: Cid) -> None: ...

    @abstractmethod
    async def status(self, cid: Cid) -> PinStatus: ...

    async def statuses(self, cids: list[Cid], population: int | None = None) -> dict[Cid, PinStatus]:
        """Status of many pins; ``population`` (how many pins there are in all,
        if known) lets a backend choose between asking for these and listing all."""
        return {cid: await self.status(cid) for cid in cids}

    async def recover(self, cid: Cid, replication_min: int, replication_max: int) -> None:
        """Retries a pin that failed on some peer."""
        await self.pin(cid, replication_min, replication_max)

    async def health(self) -> dict:
        return {"status": "ok"}

    async def close(self) -> None:
        return None
