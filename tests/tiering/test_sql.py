"""SQL across tiers (README, "SQL across tiers"), on file:// and moto S3.

1. Workflows spread over running, paused, warm and cold: counts by tier and the
   history count match the ground truth; and the same, sampled repeatedly, while
   another process moves workflows hot → warm → cold (never a double, never a miss).
5. Hostile statements are refused or cut, leave nothing on disk, and legitimate
   queries work after each.
6. ``as_of`` before a cold move does not see the rows it moved.

Plus: only the hot files a ``workflow_id`` filter allows are opened, and a query
whose warm files vanish under it (a cold move finished meanwhile) runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tierflow import InvalidArgument, Tierflow, WorkflowContext, workflow
from tierflow.tiering.policy import TieringPolicy
from tierflow.tiering.sql import QueryTimeout
from tierflow.tiering.sql import engine as sql_module
from tierflow.tiering.sql import hot as sql_hot
from tierflow.warm.storage import ObjectStore

from tests import procs
from tests.tiering.test_tiering import ROOT, _env_for
from tests.tiering.tier_app import LATER, WORKFLOWS

pytestmark = pytest.mark.timeout(300)

RELEASE: dict[str, asyncio.Event] = {}


async def hold(key: str) -> str:
    await RELEASE[key].wait()
    return "released"


@workflow
async def blocker(ctx: WorkflowContext, key: str) -> str:
    return await ctx.step("hold", hold, key)


@workflow
async def waiter(ctx: WorkflowContext, n: int) -> Any:
    return await ctx.wait_for_signal("go")


ALL = [*WORKFLOWS, blocker, waiter]


async def finished(tf: Tierflow, start: int, stop: int) -> list[str]:
    ids = []
    for i in range(start, stop):
        wf = WORKFLOWS[i % 3]
        h = await tf.run(wf, i, workflow_id=f"{wf.name}-{i:05d}")
        ids.append(h.workflow_id)
    return ids


async def paused(tf: Tierflow, n: int) -> list[str]:
    ids = [(await tf.run(waiter, i, workflow_id=f"waiter-{i:04d}")).workflow_id for i in range(n)]
    assert {await tf.status(w) for w in ids} == {"paused"}
    return ids


async def events_of(tf: Tierflow, ids: list[str]) -> int:
    total = 0
    for w in ids:
        total += len(await tf.history(w))
    return total


async def poll(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# -- 1. counts by tier -------------------------------------------------------------------


async def test_counts_by_tier_and_history_match_ground_truth(make_store, tmp_path: Path):
    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after="1h", max_workflows_per_batch=15)
    key = f"run-{tmp_path.name}"
    RELEASE[key] = asyncio.Event()
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        cold = await finished(tf, 0, 45)
        await tf.tier(now=time.time() + 60, to="warm")
        report = await tf.tier(now=time.time() + LATER, to="cold")
        assert report.cold.workflows_moved == 45
        warm = await finished(tf, 45, 90)
        assert (await tf.tier(now=time.time() + 60, to="warm")).workflows_moved == 45
        waiting = await paused(tf, 30)
        running = [
            (await tf.start(blocker, key, workflow_id=f"blocker-{i:03d}")).workflow_id
            for i in range(15)
        ]

        async def all_running() -> bool:
            return {await tf.status(w) for w in running} == {"running"}

        await poll(all_running)
        ids = cold + warm + waiting + running
        truth_events = await events_of(tf, ids)
        assert tf.index.count_by_tier() == {"cold": 45, "warm": 45, "hot": 45}

        by_tier = await tf.sql("SELECT tier, count(*) FROM workflows GROUP BY 1 ORDER BY 1")
        assert by_tier.columns[0] == "tier"
        assert by_tier.rows == [("cold", 45), ("hot", 45), ("warm", 45)]
        (total,) = (await tf.sql("SELECT count(*) FROM history")).rows
        assert total == (truth_events,)
        statuses = await tf.sql(
            "SELECT status, count(*) FROM workflows WHERE tier = ? GROUP BY 1 ORDER BY 1",
            ["hot"],
        )
        assert statuses.rows == [("paused", 30), ("running", 15)]
        per_tier = await tf.sql(
            "SELECT tier, count(DISTINCT workflow_id) FROM history GROUP BY 1 ORDER BY 1"
        )
        assert per_tier.rows == [("cold", 45), ("hot", 45), ("warm", 45)]
        for view, n in (("hot", 45), ("warm", 45), ("cold", 45)):
            assert (await tf.sql(f"SELECT count(*) FROM {view}_workflows")).rows == [(n,)]

        # One workflow's history through SQL equals history() in every tier.
        for wid in (cold[7], warm[7], waiting[3], running[2]):
            rows = (
                await tf.sql(
                    "SELECT event_id, event_type, step_name FROM history "
                    "WHERE workflow_id = $wid ORDER BY event_id",
                    {"wid": wid},
                )
            ).rows
            expected = [(e.event_id, e.event_type, e.step_name) for e in await tf.history(wid)]
            assert rows == expected

        table = (await tf.sql("SELECT * FROM workflows")).to_arrow()
        assert table.num_rows == 135 and table.column_names[-1] == "tier"
        assert (
            await tf.sql("SELECT result FROM workflows WHERE workflow_id = 'alpha-00000'")
        ).rows[0][0] == json.dumps([f"A0-{i}" for i in range(5)], separators=(",", ":"))

        assert await events_of(tf, ids) == truth_events  # nothing moved meanwhile
        RELEASE[key].set()
        for w in running:
            assert await tf.result(w, timeout=30) == "released"


async def test_streamed_result_and_row_limit(make_store, tmp_path: Path):
    store = make_store()
    policy = TieringPolicy(min_age=0)
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        await finished(tf, 0, 30)
        await tf.tier(now=time.time() + 60, to="warm")
        result = await tf.sql("SELECT * FROM history ORDER BY workflow_id, event_id", stream=True)
        streamed = sum(b.num_rows for b in result.batches())
        assert streamed == (await tf.sql("SELECT count(*) FROM history")).rows[0][0]
        cut = await tf.sql("SELECT * FROM history", limit=7)
        assert len(cut.rows) == 7 and cut.truncated
        whole = await tf.sql("SELECT * FROM workflows", limit=None)
        assert len(whole.rows) == 30 and not whole.truncated


# -- 1b. the same while another process moves workflows to warm and cold -------------------


async def test_each_workflow_once_while_another_process_moves_them_to_warm_and_cold(
    make_store, tmp_path: Path
):
    store = make_store()
    data = tmp_path / "d"
    async with Tierflow(data, ALL, warm_store=store) as tf:
        ids = await finished(tf, 0, 120)
        waiting = await paused(tf, 30)
        truth_events = await events_of(tf, ids + waiting)
    env = {
        **_env_for(store),
        "SQL_APP_BATCH": "10",
        "SQL_APP_COMMIT_EVENTS": "400",
        "SQL_APP_STEP": "1",
    }
    env.pop("TIERFLOW_CRASH_AT", None)
    tf = Tierflow(data, ALL, warm_store=store)
    tf.open()
    # The other process takes one step (a warm batch, a cold commit) per sample.
    proc = procs.popen("tests.tiering.sql_app", str(data), env=env, stdin=True)
    assert proc.stdin is not None
    seen: set[tuple[tuple[str, int], ...]] = set()
    samples = 0
    check = (
        "SELECT (SELECT count(*) FROM workflows), (SELECT count(DISTINCT workflow_id) "
        "FROM workflows), (SELECT count(*) FROM history), (SELECT count(*) FROM "
        "(SELECT DISTINCT workflow_id, event_id FROM history)), "
        "(SELECT count(DISTINCT workflow_id) FROM history), "
        "(SELECT string_agg(tier || '=' || n, ',' ORDER BY tier) "
        "FROM (SELECT tier, count(*) AS n FROM workflows GROUP BY 1))"
    )
    try:
        while True:
            # Sample only while the other process waits at a step (or once it has finished).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while proc.output_so_far().count("step\n") <= samples and proc.poll() is None:
                assert loop.time() < deadline, "the other process neither stepped nor ended"
                await asyncio.sleep(0.005)
            done = proc.poll() is not None
            (row,) = (await tf.sql(check)).rows
            assert row[:5] == (150, 150, truth_events, truth_events, 150), row
            tiers = {t: int(n) for t, n in (p.split("=") for p in row[5].split(","))}
            assert sum(tiers.values()) == 150
            seen.add(tuple(sorted(tiers.items())))
            samples += 1
            if done:
                break
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write("go\n")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["done"] == {"cold": 120, "hot": 30}
        assert tiers == {"cold": 120, "hot": 30}
        # 12 warm batches, then the cold commits: a state per step.
        assert samples >= 12 and len(seen) >= 12, (samples, seen)
        # Read leases keep a cut's files until its query ends: no query ran twice.
        assert tf.sql_engine.retries == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        await tf.aclose()


# -- reads only what it must; retries when files vanish -----------------------------------


async def test_workflow_id_filter_opens_only_those_hot_files(
    make_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = make_store()
    async with Tierflow(tmp_path / "d", ALL, warm_store=store) as tf:
        ids = await finished(tf, 0, 12)
        live = await paused(tf, 2)  # waiting for a signal: their files still change
        opened: list[list[str]] = []
        real = sql_hot.read_instances

        def spy(base: Path, rows: Any, durability: str, gone: Any = None) -> Any:
            opened.append(sorted(r[0] for r in rows))
            return real(base, rows, durability, gone)

        monkeypatch.setattr(sql_hot, "read_instances", spy)
        cases = [
            ("SELECT count(*) FROM history WHERE workflow_id = ?", [ids[3]], [ids[3]]),
            (
                "SELECT count(*) FROM history WHERE workflow_id IN ($1, $2) AND event_id > 1",
                [ids[1], ids[5]],
                sorted([ids[1], ids[5]]),
            ),
            ("SELECT count(*) FROM workflows", None, None),
            ("SELECT count(*) FROM history", None, sorted(ids + live)),
            (
                "SELECT count(*) FROM history WHERE workflow_id = ? OR event_id = 1",
                [ids[0]],
                sorted(ids + live),
            ),
            ("SELECT count(*) FROM history WHERE workflow_id = ?", [live[1]], [live[1]]),
        ]
        for query, params, expected in cases:
            tf.sql_engine.hot_cache.clear()
            opened.clear()
            first = (await tf.sql(query, params)).rows
            assert opened == ([] if expected is None else [expected]), query
            # Again: finished instances come from the cache, live ones from their files.
            opened.clear()
            assert (await tf.sql(query, params)).rows == first, query
            again = None if expected is None else [w for w in expected if w in live]
            assert opened == ([] if not again else [again]), query
        # result is not in the index: read from the files of completed instances only.
        tf.sql_engine.hot_cache.clear()
        opened.clear()
        rows = (await tf.sql("SELECT workflow_id, result FROM workflows ORDER BY 1")).rows
        completed = [w for w in ids if not w.startswith("gamma")]
        assert opened == [sorted(completed)]
        assert {w for w, r in rows if r is not None} == set(completed)
        opened.clear()
        assert (await tf.sql("SELECT workflow_id, result FROM workflows ORDER BY 1")).rows == rows
        assert opened == []


async def test_query_runs_again_when_warm_files_vanish_under_it(
    make_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after=0)
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        await finished(tf, 0, 30)
        await tf.tier(now=time.time() + 60, to="warm")
        stale = sql_module.read_snapshot(tf.index)  # the cut before a cold move
        await tf.tier(now=time.time() + LATER, to="cold")  # deletes the warm files
        assert store.list("warm") == []
        calls = []
        real = sql_module.read_snapshot

        def first_stale(index: Any) -> Any:
            calls.append(1)
            return stale if len(calls) == 1 else real(index)

        monkeypatch.setattr(sql_module, "read_snapshot", first_stale)
        rows = (await tf.sql("SELECT tier, count(*) FROM history GROUP BY 1")).rows
        assert len(calls) == 2
        assert [t for t, _ in rows] == ["cold"]


# -- 5. confinement ----------------------------------------------------------------------


def listing(root: Path) -> set[str]:
    """Every file under ``root`` (but the hot instance files' churn), and what the cwd holds."""
    out = {f"cwd:{name}" for name in os.listdir(os.getcwd())}
    for dirpath, _, files in os.walk(root):
        if f"{os.sep}hot" in dirpath:
            continue  # instance files and their WAL/SHM churn
        out.update(os.path.join(dirpath, f) for f in files)
        out.add(dirpath)
    return out


async def test_hostile_statements_are_refused_or_cut(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "d"
    policy = TieringPolicy(min_age=0)
    async with Tierflow(data, ALL, warm_store=store, tiering=policy) as tf:
        await finished(tf, 0, 9)
        await tf.tier(now=time.time() + 60, to="warm")
        await finished(tf, 9, 12)
        lake = data / "lake"
        outside = tmp_path / "outside"
        # An archive file the query may read (DuckDB reads local ones itself, allowed file
        # by file): nothing may write it.
        archive = tmp_path / "none" if store.settings.is_s3 else Path(store.root)
        parquet = sorted(p for p in archive.rglob("*.parquet") if "history" in str(p))
        victim = parquet[0] if parquet else tmp_path / "victim.parquet"
        assert parquet or store.settings.is_s3
        copy_over = f"COPY (SELECT 1 AS x) TO '{victim}' (FORMAT parquet, USE_TMP_FILE false)"
        quoted = copy_over.replace("'", "''")
        hostile = [
            copy_over,
            f"SELECT * FROM query('{quoted}')",
            f"SELECT * FROM read_text('{victim.parent}/*')",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM read_text('/etc/hostname')",
            "SELECT * FROM glob('/*')",
            f"SELECT count(*) FROM read_parquet('{lake}/**/*.parquet')",
            f"SELECT count(*) FROM read_parquet('{archive}/**/*.parquet')",
            f"SELECT * FROM read_text('{archive}/**/*.json')",
            "SELECT * FROM read_json('http://127.0.0.1:9/x.json')",
            f"COPY (SELECT * FROM workflows) TO '{outside}.csv'",
            f"COPY workflows TO '{outside}.parquet' (FORMAT parquet)",
            f"ATTACH '{outside}.db' AS x",
            "INSTALL httpfs",
            "LOAD httpfs",
            "PRAGMA threads=1",
            "SET enable_external_access=true",
            "SET lock_configuration=false",
            "RESET memory_limit",
            "CREATE TABLE t AS SELECT * FROM workflows",
            "CREATE TEMP TABLE t (a INTEGER)",
            "CREATE VIEW v AS SELECT 1",
            "DROP VIEW workflows",
            "INSERT INTO workflows SELECT * FROM workflows",
            "SELECT 1; SELECT 2",
            "SELECT 1; DROP VIEW history",
            f"EXPORT DATABASE '{outside}'",
            "CALL pragma_version()",
            "CHECKPOINT",
            "EXPLAIN SELECT 1",
            "SELECT getenv('HOME')",
            "",
        ]
        before = listing(tmp_path)
        contents = {p: p.read_bytes() for p in archive.rglob("*") if p.is_file()}
        legit = "SELECT tier, count(*) FROM workflows GROUP BY 1 ORDER BY 1"
        expected = [("hot", 3), ("warm", 9)]
        for query in hostile:
            with pytest.raises(InvalidArgument) as info:
                await tf.sql(query)
            message = str(info.value)
            assert message.startswith(("SQL refused", "SQL error")), (query, message)
            assert (await tf.sql(legit)).rows == expected, query
        with pytest.raises(QueryTimeout, match="timeout"):
            await tf.sql(
                "SELECT count(*) FROM range(10000000000000) t(a) WHERE a % 7 = 3", timeout=0.3
            )
        assert (await tf.sql(legit)).rows == expected
        cut = await tf.sql("SELECT * FROM range(1000000)", limit=100)
        assert len(cut.rows) == 100 and cut.truncated
        assert (await tf.sql(legit)).rows == expected
        assert listing(tmp_path) == before
        assert {p: p.read_bytes() for p in archive.rglob("*") if p.is_file()} == contents
        assert not outside.with_suffix(".csv").exists()


# -- 6. time travel ----------------------------------------------------------------------


async def test_as_of_before_a_cold_move_does_not_see_its_rows(make_store, tmp_path: Path):
    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after=0)
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        first = await finished(tf, 0, 30)
        await tf.tier(now=time.time() + LATER)
        first_events = await events_of(tf, first)
        snap = tf.cold.table("history", refresh=True).current_snapshot()
        assert snap is not None
        await asyncio.sleep(0.02)
        between = datetime.now(UTC)
        await asyncio.sleep(0.02)
        second = await finished(tf, 30, 50)
        await tf.tier(now=time.time() + LATER)
        all_events = first_events + await events_of(tf, second)
        await finished(tf, 50, 53)  # hot, not in the archive

        count = "SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM history)"
        assert (await tf.sql(count)).rows == [(53, all_events + await events_of(tf, ids(50, 53)))]
        for as_of in (between, between.isoformat(), snap.snapshot_id, str(snap.snapshot_id)):
            assert (await tf.sql(count, as_of=as_of)).rows == [(30, first_events)], as_of
            got = await tf.sql("SELECT DISTINCT workflow_id FROM cold_workflows", as_of=as_of)
            assert sorted(r[0] for r in got.rows) == sorted(first)
        now = (await tf.sql(count, as_of=datetime.now(UTC))).rows
        assert now == [(50, all_events)]  # hot and warm are not part of the archive
        long_ago = datetime(2000, 1, 1, tzinfo=UTC)
        assert (await tf.sql(count, as_of=long_ago)).rows == [(0, 0)]
        with pytest.raises(InvalidArgument, match="no cold snapshot"):
            await tf.sql(count, as_of=12345)
        with pytest.raises(InvalidArgument, match="timezone"):
            await tf.sql(count, as_of=datetime(2026, 1, 1))


def ids(start: int, stop: int) -> list[str]:
    return [f"{WORKFLOWS[i % 3].name}-{i:05d}" for i in range(start, stop)]


def test_cli_sql_formats_and_refusals(tmp_path: Path):
    """`tierflow sql`: json, csv and parquet output over every tier; a write is refused."""
    import pyarrow.parquet as pq

    data = tmp_path / "d"
    env = {
        **os.environ,
        "TIERFLOW_STORAGE_URL": (tmp_path / "lake").as_uri(),
        "PYTHONPATH": str(ROOT),
    }
    populated = procs.run("tests.tiering.tier_app", "populate", str(data), "6", env=env)
    assert populated.returncode == 0, populated.stderr

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = procs.run("tierflow.cli", *args, "--data-dir", str(data), env=env)
        assert (done.returncode == 0) == ok, done.stderr
        return done

    cli("tier", "--min-age", "0", "--cold-after", "0", "--json")
    query = "SELECT tier, count(*) AS n FROM workflows GROUP BY 1 ORDER BY 1"
    doc = json.loads(cli("sql", query, "--format", "json").stdout)
    assert doc["columns"] == ["tier", "n"] and doc["rows"] == [["cold", 6]]
    assert cli("sql", query, "--format", "csv").stdout.splitlines() == ["tier,n", "cold,6"]
    out = tmp_path / "history.parquet"
    cli("sql", "SELECT * FROM history", "--format", "parquet", "--output", str(out))

    async def events() -> int:  # read in-process: one CLI start per workflow cost seconds
        async with Tierflow(data, WORKFLOWS, warm_store=storage) as tf:
            return await events_of(tf, ids(0, 6))

    storage = ObjectStore.from_url(env["TIERFLOW_STORAGE_URL"])
    assert pq.read_table(out).num_rows == asyncio.run(events())
    refused = cli("sql", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", ok=False)
    assert "COPY" in refused.stderr or "copy" in refused.stderr
    assert not (tmp_path / "x.csv").exists()
