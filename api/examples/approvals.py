"""Expense approvals: a long wait for a human decision, escalation, cancellation.

The request is validated, then waits up to two days for a ``decision``
signal: approved requests are paid, rejected ones notified, and unanswered
ones escalated to a manager. The submitter can withdraw (cancel) a request
while it waits: the cancellation arrives at the wait, and the ``except``
block records the withdrawal before the workflow ends as cancelled.
"""

from __future__ import annotations

from typing import Any

from tierflow import WorkflowCancelled, WorkflowContext, workflow

__all__ = ["expense_approval"]


def check_policy(request_id: str, amount: float) -> bool:
    """Check the expense against the policy."""
    return amount < 5000


def pay_out(request_id: str, amount: float) -> str:
    """Reimburse the employee."""
    return f"paid {request_id}"


def notify(request_id: str, outcome: str) -> str:
    """Tell the employee."""
    return f"{request_id}: {outcome}"


@workflow
async def expense_approval(ctx: WorkflowContext, req: dict[str, Any]) -> dict[str, Any]:
    """Validate, wait for a decision (two days at most), then pay, notify or escalate."""
    ctx.set_attributes(customer=req["customer"], amount=req["amount"])
    await ctx.step("validate", check_policy, req["id"], req["amount"])
    try:
        decision = await ctx.wait_for_signal("decision", timeout="2d", default=None)
    except WorkflowCancelled:
        await ctx.step("withdrawn", notify, req["id"], "withdrawn")
        raise
    if decision is None:
        await ctx.step("escalate", notify, req["id"], "escalated to a manager")
        return {"status": "escalated"}
    if decision["approved"]:
        await ctx.step("pay", pay_out, req["id"], req["amount"])
        return {"status": "approved", "by": decision["by"]}
    await ctx.step("notify", notify, req["id"], "rejected")
    return {"status": "rejected", "by": decision["by"]}
