"""Cooperative cancel and immediate terminate, in every state."""

from __future__ import annotations

import asyncio

import pytest
from tierflow import (
    WorkflowAlreadyFinished,
    WorkflowCancelledError,
    WorkflowContext,
    WorkflowTerminatedError,
    workflow,
)
from tierflow.hot import store

from tests.conftest import wait_closed, wait_for, wait_status

log: list[str] = []
gates: dict[str, asyncio.Event] = {}
entered: dict[str, asyncio.Event] = {}


async def blocking(key: str) -> str:
    entered.setdefault(key, asyncio.Event()).set()
    await gates.setdefault(key, asyncio.Event()).wait()
    log.append(f"{key}:blocking-done")
    return "released"


def note(text: str) -> str:
    log.append(text)
    return text


@workflow
async def cancellable(ctx: WorkflowContext, key: str) -> str:
    try:
        await ctx.step("wait", blocking, key)
        await ctx.step("next", note, f"{key}:next")
        await ctx.sleep("1h")
        await ctx.step("after-sleep", note, f"{key}:after-sleep")
        return "finished"
    finally:
        await ctx.step("cleanup", note, f"{key}:cleanup")


@workflow
async def nap(ctx: WorkflowContext, seconds: float) -> float:
    await ctx.sleep(seconds)
    return seconds


async def test_cancel_queued_is_immediate(make_tf, uid):
    tf = await make_tf([cancellable], scheduler=False)
    h = await tf.start(cancellable, "q", workflow_id=uid())
    assert await h.status() == "queued"
    assert await h.cancel("no longer needed") == "cancelled"
    assert await h.status() == "cancelled"
    with pytest.raises(WorkflowCancelledError):
        await h.result(timeout=5)
    types = [e.event_type for e in await h.history()]
    assert types == ["workflow.queued", "workflow.cancelled"]


async def test_cancel_running_raises_at_next_step_and_cleanup_runs(make_tf, uid):
    log.clear()
    key = uid("k")
    tf = await make_tf([cancellable])
    h = await tf.start(cancellable, key, workflow_id=uid())
    await asyncio.wait_for(entered.setdefault(key, asyncio.Event()).wait(), 10)
    assert await h.cancel("customer asked") == "running"
    gates.setdefault(key, asyncio.Event()).set()
    with pytest.raises(WorkflowCancelledError):
        await h.result(timeout=10)
    assert log == [f"{key}:blocking-done", f"{key}:cleanup"]
    events = await h.history()
    assert events[-1].event_type == "workflow.cancelled"
    assert events[-1].payload == {"reason": "customer asked"}
    assert (await h.describe()).status == "cancelled"


async def test_cancel_paused_runs_cleanup_at_once(make_tf, uid, clock):
    log.clear()
    key = uid("k")
    gates[key] = asyncio.Event()
    gates[key].set()
    tf = await make_tf([cancellable], clock=clock)
    h = await tf.run(cancellable, key, workflow_id=uid())
    assert await h.status() == "paused"
    assert await h.cancel() == "cancelled"
    assert log == [f"{key}:blocking-done", f"{key}:next", f"{key}:cleanup"]
    with pytest.raises(WorkflowCancelledError):
        await h.result(timeout=1)


async def test_cancel_paused_opens_its_file_once(make_tf, uid, clock, monkeypatch):
    # The cancel's open file is handed to the run that delivers the cancellation.
    log.clear()
    key = uid("k")
    gates[key] = asyncio.Event()
    gates[key].set()
    tf = await make_tf([cancellable], clock=clock)
    h = await tf.run(cancellable, key, workflow_id=uid())
    await wait_closed(tf.engine.instance_path(h.workflow_id))
    opened: list[object] = []
    real_open = store.InstanceFile.open.__func__

    def counting_open(cls, path, **kw):
        opened.append(path)
        return real_open(cls, path, **kw)

    monkeypatch.setattr(store.InstanceFile, "open", classmethod(counting_open))
    assert await h.cancel() == "cancelled"
    assert log[-1] == f"{key}:cleanup"
    assert opened == [tf.engine.instance_path(h.workflow_id)]
    await wait_closed(tf.engine.instance_path(h.workflow_id))
    assert tf.engine.instances.handoffs.held == {}


async def test_cancel_finished_reports_and_changes_nothing(make_tf, uid):
    key = uid("k")
    gates[key] = asyncio.Event()
    gates[key].set()

    @workflow(name="quick")
    async def quick(ctx: WorkflowContext) -> int:
        return 1

    tf = await make_tf([quick])
    h = await tf.run(quick, workflow_id=uid())
    before = await h.history()
    with pytest.raises(WorkflowAlreadyFinished) as err:
        await h.cancel()
    assert err.value.status == "completed"
    with pytest.raises(WorkflowAlreadyFinished):
        await h.terminate()
    assert await h.history() == before
    assert await h.result() == 1


async def test_terminate_running_stops_without_more_user_code(make_tf, uid):
    log.clear()
    key = uid("k")
    tf = await make_tf([cancellable])
    h = await tf.start(cancellable, key, workflow_id=uid())
    await asyncio.wait_for(entered.setdefault(key, asyncio.Event()).wait(), 10)
    await h.terminate("operator stop")
    assert await h.status() == "terminated"
    gates.setdefault(key, asyncio.Event()).set()
    with pytest.raises(WorkflowTerminatedError) as err:
        await h.result(timeout=5)
    assert err.value.reason == "operator stop"

    # Once its execution has ended no more of its code can run: then look.
    async def ended() -> bool:
        return not tf.engine.instances.is_active(h.workflow_id)

    await wait_for(ended)
    assert f"{key}:cleanup" not in log and f"{key}:next" not in log
    events = await h.history()
    assert events[-1].event_type == "workflow.terminated"
    assert events[-1].payload == {"reason": "operator stop"}
    assert (await h.describe()).error == {"type": "terminated", "message": "operator stop"}


async def test_terminate_paused_and_queued(make_tf, uid, clock):
    key = uid("k")
    gates[key] = asyncio.Event()
    gates[key].set()
    tf = await make_tf([cancellable, nap], clock=clock)
    h = await tf.run(cancellable, key, workflow_id=uid())
    assert await h.status() == "paused"
    await h.terminate("stop")
    ran = [x for x in log if x.startswith(f"{key}:")]
    # A probe whose 1 h timer is due one second after the terminated one's: once
    # it has finished, the scheduler has handled the terminated instance's timer.
    clock.advance(1)
    probe = await tf.run(nap, 3600, workflow_id=uid())
    assert await probe.status() == "paused"
    clock.advance(7200)
    assert await probe.result(timeout=10) == 3600
    assert await h.status() == "terminated"
    assert [x for x in log if x.startswith(f"{key}:")] == ran  # none of its code ran
    assert (await h.history())[-1].event_type == "workflow.terminated"

    tf2 = await make_tf([cancellable], scheduler=False, data_dir=tf.data_dir.parent / "other")
    q = await tf2.start(cancellable, "never", workflow_id=uid())
    await q.terminate("not needed")
    assert await q.status() == "terminated"
    await wait_for(lambda: _status_is(tf2, q.workflow_id, "terminated"))


async def _status_is(tf, wid, status):
    return await tf.status(wid) == status


async def test_status_helper_reports_paused(make_tf, uid, clock):
    key = uid("k")
    gates[key] = asyncio.Event()
    gates[key].set()
    tf = await make_tf([cancellable], clock=clock)
    h = await tf.start(cancellable, key, workflow_id=uid())
    assert await wait_status(tf, h.workflow_id, "paused") == "paused"
