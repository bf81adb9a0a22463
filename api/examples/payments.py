"""Payments and refunds: steps that fail for good, and a ledger that is only flaky.

``capture_payment`` authorizes and captures; a fraud rule refuses some
payments outright (a non-retryable error fails the workflow). ``refund_payment``
looks the payment up in a flaky ledger (retried) and refunds it; a refund
larger than the payment is refused and the workflow fails.
"""

from __future__ import annotations

from typing import Any

from tierflow import RetryPolicy, WorkflowContext, workflow
from tierflow.examples.flaky import FlakyService

__all__ = ["PaymentRefusedError", "capture_payment", "ledger", "refund_payment"]

ledger = FlakyService("ledger", flaky_rate=0.2, max_failures=3)


class PaymentRefusedError(ValueError):
    """A business rule refused the payment or refund: retrying will not help."""


def authorize(payment_id: str, amount: float, risk: float) -> str:
    """Authorize with the card network; risky payments are refused."""
    if risk > 0.9:
        raise PaymentRefusedError(
            f"payment {payment_id} refused by the fraud rules (risk {risk:.2f})"
        )
    return f"auth_{payment_id}"


def capture(auth: str, amount: float) -> dict[str, Any]:
    """Capture an authorized amount."""
    return {"auth": auth, "captured": amount}


def look_up(payment_id: str) -> dict[str, Any]:
    """Find the original payment (the ledger is flaky)."""
    ledger.call(payment_id)
    return {"payment": payment_id}


def issue_refund(payment_id: str, amount: float, paid: float) -> str:
    """Refund at most what was paid."""
    if amount > paid:
        raise PaymentRefusedError(f"refund {amount:.2f} exceeds payment {paid:.2f}")
    return f"re_{payment_id}"


NO_RETRY_ON_REFUSAL = RetryPolicy(max_attempts=3, non_retryable=[PaymentRefusedError])


@workflow
async def capture_payment(ctx: WorkflowContext, p: dict[str, Any]) -> dict[str, Any]:
    """Authorize, then capture."""
    ctx.set_attributes(customer=p["customer"], amount=p["amount"])
    auth = await ctx.step(
        "authorize", authorize, p["id"], p["amount"], p["risk"], retry=NO_RETRY_ON_REFUSAL
    )
    result: dict[str, Any] = await ctx.step("capture", capture, auth, p["amount"])
    return result


@workflow
async def refund_payment(ctx: WorkflowContext, r: dict[str, Any]) -> dict[str, Any]:
    """Look the payment up (retrying the flaky ledger), then refund it."""
    ctx.set_attributes(customer=r["customer"], amount=r["amount"])
    await ctx.step(
        "lookup",
        look_up,
        r["payment_id"],
        retry=RetryPolicy(max_attempts=5, initial_interval=5.0, backoff_coefficient=2.0),
    )
    refund = await ctx.step(
        "refund", issue_refund, r["payment_id"], r["amount"], r["paid"], retry=NO_RETRY_ON_REFUSAL
    )
    return {"refund": refund}
