"""``create_app``: the FastAPI application that serves one ``Tierflow`` over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI
from tierflow.facade import Tierflow
from tierflow.hot.errors import InvalidArgument

from . import routes_compliance, routes_sql, routes_workflows
from .auth import KeyRing
from .deps import AppState
from .errors import CatchUnexpected, install_error_handlers
from .limits import BodyLimit, SqlSlots
from .observability import install_observability
from .settings import HttpSettings

__all__ = ["EngineMode", "create_app"]

EngineMode = Literal["run", "open", "external"]
"""How the app's lifespan drives the ``Tierflow``:

- ``"run"``: ``async with tf`` — the server also runs workflows (scheduler, timers,
  recovery), so one process is enough;
- ``"open"``: open the data directory only; ``tierflow worker`` processes on the same
  data directory run the workflows;
- ``"external"``: the caller starts and stops ``tf`` itself.
"""


def create_app(
    tf: Tierflow,
    *,
    settings: HttpSettings | None = None,
    engine: EngineMode = "run",
    api: bool = True,
) -> FastAPI:
    """Build the HTTP API of ``tf`` (routes under ``/v1``, ``/healthz``, ``/readyz``).

    ``tf`` is normally not started yet: the app's lifespan starts it when the
    server starts and closes it when the server stops, so building the app
    does no I/O beyond reading the API keys.

    Args:
        tf: The tierflow to serve; its registered workflows are the types
            ``POST /v1/workflows`` accepts.
        settings: Limits and API keys (default: ``HttpSettings.from_env()``).
        engine: How the lifespan drives ``tf`` (:data:`EngineMode`).
        api: False: no ``/v1`` routes, only ``/healthz``, ``/readyz`` and ``/metrics``
            (what ``tierflow worker --metrics-port`` serves: a worker's own metrics, the
            steps it runs among them).

    Returns:
        The app, ready for uvicorn.

    Raises:
        InvalidArgument: The API keys are malformed or unreadable, or ``engine``
            is not one of the modes.
    """
    if engine not in ("run", "open", "external"):
        raise InvalidArgument(f"engine must be 'run', 'open' or 'external', got {engine!r}")
    settings = HttpSettings.from_env() if settings is None else settings
    state = AppState(
        tf,
        KeyRing.from_settings(settings),
        SqlSlots(settings.sql_concurrency),
        settings.history_chunk,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine == "run":
            await tf.__aenter__()
        elif engine == "open":
            tf.open()
        try:
            yield
        finally:
            if engine != "external":
                await tf.aclose()

    app = FastAPI(
        title="tierflow",
        summary="Durable workflows with storage tiers, and SQL over everything that ran.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.tierflow = state
    install_error_handlers(app)
    app.add_middleware(CatchUnexpected)
    # Added last, so outermost: an oversized body is refused before anything else runs.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if api:
        app.include_router(routes_workflows.router)
        app.include_router(routes_sql.router)
        app.include_router(routes_compliance.router)
    install_observability(app, tf)
    return app


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tierflow")
    except metadata.PackageNotFoundError:
        return "0"
