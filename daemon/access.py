"""Who may do what to a record: the one access decision of the node.

Every read, write, grant, revoke, import, erase, audit view and break-glass
is decided by :func:`allowed` from facts this node recorded itself, never
from what a signed manifest claims (see docs/SECURITY.md):

- **Read** (view, content, versions, a record's audit trail): the caller
  holds a live envelope naming the record's *current manifest CID*
  (``indexer.records.LIVE_ENVELOPE``; search applies the same predicate in
  SQL). A break-glass envelope counts only with the ``emergency`` scope.
- **Change** (new version, erase): readable, and the caller is the record's
  recorded patient, its creator, or a writer they authorised.
- **Share** (grant, list grants, revoke): readable, and the caller is the
  patient; or, unless the node's ``grant_policy`` is ``patient``, one of the
  record's writers. Granting *write* authority (the recipient becomes one of
  the record's writers) is for the patient and the creator only.
- **Import**: a record new to this node may be added. A version of a
  record the node holds is accepted only as the exact continuation (version
  current+1, ``prev`` = the current manifest CID, same patient) by one of
  the record's writers; another envelope for the current manifest is
  accepted; an envelope this node revoked stays revoked; anything else is
  refused.
- **Break-glass**: the ``emergency`` scope and a record that exists.

Denials that must not reveal a record exists are 404; a reader who may not
change a record gets 403; an import that is not a continuation gets 409.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from indexer import records

from . import timeutil
from .auth import Caller
from .errors import Conflict, Forbidden, NotFound, VaultError
from .views import check_record_id


class Action(enum.Enum):
    VIEW = "view"
    READ = "read"
    VERSIONS = "versions"
    AUDIT = "audit"
    UPDATE = "update"
    ERASE = "erase"
    GRANT = "grant"
    GRANT_WRITE = "grant_write"
    LIST_GRANTS = "grants"
    REVOKE = "revoke"
    IMPORT = "import"
    BREAK_GLASS = "break_glass"


_READS = {Action.VIEW, Action.READ, Action.VERSIONS, Action.AUDIT}
_CHANGES = {Action.UPDATE, Action.ERASE}
_SHARES = {Action.GRANT, Action.LIST_GRANTS, Action.REVOKE}
WRITER_ROLES = frozenset({"patient", "creator", "writer"})


@dataclass(frozen=True)
class RecordFacts:
    """What this node knows of a record when deciding: its current row, the
    roles it recorded (principal → roles), and whether the actor holds a live
    envelope for the current manifest."""

    row: dict
    roles: dict[str, set[str]]
    readable: bool

    @property
    def patient(self) -> str | None:
        return self.row["patient"]

    def is_writer(self, did: str) -> bool:
        return bool(self.roles.get(did, set()) & WRITER_ROLES)


@dataclass(frozen=True)
class Incoming:
    """An import's claim, from a manifest whose signature already verified."""

    manifest: str
    record: str
    version: int
    prev: str | None
    patient: str | None
    author: str
    revoked: bool = False  # the envelope it came with was revoked on this node before


def allowed(actor: str, action: Action, record: RecordFacts | None, *, scopes: frozenset[str] = frozenset(),
            grant_policy: str = "patient_or_author", incoming: Incoming | None = None) -> VaultError | None:
    """None when ``actor`` may do ``action`` to ``record``; otherwise the
    error to answer with. ``record`` None means the node has no such record.
    For IMPORT the actor is the incoming manifest's (verified) author."""
    if action is Action.IMPORT:
        return _import_allowed(record, incoming)
    if record is None:
        return NotFound("no such record", "record_not_found")
    if action is Action.BREAK_GLASS:
        return None if "emergency" in scopes else Forbidden("break-glass needs the emergency scope",
                                                            "missing_scope")
    if not record.readable:
        return NotFound("no such record", "record_not_found")
    if action in _READS:
        return None
    if action in _CHANGES:
        return None if record.is_writer(actor) else Forbidden(
            "only the record's patient, creator or an authorised writer may change or erase it", "not_owner")
    if action is Action.GRANT_WRITE:
        return None if record.roles.get(actor, set()) & {"patient", "creator"} else Forbidden(
            "only the record's patient or creator may authorise another writer", "not_owner")
    if action in _SHARES:
        if actor == record.patient:
            return None
        if grant_policy == "patient":
            return Forbidden("on this node only the record's patient may share it", "patient_only")
        return None if record.is_writer(actor) else Forbidden(
            "only the record's patient or its writers may share it", "not_owner")
    raise ValueError(f"no rule for {action}")  # a new Action without a rule is a bug, never a yes


def _import_allowed(record: RecordFacts | None, incoming: Incoming) -> VaultError | None:
    if incoming.revoked:
        return Forbidden("this grant was revoked on this node", "grant_revoked")
    if record is None:
        return None  # new to this node: nobody's record is touched
    row = record.row
    if incoming.version == row["version"]:
        if incoming.manifest == row["cid"]:
            return None  # another envelope for the version we hold
        return Conflict("this node holds another manifest for that record version", "not_a_continuation")
    if incoming.version < row["version"]:
        return Conflict("this node already holds a newer version of the record", "stale_share")
    if incoming.version != row["version"] + 1 or incoming.prev != row["cid"]:
        return Conflict("the version does not continue the record's current version", "not_a_continuation")
    if incoming.patient != row["patient"] or not record.is_writer(incoming.author):
        return Forbidden("the version's author may not write this record on this node", "not_authorized")
    return None


def facts_in(conn, record_id: str, actor: str, now: str, emergency: bool = False) -> RecordFacts | None:
    """The facts for a decision, read on ``conn`` (a read snapshot or the
    writer's transaction, so a decision and the write it allows see the same state)."""
    row = records.find(conn, record_id)
    if row is None:
        return None
    readable = records.readable(conn, record_id, actor, now, emergency) is not None
    return RecordFacts(row, records.roles(conn, record_id), readable)


class AccessPolicy:
    """Loads the facts, asks :func:`allowed`, audits a denial and raises it."""

    def __init__(self, services):
        self._services = services

    async def require(self, caller: Caller, action: Action, record_id: str) -> RecordFacts:
        services = self._services
        check_record_id(record_id)
        facts = await services.db.read(facts_in, record_id, caller.did, timeutil.now(), caller.has("emergency"))
        error = allowed(caller.did, action, facts, scopes=caller.scopes,
                        grant_policy=services.config.grant_policy)
        if error is not None:
            await services.audit_access(caller.did, action.value, record_id, "denied", {"code": error.code})
            raise error
        return facts
