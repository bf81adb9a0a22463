"""``/v1/workflows``: start, list, describe, history, signals, queries, cancel, replay, fork."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from tierflow.hot.errors import InvalidArgument, TierflowError
from tierflow.hot.models import HistoryEvent, WorkflowInfo
from tierflow.hot.rows import WORKFLOWS, names

from .auth import Principal, Scope
from .deps import AppState, get_state, require
from .errors import ERROR_RESPONSES, ApiError
from .history_body import json_body, ndjson_body
from .models import (
    CancelResponse,
    ForkRequest,
    History,
    QueryRequest,
    QueryResponse,
    ReasonRequest,
    ReplayResponse,
    SignalResponse,
    StartRequest,
    StartResponse,
    Workflow,
    WorkflowPage,
)

__all__ = ["ATTRIBUTE_PREFIX", "router"]

router = APIRouter(prefix="/v1/workflows", tags=["workflows"], responses=ERROR_RESPONSES)

ATTRIBUTE_PREFIX = "attr."
"""List filters on search attributes are query parameters ``attr.NAME=value``."""

NDJSON = "application/x-ndjson"

_WORKFLOW_FIELDS = names(WORKFLOWS)

State = Annotated[AppState, Depends(get_state)]
Reader = Annotated[Principal, Depends(require(Scope.READ))]
Writer = Annotated[Principal, Depends(require(Scope.WRITE))]
WorkflowId = Annotated[str, Path(description="The workflow id.", max_length=255)]


def workflow_row(info: WorkflowInfo) -> dict[str, Any]:
    """The response body of a workflow: its ``workflows`` row (no deep copy)."""
    return {name: getattr(info, name) for name in _WORKFLOW_FIELDS}


@router.post("", status_code=201, response_model=StartResponse)
async def start_workflow(body: StartRequest, state: State, _: Writer) -> dict[str, Any]:
    """Start (``mode: "start"``, queued, durable when this answers) or run an instance."""
    tf = state.tf
    if tf.engine.registry.get(body.workflow_type) is None:
        known = ", ".join(tf.engine.registry.names()) or "(none)"
        raise InvalidArgument(
            f"unknown workflow type {body.workflow_type!r}; this server runs: {known}"
        )
    call = tf.run if body.mode == "run" else tf.start
    handle = await call(
        body.workflow_type,
        body.input,
        workflow_id=body.workflow_id,
        on_conflict=body.on_conflict,
        attributes=body.attributes,
    )
    if body.mode == "run":
        info = await tf.describe(handle.workflow_id)
        return {
            "workflow_id": info.workflow_id,
            "status": info.status,
            "workflow": workflow_row(info),
        }
    return {"workflow_id": handle.workflow_id, "status": await tf.status(handle.workflow_id)}


def _attribute_value(text: str) -> Any:
    """A filter value from the query string: JSON numbers, booleans and quoted text; else text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


@router.get("", response_model=WorkflowPage)
async def list_workflows(
    request: Request,
    state: State,
    _: Reader,
    status: Annotated[list[str] | None, Query(description="Any of these statuses.")] = None,
    workflow_type: Annotated[list[str] | None, Query(description="Any of these types.")] = None,
    tier: Annotated[list[str] | None, Query(description="hot, warm or cold.")] = None,
    parent_workflow_id: Annotated[str | None, Query(max_length=255)] = None,
    created_after: Annotated[datetime | None, Query(description="At or after (ISO 8601).")] = None,
    created_before: datetime | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    finished_after: datetime | None = None,
    finished_before: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """List instances of every tier, newest first; ``attr.NAME=value`` filters on attributes.

    Time ranges: ``*_after`` is inclusive, ``*_before`` exclusive; a time without a
    zone is UTC. Never-started instances have no start, unfinished ones no finish.
    """
    attributes = {
        key[len(ATTRIBUTE_PREFIX) :]: _attribute_value(value)
        for key, value in request.query_params.items()
        if key.startswith(ATTRIBUTE_PREFIX)
    }
    page = await state.tf.list(
        status=status,
        workflow_type=workflow_type,
        tier=tier,
        attributes=attributes or None,
        parent_workflow_id=parent_workflow_id,
        created_after=created_after,
        created_before=created_before,
        started_after=started_after,
        started_before=started_before,
        finished_after=finished_after,
        finished_before=finished_before,
        cursor=cursor,
        limit=limit,
    )
    return {"items": [workflow_row(i) for i in page.items], "next_cursor": page.next_cursor}


@router.get("/{workflow_id}", response_model=Workflow)
async def describe_workflow(workflow_id: WorkflowId, state: State, _: Reader) -> dict[str, Any]:
    """The instance's ``workflows`` row, from whichever tier holds it."""
    return workflow_row(await state.tf.describe(workflow_id))


@router.get(
    "/{workflow_id}/history",
    response_model=History,
    responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}}}},
)
async def workflow_history(
    workflow_id: WorkflowId, request: Request, state: State, _: Reader
) -> Any:
    """Every event, from whichever tier holds it, streamed as it is read.

    With ``Accept: application/x-ndjson`` the events come one JSON object a line;
    otherwise as the ``History`` document, written piece by piece. Either way the
    server never holds the whole history. Header ``X-Tierflow-Tier``: the tier the
    read started in.
    """
    tf = state.tf
    chunks = tf.iter_history(workflow_id, chunk=state.history_chunk)
    # The first read happens before the answer starts: an unknown id or an
    # unreadable tier is still an error envelope with its own status (a read that
    # raised has also finished the iterator: there is nothing to close).
    first: list[HistoryEvent] = await anext(chunks, [])
    # The index locates every instance: the tier the first chunk was just read from.
    row = tf.index.find(workflow_id)
    tier = row.tier if row is not None else "hot"
    ndjson = NDJSON in request.headers.get("accept", "")
    body = ndjson_body(first, chunks) if ndjson else json_body(workflow_id, tier, first, chunks)
    return StreamingResponse(
        body,
        media_type=NDJSON if ndjson else "application/json",
        headers={"X-Tierflow-Tier": tier},
    )


