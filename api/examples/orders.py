"""Order processing: a retried step against a flaky service, a signal, a durable timer.

An order reserves stock (the inventory service fails now and then: the step
is retried with backoff), waits up to an hour for the ``payment`` signal,
holds for a ten-minute fraud-screening window (a durable timer), charges the
card and ships. No payment in time releases the stock; a declined card fails
the workflow after releasing it.
"""

from __future__ import annotations

from typing import Any

from tierflow import RetryPolicy, WorkflowContext, workflow
from tierflow.examples.flaky import FlakyService

__all__ = ["CardDeclinedError", "inventory", "process_order"]

inventory = FlakyService("inventory", flaky_rate=0.3, max_failures=2)


class CardDeclinedError(ValueError):
    """The card was refused: retrying will not help."""


def reserve_stock(order_id: str, items: list[str]) -> dict[str, Any]:
    """Reserve the items (the inventory service is flaky)."""
    inventory.call(order_id)
    return {"order": order_id, "reserved": items}


def release_stock(order_id: str) -> str:
    """Give the reserved items back."""
    return f"released {order_id}"


def charge_card(order_id: str, amount: float) -> str:
    """Charge the card; amounts over 900 are declined."""
    if amount > 900:
        raise CardDeclinedError(f"card declined for {amount:.2f}")
    return f"ch_{order_id}"


def ship(order_id: str) -> str:
    """Hand the parcel to the carrier."""
    return f"TRACK-{order_id}"


@workflow
async def process_order(ctx: WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    """Reserve, wait for payment, screen, charge, ship; release the stock if it goes wrong."""
    ctx.set_attributes(customer=order["customer"], amount=order["amount"])
    await ctx.step(
        "reserve",
        reserve_stock,
        order["id"],
        order["items"],
        retry=RetryPolicy(max_attempts=5, initial_interval=2.0, backoff_coefficient=3.0),
    )
    payment = await ctx.wait_for_signal("payment", timeout="1h", default=None)
    if payment is None:
        await ctx.step("release", release_stock, order["id"])
        return {"status": "expired"}
    try:
        await ctx.sleep("10m")  # the fraud-screening window: a durable timer
        charge = await ctx.step(
            "charge",
            charge_card,
            order["id"],
            payment["amount"],
            retry=RetryPolicy(max_attempts=3, non_retryable=[CardDeclinedError]),
        )
    except BaseException:  # a decline, or a cancellation: the stock goes back either way
        await ctx.step("release", release_stock, order["id"])
        raise
    tracking = await ctx.step("ship", ship, order["id"])
    return {"status": "shipped", "charge": charge, "tracking": tracking}
