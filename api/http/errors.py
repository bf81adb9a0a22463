"""Errors as JSON ``{"error": {"code", "message"}}`` with the right status, from one table.

Every ``TierflowError`` a route lets through is mapped by :data:`STATUS_OF`
(the most specific class wins), FastAPI's request validation becomes a 422 in
the same envelope, and an unexpected exception a 500 that says nothing about
its cause (it is logged instead).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tierflow.hot.errors import (
    ExportVerificationError,
    HoldNotFound,
    InvalidArgument,
    InvalidWorkflowId,
    NonDeterminismError,
    PayloadError,
    StorageError,
    TierflowError,
    UnknownQuery,
    WorkflowAlreadyExists,
    WorkflowAlreadyFinished,
    WorkflowNotFound,
    WorkflowOnHold,
    WorkflowStillRunning,
)
from tierflow.tiering.sql import QueryTimeout

__all__ = [
    "ERROR_RESPONSES",
    "STATUS_OF",
    "ApiError",
    "CatchUnexpected",
    "ErrorBody",
    "ErrorDetail",
    "error_response",
    "install_error_handlers",
]

log = logging.getLogger("tierflow.http")

STATUS_OF: dict[type[TierflowError], tuple[int, str]] = {
    InvalidWorkflowId: (400, "invalid_workflow_id"),
    UnknownQuery: (400, "unknown_query"),
    QueryTimeout: (400, "query_timeout"),
    PayloadError: (400, "invalid_payload"),
    InvalidArgument: (400, "invalid_argument"),
    WorkflowNotFound: (404, "not_found"),
    HoldNotFound: (404, "hold_not_found"),
    WorkflowAlreadyExists: (409, "already_exists"),
    WorkflowAlreadyFinished: (409, "already_finished"),
    WorkflowOnHold: (409, "on_hold"),
    WorkflowStillRunning: (409, "still_running"),
    NonDeterminismError: (409, "nondeterminism"),
    ExportVerificationError: (409, "export_mismatch"),
    # The store or the catalog is down: the request was fine, try again later.
    StorageError: (503, "storage_unavailable"),
}
"""HTTP status and error code of each ``TierflowError`` subtree a route can raise."""


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Bad input (malformed id, bad SQL, ...)",
    401: "Missing or unknown API key",
    403: "The API key lacks the scope",
    404: "No such workflow",
    409: "Conflicts with the workflow's state (exists, finished, on hold, running)",
    413: "Request body over the limit",
    422: "Request failed validation",
    429: "Too many concurrent SQL queries for this key",
    503: "Storage unavailable",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _DESCRIPTIONS.items()
}
"""The error responses every route documents in the OpenAPI document."""


class ApiError(TierflowError):
    """An error the HTTP layer itself raises (auth, limits): its status and code.

    Attributes:
        status: The HTTP status.
        code: The error code of the envelope.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A response in the error envelope."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def status_of(exc: TierflowError) -> tuple[int, str]:
    """The status and code :data:`STATUS_OF` gives ``exc`` (500/"internal" if none)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    for cls in type(exc).__mro__:
        found = STATUS_OF.get(cls)
        if found is not None:
            return found
    return 500, "internal"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class CatchUnexpected:
    """ASGI middleware: answer an unexpected exception with a 500 envelope, and go on serving.

    Starlette's own last-resort handler answers and then re-raises, and the
    server then drops the connection, failing the client's next request on
    it too. Here the exception is logged and the connection stays usable.

    Args:
        app: The application it wraps.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise  # too late for an answer of our own: let the server close it
            response = error_response(500, "internal", "internal error (logged on the server)")
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the envelope."""

    async def on_tierflow(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TierflowError)
        status, code = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(status, code, exc.message, headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "validation_error", _validation_message(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal", "internal error (logged on the server)")

    app.add_exception_handler(TierflowError, on_tierflow)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
