"""Replay and fork from every tier, on file:// and moto S3 (issue 12, behaviours 2, 3, 4).

One workflow uses everything history must carry for a replay: ``ctx.now()``, ``ctx.uuid()``,
a signal, a timer and a child. It runs hot, moves to warm, then to cold; at each tier its
history reads back identical and replays to the same result. Changed code raises
``NonDeterminismError`` naming the event, read from cold; a fork from cold re-runs only the
steps after the cut (each step body counts its executions).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from tierflow import NonDeterminismError, Tierflow, WorkflowContext, workflow
from tierflow.tiering.policy import TieringPolicy

from tests.conftest import wait_status
from tests.hot.test_replay import ran, work

pytestmark = pytest.mark.timeout(300)

WEEK = 8 * 86400.0


@workflow(name="shipment")
async def shipment(ctx: WorkflowContext, key: str) -> dict[str, str]:
    return {"tracking": await ctx.step("label", work, key, "label")}


async def _purchase(ctx: WorkflowContext, key: str, steps: tuple[str, str]) -> dict[str, Any]:
    at, token = ctx.now().isoformat(), ctx.uuid()
    reserved = await ctx.step("reserve", work, key, "reserve")
    paid = await ctx.wait_for_signal("payment", timeout=3600)
    await ctx.sleep("10ms")  # a short, inline timer: timer.started + timer.fired
    first = await ctx.step(steps[0], work, key, steps[0])
    tracking = await ctx.child(shipment, key)
    second = await ctx.step(steps[1], work, key, steps[1])
    return {
        "at": at,
        "token": token,
        "paid": paid,
        "steps": [reserved, first, second],
        "tracking": tracking,
    }


@workflow(name="purchase")
async def purchase(ctx: WorkflowContext, key: str) -> dict[str, Any]:
    return await _purchase(ctx, key, ("charge", "confirm"))


@workflow(name="purchase")
async def purchase_renamed(ctx: WorkflowContext, key: str) -> dict[str, Any]:
    return await _purchase(ctx, key, ("bill", "confirm"))


@workflow(name="purchase")
async def purchase_swapped(ctx: WorkflowContext, key: str) -> dict[str, Any]:
    return await _purchase(ctx, key, ("confirm", "charge"))


def make_tf(data: Path, store: Any, main: Any = purchase) -> Tierflow:
    policy = TieringPolicy(min_age=0, cold_after="7d")
    return Tierflow(data, [main, shipment], warm_store=store, tiering=policy)


async def run_purchase(tf: Tierflow, key: str, wid: str) -> dict[str, Any]:
    h = await tf.start(purchase, key, workflow_id=wid)
    await wait_status(tf, wid, "paused")
    await h.signal("payment", {"amount": 42})
    result: dict[str, Any] = await h.result(timeout=30)
    return result


def plain(events: list[Any]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in events]


def child_of(events: list[Any]) -> str:
    return str(next(e.payload["workflow_id"] for e in events if e.event_type == "child.started"))


def started(events: list[Any], step: str) -> int:
    return next(
        e.event_id for e in events if e.event_type == "step.started" and e.step_name == step
    )


async def to_cold(tf: Tierflow, wids: list[str]) -> None:
    await tf.tier(now=time.time() + 60)
    await tf.tier(now=time.time() + WEEK)
    assert {(await tf.describe(w)).tier for w in wids} == {"cold"}


async def test_history_and_replay_identical_in_every_tier(make_store, tmp_path, uid):
    key, wid = uid("k"), uid()
    async with make_tf(tmp_path / "d", make_store()) as tf:
        result = await run_purchase(tf, key, wid)
        child = child_of(await tf.history(wid))
        assert (await tf.describe(child)).parent_workflow_id == wid
        hot = {w: plain(await tf.history(w)) for w in (wid, child)}
        types = {e["event_type"] for e in hot[wid]}
        assert {"value.recorded", "signal.received", "timer.fired", "child.completed"} <= types

        seen = {}
        for tier, now in (("hot", None), ("warm", 60.0), ("cold", WEEK)):
            if now is not None:
                await tf.tier(now=time.time() + now)
            assert (await tf.describe(wid)).tier == tier
            assert {w: plain(await tf.history(w)) for w in (wid, child)} == hot  # behaviour 2
            r = await tf.replay(wid)
            assert (r.tier, r.status, r.result) == (tier, "completed", result)
            assert plain(r.events) == hot[wid]
            seen[tier] = (await tf.replay(child)).result
        assert seen == {t: {"tracking": f"label:{key}"} for t in ("hot", "warm", "cold")}
        # Replays ran nothing: every step ran once, in the original run.
        assert ran(key) == {"reserve": 1, "charge": 1, "label": 1, "confirm": 1}


@pytest.mark.parametrize(
    ("code", "expected", "got", "why"),
    [
        (purchase_renamed, "step 'charge'", "step 'bill'", "different step name"),
        (purchase_swapped, "step 'charge'", "step 'confirm'", "steps in a different order"),
    ],
    ids=["renamed", "swapped"],
)
async def test_changed_code_raises_from_cold(make_store, tmp_path, uid, code, expected, got, why):
    key, wid = uid("k"), uid()
    store = make_store()
    async with make_tf(tmp_path / "d", store) as tf:
        await run_purchase(tf, key, wid)
        events = await tf.history(wid)
        await to_cold(tf, [wid])
        assert (await tf.replay(wid)).status == "completed"
    async with make_tf(tmp_path / "d", store, code) as tf:
        with pytest.raises(NonDeterminismError) as err:
            await tf.replay(wid)
    e = err.value
    assert (e.workflow_id, e.event_id) == (wid, started(events, "charge"))
    assert (e.expected, e.got) == (expected, f"asked for {got}")
    assert why in e.message
    assert ran(key) == {"reserve": 1, "charge": 1, "label": 1, "confirm": 1}


async def test_fork_from_cold_reruns_only_the_steps_after_the_cut(make_store, tmp_path, uid):
    key, wid = uid("k"), uid()
    async with make_tf(tmp_path / "d", make_store()) as tf:
        original = await run_purchase(tf, key, wid)
        await to_cold(tf, [wid, child_of(await tf.history(wid))])
        events = await tf.history(wid)
        cut = started(events, "charge") - 1  # after the signal and the timer, before charge
        fork = await tf.fork(wid, at_event=cut)
        out = await fork.result(timeout=30)
        # Recorded before the cut: now(), uuid(), reserve, the signal. Re-run after it:
        # charge, the child (a new one, named after the fork) and confirm.
        assert {k: out[k] for k in ("at", "token", "paid")} == {
            k: original[k] for k in ("at", "token", "paid")
        }
        assert out == original
        assert ran(key) == {"reserve": 1, "charge": 2, "label": 2, "confirm": 2}
        info = await fork.describe()
        assert info.tier == "hot"
        assert info.attributes == {"forked_from": wid, "forked_at_event": cut}
        forked = plain(await fork.history())
        strip = {"workflow_id": None, "run_id": None}
        assert [e | strip for e in forked[:cut]] == [e | strip for e in plain(events)[:cut]]
        new_child = child_of(await fork.history())
        assert new_child.startswith(fork.workflow_id)
        assert (await tf.describe(new_child)).parent_workflow_id == fork.workflow_id
        assert (await tf.replay(fork.workflow_id)).result == out
