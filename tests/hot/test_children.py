"""Child workflows: fan-out, failures surfacing in the parent, cancellation."""

from __future__ import annotations

import asyncio

import pytest
from tierflow import ChildWorkflowFailed, WorkflowCancelledError, WorkflowContext, workflow

from tests.conftest import wait_status

executed: dict[str, int] = {}


def shout(item: str) -> str:
    executed[item] = executed.get(item, 0) + 1
    return item.upper()


@workflow
async def child_upper(ctx: WorkflowContext, item: str) -> str:
    return await ctx.step("shout", shout, item)


@workflow
async def fan_out(ctx: WorkflowContext, items: list[str]) -> list[str]:
    return list(await asyncio.gather(*(ctx.child(child_upper, i) for i in items)))


async def test_fan_out_to_three_children(make_tf, uid):
    tf = await make_tf([fan_out, child_upper])
    keys = [uid("x") for _ in range(3)]
    h = await tf.start(fan_out, keys, workflow_id=uid())
    assert await h.result(timeout=20) == [k.upper() for k in keys]
    assert all(executed[k] == 1 for k in keys)
    children = (await tf.list(parent_workflow_id=h.workflow_id)).items
    assert len(children) == 3 and all(c.status == "completed" for c in children)
    assert all(c.parent_workflow_id == h.workflow_id for c in children)
    types = [e.event_type for e in await h.history()]
    assert types.count("child.started") == 3 and types.count("child.completed") == 3


def explode(msg: str) -> None:
    raise RuntimeError(msg)


@workflow
async def failing_child(ctx: WorkflowContext, msg: str) -> None:
    await ctx.step("explode", explode, msg)


@workflow
async def forgiving_parent(ctx: WorkflowContext) -> str:
    handle = await ctx.start_child(failing_child, "boom", workflow_id=f"{ctx.workflow_id}-kid")
    try:
        await handle.result()
    except ChildWorkflowFailed as exc:
        return f"child failed: {exc.cause}"
    return "unexpected"


async def test_failing_child_is_caught_by_parent(make_tf, uid):
    tf = await make_tf([forgiving_parent, failing_child])
    h = await tf.run(forgiving_parent, workflow_id=uid())
    out = await h.result(timeout=20)
    assert out.startswith("child failed: ") and "RuntimeError: boom" in out
    kid = await tf.describe(f"{h.workflow_id}-kid")
    assert kid.status == "failed" and kid.parent_workflow_id == h.workflow_id
    failed = [e for e in await h.history() if e.event_type == "child.failed"]
    assert failed[0].payload["workflow_id"] == kid.workflow_id


@workflow
async def slow_child(ctx: WorkflowContext) -> None:
    await ctx.sleep("1h")


@workflow
async def waiting_parent(ctx: WorkflowContext) -> None:
    await ctx.child(slow_child)


async def test_cancelling_parent_cancels_running_children(make_tf, uid, clock):
    tf = await make_tf([waiting_parent, slow_child], clock=clock)
    h = await tf.start(waiting_parent, workflow_id=uid())
    kid_id = f"{h.workflow_id}:child-0-1"

    async def kid_paused() -> bool:
        return len((await tf.list(parent_workflow_id=h.workflow_id)).items) == 1

    from tests.conftest import wait_for

    await wait_for(kid_paused)
    await wait_status(tf, kid_id, "paused")
    await wait_status(tf, h.workflow_id, "paused")
    await h.cancel("order withdrawn")
    with pytest.raises(WorkflowCancelledError):
        await h.result(timeout=10)
    assert await tf.status(kid_id) == "cancelled"
