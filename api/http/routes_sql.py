"""``POST /v1/sql`` (read-only SQL across tiers) and ``/v1/tiering`` (run a pass, the ledger)."""

from __future__ import annotations

import base64
import math
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from .auth import Principal, Scope
from .deps import AppState, get_state, require
from .errors import ERROR_RESPONSES
from .models import SqlRequest, SqlResponse, TieringRunRequest

__all__ = ["json_value", "router"]

router = APIRouter(tags=["sql and tiering"], responses=ERROR_RESPONSES)

State = Annotated[AppState, Depends(get_state)]


def json_value(value: Any) -> Any:
    """A SQL value as JSON: times in ISO 8601, decimals as text, bytes in base64.

    Non-finite floats become ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``: JSON
    has no such numbers, and a query may well produce them.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal | uuid.UUID | timedelta):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


@router.post("/v1/sql", response_model=SqlResponse)
async def run_sql(
    body: SqlRequest, state: State, who: Annotated[Principal, Depends(require(Scope.SQL))]
) -> dict[str, Any]:
    """One read-only SELECT over the ``workflows`` and ``history`` views of every tier.

    The query runs confined (no files, no network, no writes). Each key may run
    a few at once (``TIERFLOW_HTTP_SQL_CONCURRENCY``); more are answered 429.
    """
    with state.sql_slots.slot(who.name):
        result = await state.tf.sql(body.sql, body.params, body.as_of)
        try:
            rows = [[json_value(v) for v in row] for row in result.rows]
        finally:
            result.close()
    return {"columns": list(result.columns), "rows": rows, "truncated": result.truncated}


@router.post("/v1/tiering/run", response_model=dict[str, Any])
async def run_tiering(
    state: State,
    _: Annotated[Principal, Depends(require(Scope.ADMIN))],
    body: TieringRunRequest | None = None,
) -> dict[str, Any]:
    """Run one tiering pass now (hot → warm, then warm → cold for what is old enough)."""
    report = await state.tf.tier(to=body.to if body is not None else None)
    out: dict[str, Any] = json_value(report.to_dict())
    return out


@router.get("/v1/tiering/status", response_model=dict[str, Any])
async def tiering_status(
    state: State,
    _: Annotated[Principal, Depends(require(Scope.READ))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """How many instances each tier holds, and the newest warm batches."""
    status = await state.tf.tiering_status(limit)
    out: dict[str, Any] = json_value(status.to_dict())
    return out
