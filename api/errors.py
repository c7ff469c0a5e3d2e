"""One error shape for every failure: ``{"error": {"code", "message"}}``
(on ``/fhir``, the same status with an OperationOutcome body).

Engine errors map to their status by kind; aiohttp's own HTTP errors (unknown
route, wrong method) are reshaped; anything unexpected is logged by type only
and answered with a generic 500 that reveals nothing.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from daemon import errors as e
from daemon.space import full_error, is_full
from indexer.db import DiskFull, IndexClosed, QueryInterrupted

from .fhir.outcome import is_fhir, render_error

log = logging.getLogger("medvault.api")

STATUS = {
    e.BadRequest: 400, e.Unauthorized: 401, e.Forbidden: 403, e.NotFound: 404, e.Conflict: 409, e.Gone: 410,
    e.PreconditionFailed: 412,
    e.NotAcceptable: 406, e.TooLarge: 413, e.UnsupportedMediaType: 415, e.InvalidRecord: 422, e.IntegrityError: 502,
    e.BlockNotFound: 502, e.BackendFailed: 502, e.BackendUnavailable: 503, e.QueryTimeout: 503, e.WorkerUnavailable: 503, e.NodeStopping: 503,
    e.NotFoundOnNetwork: 504,
    e.InsufficientStorage: 507,
}
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               416: "range_not_satisfiable", 422: "invalid_record"}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def _from_index(error: Exception) -> e.VaultError:
    """The index's own errors (it knows nothing of the engine's), in engine terms."""
    if isinstance(error, DiskFull):
        return e.InsufficientStorage("the node's disk is full (index); erase records or add space, then retry")
    if isinstance(error, IndexClosed):
        return e.NodeStopping("the node is stopping; retry once it is back")
    return e.QueryTimeout(f"{error}: narrow the query (fewer terms, a shorter time span) or retry later")


def status_of(error: e.VaultError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, except that what its HTTP parser refuses
    (a header over 8 KiB, a request line over the limit, a malformed request)
    gets our JSON error shape instead of plain text. The parser's message may
    quote the request, so only its type is logged."""

    __slots__ = ()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        log.info("request refused by the HTTP parser", extra={"status": status,
                                                              "error_type": type(exc).__name__ if exc else None})
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot send an error")
        code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        text = ("the request is malformed or its request line or headers are too large" if status < 500
                else "the server failed to handle this request")
        response = error_response(status, code, text)
        response.force_close()
        return response


CLIENT_CLOSED = 499  # nginx's "client closed request": only ever seen in our own logs


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _aborted(request: web.Request, error: BaseException) -> web.Response:
    """A client that hangs up mid-request is not a server error: one info line, no 500."""
    log.info("request aborted by the client", extra={"error_type": type(error).__name__,
                                                     "route": _route(request)})
    return web.Response(status=CLIENT_CLOSED)


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await _mapped(request, handler)
    except asyncio.CancelledError as error:  # aiohttp cancels a handler whose client left
        if client_gone(request):
            _aborted(request, error)
        raise


async def _mapped(request: web.Request, handler):
    try:
        try:
            return await handler(request)
        except (DiskFull, QueryInterrupted, IndexClosed) as index_error:
            raise _from_index(index_error) from None
        except OSError as os_error:  # any write on a full disk (keys, spools), wherever it happens
            if not is_full(os_error):
                raise
            raise full_error("files") from None
    except e.VaultError as error:
        status = status_of(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _answer(request, status, error.code, error.message, headers, error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _answer(request, error.status, _HTTP_CODES.get(error.status, "http_error"), error.reason,
                       {k: v for k, v in error.headers.items() if k.lower() == "allow"})
    except Exception as error:  # a bug: log the type, never the message (may hold data)
        if client_gone(request):
            return _aborted(request, error)
        log.error("unhandled error", extra={"error_type": type(error).__name__, "route": _route(request)})
        return _answer(request, 500, "internal_error", "the server failed to handle this request")


def _answer(request: web.Request, status: int, code: str, message: str, headers: dict | None = None,
            error: e.VaultError | None = None) -> web.Response:
    """One mapping of errors to statuses; the body in the caller's API's shape
    (FHIR's OperationOutcome on /fhir, our JSON error elsewhere)."""
    if is_fhir(request):
        return render_error(status, code, message, headers, error)
    return error_response(status, code, message, headers)
