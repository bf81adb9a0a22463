"""A ``finally`` block must not run its durable operations when an instance merely pauses.

Pausing unwinds the workflow coroutine (``Suspend``). The README has cleanup
code in ``finally`` blocks run on cancellation; the same blocks must not run
(and record a step) when a long wait unloads the instance, or the resumed
replay meets that step where the code asks for the next one.
"""

from __future__ import annotations

import pytest
from tierflow import WorkflowContext, workflow

from tests.conftest import wait_status

log: dict[str, list[str]] = {}


def note(key: str, text: str) -> str:
    log.setdefault(key, []).append(text)
    return text


@workflow
async def child_of_guarded(ctx: WorkflowContext, key: str) -> str:
    await ctx.sleep("1h")
    return note(key, "child")


@workflow
async def guarded(ctx: WorkflowContext, arg: list[str]) -> str:
    key, pause = arg
    try:
        await ctx.step("a", note, key, "a")
        if pause == "sleep":
            await ctx.sleep("1h")
        elif pause == "signal":
            await ctx.wait_for_signal("go")
        else:
            await ctx.child(child_of_guarded, key)
        await ctx.step("b", note, key, "b")
        return "done"
    finally:
        await ctx.step("cleanup", note, key, "cleanup")


@pytest.mark.parametrize("pause", ["sleep", "signal", "child"])
async def test_finally_runs_once_at_the_end_not_when_pausing(make_tf, clock, uid, pause):
    key = uid("k")
    tf = await make_tf([guarded, child_of_guarded], clock=clock)
    h = await tf.run(guarded, [key, pause], workflow_id=uid())
    assert await wait_status(tf, h.workflow_id, "paused") == "paused"
    assert log[key] == ["a"]  # paused: nothing else of it has run
    if pause == "signal":
        await h.signal("go")
    else:
        if pause == "child":  # its timer must be set before time moves
            (kid,) = (await tf.list(parent_workflow_id=h.workflow_id)).items
            await wait_status(tf, kid.workflow_id, "paused")
        clock.advance(7200)
    assert await h.result(timeout=10) == "done"
    assert [x for x in log[key] if x != "child"] == ["a", "b", "cleanup"]
    steps = [e.step_name for e in await h.history() if e.event_type == "step.completed"]
    assert steps == ["a", "b", "cleanup"]
