"""Legal holds (issue 19, test 2): holds by id and by attribute block retention and erasure with a
clear error and nothing erased; releasing them lets both proceed; a child of a held workflow is
held; an attribute hold covers workflows started after it. On file:// and moto, with the held
workflows in the warm tier (a hold is about the workflow, wherever it is).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tierflow import InvalidArgument, Tierflow, WorkflowNotFound, WorkflowOnHold

from tests.tiering.compliance_app import LATER, POLICY, WORKFLOWS, family, marker
from tests.tiering.compliance_support import assert_gone, scan, start_orders
from tests.tiering.test_tiering import readable

pytestmark = pytest.mark.timeout(120)

FAR = time.time() + 400 * 86400  # every retention below has run out by then


async def test_hold_by_id_blocks_erasure_and_retention_until_released(
    make_store, tmp_path: Path, uid
):
    store = make_store()
    data = tmp_path / "data"
    held, free = uid("held"), uid("free")
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        markers = await start_orders(tf, [held, free])
        await tf.tier(now=time.time() + LATER, to="warm")
        c = tf.compliance
        hold = await c.hold(workflow_id=held, reason="litigation 2026-17", actor="legal")
        assert hold.active and hold.workflow_id == held and hold.hold_id
        assert [h.hold_id for h in await c.holds()] == [hold.hold_id]
        assert [h.hold_id for h in await c.holds(held)] == [hold.hold_id]
        assert await c.holds(free) == []
        before = await readable(tf, [held])

        with pytest.raises(WorkflowOnHold) as refused:
            await c.erase(workflow_id=held, reason="request", actor="dpo")
        assert refused.value.hold_ids == [hold.hold_id]
        assert hold.hold_id in str(refused.value)
        assert await readable(tf, [held]) == before
        assert await c.audit_log(operation="erase") == []

        await c.set_retention("order", "30d", actor="ops")
        report = await c.apply_retention(now=FAR)
        assert report.held_back == {"hot": 0, "warm": 1, "cold": 0}
        assert report.expired == {"hot": 0, "warm": 1, "cold": 0}  # the free one went
        assert sorted(tf.index.all_ids()) == [held]
        assert await readable(tf, [held]) == before
        assert scan(data, store, [markers[held]]) != []

        released = await c.release(hold.hold_id, actor="legal", reason="case closed")
        assert not released.active and released.released_by == "legal"
        assert await c.holds() == []
        with pytest.raises(InvalidArgument):
            await c.release(hold.hold_id, actor="legal", reason="twice")
        report = await c.apply_retention(now=FAR)
        assert report.expired == {"hot": 0, "warm": 1, "cold": 0} and report.held_back["warm"] == 0
        await assert_gone(tf, held, markers[held])
        # The hold's record keeps who and why, but no longer the erased workflow's id.
        hold_records = await c.audit_log(workflow_id=held, operation="hold")
        assert len(hold_records) == 1 and hold_records[0].workflow_id is None
    assert scan(data, store, [held, free, *markers.values()]) == []


async def test_a_child_of_a_held_workflow_is_held(make_store, tmp_path: Path, uid):
    store = make_store()
    parent = uid("parent")
    async with Tierflow(tmp_path / "data", WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        await tf.run(family, {"customer": "c-5", "marker": marker()}, workflow_id=parent)
        await tf.result(parent, timeout=10)
        child = f"{parent}.c1"
        await tf.tier(now=time.time() + LATER, to="warm")
        c = tf.compliance
        hold = await c.hold(workflow_id=parent, reason="audit", actor="legal")
        assert [h.hold_id for h in await c.holds(child)] == [hold.hold_id]
        with pytest.raises(WorkflowOnHold) as refused:
            await c.erase(workflow_id=child, reason="request", actor="dpo")
        assert refused.value.hold_ids == [hold.hold_id]
        await c.set_retention("*", "1d", actor="ops")
        report = await c.apply_retention(now=FAR)
        assert report.held_back == {"hot": 0, "warm": 3, "cold": 0} and report.total == 0
        assert len(tf.index.all_ids()) == 3

        await c.release(hold.hold_id, actor="legal", reason="closed")
        erased = await c.erase(workflow_id=child, reason="request", actor="dpo")
        assert erased.workflows_erased == 1
        assert sorted(tf.index.all_ids()) == sorted([parent, f"{parent}.c0"])


async def test_an_attribute_hold_covers_present_and_future_workflows(
    make_store, tmp_path: Path, uid
):
    store = make_store()
    data = tmp_path / "data"
    early, late = uid("early"), uid("late")
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        c = tf.compliance
        m = await start_orders(tf, [early], customer="c-77")
        hold = await c.hold(attribute={"customer": "c-77"}, reason="dispute", actor="legal")
        assert hold.attribute == {"customer": "c-77"} and hold.workflow_id is None
        m |= await start_orders(tf, [late], customer="c-77")  # started after the hold
        await tf.tier(now=time.time() + LATER, to="warm")
        for wid in (early, late):
            assert [h.hold_id for h in await c.holds(wid)] == [hold.hold_id]
            with pytest.raises(WorkflowOnHold):
                await c.erase(workflow_id=wid, reason="request", actor="dpo")
        with pytest.raises(WorkflowOnHold):
            await c.erase(attribute={"customer": "c-77"}, reason="request", actor="dpo")
        await c.set_retention("order", "1d", actor="ops")
        assert (await c.apply_retention(now=FAR)).held_back["warm"] == 2
        assert sorted(tf.index.all_ids()) == sorted([early, late])

        await c.release(hold.hold_id, actor="legal", reason="settled")
        report = await c.erase(attribute={"customer": "c-77"}, reason="request", actor="dpo")
        assert report.workflows_erased == 2
        for wid in (early, late):
            await assert_gone(tf, wid, m[wid])
    assert scan(data, store, [early, late, *m.values()]) == []


async def test_hold_arguments(make_store, tmp_path: Path, uid):
    async with Tierflow(tmp_path / "data", WORKFLOWS, warm_store=make_store()) as tf:
        c = tf.compliance
        with pytest.raises(WorkflowNotFound):
            await c.hold(workflow_id=uid("nobody"), reason="r", actor="a")
        for kwargs in (
            {},
            {"workflow_id": "x", "attribute": {"a": 1}},
            {"attribute": {"a": 1, "b": 2}},
            {"attribute": {"a": [1]}},
            {"attribute": {"a": 1}, "reason": ""},
            {"attribute": {"a": 1}, "actor": " "},
        ):
            with pytest.raises(InvalidArgument):
                await c.hold(**{"reason": "r", "actor": "a", **kwargs})
        with pytest.raises(InvalidArgument):
            await c.release("hold-nope", actor="a", reason="r")
        assert await c.audit_log() == []
