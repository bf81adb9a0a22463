"""``HttpSettings``: how the HTTP API serves, read from arguments or ``TIERFLOW_HTTP_*``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tierflow.hot.errors import InvalidArgument
from tierflow.hot.router import HISTORY_CHUNK

__all__ = ["HttpSettings"]

_MIB = 2**20


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise InvalidArgument(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class HttpSettings:
    """Limits and the source of API keys of one HTTP app.

    Attributes:
        max_body_bytes: Request bodies larger than this are refused with 413
            (``TIERFLOW_HTTP_MAX_BODY_BYTES``, default 1 MiB).
        sql_concurrency: ``POST /v1/sql`` requests one API key may have running at
            once; more are refused with 429 (``TIERFLOW_HTTP_SQL_CONCURRENCY``, default 2).
        api_keys_file: A file of API keys (``TIERFLOW_API_KEYS_FILE``); see
            :mod:`tierflow.http.auth` for its format.
        api_keys: API keys given inline, in the same format (``TIERFLOW_API_KEYS``).
            With neither, auth is off and the server may bind only loopback.
        history_chunk: Events ``GET /v1/workflows/{id}/history`` reads and writes
            at a time (``TIERFLOW_HTTP_HISTORY_CHUNK``, default 1,000): what one
            history request holds in memory, whatever the history's length.
    """

    max_body_bytes: int = _MIB
    sql_concurrency: int = 2
    api_keys_file: str | None = None
    api_keys: str | None = None
    history_chunk: int = HISTORY_CHUNK

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise InvalidArgument("max_body_bytes must be at least 1")
        if self.sql_concurrency < 1:
            raise InvalidArgument("sql_concurrency must be at least 1")
        if self.history_chunk < 1:
            raise InvalidArgument("history_chunk must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HttpSettings:
        """Read the settings from the environment (``os.environ`` by default).

        Raises:
            InvalidArgument: A variable holds a malformed or out-of-range value.
        """
        env = os.environ if env is None else env
        return cls(
            max_body_bytes=_int(env, "TIERFLOW_HTTP_MAX_BODY_BYTES", _MIB, 1),
            sql_concurrency=_int(env, "TIERFLOW_HTTP_SQL_CONCURRENCY", 2, 1),
            api_keys_file=env.get("TIERFLOW_API_KEYS_FILE") or None,
            api_keys=env.get("TIERFLOW_API_KEYS") or None,
            history_chunk=_int(env, "TIERFLOW_HTTP_HISTORY_CHUNK", HISTORY_CHUNK, 1),
        )
