"""Health and readiness (``/healthz``, ``/readyz``): what orchestrators and load balancers poll.

:func:`install_observability` is where the app's operational routes and
middleware are added; ``create_app`` calls it once. Neither route needs a key:
they say nothing about any workflow.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from tierflow.facade import Tierflow
from tierflow.hot.errors import TierflowError

from .metrics import install_metrics

__all__ = ["READY_TIMEOUT", "Health", "install_observability"]

READY_TIMEOUT = 5.0
"""Seconds each readiness check may take before the server reports not ready."""


class Health(BaseModel):
    """``{"status": "ok"}``, or ``"unavailable"`` with the reason."""

    status: str
    reason: str | None = None


async def _check(tf: Tierflow) -> str | None:
    """None when the index and the object store answer; else what is wrong."""
    try:
        tf.index.execute("SELECT 1")
    except TierflowError as exc:
        return f"instance index: {exc.message}"
    try:
        store = tf.store
        # The store's own check: endpoint, bucket, credentials, and a probe object written,
        # read back, listed and deleted (a listing alone passes for a missing bucket).
        await asyncio.wait_for(tf.engine.io(store.check), timeout=READY_TIMEOUT)
    except TimeoutError:
        return f"object store: no answer within {READY_TIMEOUT:g} s"
    except TierflowError as exc:
        return f"object store: {exc.message}"
    return None


def install_observability(app: FastAPI, tf: Tierflow) -> None:
    """Add ``/healthz``, ``/readyz`` and ``/metrics`` (:mod:`.metrics`) to ``app``.

    Args:
        app: The app ``create_app`` builds.
        tf: The tierflow it serves.
    """

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["operations"],
        responses={503: {"model": Health, "description": "The index or the store is down"}},
    )
    async def readyz() -> Health | JSONResponse:
        """Readiness: the instance index and the object store answer."""
        reason = await _check(tf)
        if reason is None:
            return Health(status="ok")
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)

    install_metrics(app, tf)
