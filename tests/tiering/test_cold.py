"""The cold tier: hot → warm → cold Iceberg tables, read back exactly, on file:// and moto S3.

The README's promises ("The cold tier"): every history and result of an archived workflow
reads back identical to what hot returned; the warm originals are gone; each Iceberg
snapshot names the warm batches it consumed; `describe().tier == "cold"`; a pass moves
every old-enough batch, several per commit, bounded by `max_events_per_cold_commit`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tierflow import InvalidArgument, StorageError, Tierflow
from tierflow.cold.status import ColdStatus
from tierflow.cold.writer import BATCHES_PROPERTY, COMMIT_ID_PROPERTY
from tierflow.tiering.policy import TieringPolicy, TypePolicy
from tierflow.warm.storage import ObjectStore

from tests import procs
from tests.tiering.test_tiering import ROOT, snapshot
from tests.tiering.tier_app import LATER, WORKFLOWS, alpha, populate

pytestmark = pytest.mark.timeout(300)

WEEK = 8 * 86400.0


async def read_all(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    """:func:`snapshot` of every id, 16 reads in flight (a remote store answers in parallel)."""
    out: dict[str, Any] = {}
    for i in range(0, len(ids), 16):
        parts = await asyncio.gather(*(snapshot(tf, [w]) for w in ids[i : i + 16]))
        for part in parts:
            out.update(part)
    return out


def cold_summaries(tf: Tierflow, dataset: str) -> list[dict[str, str]]:
    """The tierflow properties of every snapshot of one cold table, oldest first."""
    table = tf.cold.table(dataset, refresh=True)
    out = []
    for snap in table.metadata.snapshots:
        props = snap.summary.additional_properties if snap.summary else {}
        out.append({k: v for k, v in props.items() if k.startswith("tierflow.")})
    return out


async def test_120_workflows_in_4_batches_hot_warm_cold_read_back_identical(
    make_store, tmp_path: Path
):
    # 4 warm batches into one Iceberg commit per table: the point holds at any size, and the
    # same checks ran at 2,000 workflows (500 per batch) for 2 min on 2 cores; the size is
    # the benches' job (tests/bench: tiering and cold phases).
    N = 120
    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after="7d", max_workflows_per_batch=30)
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=store, tiering=policy) as tf:
        ids = await populate(tf, N)
        before = await snapshot(tf, ids)
        results = {w: (await tf.describe(w)).result for w in ids}

        warm = await tf.tier(now=time.time() + LATER)
        assert warm.workflows_moved == N
        assert len(warm.batches) == 4
        assert warm.cold is not None and warm.cold.commits == []  # not a week old yet
        assert [k for k, _ in store.list("warm/manifests")]

        report = await tf.tier(now=time.time() + WEEK)
        cold = report.cold
        assert report.workflows_moved == 0
        assert cold is not None
        assert cold.workflows_moved == N
        assert cold.events_moved == sum(len(b["history"]) for b in before.values())
        assert sorted(cold.batches) == sorted(warm.batches)
        assert len(cold.commits) == 1  # many warm batches, one Iceberg commit per table

        assert tf.index.count_by_tier() == {"cold": N}
        assert store.list("warm") == []  # data files and manifests of every batch are gone
        assert await read_all(tf, ids) == before
        assert {i.tier for i in (await tf.list(limit=N + 1)).items} == {"cold"}
        sample = [w for w in ids if not w.startswith("gamma")][::8]
        assert {w: await tf.get_handle(w).result() for w in sample} == {
            w: results[w] for w in sample
        }
        for dataset in ("workflows", "history"):
            (summary,) = cold_summaries(tf, dataset)
            assert summary[COMMIT_ID_PROPERTY] == cold.commits[0]
            assert sorted(summary[BATCHES_PROPERTY].split(",")) == sorted(warm.batches)

        # Nothing left to do: a second pass moves nothing and adds no snapshot.
        again = await tf.tier(now=time.time() + WEEK)
        assert again.cold is not None and again.cold.workflows_moved == 0
        assert len(cold_summaries(tf, "history")) == 1


async def test_list_query_and_results_work_on_cold(make_store, tmp_path: Path):
    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after=0)
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=store, tiering=policy) as tf:
        ids = await populate(tf, 30)
        report = await tf.tier(now=time.time() + 60)
        assert report.workflows_moved == 30 and report.cold.workflows_moved == 30
        page = await tf.list(tier="cold", limit=100)
        assert sorted(i.workflow_id for i in page.items) == sorted(ids)
        typed = await tf.list(workflow_type=alpha, limit=100)
        assert {i.tier for i in typed.items} == {"cold"} and len(typed.items) == 10
        assert await tf.result("alpha-00000") == [f"A0-{i}" for i in range(5)]
        info = await tf.describe("beta-00001")
        assert info.result["unicode"] == "ünïcødé ✓ 𝄞"
        assert info.attributes == {} and info.status == "completed"
        failed = await tf.describe("gamma-00002")
        assert failed.status == "failed" and "bad input g2" in json.dumps(failed.error)
        assert await tf.status("gamma-00002") == "failed"


async def test_commit_size_bounds_each_commit_but_a_pass_takes_every_batch(
    make_store, tmp_path: Path
):
    store = make_store()
    policy = TieringPolicy(
        min_age=0, cold_after=0, max_workflows_per_batch=20, max_events_per_cold_commit=150
    )
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=store, tiering=policy) as tf:
        ids = await populate(tf, 90)
        before = await snapshot(tf, ids)
        warm = await tf.tier(now=time.time() + 60, to="warm")
        assert warm.cold is None and len(warm.batches) == 5
        report = await tf.tier(now=time.time() + 60, to="cold")
        cold = report.cold
        assert report.workflows_moved == 0 and report.batches == []
        assert cold.workflows_moved == 90
        # Every batch has > 75 events: the 150-event bound makes one or two per commit.
        assert 3 <= len(cold.commits) <= 5
        assert sorted(cold.batches) == sorted(warm.batches)
        assert len(cold_summaries(tf, "workflows")) == len(cold.commits)
        assert store.list("warm") == []
        assert await snapshot(tf, ids) == before


async def test_cold_after_per_type_holds_a_batch_until_every_type_is_old_enough(
    make_store, tmp_path: Path, clock
):
    store = make_store()
    policy = TieringPolicy(
        min_age=0, cold_after="1d", per_type={"beta": TypePolicy(cold_after="30d")}
    )
    async with Tierflow(
        tmp_path / "d", WORKFLOWS, warm_store=store, tiering=policy, clock=clock
    ) as tf:
        await tf.run(alpha, 1, workflow_id="alpha-only")
        first = await tf.tier(now=clock.now() + 60, to="warm")
        await populate(tf, 3)  # alpha, beta, gamma in a second batch
        second = await tf.tier(now=clock.now() + 60, to="warm")
        assert len(first.batches) == len(second.batches) == 1
        report = await tf.tier(now=clock.now() + 2 * 86400, to="cold")
        assert report.cold.batches == first.batches  # the batch with beta waits
        assert (await tf.describe("alpha-only")).tier == "cold"
        assert (await tf.describe("beta-00001")).tier == "warm"
        later = await tf.tier(now=clock.now() + 31 * 86400, to="cold")
        assert later.cold.batches == second.batches
        assert tf.index.count_by_tier() == {"cold": 4}


async def test_cold_after_none_never_moves_to_cold(make_store, tmp_path: Path):
    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after=None)
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=store, tiering=policy) as tf:
        await populate(tf, 3)
        report = await tf.tier(now=time.time() + 1e6)
        assert report.workflows_moved == 3 and report.cold is None
        assert tf.index.count_by_tier() == {"warm": 3}


def test_policy_rejects_bad_cold_settings():
    with pytest.raises(InvalidArgument):
        TieringPolicy(cold_after="soon")
    with pytest.raises(InvalidArgument):
        TieringPolicy(per_type={"x": TypePolicy(cold_after=-1)})
    with pytest.raises(InvalidArgument):
        TieringPolicy(max_events_per_cold_commit=0)


async def test_tier_to_must_name_a_tier(tmp_path: Path):
    async with Tierflow(tmp_path / "d", WORKFLOWS) as tf:
        with pytest.raises(InvalidArgument, match="'warm' or 'cold'"):
            await tf.tier(to="glacier")  # type: ignore[arg-type]


def test_cli_tier_to_warm_then_cold_and_cold_status(store_url: str, tmp_path: Path, monkeypatch):
    data = tmp_path / "d"
    monkeypatch.setenv("TIERFLOW_STORAGE_URL", store_url)
    env = _env_for_url(store_url)
    app = "tests.tiering.tier_app"
    populated = procs.run(app, "populate", str(data), "9", env=env)
    assert populated.returncode == 0, populated.stderr

    def cli(*args: str) -> dict[str, Any]:
        out = procs.run("tierflow.cli", *args, "--data-dir", str(data), "--json", env=env)
        assert out.returncode == 0, out.stderr
        parsed: dict[str, Any] = json.loads(out.stdout)
        return parsed

    warm = cli("tier", "--min-age", "0", "--to", "warm")
    assert warm["workflows_moved"] == 9 and warm["cold"] is None
    cold = cli("tier", "--cold-after", "0", "--to", "cold")
    assert cold["workflows_moved"] == 0 and cold["cold"]["workflows_moved"] == 9
    first = sorted(cold["cold"]["batches"])
    assert len(cold["cold"]["commits"]) == 1

    # A second, small cold commit (made in-process: quicker than three more CLI runs), so
    # maintenance has small files to rewrite, snapshots to expire and files to delete.
    async def second_commit() -> tuple[list[str], ColdStatus, dict[str, list[int]]]:
        policy = TieringPolicy(min_age=0, cold_after=0)
        async with Tierflow(data, WORKFLOWS, tiering=policy) as tf:
            for i in range(3):
                await tf.run(WORKFLOWS[i], i, workflow_id=f"second-{tmp_path.name}-{i}")
            report = await tf.tier(now=time.time() + 60)
            assert report.workflows_moved == 3 and report.cold.workflows_moved == 3
            rows = tf.index.execute(
                "SELECT date(finished_at / 1000000, 'unixepoch'), batch_id FROM instances", ()
            )
            days: dict[str, list[int]] = {}
            for day, batch in rows:  # per finished day: which commit (0, 1) holds workflows
                days.setdefault(day, []).append(0 if batch in first else 1)
            return report.cold.batches, await tf.cold_status(), days

    second, status, days = asyncio.run(second_commit())
    assert not set(second) & set(first)
    for name in ("workflows", "history"):
        assert status.tables[name].snapshots == 2
    assert status.tables["workflows"].rows == 12
    assert status.warehouse == f"{store_url.rstrip('/')}/cold"
    # The CLI prints the same status, as JSON.
    assert cli("cold", "status") == status.to_dict()
    # Each commit writes one file per finished day per table; a day with two is rewritten
    # (all of them but once in a run across midnight UTC).
    files_per_day = {day: len(set(commits)) for day, commits in days.items()}
    merged = [day for day, n in files_per_day.items() if n > 1]
    assert sum(files_per_day.values()) == status.tables["workflows"].data_files
    store = ObjectStore.from_url(store_url)
    keys_before = {k for k, _ in store.list("cold")}

    maintained = cli("cold", "maintain", "--retention", "0", "--keep", "1", "--orphan-grace", "0")
    rewrite = maintained["rewrite"]
    assert set(rewrite["snapshots"]) == ({"workflows", "history"} if merged else set())
    assert rewrite["partitions"] == 2 * len(merged)
    assert rewrite["removed_files"] == 2 * sum(files_per_day[d] for d in merged)
    assert rewrite["added_files"] == 2 * len(merged)
    if len(days) == 1:  # every row was rewritten
        total = sum(status.tables[n].rows for n in ("workflows", "history"))
        assert rewrite["rows"] == total
    # Every snapshot but the current one is expired (retention 0, keep 1).
    per_table = 2 + (1 if merged else 0) - 1
    assert {n: len(ids) for n, ids in maintained["expired"].items()} == {
        "workflows": per_table,
        "history": per_table,
    }
    orphans = maintained["orphans"]
    keys_after = {k for k, _ in store.list("cold")}
    assert orphans["deleted"] and set(orphans["deleted"]) == keys_before - keys_after
    assert (orphans["kept_young"], orphans["missing"], orphans["dry_run"]) == ([], [], False)

    after = cli("cold", "status")
    for name in ("workflows", "history"):
        table = after["tables"][name]
        assert table["snapshots"] == 1
        assert table["snapshot_id"] not in maintained["expired"][name]
        assert table["data_files"] == len(days)
        assert table["rows"] == status.tables[name].rows
    assert after["tables"]["workflows"]["rows"] == 12


def _env_for_url(store_url: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["TIERFLOW_STORAGE_URL"] = store_url
    env["PYTHONPATH"] = str(ROOT)
    return env


async def test_maintenance_after_many_small_cold_commits(make_store, tmp_path: Path, clock):
    """Many small cold commits, then `maintain_cold`: few files, same reads, no stray file."""
    from tierflow.cold.maintenance import referenced_files
    from tierflow.cold.writer import store_key

    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after=0)
    async with Tierflow(
        tmp_path / "d", WORKFLOWS, warm_store=store, tiering=policy, clock=clock
    ) as tf:
        ids: list[str] = []
        for round_ in range(6):
            for i in range(3):
                wf = WORKFLOWS[i]
                h = await tf.run(wf, i, workflow_id=f"{wf.name}-r{round_}-{i}")
                ids.append(h.workflow_id)
            report = await tf.tier(now=clock.now() + 60)
            assert len(report.cold.commits) == 1
        before = await read_all(tf, ids)
        assert len(tf.cold.table("history", refresh=True).metadata.snapshots) == 6
        done = await tf.maintain_cold(
            now=time.time() + 1, snapshot_retention=0, keep_snapshots=1, orphan_grace=0
        )
        assert done.rewrite is not None and done.rewrite.removed_files >= 12
        # One new file per partition (finished day) and table, from six small ones each.
        assert done.rewrite.added_files == done.rewrite.partitions >= 2
        assert set(done.rewrite.snapshots) == {"workflows", "history"}
        assert {n: len(v) for n, v in done.expired.items()} == {"workflows": 6, "history": 6}
        assert done.orphans.deleted and (done.orphans.kept_young, done.orphans.missing) == ([], [])
        assert await read_all(tf, ids) == before
        for dataset in ("workflows", "history"):
            table = tf.cold.table(dataset, refresh=True)
            assert len(table.metadata.snapshots) == 1
            files = [t.file for t in table.scan().plan_files()]
            assert len(files) <= 2
            prefix = store_key(store.url, table.location())
            listed = {k for k, _ in store.list(prefix)}
            wanted = {store_key(store.url, loc) for loc in referenced_files(table)}
            assert listed == wanted


async def test_a_read_that_raced_a_cold_move_follows_the_instance_to_cold(
    make_store, tmp_path: Path
):
    """A reader that looked the instance up in warm just before another process moved it to
    cold (and deleted the warm files) reads it from cold instead of failing."""
    store = make_store()
    policy = TieringPolicy(min_age=0, cold_after=0)
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=store, tiering=policy) as tf:
        await tf.run(alpha, 7, workflow_id="raced")
        await tf.tier(now=time.time() + 60, to="warm")
        stale = tf.index.get("raced")
        assert stale is not None and stale.tier == "warm"
        before = await tf.history("raced")
        await tf.tier(now=time.time() + 60, to="cold")
        assert store.list("warm") == []
        assert await tf.engine.router.history(stale) == before
        assert (await tf.engine.router.describe(stale)).tier == "cold"


async def test_a_pass_with_nothing_to_move_opens_no_catalog(make_store, tmp_path: Path):
    """Hot- or warm-only deployments never touch the catalog: nothing old enough, no I/O."""
    store = make_store()
    missing = tmp_path / "nowhere" / "catalog.sqlite"
    policy = TieringPolicy(min_age=0, cold_after="7d")
    async with Tierflow(
        tmp_path / "d",
        WORKFLOWS,
        warm_store=store,
        tiering=policy,
        catalog_url=f"sqlite:///{missing}",
    ) as tf:
        await populate(tf, 3)
        report = await tf.tier(now=time.time() + 60)
        assert report.workflows_moved == 3 and report.cold.commits == []
        assert store.list("cold") == []
        with pytest.raises(StorageError, match="does not exist"):
            await tf.tier(now=time.time() + WEEK)  # now something is old enough
        assert tf.index.count_by_tier() == {"warm": 3}
