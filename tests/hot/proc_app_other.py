"""A workflow type the ``tests.hot.proc_app`` workers do not know."""

from __future__ import annotations

from tierflow import WorkflowContext, workflow

from tests.hot.proc_app import record


@workflow
async def lonely(ctx: WorkflowContext) -> str:
    """Runs only in a process that imports this module."""
    await ctx.step("only", record, ctx.workflow_id, "only")
    return "ran"
