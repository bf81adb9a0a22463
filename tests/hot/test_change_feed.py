"""The change feed between engines on one data directory (here: two in one process).

Each engine is its own owner, so they talk only through the index, exactly as
two processes would; gating steps with events makes the timing deterministic.
"""

from __future__ import annotations

import asyncio

import pytest
from tierflow import WorkflowContext, workflow

from tests.conftest import wait_for, wait_status

gate = asyncio.Event()
entered = asyncio.Event()
ran_after: list[str] = []


async def blocked_step() -> str:
    entered.set()
    await gate.wait()
    return "released"


def after_step(wid: str) -> str:
    ran_after.append(wid)
    return wid


@workflow
async def slow_first_step(ctx: WorkflowContext) -> str:
    await ctx.step("blocked", blocked_step)
    await ctx.step("after", after_step, ctx.workflow_id)
    return "done"


@pytest.mark.timeout(60)
async def test_a_late_process_can_terminate_an_instance_inside_its_first_step(make_tf, uid):
    gate.clear()
    entered.clear()
    runner = await make_tf([slow_first_step])
    # Alone when it started the instance, so it did not write the file's first row.
    runner.engine.runtime.others_alive = False
    wid = uid()
    await runner.start(slow_first_step, workflow_id=wid)
    await asyncio.wait_for(entered.wait(), 20)
    path = runner.engine.instance_path(wid)
    assert path.exists()
    late = await make_tf([], scheduler=False)  # another owner, as a CLI process would be
    # Its write finds the file "not yet written", asks the runner to publish, then writes.
    await asyncio.wait_for(late.terminate(wid, "stuck"), 20)
    assert await late.status(wid) == "terminated"
    await wait_for(lambda: _done(runner, wid), 20)  # the runner let go of the execution
    gate.set()
    events = [e.event_type for e in await late.history(wid)]
    assert events[:2] == ["workflow.queued", "workflow.started"]
    assert events[-1] == "workflow.terminated"
    assert wid not in ran_after


async def _done(tf, wid: str) -> bool:
    return not tf.engine.instances.is_active(wid)


@pytest.mark.timeout(60)
async def test_work_queued_by_an_engine_without_a_scheduler_runs_in_one_with(make_tf, uid):
    gate.set()
    runner = await make_tf([slow_first_step])
    cli = await make_tf([slow_first_step], scheduler=False)
    wid = uid()
    await cli.start(slow_first_step, workflow_id=wid)
    await wait_status(runner, wid, "completed", timeout=20)
    assert await runner.result(wid) == "done"
