"""``/v1/compliance`` and ``/v1/archive``: retention, legal holds, erasure, audit, export.

Every change is recorded in the audit log with the API key's name as its actor.
All routes need the ``admin`` scope.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from tierflow.tiering.compliance import AuditRecord, ErasureReport, Hold, RetentionPolicy

from .auth import Principal, Scope
from .deps import AppState, get_state, require
from .errors import ERROR_RESPONSES
from .models import ErasureRequest, ExportResponse, HoldRequest, RetentionRequest

__all__ = ["router"]

router = APIRouter(tags=["compliance"], responses=ERROR_RESPONSES)

State = Annotated[AppState, Depends(get_state)]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
Reason = Annotated[str, Query(min_length=1, max_length=10_000, description="Why (recorded).")]


@router.put("/v1/compliance/retention/{workflow_type}", response_model=RetentionPolicy)
async def set_retention(
    workflow_type: str, body: RetentionRequest, state: State, who: Admin
) -> RetentionPolicy:
    """Keep finished workflows of a type (or glob) for ``keep``, then delete them everywhere."""
    return await state.tf.compliance.set_retention(
        workflow_type,
        body.keep,
        start_or_finish=body.from_,
        status=body.status,
        actor=who.name,
        reason=body.reason,
    )


@router.get("/v1/compliance/retention", response_model=list[RetentionPolicy])
async def list_retention(state: State, _: Admin) -> list[RetentionPolicy]:
    """Every retention policy."""
    return await state.tf.compliance.retention_policies()


@router.delete("/v1/compliance/retention/{workflow_type}", response_model=dict[str, bool])
async def remove_retention(
    workflow_type: str,
    state: State,
    who: Admin,
    status: Annotated[str | None, Query(max_length=100)] = None,
    reason: Annotated[str | None, Query(max_length=10_000)] = None,
) -> dict[str, bool]:
    """Remove the policy of a type (and status); ``removed`` says whether there was one."""
    removed = await state.tf.compliance.remove_retention(
        workflow_type, status=status, actor=who.name, reason=reason
    )
    return {"removed": removed}


@router.post("/v1/compliance/holds", status_code=201, response_model=Hold)
async def place_hold(body: HoldRequest, state: State, who: Admin) -> Hold:
    """Place a legal hold by workflow id (and its descendants) or by one attribute value."""
    return await state.tf.compliance.hold(
        workflow_id=body.workflow_id, attribute=body.attribute, reason=body.reason, actor=who.name
    )


@router.get("/v1/compliance/holds", response_model=list[Hold])
async def list_holds(
    state: State,
    _: Admin,
    workflow_id: Annotated[str | None, Query(max_length=255)] = None,
) -> list[Hold]:
    """The active holds; with ``workflow_id``, those that cover it."""
    return await state.tf.compliance.holds(workflow_id)


@router.delete("/v1/compliance/holds/{hold_id}", response_model=Hold)
async def release_hold(hold_id: str, reason: Reason, state: State, who: Admin) -> Hold:
    """Release a hold; what it covered may be erased or expire again."""
    return await state.tf.compliance.release(hold_id, actor=who.name, reason=reason)


@router.post("/v1/compliance/erasures", response_model=ErasureReport)
async def erase(body: ErasureRequest, state: State, who: Admin) -> ErasureReport:
    """Erase from every tier, for good; 409 when a hold covers it or it still runs."""
    return await state.tf.compliance.erase(
        workflow_id=body.workflow_id,
        attribute=body.attribute,
        reason=body.reason,
        actor=who.name,
        force=body.force,
    )


@router.get("/v1/compliance/audit", response_model=list[AuditRecord])
async def audit_log(
    state: State,
    _: Admin,
    workflow_id: Annotated[str | None, Query(max_length=255)] = None,
    operation: Annotated[str | None, Query(max_length=100)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> list[AuditRecord]:
    """Audit records, oldest first (an erased workflow's are found by its id too)."""
    return await state.tf.compliance.audit_log(
        workflow_id=workflow_id, operation=operation, since=since, limit=limit
    )


@router.get("/v1/archive/workflows/{workflow_id}/export", response_model=ExportResponse)
async def export_workflow(
    workflow_id: str,
    state: State,
    who: Admin,
    reason: Annotated[str | None, Query(max_length=10_000)] = None,
) -> dict[str, Any]:
    """A checksummed export of one workflow's row and events (recorded in the audit log)."""
    with tempfile.TemporaryDirectory(prefix="tierflow-export-") as tmp:
        out = Path(tmp) / "export"
        manifest = await state.tf.compliance.export(workflow_id, out, actor=who.name, reason=reason)
        files = {p.name: p.read_text(encoding="utf-8") for p in sorted(out.iterdir())}
    return {"workflow_id": workflow_id, "manifest": manifest.to_dict(), "files": files}
