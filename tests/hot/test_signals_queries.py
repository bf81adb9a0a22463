"""Signals (durable inbox, timeouts) and queries (answered by replay)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tierflow import (
    PayloadError,
    SignalTimeout,
    UnknownQuery,
    WorkflowAlreadyFinished,
    WorkflowContext,
    WorkflowNotFound,
    workflow,
)
from tierflow.hot import handoff as handoff_mod
from tierflow.hot import store

from tests.conftest import wait_closed, wait_for, wait_status

released: list[str] = []


def release(order_id: str) -> str:
    released.append(order_id)
    return f"released {order_id}"


@workflow
async def order(ctx: WorkflowContext, inp: dict) -> dict:
    state = {"stage": "waiting for payment"}
    ctx.set_query_handler("status", lambda: state["stage"])
    paid = await ctx.wait_for_signal("payment", timeout=inp["timeout"], default=None)
    if paid is None:
        state["stage"] = "cancelled"
        await ctx.step("release", release, inp["id"])
        return {"status": "cancelled"}
    state["stage"] = "paid"
    return {"status": "completed", "paid": paid}


async def test_signal_completes_waiting_order(make_tf, uid, clock):
    tf = await make_tf([order], clock=clock)
    h = await tf.run(order, {"id": "o1", "timeout": "24h"}, workflow_id=uid())
    assert await h.status() == "paused"
    await h.signal("payment", {"amount": 99.99})
    assert await h.result(timeout=10) == {"status": "completed", "paid": {"amount": 99.99}}
    received = [e for e in await h.history() if e.event_type == "signal.received"]
    assert received[0].step_name == "payment" and received[0].payload == {"amount": 99.99}


async def test_resume_after_a_signal_reuses_the_signals_open_file(make_tf, uid, clock, monkeypatch):
    # The signal's connection is handed to the resume: one open, one close
    # (one checkpoint) for signal + resume, instead of two of each.
    tf = await make_tf([order], clock=clock)
    h = await tf.run(order, {"id": "o1", "timeout": "24h"}, workflow_id=uid())
    opened: list[object] = []
    real_open = store.InstanceFile.open.__func__

    def counting_open(cls, path, **kw):
        opened.append(path)
        return real_open(cls, path, **kw)

    monkeypatch.setattr(store.InstanceFile, "open", classmethod(counting_open))
    await h.signal("payment", 5)
    assert await h.result(timeout=10) == {"status": "completed", "paid": 5}
    assert opened == [tf.engine.instance_path(h.workflow_id)]
    await wait_closed(tf.engine.instance_path(h.workflow_id))


async def _signal_nobody_resumes(tf, h, monkeypatch) -> Path:
    """Signal a paused order that nothing resumes (as when another process claims it)."""
    path = tf.engine.instance_path(h.workflow_id)
    await wait_closed(path)
    monkeypatch.setattr(tf.engine.instances, "wake", lambda wid, wtype=None: None)
    await h.signal("payment", 7)
    assert h.workflow_id in tf.engine.instances.handoffs.held
    return path


async def test_a_signals_file_not_taken_by_a_resume_is_closed(make_tf, uid, clock, monkeypatch):
    monkeypatch.setattr(handoff_mod, "HANDOFF_TTL", 0.05)
    tf = await make_tf([order], clock=clock)
    h = await tf.run(order, {"id": "o1", "timeout": "24h"}, workflow_id=uid())
    path = await _signal_nobody_resumes(tf, h, monkeypatch)
    await wait_closed(path)
    assert tf.engine.instances.handoffs.held == {}
    # The signal is durable and is delivered when the instance does resume.
    assert tf.engine.scheduler is not None
    tf.engine.scheduler.enqueue(h.workflow_id, "due")
    assert await h.result(timeout=10) == {"status": "completed", "paid": 7}


async def test_close_closes_a_signals_file_still_waiting_for_its_resume(
    make_tf, uid, clock, monkeypatch
):
    tf = await make_tf([order], clock=clock)
    h = await tf.run(order, {"id": "o1", "timeout": "24h"}, workflow_id=uid())
    path = await _signal_nobody_resumes(tf, h, monkeypatch)
    await tf.aclose()
    await wait_closed(path, timeout=1)


async def test_two_signals_before_the_resume_are_both_delivered(make_tf, uid, clock):
    tf = await make_tf([two_signals], clock=clock)
    h = await tf.run(two_signals, workflow_id=uid())
    assert await h.status() == "paused"
    await asyncio.gather(h.signal("a", 1), h.signal("b", 2))
    assert await h.result(timeout=10) == [1, 2]
    await wait_closed(tf.engine.instance_path(h.workflow_id))
    assert tf.engine.instances.handoffs.held == {}


@workflow
async def two_signals(ctx: WorkflowContext) -> list[int]:
    return [await ctx.wait_for_signal("a"), await ctx.wait_for_signal("b")]


async def test_signal_timeout_takes_default_path(make_tf, uid):
    released.clear()
    tf = await make_tf([order])  # real clock: a 100 ms durable timeout
    h = await tf.run(order, {"id": "o2", "timeout": 0.1}, workflow_id=uid())
    assert await h.result(timeout=10) == {"status": "cancelled"}
    assert released == ["o2"]


@workflow
async def strict_wait(ctx: WorkflowContext) -> str:
    try:
        await ctx.wait_for_signal("approve", timeout="1h")
    except SignalTimeout as exc:
        return f"timed out: {exc.signal}"
    return "approved"


async def test_timeout_without_default_raises_and_survives_restart(make_tf, uid, clock, tmp_path):
    data = tmp_path / "restart"
    tf1 = await make_tf([strict_wait], clock=clock, data_dir=data)
    wid = uid()
    assert await (await tf1.run(strict_wait, workflow_id=wid)).status() == "paused"
    await tf1.aclose()
    clock.advance(3600)
    tf2 = await make_tf([strict_wait], clock=clock, data_dir=data)
    assert await tf2.get_handle(wid).result(timeout=10) == "timed out: approve"


used: list[tuple[str, object]] = []
use_gate: dict[str, asyncio.Event] = {}


async def use_payload(key: str, value: object) -> str:
    used.append((key, value))
    gate = use_gate.get(key)
    if gate is not None:
        await gate.wait()
    return f"used {value}"


@workflow
async def take_then_use(ctx: WorkflowContext, key: str) -> list:
    first = await ctx.wait_for_signal("go")
    out = await ctx.step("use", use_payload, key, first)  # a side effect
    return [out, await ctx.wait_for_signal("go")]


async def test_a_taken_signal_is_durable_before_the_next_side_effect(make_tf, uid, clock, tmp_path):
    # Taking a signal is recorded with the next commit, like a step result. The
    # step after the wait is a side effect, so the record is durable before it
    # runs: stopped mid-step and restarted, the instance takes the same signal
    # once and the next wait gets the next one.
    key = uid("k")
    use_gate[key] = asyncio.Event()  # never set: the step hangs until the stop
    data = tmp_path / "restart"
    tf1 = await make_tf([take_then_use], clock=clock, data_dir=data)
    h = await tf1.run(take_then_use, key, workflow_id=uid())
    await h.signal("go", "a")
    await h.signal("go", "b")

    async def in_step() -> bool:
        return (key, "a") in used

    await wait_for(in_step)
    types = [e.event_type for e in await h.history()]
    assert types.count("value.recorded") == 1  # the take, committed before the step
    await tf1.aclose()
    del use_gate[key]
    tf2 = await make_tf([take_then_use], clock=clock, data_dir=data)
    assert await tf2.get_handle(h.workflow_id).result(timeout=10) == ["used a", "b"]
    assert [v for k, v in used if k == key] == ["a", "a"]  # the step re-ran; "a" taken once


@workflow
async def collector(ctx: WorkflowContext) -> list:
    await ctx.sleep("1m")
    return [await ctx.wait_for_signal("s") for _ in range(3)]


async def test_signals_before_waits_arrive_in_order(make_tf, uid, clock):
    tf = await make_tf([collector], clock=clock)
    h = await tf.run(collector, workflow_id=uid())
    for payload in ("first", "second", "third"):
        await h.signal("s", payload)
    clock.advance(60)
    assert await h.result(timeout=10) == ["first", "second", "third"]


async def test_signal_to_queued_instance_is_kept(make_tf, uid, clock):
    tf = await make_tf([collector], clock=clock, scheduler=False)
    h = await tf.start(collector, workflow_id=uid())
    await h.signal("s", 1)
    await h.signal("s", 2)
    await tf.start_scheduler()
    await wait_status(tf, h.workflow_id, "paused")
    await h.signal("s", 3)
    clock.advance(60)
    assert await h.result(timeout=10) == [1, 2, 3]
    types = [e.event_type for e in await h.history()]
    assert types[:4] == [
        "workflow.queued",
        "signal.received",
        "signal.received",
        "workflow.started",
    ]


class _FirstSpareGate:
    """Hold the first caller taking an instance file until :meth:`open` is called.

    A fresh process has no spare files ready, so the first run of a queued
    instance waits for one on an I/O thread; this makes that wait as long as
    the test needs, to let another caller act in it.
    """

    def __init__(self, tf) -> None:
        self._gate, self._calls = asyncio.Event(), 0
        take = tf.engine.runtime.take_spare

        async def gated():
            self._calls += 1
            if self._calls == 1:
                await self._gate.wait()
            return await take()

        tf.engine.runtime.take_spare = gated

    async def holding(self) -> None:
        """Return once the first taker is held."""

        async def held() -> bool:
            return self._calls >= 1

        await wait_for(held)

    def open(self) -> None:
        self._gate.set()


async def test_signal_while_queued_instance_gets_its_file_is_kept(make_tf, uid):
    # Found by the README example failing 1 run in 8: the signal gave the queued
    # instance a file while its first run was taking a spare, and the run then
    # replaced that file with its own, losing the signal.
    tf = await make_tf([order], scheduler=False)
    h = await tf.start(order, {"id": "o9", "timeout": "24h"}, workflow_id=uid())
    gate = _FirstSpareGate(tf)
    first_run = asyncio.create_task(tf.engine.instances.run_queued(h.workflow_id))
    await gate.holding()
    await h.signal("payment", {"amount": 5})
    gate.open()
    await asyncio.wait_for(first_run, 10)
    assert await h.result(timeout=10) == {"status": "completed", "paid": {"amount": 5}}
    assert [e.event_type for e in await h.history()].count("signal.received") == 1


async def test_two_signals_racing_to_give_a_queued_instance_its_file_are_both_kept(
    make_tf, uid, clock
):
    tf = await make_tf([collector], clock=clock, scheduler=False)
    h = await tf.start(collector, workflow_id=uid())
    gate = _FirstSpareGate(tf)
    first = asyncio.create_task(h.signal("s", 1))
    await gate.holding()
    await h.signal("s", 2)  # gives the instance its file
    gate.open()
    await asyncio.wait_for(first, 10)  # finds the file taken and writes into it
    await h.signal("s", 3)
    await tf.start_scheduler()
    await wait_status(tf, h.workflow_id, "paused")
    clock.advance(60)
    assert await h.result(timeout=10) == [2, 1, 3]


async def test_cancel_racing_a_signal_to_a_queued_instance_keeps_the_signal(make_tf, uid):
    tf = await make_tf([order], scheduler=False)
    h = await tf.start(order, {"id": "o10", "timeout": "24h"}, workflow_id=uid())
    gate = _FirstSpareGate(tf)
    cancel = asyncio.create_task(h.cancel("changed my mind"))
    await gate.holding()
    await h.signal("payment", {"amount": 7})
    gate.open()
    await asyncio.wait_for(cancel, 10)
    assert await h.status() == "cancelled"
    received = [e for e in await h.history() if e.event_type == "signal.received"]
    assert [e.payload for e in received] == [{"amount": 7}]


async def test_signal_errors(make_tf, uid, clock):
    tf = await make_tf([order], clock=clock)
    with pytest.raises(WorkflowNotFound):
        await tf.signal("nobody-here", "payment", 1)
    h = await tf.run(order, {"id": "o3", "timeout": "1h"}, workflow_id=uid())
    with pytest.raises(PayloadError):
        await h.signal("payment", {"card": object()})
    await h.signal("payment", 5)
    await h.result(timeout=10)
    before = await h.history()
    with pytest.raises(WorkflowAlreadyFinished, match="finished"):
        await h.signal("payment", 6)
    assert await h.history() == before


def add(a: int, b: int) -> int:
    return a + b


@workflow
async def counter(ctx: WorkflowContext, n: int) -> int:
    total = 0
    ctx.set_query_handler("total", lambda: total)
    ctx.set_query_handler("plus", lambda k: total + k)
    for i in range(n):
        total = await ctx.step(f"add-{i}", add, total, i)
    await ctx.wait_for_signal("go")
    return total


async def test_query_paused_instance_by_replay(make_tf, uid, clock):
    tf = await make_tf([counter], clock=clock)
    h = await tf.run(counter, 100, workflow_id=uid())
    assert await h.status() == "paused"
    events_before = await h.history()
    assert await h.query("total") == sum(range(100))
    assert await h.query("plus", 1) == sum(range(100)) + 1
    assert await h.history() == events_before  # queries record nothing
    # Every replay starts clean (a leaked branch context once made this flaky).
    for k in range(30):
        assert await h.query("plus", k) == sum(range(100)) + k
    with pytest.raises(UnknownQuery) as err:
        await h.query("nope")
    assert err.value.known == ["plus", "total"]
    await h.signal("go")
    assert await h.result(timeout=10) == sum(range(100))
    assert await h.query("total") == sum(range(100))  # finished instances answer too


async def test_query_does_not_run_steps(make_tf, uid, clock):
    calls: list[int] = []

    def tracked(i: int) -> int:
        calls.append(i)
        return i

    @workflow(name="tracked_wf")
    async def tracked_wf(ctx: WorkflowContext) -> None:
        ctx.set_query_handler("ok", lambda: True)
        await ctx.step("one", tracked, 1)
        await ctx.sleep("1h")
        await ctx.step("two", tracked, 2)

    tf = await make_tf([tracked_wf], clock=clock)
    h = await tf.run(tracked_wf, workflow_id=uid())
    assert calls == [1]
    assert await h.query("ok") is True
    assert calls == [1]
    await asyncio.sleep(0)
