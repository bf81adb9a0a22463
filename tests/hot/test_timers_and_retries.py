"""Durable timers, retry policies and step timeouts (driven by a manual clock)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from tierflow import (
    InvalidArgument,
    RetryPolicy,
    Status,
    WorkflowContext,
    WorkflowFailed,
    workflow,
)
from tierflow.hot.retry import parse_duration

from tests.conftest import wait_for, wait_status

side_effects: list[str] = []


def record(name: str) -> str:
    side_effects.append(name)
    return name


@workflow
async def nap(ctx: WorkflowContext, seconds: float) -> float:
    await ctx.sleep(seconds)
    return seconds


@workflow
async def before_sleep_after(ctx: WorkflowContext) -> str:
    await ctx.step("before", record, "before")
    await ctx.sleep("5s")
    await ctx.step("after", record, "after")
    return "done"


async def test_sleep_pauses_and_timer_fires_once(make_tf, clock, uid):
    side_effects.clear()
    tf = await make_tf([before_sleep_after, nap], clock=clock)
    h = await tf.run(before_sleep_after, workflow_id=uid())
    assert await h.status() == Status.PAUSED
    assert side_effects == ["before"]
    info = await h.describe()
    assert info.status == "paused"
    # A probe due at 4.9 s: once it has run, the scheduler has looked at the
    # clock after it moved, and the 5 s timer must still be waiting.
    probe = await tf.run(nap, 4.9, workflow_id=uid())
    assert await probe.status() == Status.PAUSED
    clock.advance(4.9)
    assert await probe.result(timeout=10) == 4.9
    assert await h.status() == Status.PAUSED
    assert side_effects == ["before"]
    clock.advance(0.1)
    assert await h.result(timeout=10) == "done"
    assert side_effects == ["before", "after"]
    types = [e.event_type for e in await h.history()]
    assert types == [
        "workflow.queued",
        "workflow.started",
        "step.started",
        "step.completed",
        "timer.started",
        "workflow.paused",
        "workflow.resumed",
        "timer.fired",
        "step.started",
        "step.completed",
        "workflow.completed",
    ]


@workflow
async def sleep_until_wf(ctx: WorkflowContext, iso: str) -> str:
    await ctx.sleep_until(datetime.fromisoformat(iso))
    return ctx.now().isoformat()


async def test_sleep_until(make_tf, clock, uid):
    tf = await make_tf([sleep_until_wf], clock=clock)
    target = datetime.fromtimestamp(clock.now(), tz=datetime.now().astimezone().tzinfo)
    target += timedelta(hours=2)
    h = await tf.run(sleep_until_wf, target.isoformat(), workflow_id=uid())
    assert await h.status() == "paused"
    clock.advance(7200)
    done = datetime.fromisoformat(await h.result(timeout=10))
    assert done >= target


@workflow
async def short_sleep(ctx: WorkflowContext) -> float:
    t0 = ctx.now()
    await ctx.sleep(0.01)
    return (ctx.now() - t0).total_seconds()


async def test_short_sleep_stays_in_memory_but_is_recorded(make_tf, uid):
    tf = await make_tf([short_sleep])  # real clock
    h = await tf.run(short_sleep, workflow_id=uid())
    assert await h.status() == "completed"
    assert await h.result() >= 0.01
    types = [e.event_type for e in await h.history()]
    assert "timer.started" in types and "timer.fired" in types
    assert "workflow.paused" not in types


def test_parse_duration():
    assert parse_duration(5) == 5.0
    assert parse_duration("5s") == 5.0
    assert parse_duration("10m") == 600.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration("1d") == 86400.0
    assert parse_duration("250ms") == 0.25
    for bad in ("-1s", "5 parsecs", "", "abc", -3, float("inf"), True):
        with pytest.raises(InvalidArgument):
            parse_duration(bad)  # type: ignore[arg-type]


attempts: dict[str, int] = {}


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


async def _attempts_reached(key: str, n: int) -> bool:
    return attempts.get(key, 0) >= n


def flaky(key: str, fail_times: int) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= fail_times:
        raise Flaky(f"attempt {attempts[key]} failed")
    return f"ok after {attempts[key]}"


@workflow
async def retrying(ctx: WorkflowContext, inp: dict) -> str:
    return await ctx.step(
        "charge",
        flaky,
        inp["key"],
        inp["fail"],
        retry=RetryPolicy(
            max_attempts=inp["max"],
            initial_interval=2,
            backoff_coefficient=2,
            non_retryable=[Fatal],
        ),
    )


async def test_retry_then_success_with_durable_backoff(make_tf, clock, uid):
    tf = await make_tf([retrying], clock=clock)
    key = uid("k")
    h = await tf.run(retrying, {"key": key, "fail": 2, "max": 5}, workflow_id=uid())
    assert await h.status() == "paused"  # 2 s backoff is a durable timer
    t_fail1 = clock.now()
    clock.advance(2)
    await wait_for(lambda: _attempts_reached(key, 2))
    await wait_status(tf, h.workflow_id, "paused")  # the second backoff is recorded
    assert attempts[key] == 2
    clock.advance(4)  # backoff doubles
    assert await h.result(timeout=10) == "ok after 3"
    events = [e for e in await h.history() if e.step_name == "charge"]
    assert [(e.event_type, e.attempt) for e in events] == [
        ("step.started", 1),
        ("step.failed", 1),
        ("retry.scheduled", 2),
        ("step.started", 2),
        ("step.failed", 2),
        ("retry.scheduled", 3),
        ("step.started", 3),
        ("step.completed", 3),
    ]
    sched = [e for e in events if e.event_type == "retry.scheduled"]
    assert [e.payload["delay"] for e in sched] == [2.0, 4.0]
    fire1 = datetime.fromisoformat(sched[0].payload["fire_at"]).timestamp()
    assert fire1 == pytest.approx(t_fail1 + 2, abs=1e-3)
    assert events[1].payload["error"]["message"] == "attempt 1 failed"


async def test_retry_exhausted_fails_with_last_error(make_tf, clock, uid):
    tf = await make_tf([retrying], clock=clock)
    key = uid("k")
    h = await tf.run(retrying, {"key": key, "fail": 99, "max": 3}, workflow_id=uid())
    clock.advance(2)
    await wait_for(lambda: _attempts_reached(key, 2))
    await wait_status(tf, h.workflow_id, "paused")
    clock.advance(4)
    with pytest.raises(WorkflowFailed) as err:
        await h.result(timeout=10)
    assert "attempt 3 failed" in str(err.value)
    assert err.value.error_type == "tierflow.hot.errors.RetryExhausted"
    types = [e.event_type for e in await h.history()]
    assert types.count("step.failed") == 3
    assert "retry.exhausted" in types
    assert attempts[key] == 3


def fatal() -> None:
    raise Fatal("card declined")


@workflow
async def non_retryable_wf(ctx: WorkflowContext) -> None:
    await ctx.step("charge", fatal, retry=RetryPolicy(max_attempts=5, non_retryable=[Fatal]))


async def test_non_retryable_fails_at_once(make_tf, uid):
    tf = await make_tf([non_retryable_wf])
    h = await tf.run(non_retryable_wf, workflow_id=uid())
    with pytest.raises(WorkflowFailed, match="card declined"):
        await h.result()
    types = [e.event_type for e in await h.history()]
    assert types.count("step.started") == 1
    assert "retry.scheduled" not in types and "retry.exhausted" not in types


async def slow_step(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slow"


calls_timeout: dict[str, int] = {}


async def slow_then_fast(key: str) -> str:
    calls_timeout[key] = calls_timeout.get(key, 0) + 1
    if calls_timeout[key] == 1:
        await asyncio.sleep(30)
    return "fast"


@workflow
async def timeout_wf(ctx: WorkflowContext) -> str:
    return await ctx.step("slow-call", slow_step, 30, timeout=0.05)


@workflow
async def timeout_retry_wf(ctx: WorkflowContext, key: str) -> str:
    return await ctx.step(
        "flaky-call",
        slow_then_fast,
        key,
        timeout=0.05,
        retry=RetryPolicy(max_attempts=3, initial_interval=0),
    )


async def test_step_timeout_names_step_and_limit(make_tf, uid):
    tf = await make_tf([timeout_wf])
    h = await tf.run(timeout_wf, workflow_id=uid())
    with pytest.raises(WorkflowFailed) as err:
        await h.result()
    assert "slow-call" in str(err.value) and "0.05s" in str(err.value)
    assert err.value.error_type == "tierflow.hot.errors.StepTimeout"


async def test_step_timeout_then_retry_succeeds(make_tf, uid):
    tf = await make_tf([timeout_retry_wf])
    key = uid("k")
    h = await tf.run(timeout_retry_wf, key, workflow_id=uid())
    assert await h.result() == "fast"
    failed = [e for e in await h.history() if e.event_type == "step.failed"]
    assert len(failed) == 1 and "timed out" in failed[0].payload["error"]["message"]


def test_retry_policy_arithmetic():
    p = RetryPolicy(max_attempts=10, initial_interval=1, backoff_coefficient=3, max_interval=20)
    assert [p.delay_after(n) for n in range(1, 6)] == [1, 3, 9, 20, 20]
    j = RetryPolicy(initial_interval=10, jitter=0.1)
    assert all(9 <= j.delay_after(1) <= 11 for _ in range(50))
    assert not RetryPolicy(non_retryable=["ValueError"]).is_retryable(ValueError())
    assert RetryPolicy(non_retryable=[KeyError]).is_retryable(ValueError())
    with pytest.raises(InvalidArgument):
        RetryPolicy(max_attempts=0)
