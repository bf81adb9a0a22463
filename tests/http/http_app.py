"""The workflows the HTTP tests serve."""

from __future__ import annotations

from typing import Any

from tierflow import WorkflowContext, workflow


def add(a: int, b: int) -> int:
    return a + b


@workflow
async def greet(ctx: WorkflowContext, name: str) -> str:
    """Answers the query "who", waits for the signal "go", then greets."""
    ctx.set_query_handler("who", lambda: name)
    ctx.set_query_handler("echo", lambda *args: list(args))
    got = await ctx.wait_for_signal("go", timeout=600, default=None)
    return f"hello {name}: {got}"


@workflow
async def order(ctx: WorkflowContext, spec: dict[str, Any]) -> int:
    """Two steps, search attributes, done: a workflow that finishes at once."""
    ctx.set_attributes(customer=spec["customer"], n=spec["n"])
    first = await ctx.step("one", add, spec["n"], 1)
    return await ctx.step("two", add, first, 1)


@workflow
async def chatty(ctx: WorkflowContext, n: int) -> int:
    """``n`` recorded values, then a step: a history of ``n + 5`` events, as long as asked."""
    values = [ctx.uuid() for _ in range(n)]
    return await ctx.step("count", len, values)


@workflow
async def waiter(ctx: WorkflowContext) -> str:
    """Waits for a signal that never comes (cancel and terminate it)."""
    await ctx.wait_for_signal("never", timeout=3600)
    return "unreachable"


WORKFLOWS = [chatty, greet, order, waiter]