@router.post("/{workflow_id}/signals/{name}", status_code=202, response_model=SignalResponse)
async def signal_workflow(
    workflow_id: WorkflowId,
    name: Annotated[str, Path(max_length=200)],
    state: State,
    _: Writer,
    payload: Annotated[Any, Body(description="The signal's payload (any JSON).")] = None,
) -> dict[str, Any]:
    """Deliver a signal; durable when this answers."""
    await state.tf.signal(workflow_id, name, payload)
    return {"workflow_id": workflow_id, "signal": name}


@router.post("/{workflow_id}/queries/{name}", response_model=QueryResponse)
async def query_workflow(
    workflow_id: WorkflowId,
    name: Annotated[str, Path(max_length=200)],
    state: State,
    _: Reader,
    body: QueryRequest | None = None,
) -> dict[str, Any]:
    """Answer a query by replaying history: nothing runs, nothing is recorded."""
    args = body.args if body is not None else []
    try:
        result = await state.tf.query(workflow_id, name, *args)
    except TierflowError:
        raise
    except Exception as exc:
        # The handler itself raised (most often: arguments it does not take).
        raise ApiError(
            400, "query_failed", f"query {name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    return {"result": result}


@router.post("/{workflow_id}/cancel", response_model=CancelResponse)
async def cancel_workflow(
    workflow_id: WorkflowId, state: State, _: Writer, body: ReasonRequest | None = None
) -> dict[str, Any]:
    """Ask the instance to stop (cooperative); answers its status after the request."""
    status = await state.tf.cancel(workflow_id, body.reason if body else None)
    return {"workflow_id": workflow_id, "status": status}


@router.post("/{workflow_id}/terminate", response_model=CancelResponse)
async def terminate_workflow(
    workflow_id: WorkflowId, state: State, _: Writer, body: ReasonRequest | None = None
) -> dict[str, Any]:
    """Stop the instance now."""
    tf = state.tf
    await tf.terminate(workflow_id, body.reason if body else None)
    return {"workflow_id": workflow_id, "status": await tf.status(workflow_id)}


@router.post("/{workflow_id}/replay", response_model=ReplayResponse)
async def replay_workflow(workflow_id: WorkflowId, state: State, _: Reader) -> dict[str, Any]:
    """Run today's code against the recorded history (any tier); nothing runs for real."""
    r = await state.tf.replay(workflow_id)
    return {
        "workflow_id": r.workflow_id,
        "tier": r.tier,
        "status": r.status,
        "result": r.result,
        "error": r.error,
        "events": len(r.events),
    }


@router.post("/{workflow_id}/fork", status_code=201, response_model=StartResponse)
async def fork_workflow(
    workflow_id: WorkflowId, body: ForkRequest, state: State, _: Writer
) -> dict[str, Any]:
    """A new hot instance with this one's history up to ``at_event``, then live."""
    tf = state.tf
    handle = await tf.fork(workflow_id, body.at_event, body.workflow_id)
    return {"workflow_id": handle.workflow_id, "status": await tf.status(handle.workflow_id)}
