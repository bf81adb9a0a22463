"""Erasure under SIGKILL (issue 19, test 4): a subprocess erasing a customer's workflows from all
three tiers is killed at each step (after the intent, after the warm rewrite, after the Iceberg
delete, before and after the file removal, after the snapshot expiry); the next process start,
tiering pass or ``erase`` call resumes it, and then the workflows are gone from every reader and
every byte while every other workflow is intact (reads as before, warm checksums verify, each cold
row once). Meanwhile the erased workflows are already hidden from reads. On file:// and moto.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tierflow import Tierflow, WorkflowNotFound
from tierflow.tiering.compliance.erase import POINTS
from tierflow.warm import reader
from tierflow.warm.writer import BatchManifest

from tests.tiering.compliance_app import LATER, POLICY, WORKFLOWS
from tests.tiering.compliance_support import (
    assert_all_gone,
    env_for,
    run_forked,
    scan,
    start_orders,
)
from tests.tiering.test_tiering import readable

pytestmark = pytest.mark.timeout(150)

VICTIM = "c-erased"
# The process that resumes the erasure after each kill (and is killed at the next step).
RESUMES = (("tier", []), ("open", []), ("erase", ["hot-other-1"]))


async def _populate(tf: Tierflow) -> tuple[dict[str, str], dict[str, str]]:
    """A victim and a bystander in each tier; their markers (victims, others)."""
    victims: dict[str, str] = {}
    others: dict[str, str] = {}
    for tier in ("cold", "warm", "hot"):
        victims |= await start_orders(tf, [f"{tier}-victim"], customer=VICTIM)
        others |= await start_orders(tf, [f"{tier}-other-1", f"{tier}-other-2"], customer="c-kept")
        if tier != "hot":
            await tf.tier(now=time.time() + LATER, to="warm")
        if tier == "cold":
            await tf.tier(now=time.time() + LATER, to="cold")
    assert tf.index.count_by_tier() == {"cold": 3, "warm": 3, "hot": 3}
    return victims, others


def _state(tf: Tierflow) -> tuple[int, int]:
    [(intents,)] = tf.index.execute("SELECT count(*) FROM erasures", ())
    [(marks,)] = tf.index.execute("SELECT count(*) FROM erasing", ())
    return intents, marks


async def _assert_intact(tf: Tierflow, before: dict[str, Any], others: list[str]) -> None:
    assert await readable(tf, others) == before
    for bid, blob in tf.index.execute(
        "SELECT batch_id, manifest FROM tier_batches WHERE state IN ('committed', 'done')", ()
    ):
        await tf.engine.io(reader.verify, tf.store.fs, tf.store.root, BatchManifest.from_json(blob))
        assert bid
    cold_rows = tf.cold.table("workflows", refresh=True).scan().to_arrow()
    assert Counter(cold_rows.column("workflow_id").to_pylist()) == {
        w: 1 for w in others if w.startswith("cold-")
    }


def _intent(data: Path) -> tuple[int, int, dict[str, Any]]:
    """From the index file: (intents, marked workflows, the intent's recorded progress)."""
    conn = sqlite3.connect(data / "hot" / "index.sqlite")
    try:
        rows = conn.execute("SELECT progress FROM erasures").fetchall()
        [(marks,)] = conn.execute("SELECT count(*) FROM erasing").fetchall()
    finally:
        conn.close()
    return len(rows), marks, json.loads(rows[0][0]) if rows else {}


async def test_kill_an_erasure_at_every_step_and_resume_each_way(make_store, tmp_path: Path):
    """One erasure killed at every step in turn: each rerun resumes it and is killed at the next.

    Between the first kill and the resume, the workflows are already gone for reads by id,
    ``list`` and every SQL view, though their rows are still in the warm and cold files.

    The reruns are, in turn, a tiering pass, a process start and another ``erase`` call (each
    resumes the erasure before anything else); a last process start finishes it.
    """
    store = make_store()
    data = tmp_path / "data"
    env = env_for(store)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        victims, others = await _populate(tf)
        before = await readable(tf, sorted(others))

    mode, args = "erase-customer", [VICTIM]
    for i, point in enumerate(POINTS):
        killed = run_forked(mode, data, {**env, "TIERFLOW_CRASH_AT": point}, *args)
        assert killed.returncode == -9, (point, killed.stdout)
        intents, marks, progress = _intent(data)
        assert (intents, marks) == (1, 3), point  # recorded, durable, still to finish
        if point == "erase-after-warm-rewrite":
            assert progress["warm"]["batches_rewritten"] == 1  # the warm victim's batch
        if i == 0:  # the workflows are gone for readers from the intent on
            tf = Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY)
            tf.open()  # no start: nothing resumes
            try:
                for wid in victims:
                    with pytest.raises(WorkflowNotFound):
                        await tf.describe(wid)
                assert not set(victims) & {x.workflow_id for x in (await tf.list()).items}
                # Their rows are still in the warm and cold files, but no view shows them.
                counts = await tf.sql(
                    "SELECT tier, count(*) FROM workflows GROUP BY tier ORDER BY tier"
                )
                assert counts.rows == [("cold", 2), ("hot", 2), ("warm", 2)]
                seen = await tf.sql(
                    "SELECT count(*) FROM history WHERE list_contains($ids, workflow_id)",
                    {"ids": sorted(victims)},
                )
                assert seen.rows == [(0,)]
            finally:
                await tf.aclose()
        mode, args = RESUMES[i % len(RESUMES)]

    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        assert _state(tf) == (0, 0)
        # (Time travel to what is left is checked by the erasure tests; here the bytes are.)
        await assert_all_gone(tf, victims, time_travel=False)
        await _assert_intact(tf, before, sorted(others))
        erased = await tf.compliance.audit_log(operation="erase")
        assert len(erased) == len(victims)  # one record per workflow, none twice
        for wid in victims:
            mine = await tf.compliance.audit_log(workflow_id=wid)
            assert [r.operation for r in mine] == ["erase"]
    assert scan(data, store, [*victims, *victims.values()]) == []
    assert scan(data, store, [others["warm-other-2"], others["cold-other-2"]]) != []
