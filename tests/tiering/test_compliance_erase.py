"""Erasure (issue 19, test 3): one workflow erased from each tier is gone for every reader and
from every byte of every file, and the other workflows are intact; on file:// and moto.

Hot: finished; running (paused on a signal) refused without ``force`` and terminated then
erased with it; a parent with its children. Warm and cold: a workflow sharing its batch and its
Iceberg files with others. "Gone" means: no read by id, list, SQL view (now and as of every cold
snapshot left), replay, query or export finds it, and neither its id nor a unique marker of its
input is in any file under the data dir or any object of the store (raw bytes, and decoded when
the forensic scanner is there).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tierflow import Tierflow, WorkflowNotFound, WorkflowStillRunning

from tests.conftest import wait_status
from tests.tiering.compliance_app import LATER, POLICY, WORKFLOWS, family, marker, waiting
from tests.tiering.compliance_support import (
    assert_gone,
    scan,
    start_orders,
    tier_all,
)
from tests.tiering.test_tiering import readable

pytestmark = pytest.mark.timeout(120)


async def test_erase_a_finished_hot_workflow(make_store, tmp_path: Path, uid):
    store = make_store()
    data = tmp_path / "data"
    victim, others = uid("victim"), [uid("other"), uid("other")]
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        markers = await start_orders(tf, [victim, *others])
    # Closed, the index's WAL is in its file: deleted rows would stay in its free space.
    assert markers[victim].encode() in (data / "hot" / "index.sqlite").read_bytes()
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        before = await readable(tf, others)
        # The SQL engine now caches the victim's finished hot history in this process.
        seen = await tf.sql("SELECT count(*) FROM history WHERE workflow_id = ?", [victim])
        assert seen.rows[0][0] > 0
        assert tf.sql_engine.hot_cache.nbytes > 0

        report = await tf.compliance.erase(workflow_id=victim, reason="GDPR art. 17", actor="dpo")

        assert report.workflows_erased == 1
        assert report.per_tier == {"hot": 1, "warm": 0, "cold": 0}
        # Gone at once, not when the process closes the index (its WAL is truncated).
        assert scan(data, store, [victim, markers[victim]]) == []
        assert report.files_deleted["hot"] >= 1 and report.bytes_removed > 0
        assert tf.sql_engine.hot_cache.nbytes == 0
        await assert_gone(tf, victim, markers[victim])
        assert await readable(tf, others) == before
    assert scan(data, store, [victim, markers[victim]]) == []
    assert scan(data, store, [markers[others[0]]]) != []  # the scan does find what is there


async def test_erase_refuses_a_running_workflow_unless_forced(make_store, tmp_path: Path, uid):
    store = make_store()
    data = tmp_path / "data"
    victim, other = uid("running"), uid("other")
    mark = marker()
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        others = await start_orders(tf, [other])
        await tf.start(waiting, {"customer": "c-9", "marker": mark}, workflow_id=victim)
        await wait_status(tf, victim, "paused")

        with pytest.raises(WorkflowStillRunning) as refused:
            await tf.compliance.erase(workflow_id=victim, reason="request", actor="dpo")
        assert refused.value.workflow_id == victim and refused.value.status == "paused"
        # Nothing was erased or recorded: it still runs, and a signal still finishes it.
        assert await tf.status(victim) == "paused"
        assert await tf.compliance.audit_log(operation="erase") == []
        assert scan(data, store, [mark]) != []

        report = await tf.compliance.erase(
            workflow_id=victim, reason="request", actor="dpo", force=True
        )
        assert report.per_tier["hot"] == 1
        await assert_gone(tf, victim, mark)
        assert (await tf.describe(other)).status == "completed"
    assert scan(data, store, [victim, mark]) == []
    assert scan(data, store, [others[other]]) != []


async def test_erase_a_parent_erases_its_children(make_store, tmp_path: Path, uid):
    store = make_store()
    data = tmp_path / "data"
    parent, other = uid("parent"), uid("other")
    mark = marker()
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        others = await start_orders(tf, [other])
        await tf.run(family, {"customer": "c-3", "marker": mark}, workflow_id=parent)
        assert len(await tf.result(parent, timeout=10)) == 2
        children = [f"{parent}.c0", f"{parent}.c1"]
        assert [(await tf.describe(c)).parent_workflow_id for c in children] == [parent] * 2

        report = await tf.compliance.erase(workflow_id=parent, reason="request", actor="dpo")

        assert report.workflows_erased == 3
        for wid in (parent, *children):
            await assert_gone(tf, wid, mark)
        records = await tf.compliance.audit_log(operation="erase")
        assert len(records) == 3
        assert [r.detail["requested"] for r in records].count(True) == 1
        assert (await tf.describe(other)).status == "completed"
    assert scan(data, store, [parent, mark]) == []
    assert scan(data, store, [others[other]]) != []


async def test_erase_an_unknown_id(make_store, tmp_path: Path, uid):
    async with Tierflow(tmp_path / "data", WORKFLOWS, warm_store=make_store()) as tf:
        with pytest.raises(WorkflowNotFound):
            await tf.compliance.erase(workflow_id=uid("nobody"), reason="request", actor="dpo")
        assert await tf.compliance.audit_log() == []


async def test_erase_by_attribute(make_store, tmp_path: Path, uid):
    store = make_store()
    data = tmp_path / "data"
    mine, theirs = [uid("mine"), uid("mine")], [uid("theirs")]
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        m1 = await start_orders(tf, mine, customer="c-42")
        m2 = await start_orders(tf, theirs, customer="c-43")
        report = await tf.compliance.erase(
            attribute={"customer": "c-42"}, reason="request", actor="dpo"
        )
        assert report.workflows_erased == 2
        for wid in mine:
            await assert_gone(tf, wid, m1[wid])
        assert (await tf.describe(theirs[0])).status == "completed"
        # The attribute value is not in the audit records in clear either.
        for record in await tf.compliance.audit_log():
            assert "c-42" not in str(record.to_dict())
    assert scan(data, store, [*mine, *m1.values()]) == []
    assert scan(data, store, list(m2.values())) != []


@pytest.mark.parametrize("tier", ["warm", "cold"])
async def test_erase_from_an_archived_tier(make_store, tmp_path: Path, uid, tier: str):
    store = make_store()
    data = tmp_path / "data"
    victim, others = uid("victim"), [uid("other") for _ in range(4)]
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        markers = await start_orders(tf, [victim, *others])
        await tier_all(tf, to=tier)
        assert tf.index.count_by_tier() == {tier: 5}
        before = await readable(tf, others)

        report = await tf.compliance.erase(workflow_id=victim, reason="request", actor="dpo")

        assert report.per_tier[tier] == 1
        assert report.files_rewritten[tier] >= 1
        if tier == "cold":
            assert report.snapshots_expired
            assert report.snapshots_after != report.snapshots_before
        await assert_gone(tf, victim, markers[victim])
        assert await readable(tf, others) == before
        await tf.tier()  # a later pass brings nothing back
        await assert_gone(tf, victim, markers[victim])
    assert scan(data, store, [victim, markers[victim]]) == []
    assert scan(data, store, [markers[others[0]]]) != []


async def test_passes_running_beside_an_erasure_bring_nothing_back(make_store, tmp_path: Path, uid):
    """Erasure holds the tiering locks: a hot → warm pass, a cold move and a maintenance pass
    started at the same moment run before or after it, never across it."""
    store = make_store()
    data = tmp_path / "data"
    victim, others = uid("victim"), [uid("other") for _ in range(3)]
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        markers = await start_orders(tf, [victim, *others[:1]])
        await tier_all(tf, to="warm")
        markers |= await start_orders(tf, others[1:])  # hot, for the concurrent pass to move
        before = await readable(tf, others)
        report, *_ = await asyncio.gather(
            tf.compliance.erase(workflow_id=victim, reason="request", actor="dpo"),
            tf.tier(now=time.time() + LATER, to="warm"),
            tf.tier(now=time.time() + LATER, to="cold"),
            tf.maintain_cold(rewrite=True, snapshot_retention=0, orphan_grace=0),
        )
        assert report.workflows_erased == 1
        await tier_all(tf)
        await assert_gone(tf, victim, markers[victim])
        assert await readable(tf, others) == before
    assert scan(data, store, [victim, markers[victim]]) == []
