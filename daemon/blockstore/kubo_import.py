"""A record's last blocks and its pins in one Kubo ``dag/import``, group-committed.

Writing a record used to end with three Kubo calls: ``block/put`` per codec,
then ``pin/add`` of its roots. ``pin/add`` took most of a small record's time
(30 ms of 67 ms at one client, 183 ms of 357 ms at sixteen, because Kubo
pins one call at a time). One ``dag/import`` of a CAR holding the blocks,
with ``pin-roots``, replaces all three: Kubo checks every block against its
CID while reading the CAR (a mismatch fails the import), holds its GC lock
for the whole import, and pins each root recursively, walking the DAG, so a
chunk put earlier that has gone missing fails the pin too.

Calls that arrive while imports are in flight (two at most) wait and go
together in the next one (group commit, no timer: one writer alone never
waits). If a
combined import fails, each caller's part is tried on its own so that one
bad record cannot fail the others.

Kubo's answer is parsed strictly: exactly one ``Root`` per root sent, each
the CID we computed with an empty ``PinErrorMsg``, and one ``Stats`` whose
``BlockCount`` is the number of blocks sent. Anything else is refused.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .. import car
from ..blocks import Block
from ..cid import Cid
from ..errors import IntegrityError
from .http import BackendError

_GROUP_BLOCKS = 256  # callers' blocks per combined import
_GROUP_BYTES = 8 * 1024 * 1024
PIN_WAIT = 120.0  # Kubo's own deadline for a pin whose blocks it cannot find locally
# Imports in flight at once: with one, Kubo wrote the next group's blocks only
# after pinning the last group's roots (it pins one root at a time).
IN_FLIGHT = 2


def check_answer(answers: Sequence[object], roots: Sequence[Cid], blocks: int) -> None:
    """Raises unless Kubo's ``dag/import`` answer confirms exactly these roots
    pinned and this many blocks read. Answers come from outside: each line
    must have the shape Kubo documents, and nothing else."""
    seen: list[str] = []
    stats = []
    for item in answers:
        if not isinstance(item, dict) or len(item) != 1:
            raise IntegrityError("Kubo answered dag/import with something other than a root or stats line")
        (kind, value), = item.items()
        if kind == "Root":
            if (not isinstance(value, dict) or set(value) != {"Cid", "PinErrorMsg"}
                    or not isinstance(value["Cid"], dict) or set(value["Cid"]) != {"/"}
                    or not isinstance(value["Cid"]["/"], str) or not isinstance(value["PinErrorMsg"], str)):
                raise IntegrityError("Kubo's dag/import root line is malformed")
            if value["PinErrorMsg"]:
                raise BackendError(f"kubo could not pin a record: {value['PinErrorMsg'][:300]}", 500)
            seen.append(value["Cid"]["/"])
        elif kind == "Stats":
            if not isinstance(value, dict) or type(value.get("BlockCount")) is not int:
                raise IntegrityError("Kubo's dag/import stats line is malformed")
            stats.append(value["BlockCount"])
        else:
            raise IntegrityError("Kubo answered dag/import with an unknown line")
    if sorted(seen) != sorted(str(r) for r in roots):
        raise IntegrityError("Kubo pinned other roots than medvault sent")
    if stats != [blocks]:
        raise IntegrityError("Kubo did not confirm every block medvault sent")


def car_body(blocks: Sequence[Block], roots: Sequence[Cid]) -> bytes:
    return b"".join([car.header(list(roots)), *(car.frame(b) for b in blocks)])


class ImportBatcher:
    """Group commit of ``(blocks, roots)`` writes into ``dag/import`` calls."""

    def __init__(self, rpc, pin_wait: float = PIN_WAIT, in_flight: int = IN_FLIGHT):
        self._rpc = rpc
        self._pin_wait = pin_wait
        self._in_flight = in_flight
        self._waiting: list[tuple[list[Block], list[Cid], asyncio.Future]] = []
        self._drainers: set[asyncio.Task] = set()

    async def put_protected(self, blocks: list[Block], roots: list[Cid]) -> None:
        unique = list({b.cid: b for b in blocks}.values())
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((unique, list(dict.fromkeys(roots)), future))
        self._drainers = {t for t in self._drainers if not t.done()}
        if len(self._drainers) < self._in_flight:
            self._drainers.add(asyncio.create_task(self._drain()))
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The import may still pin this caller's roots: let it finish, so the
            # caller's cleanup (unpin, delete) runs after it, never before.
            await asyncio.wait([future])
            raise

    def _next_group(self) -> list[tuple[list[Block], list[Cid], asyncio.Future]]:
        group, count, size = [], 0, 0
        while self._waiting:
            blocks = self._waiting[0][0]
            if group and (count + len(blocks) > _GROUP_BLOCKS or size + sum(len(b.data) for b in blocks) > _GROUP_BYTES):
                break
            group.append(self._waiting.pop(0))
            count += len(blocks)
            size += sum(len(b.data) for b in blocks)
        return group

    async def _drain(self) -> None:
        while self._waiting:
            group = self._next_group()
            try:
                await self._import([b for g in group for b in g[0]], [r for g in group for r in g[1]])
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0][2], exc)
                    continue
                for blocks, roots, future in group:  # alone, a good record goes through
                    try:
                        await self._import(blocks, roots)
                        _settle(future, None)
                    except Exception as alone:
                        _settle(future, alone)
                continue
            for _, _, future in group:
                _settle(future, None)

    async def _import(self, blocks: list[Block], roots: list[Cid]) -> None:
        blocks = list({b.cid: b for b in blocks}.values())  # two callers may share a block
        roots = list(dict.fromkeys(roots))
        answers = await self._rpc.dag_import(car_body(blocks, roots), self._pin_wait)
        check_answer(answers, roots, len(blocks))


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
