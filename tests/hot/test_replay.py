"""Replay and fork on the hot tier: the matching rules, read-only replay, fork boundaries.

Two versions of one workflow type are two ``@workflow(name=...)`` definitions; "deploying"
the new one is reopening the data directory with it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from tierflow import (
    InvalidArgument,
    NonDeterminismError,
    Tierflow,
    WorkflowContext,
    WorkflowNotFound,
    workflow,
)
from tierflow.hot.fork import FORKED_AT_EVENT, FORKED_FROM, fork_boundaries
from tierflow.hot.replay import Matcher, recorded_operations

from tests.conftest import wait_closed

calls: dict[str, int] = {}


def work(key: str, step: str) -> str:
    """A step body that counts its executions per (key, step)."""
    calls[f"{key}/{step}"] = calls.get(f"{key}/{step}", 0) + 1
    return f"{step}:{key}"


def ran(key: str) -> dict[str, int]:
    return {k.split("/", 1)[1]: v for k, v in calls.items() if k.startswith(f"{key}/")}


@workflow(name="order")
async def order_v1(ctx: WorkflowContext, key: str) -> list[str]:
    return [await ctx.step(s, work, key, s) for s in ("reserve", "charge", "ship")]


@workflow(name="order")
async def order_renamed(ctx: WorkflowContext, key: str) -> list[str]:
    return [await ctx.step(s, work, key, s) for s in ("reserve", "bill", "ship")]


@workflow(name="order")
async def order_swapped(ctx: WorkflowContext, key: str) -> list[str]:
    return [await ctx.step(s, work, key, s) for s in ("reserve", "ship", "charge")]


@workflow(name="order")
async def order_extra(ctx: WorkflowContext, key: str) -> list[str]:
    out = [await ctx.step(s, work, key, s) for s in ("reserve", "charge", "ship")]
    await ctx.step("notify", work, key, "notify")
    return out


@workflow(name="order")
async def order_missing(ctx: WorkflowContext, key: str) -> list[str]:
    return [await ctx.step(s, work, key, s) for s in ("reserve", "charge")]


@workflow(name="order")
async def order_other_result(ctx: WorkflowContext, key: str) -> Any:
    out = [await ctx.step(s, work, key, s) for s in ("reserve", "charge", "ship")]
    return {"steps": out}


@workflow(name="order")
async def order_swallows(ctx: WorkflowContext, key: str) -> list[str]:
    with contextlib.suppress(Exception):  # a broad except must not hide the divergence
        await ctx.step("bill", work, key, "bill")
    return []


@workflow(name="waiter")
async def waiter(ctx: WorkflowContext, key: str) -> Any:
    await ctx.step("before", work, key, "before")
    got = await ctx.wait_for_signal("go")
    await ctx.step("after", work, key, "after")
    return got


async def reopen(data: Path, workflows: list[Any]) -> Tierflow:
    tf = Tierflow(data, workflows)
    await tf.__aenter__()
    return tf


def step_event(events: list[Any], name: str) -> int:
    return next(
        e.event_id for e in events if e.event_type == "step.started" and e.step_name == name
    )


async def test_replay_returns_the_result_and_runs_and_writes_nothing(tmp_path, uid):
    key, wid = uid("k"), uid()
    async with Tierflow(tmp_path, [order_v1]) as tf:
        h = await tf.run(order_v1, key, workflow_id=wid)
        expected = await h.result(timeout=10)
        path = tf.engine.instance_path(wid)
        # The runner closes the finished file (its last write) after run() returns.
        await wait_closed(path)
        before = (len(await tf.history(wid)), os.stat(path).st_mtime_ns, ran(key))
        r = await tf.replay(wid)
        assert (r.workflow_id, r.tier, r.status, r.result) == (wid, "hot", "completed", expected)
        assert [e.event_id for e in r.events] == list(range(1, len(r.events) + 1))
        assert (len(await tf.history(wid)), os.stat(path).st_mtime_ns, ran(key)) == before
        assert ran(key) == {"reserve": 1, "charge": 1, "ship": 1}


@pytest.mark.parametrize(
    ("code", "step", "why", "expected", "got"),
    [
        (order_renamed, "charge", "different step name", "step 'charge'", "step 'bill'"),
        (order_swapped, "charge", "steps in a different order", "step 'charge'", "step 'ship'"),
        (order_missing, "ship", "missing operation", "step 'ship'", "returned without"),
        (order_extra, None, "extra operation", "no further operation", "step 'notify'"),
        (order_other_result, None, "different result", "result [", "returned {"),
        (order_swallows, "reserve", "different step name", "step 'reserve'", "step 'bill'"),
    ],
    ids=["renamed", "swapped", "missing", "extra", "result", "swallowed"],
)
async def test_changed_code_raises_naming_the_event(tmp_path, uid, code, step, why, expected, got):
    key, wid = uid("k"), uid()
    async with Tierflow(tmp_path, [order_v1]) as tf:
        await (await tf.run(order_v1, key, workflow_id=wid)).result(timeout=10)
        events = await tf.history(wid)
    tf = await reopen(tmp_path, [code])
    try:
        with pytest.raises(NonDeterminismError) as err:
            await tf.replay(wid)
    finally:
        await tf.aclose()
    e = err.value
    event_id = step_event(events, step) if step else events[-1].event_id
    assert e.workflow_id == wid and e.event_id == event_id
    assert why in e.message and f"at event {event_id}" in e.message
    assert e.expected is not None and e.expected.startswith(expected)
    assert e.got is not None and got in e.got
    assert ran(key) == {"reserve": 1, "charge": 1, "ship": 1}  # no step ran on replay


async def test_paused_workflow_replays_up_to_its_live_edge(tmp_path, uid):
    key, wid = uid("k"), uid()
    async with Tierflow(tmp_path, [waiter]) as tf:
        h = await tf.run(waiter, key, workflow_id=wid)
        assert await h.status() == "paused"
        r = await tf.replay(wid)
        assert (r.status, r.result) == ("incomplete", None)
        await h.signal("go", {"ok": 1})
        assert await h.result(timeout=10) == {"ok": 1}
        r = await tf.replay(wid)
        assert (r.status, r.result) == ("completed", {"ok": 1})
        assert ran(key) == {"before": 1, "after": 1}


async def test_replay_of_an_unregistered_type_is_refused(tmp_path, uid):
    wid = uid()
    async with Tierflow(tmp_path, [order_v1]) as tf:
        await (await tf.run(order_v1, uid("k"), workflow_id=wid)).result(timeout=10)
    tf = await reopen(tmp_path, [waiter])
    try:
        with pytest.raises(WorkflowNotFound):
            await tf.replay(wid)
    finally:
        await tf.aclose()


async def test_fork_reruns_only_the_steps_after_the_cut(tmp_path, uid):
    key, wid = uid("k"), uid()
    async with Tierflow(tmp_path, [order_v1]) as tf:
        await (await tf.run(order_v1, key, workflow_id=wid)).result(timeout=10)
        events = await tf.history(wid)
        cut = step_event(events, "ship") - 1  # after charge completed
        fork = await tf.fork(wid, at_event=cut, workflow_id=f"{wid}-f")
        assert await fork.result(timeout=10) == ["reserve:" + key, "charge:" + key, "ship:" + key]
        assert ran(key) == {"reserve": 1, "charge": 1, "ship": 2}
        forked = await fork.history()
        assert [e.to_dict() | {"workflow_id": 0, "run_id": 0} for e in forked[:cut]] == [
            e.to_dict() | {"workflow_id": 0, "run_id": 0} for e in events[:cut]
        ]
        assert forked[cut].event_type == "workflow.resumed"
        assert forked[cut].payload == {FORKED_FROM: wid, FORKED_AT_EVENT: cut}
        info = await fork.describe()
        assert info.attributes == {FORKED_FROM: wid, FORKED_AT_EVENT: cut}
        assert info.parent_workflow_id is None and info.step_count == 3
        page = await tf.list(attributes={FORKED_FROM: wid})
        assert [i.workflow_id for i in page.items] == [f"{wid}-f"]
        assert (await tf.replay(f"{wid}-f")).result == await fork.result()


async def test_fork_refuses_a_point_inside_a_step_or_at_the_end(tmp_path, uid):
    wid = uid()
    async with Tierflow(tmp_path, [order_v1]) as tf:
        await (await tf.run(order_v1, uid("k"), workflow_id=wid)).result(timeout=10)
        events = await tf.history(wid)
        inside = step_event(events, "charge")  # step.started, before its step.completed
        with pytest.raises(InvalidArgument, match=r"inside step 'charge'.*step boundary"):
            await tf.fork(wid, at_event=inside)
        with pytest.raises(InvalidArgument, match="is its end"):
            await tf.fork(wid, at_event=len(events))
        with pytest.raises(InvalidArgument, match="not an event"):
            await tf.fork(wid, at_event=len(events) + 1)
        assert inside not in fork_boundaries(events)
        assert inside - 1 in fork_boundaries(events)
        assert (await tf.list()).items[0].workflow_id == wid  # nothing was created


async def test_matcher_is_pure_over_events(tmp_path, uid):
    wid = uid()
    async with Tierflow(tmp_path, [order_v1]) as tf:
        await (await tf.run(order_v1, uid("k"), workflow_id=wid)).result(timeout=10)
        events = await tf.history(wid)
    ops = recorded_operations(events)
    assert [(o.record.kind, o.record.name) for o in ops.values()] == [
        ("step", "reserve"),
        ("step", "charge"),
        ("step", "ship"),
    ]
    m = Matcher(wid, events)
    assert m.complete and m.match("0:1", "step", "reserve") is not None
    assert m.match("0:2", "timer", "sleep") is None and m.error is not None
    assert m.error.event_id == ops["0:2"].event_id
