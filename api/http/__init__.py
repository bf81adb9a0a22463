"""tierflow's HTTP API (FastAPI): ``create_app(tf)`` serves a ``Tierflow`` under ``/v1``.

- :mod:`.app`: :func:`create_app`, the lifespan that starts and stops the engine;
- :mod:`.routes_workflows`, :mod:`.routes_sql`, :mod:`.routes_compliance`: the routes;
- :mod:`.models`: request and response bodies (rows derived from ``tierflow.hot.rows``);
- :mod:`.errors`: the error envelope and the table of statuses;
- :mod:`.auth`: API keys, scopes, :func:`check_bind`;
- :mod:`.limits`: body size (413) and SQL concurrency per key (429);
- :mod:`.observability`: ``/healthz``, ``/readyz``;
- :mod:`.settings`: :class:`HttpSettings` (``TIERFLOW_HTTP_*``).
"""

from __future__ import annotations

from .app import EngineMode, create_app
from .auth import (
    ApiKey,
    InsecureBindError,
    KeyRing,
    Principal,
    Scope,
    check_bind,
    hash_key,
    new_key,
)
from .errors import STATUS_OF, ApiError
from .settings import HttpSettings

__all__ = [
    "STATUS_OF",
    "ApiError",
    "ApiKey",
    "EngineMode",
    "HttpSettings",
    "InsecureBindError",
    "KeyRing",
    "Principal",
    "Scope",
    "check_bind",
    "create_app",
    "hash_key",
    "new_key",
]
