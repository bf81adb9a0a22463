"""SQL's consistent cut against a warm → cold move killed between its Iceberg commits and the
index flip; on file:// and on a moto S3 server.

A move at ``cold-after-workflows`` has appended its rows to both cold tables, but the index
still names the workflows warm (their warm files are untouched). A query must read each of
them once: from warm, leaving out the cold files of the commit the index has not flipped.
Deterministic: the mover kills itself at the named crash point (no timing involved).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from tierflow import Tierflow
from tierflow.cold.tables import identifier
from tierflow.cold.writer import find_commit

from tests.tiering.cold_app import POLICY
from tests.tiering.test_cold_crash import commit_state, run_app
from tests.tiering.test_tiering import _env_for
from tests.tiering.tier_app import LATER, WORKFLOWS

pytestmark = pytest.mark.timeout(60)


async def run_some(tf: Tierflow, prefix: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        wf = WORKFLOWS[i % 3]
        ids.append((await tf.run(wf, i, workflow_id=f"{prefix}-{wf.name}-{i}")).workflow_id)
    return ids


async def assert_each_workflow_once(tf: Tierflow, events: dict[str, int]) -> None:
    """The ``workflows`` view holds each id once; ``history`` each workflow's events once."""
    [(rows, distinct)] = (
        await tf.sql("SELECT count(*), count(DISTINCT workflow_id) FROM workflows")
    ).rows
    assert (rows, distinct) == (len(events), len(events))
    listed = (await tf.sql("SELECT workflow_id FROM workflows ORDER BY 1")).rows
    assert [w for (w,) in listed] == sorted(events)
    per_workflow = (
        await tf.sql(
            "SELECT workflow_id, count(*), count(DISTINCT event_id) FROM history GROUP BY 1"
        )
    ).rows
    assert {w: (n, d) for w, n, d in per_workflow} == {w: (n, n) for w, n in events.items()}


async def test_a_move_killed_after_its_iceberg_commits_is_read_once(
    make_store, tmp_path: Path, uid: Any
):
    store = make_store()
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        # A first move completes, so the index's cut holds a cold commit (a cut with none
        # reads no cold file at all, which would hide the filter under test).
        done = await run_some(tf, uid("done"), 6)
        await tf.tier(now=time.time() + LATER, to="warm")
        first = await tf.tier(now=time.time() + LATER, to="cold")
        assert first.cold is not None and first.cold.workflows_moved == 6
        moving = await run_some(tf, uid("moving"), 6)
        assert (await tf.tier(now=time.time() + LATER, to="warm")).workflows_moved == 6
        events = {w: len(await tf.history(w)) for w in done + moving}

    killed = run_app("cold", data, {**_env_for(store), "TIERFLOW_CRASH_AT": "cold-after-workflows"})
    assert killed.returncode == -9, killed.stderr
    [(_, first_state, _), (commit_id, state, _)] = commit_state(data)
    assert (first_state, state) == ("done", "writing")  # the index was never flipped

    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        for dataset in ("history", "workflows"):  # both tables hold the killed commit's rows
            assert find_commit(tf.cold.table(dataset, refresh=True), commit_id) is not None
        assert tf.cold.catalog.table_exists(identifier("workflows"))
        assert tf.index.count_by_tier() == {"cold": 6, "warm": 6}
        tiers = await tf.sql("SELECT tier, count(*) FROM workflows GROUP BY 1 ORDER BY 1")
        assert tiers.rows == [("cold", 6), ("warm", 6)]
        await assert_each_workflow_once(tf, events)

        # The rerun repairs the move; the query then reads all twelve from cold, still once.
        rerun = await tf.tier(now=time.time() + LATER, to="cold")
        assert rerun.cold is not None and rerun.cold.recovered_commits == [commit_id]
        assert tf.index.count_by_tier() == {"cold": 12}
        tiers = await tf.sql("SELECT tier, count(*) FROM workflows GROUP BY 1")
        assert tiers.rows == [("cold", 12)]
        await assert_each_workflow_once(tf, events)
