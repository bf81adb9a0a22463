"""Replay determinism, recorded values, and quarantine of corrupt instance files."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from tierflow import (
    CorruptInstance,
    NonDeterminismError,
    StorageError,
    WorkflowContext,
    WorkflowFailed,
    workflow,
)
from tierflow.hot.models import from_micros

from tests.conftest import wait_closed, wait_status

runs: dict[str, int] = {}


def count(key: str) -> int:
    runs[key] = runs.get(key, 0) + 1
    return runs[key]


@workflow
async def values_wf(ctx: WorkflowContext, key: str) -> dict:
    u, r, t = ctx.uuid(), ctx.random(), ctx.now().isoformat()
    n = await ctx.step("count", count, key)
    await ctx.sleep("1h")
    return {"uuid": u, "random": r, "now": t, "n": n, "uuid2": ctx.uuid()}


async def test_recorded_values_are_stable_across_replay(make_tf, clock, uid):
    tf = await make_tf([values_wf], clock=clock)
    key = uid("k")
    h = await tf.run(values_wf, key, workflow_id=uid())
    assert await h.status() == "paused"
    recorded = {
        e.step_name: e.payload["value"]
        for e in await h.history()
        if e.event_type == "value.recorded"
    }
    clock.advance(3600)
    out = await h.result(timeout=10)
    assert out["uuid"] == recorded["uuid"] and out["random"] == recorded["random"]
    assert datetime.fromisoformat(out["now"]) == from_micros(recorded["now"])
    assert datetime.fromisoformat(out["now"]).timestamp() == pytest.approx(clock.now() - 3600)
    assert uuid.UUID(out["uuid2"]) and out["uuid2"] != out["uuid"]
    assert runs[key] == 1 and out["n"] == 1


@workflow(name="evolving")
async def evolving_v1(ctx: WorkflowContext) -> str:
    await ctx.step("reserve", count, "v1")
    await ctx.sleep("1h")
    return await ctx.step("ship", count, "v1") and "v1"


@workflow(name="evolving")
async def evolving_v2(ctx: WorkflowContext) -> str:
    await ctx.step("reserve-inventory", count, "v2")  # renamed: not replay-compatible
    await ctx.sleep("1h")
    return "v2"


async def test_changed_code_is_detected_as_nondeterminism(make_tf, clock, uid, tmp_path):
    data = tmp_path / "nd"
    tf1 = await make_tf([evolving_v1], clock=clock, data_dir=data)
    wid = uid()
    assert await (await tf1.run(evolving_v1, workflow_id=wid)).status() == "paused"
    await tf1.aclose()
    tf2 = await make_tf([evolving_v2], clock=clock, data_dir=data)
    clock.advance(3600)
    with pytest.raises(WorkflowFailed) as err:
        await tf2.get_handle(wid).result(timeout=10)
    assert err.value.error_type == f"{NonDeterminismError.__module__}.NonDeterminismError"
    assert "reserve" in str(err.value) and "reserve-inventory" in str(err.value)


@workflow
async def pausing(ctx: WorkflowContext, n: int) -> int:
    await ctx.sleep("10s")
    return n


async def test_corrupt_file_fails_one_instance_and_quarantines_it(make_tf, clock, uid):
    tf = await make_tf([pausing], clock=clock)
    ids = [uid() for _ in range(4)]
    for i, wid in enumerate(ids):
        assert await (await tf.run(pausing, i, workflow_id=wid)).status() == "paused"
    victim = ids[1]
    path = tf.engine.instance_path(victim)
    await wait_closed(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 3)
    clock.advance(10)
    for i, wid in enumerate(ids):
        if wid != victim:
            assert await tf.get_handle(wid).result(timeout=10) == i
    assert await wait_status(tf, victim, "failed") == "failed"
    info = await tf.describe(victim)
    assert info.error["type"] == "CorruptInstance"
    assert "corrupt" in info.error["message"]
    assert not path.exists()
    quarantined = list((tf.engine.hot_dir / "quarantine").iterdir())
    assert any(p.name.startswith(path.name) for p in quarantined)
    with pytest.raises(WorkflowFailed, match="corrupt"):
        await tf.get_handle(victim).result(timeout=1)
    # The engine goes on working.
    assert await (await tf.run(pausing, 9, workflow_id=uid())).status() == "paused"


async def test_garbage_file_is_reported_on_describe(make_tf, clock, uid):
    tf = await make_tf([pausing], clock=clock)
    wid = uid()
    await tf.run(pausing, 1, workflow_id=wid)
    await wait_closed(tf.engine.instance_path(wid))
    tf.engine.instance_path(wid).write_bytes(b"this is not a database" * 100)
    info = await tf.describe(wid)
    assert info.status == "failed" and info.error["type"] == "CorruptInstance"
    # describe quarantined the file: history says it is gone, and why.
    with pytest.raises(StorageError, match="is missing") as err:
        await tf.history(wid)
    assert type(err.value) is StorageError
    assert "CorruptInstance" in str(err.value)
    # A garbage file that history finds first is reported as corrupt there.
    other = uid()
    await tf.run(pausing, 2, workflow_id=other)
    await wait_closed(tf.engine.instance_path(other))
    tf.engine.instance_path(other).write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptInstance, match="not a database"):
        await tf.history(other)
