"""Search attributes: set at start or by the workflow, found through the index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tierflow import InvalidArgument, RetryPolicy, WorkflowContext, workflow

tries: dict[str, int] = {}


def flaky_once(key: str) -> str:
    tries[key] = tries.get(key, 0) + 1
    if tries[key] == 1:
        raise ConnectionError("try again")
    return "ok"


@workflow
async def tagged(ctx: WorkflowContext, inp: dict) -> str:
    ctx.set_attributes(
        customer=inp["customer"],
        priority=inp["priority"],
        vip=inp["vip"],
        due=datetime(2026, 12, 24, tzinfo=UTC),
    )
    # The first attempt fails: attributes must still be recorded with the retry.
    return await ctx.step(
        "work", flaky_once, inp["key"], retry=RetryPolicy(max_attempts=2, initial_interval=0)
    )


async def test_attributes_set_by_workflow_are_listed(make_tf, uid):
    tf = await make_tf([tagged])
    ids = []
    for n, (customer, vip) in enumerate([("c-7", True), ("c-7", False), ("c-8", True)]):
        h = await tf.run(
            tagged,
            {"customer": customer, "priority": n, "vip": vip, "key": uid("k")},
            workflow_id=uid(),
        )
        assert await h.result() == "ok"
        ids.append(h.workflow_id)
    found = {i.workflow_id for i in (await tf.list(attributes={"customer": "c-7"})).items}
    assert found == set(ids[:2])
    both = (await tf.list(attributes={"customer": "c-7", "vip": True})).items
    assert [i.workflow_id for i in both] == [ids[0]]
    assert [i.workflow_id for i in (await tf.list(attributes={"priority": 2})).items] == [ids[2]]
    info = await tf.describe(ids[0])
    assert info.attributes == {
        "customer": "c-7",
        "priority": 0,
        "vip": True,
        "due": "2026-12-24T00:00:00+00:00",
    }


async def test_attributes_at_start_and_validation(make_tf, uid):
    tf = await make_tf([tagged], scheduler=False)
    h = await tf.start(
        tagged,
        {"customer": "x", "priority": 1, "vip": False, "key": uid()},
        workflow_id=uid(),
        attributes={"region": "eu", "batch": 7},
    )
    assert [i.workflow_id for i in (await tf.list(attributes={"region": "eu"})).items] == [
        h.workflow_id
    ]
    with pytest.raises(InvalidArgument):
        await tf.start(tagged, {}, workflow_id=uid(), attributes={"bad": [1, 2]})


@workflow
async def waits(ctx: WorkflowContext, inp: dict) -> str:
    return await ctx.wait_for_signal("go")


async def test_list_filters_by_created_started_and_finished_ranges(make_tf, uid, clock):
    """Each range is [after, before): an instance is in it from its own time, not after."""
    tf = await make_tf([tagged, waits], clock=clock)
    t0 = datetime.fromtimestamp(clock.now(), UTC)
    first = await tf.run(
        tagged, {"customer": "c", "priority": 0, "vip": False, "key": uid("k")}, workflow_id=uid()
    )
    clock.advance(60)
    t1 = datetime.fromtimestamp(clock.now(), UTC)
    second = await tf.run(
        tagged, {"customer": "c", "priority": 1, "vip": False, "key": uid("k")}, workflow_id=uid()
    )
    clock.advance(60)
    t2 = datetime.fromtimestamp(clock.now(), UTC)
    paused = await tf.run(waits, {}, workflow_id=uid())  # started, never finished

    async def ids(**filters: datetime) -> set[str]:
        return {i.workflow_id for i in (await tf.list(**filters)).items}

    a, b, p = first.workflow_id, second.workflow_id, paused.workflow_id
    assert await ids(created_after=t0) == {a, b, p}
    assert await ids(created_after=t1) == {b, p}
    assert await ids(created_before=t1) == {a}
    assert await ids(started_after=t1, started_before=t2) == {b}
    assert await ids(finished_after=t0) == {a, b}  # the paused one has not finished
    assert await ids(finished_before=t1) == {a}
    # A naive datetime is UTC, not the machine's local time.
    assert await ids(created_after=t1.replace(tzinfo=None)) == {b, p}
    assert await ids(started_after=t2 + timedelta(seconds=1)) == set()
