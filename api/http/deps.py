"""What routes depend on: the ``Tierflow``, and the caller's key checked for a scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from tierflow.facade import Tierflow
from tierflow.hot.router import HISTORY_CHUNK

from .auth import ANONYMOUS, KeyRing, Principal, Scope, is_loopback
from .errors import ApiError
from .limits import SqlSlots

__all__ = ["AppState", "get_state", "require"]

# auto_error=False: a missing key is answered by ``require`` in the error envelope.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")


class AppState:
    """Everything the routes of one app share.

    Args:
        tf: The tierflow the routes serve.
        keys: The configured API keys.
        sql_slots: The per-key SQL concurrency limit.
        history_chunk: Events a history request reads and writes at a time.
    """

    def __init__(
        self, tf: Tierflow, keys: KeyRing, sql_slots: SqlSlots, history_chunk: int = HISTORY_CHUNK
    ) -> None:
        self.tf = tf
        self.keys = keys
        self.sql_slots = sql_slots
        self.history_chunk = history_chunk


def get_state(request: Request) -> AppState:
    """The app's shared state."""
    state: AppState = request.app.state.tierflow
    return state


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that answers 401 without a known key and 403 without ``scope``."""

    async def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> Principal:
        keys = get_state(request).keys
        if not keys.enabled:
            # check_bind keeps a server without keys on loopback; should it be bound wider
            # anyway (uvicorn run by hand), callers from elsewhere are still refused.
            client = request.client
            if client is None or not is_loopback(client.host):
                raise ApiError(
                    401,
                    "unauthorized",
                    "no API keys are configured: only callers on this machine are served",
                )
            return ANONYMOUS
        presented = bearer.credentials if bearer is not None else header
        if not presented:
            raise ApiError(401, "unauthorized", "an API key is required")
        key = keys.identify(presented)
        if key is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        if scope not in key.scopes:
            raise ApiError(403, "forbidden", f"key {key.name!r} lacks the {scope.value!r} scope")
        return Principal(key.name, key.scopes)

    check.__name__ = f"require_{scope.value}"
    return check
