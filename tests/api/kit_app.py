"""The application the replay-kit example checks: ``tierflow ... --app tests.api.kit_app``."""

from __future__ import annotations

from typing import Any

from tierflow import WorkflowContext, workflow


def price(items: list[dict[str, Any]]) -> float:
    return round(sum(i["qty"] * i["unit"] for i in items), 2)


def charge(total: float) -> str:
    return f"receipt-{total:.2f}"


@workflow(name="checkout")
async def checkout(ctx: WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    at = ctx.now()
    total = await ctx.step("price", price, order["items"])
    await ctx.sleep("5ms")
    receipt = await ctx.step("charge", charge, total)
    return {"order": order["id"], "total": total, "receipt": receipt, "at": at.isoformat()}
