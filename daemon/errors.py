"""Errors the engine raises; the HTTP layer maps each kind to a status code.

Messages are for a person and must never contain plaintext, keys, tokens or
patient identifiers: they end up in logs and HTTP bodies.
"""
from __future__ import annotations


class VaultError(Exception):
    code = "error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadRequest(VaultError):
    code = "bad_request"


class Unauthorized(VaultError):
    code = "unauthorized"


class Forbidden(VaultError):
    code = "forbidden"


class NotFound(VaultError):
    code = "not_found"


class Conflict(VaultError):
    code = "conflict"


class PreconditionFailed(VaultError):
    """The client's precondition (an expected version, FHIR's If-Match) no longer holds."""

    code = "precondition_failed"


class Gone(VaultError):
    """The thing existed but its content is gone for good (a version rotated away or erased)."""

    code = "gone"


class TooLarge(VaultError):
    code = "too_large"


class UnsupportedMediaType(VaultError):
    code = "unsupported_media_type"


class NotAcceptable(VaultError):
    """The client accepts no format this server answers in (FHIR: JSON only)."""

    code = "not_acceptable"


class InvalidRecord(VaultError):
    code = "invalid_record"


class IntegrityError(VaultError):
    """A block read back does not match its CID or fails to open."""

    code = "integrity_error"


class BackendUnavailable(VaultError):
    code = "backend_unavailable"


class BackendFailed(VaultError):
    """Kubo or the Cluster answered a well-formed request with an error: the
    gateway's upstream failed (502), not the client (4xx) and not us (500)."""

    code = "backend_error"


class BlockNotFound(VaultError):
    code = "block_not_found"


class NotFoundOnNetwork(VaultError):
    """No peer answered for a block within the fetch timeout. Not a
    BlockNotFound: the block may exist somewhere, we only stopped waiting."""

    code = "not_found_on_network"


class InsufficientStorage(VaultError):
    """The node's disk (blocks or index) is full; erasing records frees it."""

    code = "insufficient_storage"


class WorkerUnavailable(VaultError):
    """The parse worker process died during a call; it is started again for the next one."""

    code = "worker_unavailable"


class QueryTimeout(VaultError):
    """An index query ran past the node's time limit and was interrupted."""

    code = "query_timeout"


class NodeStopping(VaultError):
    """The daemon is shutting down: its index takes no more work. Retry against it once it is back."""

    code = "node_stopping"
