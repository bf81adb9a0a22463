"""Tiering edge cases: corrupt hot files, the CLI, periodic passes, queries and
property-based round trips of arbitrary histories hot -> warm."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tierflow import StorageError, Tierflow, WorkflowContext, workflow
from tierflow.tiering.policy import TieringPolicy

from tests import procs
from tests.conftest import wait_closed
from tests.tiering.test_tiering import snapshot
from tests.tiering.tier_app import LATER, WORKFLOWS, populate

ROOT = Path(__file__).resolve().parents[2]


async def test_corrupt_hot_file_is_skipped_and_reported(tmp_path: Path):
    async with Tierflow(tmp_path / "d", WORKFLOWS) as tf:
        ids = await populate(tf, 9)
        victim = ids[4]
        path = tf.engine.instance_path(victim)
        await wait_closed(path)
        path.write_bytes(b"garbage" * 50)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == 8
        assert [w for w, _ in report.skipped] == [victim]
        assert "corrupt" in report.skipped[0][1]
        assert (await tf.list(tier="hot")).items[0].workflow_id == victim
        others = [i for i in ids if i != victim]
        assert [(await tf.describe(w)).tier for w in others] == ["warm"] * 8


def test_cli_tier_moves_and_reports_json(tmp_path: Path):
    data = tmp_path / "d"

    async def fill() -> list[str]:
        async with Tierflow(data, WORKFLOWS) as tf:
            return await populate(tf, 12)

    ids = asyncio.run(fill())
    out = procs.run(
        "tierflow.cli",
        "tier",
        "--data-dir",
        str(data),
        "--min-age",
        "0s",
        "--json",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["workflows_moved"] == 12
    assert (data / "lake" / "warm" / "manifests").is_dir()
    listed = procs.run(
        "tierflow.cli",
        "history",
        ids[0],
        "--data-dir",
        str(data),
        "--json",
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["events"][-1]["event_type"] == "workflow.completed"
    bad = procs.run(
        "tierflow.cli",
        "tier",
        "--data-dir",
        str(data),
        "--storage-url",
        "s3://x-missing/p",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        env={"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
        timeout=60,
    )
    assert bad.returncode == 1 and "x-missing" in bad.stderr  # a failure, not a usage error


@workflow
async def counted(ctx: WorkflowContext, n: int) -> int:
    total = 0
    ctx.set_query_handler("total", lambda: total)
    for i in range(n):
        total = await ctx.step(f"add-{i}", lambda a, b: a + b, total, i)
    return total


async def test_periodic_tiering_and_queries_on_archived(tmp_path: Path, clock):
    policy = TieringPolicy(min_age="1h", interval=0.05)
    async with Tierflow(tmp_path / "d", [counted], clock=clock, tiering=policy) as tf:
        h = await tf.run(counted, 10, workflow_id="counted-1")
        assert await h.result() == 45
        clock.advance(3601)

        async def moved() -> bool:
            return (await tf.describe("counted-1")).tier == "warm"

        deadline = time.monotonic() + 10
        while not await moved():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await h.query("total") == 45  # replayed from warm history
        assert await h.result() == 45


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
step_results = st.lists(
    st.one_of(json_values, st.text(min_size=1000, max_size=100_000).map(lambda s: s * 1)),
    min_size=0,
    max_size=40,
)


def identity(v: Any) -> Any:
    return v


@workflow
async def echo(ctx: WorkflowContext, values: list[Any]) -> list[Any]:
    return [await ctx.step(f"s-{i}-ü𝄞", identity, v) for i, v in enumerate(values)]


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # make_store() is called afresh per example
    ],
)
@given(batches=st.lists(step_results, min_size=1, max_size=3))
def test_property_histories_round_trip_hot_to_warm(make_store, batches: list[list[Any]]):
    store = make_store()

    async def go(data: Path) -> None:
        async with Tierflow(data, [echo], warm_store=store) as tf:
            ids = []
            for n, values in enumerate(batches):
                h = await tf.run(echo, values, workflow_id=f"echo-{n}")
                assert await h.result() == values
                ids.append(h.workflow_id)
            before = await snapshot(tf, ids)
            report = await tf.tier(now=time.time() + 7200)
            assert report.workflows_moved == len(ids)
            assert await snapshot(tf, ids) == before

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


async def test_unusable_local_store_fails_before_touching_hot(tmp_path: Path):
    from tierflow.warm.storage import ObjectStore

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the lake should be")
    store = ObjectStore.from_url((blocker / "lake").as_uri())
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=store) as tf:
        ids = await populate(tf, 3)
        before = await snapshot(tf, ids)
        with pytest.raises(StorageError, match="not-a-dir"):
            await tf.tier(now=time.time() + LATER)
        assert await snapshot(tf, ids) == before


async def test_reading_warm_data_from_another_store_names_both(tmp_path: Path):
    from tierflow.warm.storage import ObjectStore

    data = tmp_path / "d"
    async with Tierflow(data, WORKFLOWS) as tf:  # default: file://<data>/lake
        ids = await populate(tf, 3)
        await tf.tier(now=time.time() + LATER)
    other = ObjectStore.from_url((tmp_path / "elsewhere").as_uri())
    async with Tierflow(data, WORKFLOWS, warm_store=other) as tf:
        with pytest.raises(StorageError) as err:
            await tf.history(ids[0])
        assert "lake" in str(err.value) and "elsewhere" in str(err.value)


def test_a_ledger_written_by_0_1_0_reads_back_with_todays_states(tmp_path: Path):
    """0.1.0 named a batch whose rows are in the cold tables "compacted"; it reads as ``cold``."""
    from tierflow.hot.index import IndexDB
    from tierflow.tiering.warm_ledger import BatchState, WarmLedger

    index = IndexDB(tmp_path / "index.sqlite")
    try:
        WarmLedger(index)
        index.write_now(
            lambda c: c.execute(
                "INSERT INTO tier_batches (batch_id, state, created_at) "
                "VALUES ('b-in-cold', 'compacted', 1), ('b-in-warm', 'done', 2)"
            ),
            durable=True,
        )
        status = WarmLedger(index).status("file:///lake")
        assert {b.batch_id: b.state for b in status.batches} == {
            "b-in-cold": BatchState.COLD,
            "b-in-warm": BatchState.DONE,
        }
        assert index.execute("SELECT count(*) FROM tier_batches WHERE state='cold'") == [(1,)]
    finally:
        index.close()
