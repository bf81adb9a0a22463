"""The tiering job: hot SQLite files -> warm Parquet, on file:// and on a moto S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from tierflow import StorageError, Tierflow, TierflowError, WorkflowContext, workflow
from tierflow.tiering.faults import POINTS
from tierflow.tiering.policy import TieringPolicy, TypePolicy

from tests import procs
from tests.tiering.tier_app import LATER, WORKFLOWS, populate

ROOT = Path(__file__).resolve().parents[2]


async def snapshot(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    """Everything a user can read about each instance, as plain data."""
    out = {}
    for wid in ids:
        info = (await tf.describe(wid)).to_dict()
        info.pop("tier")
        out[wid] = {"info": info, "history": [e.to_dict() for e in await tf.history(wid)]}
    return out


def hot_files(data: Path) -> list[Path]:
    """Instance files that hold an instance (unused spares do not count)."""
    return [p for p in (data / "hot" / "instances").rglob("*.sqlite") if _used(p)]


def _used(p: Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(p)
    try:
        return bool(conn.execute("SELECT count(*) FROM instance").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.timeout(300)
async def test_150_workflows_move_in_one_pass(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        ids = await populate(tf, 150)
        before = await snapshot(tf, ids)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == 150
        assert report.skipped == []
        assert report.files_written <= 6  # 2 datasets x a few finish dates, not one per workflow
        assert report.objects_put == report.files_written + 1
        page = await tf.list(tier="warm", limit=1000)
        assert len(page.items) == 150
        assert await snapshot(tf, ids) == before
        assert all(i.tier == "warm" for i in page.items)
        assert (await tf.describe(ids[0])).tier == "warm"
        assert await tf.get_handle(ids[0]).result() == [f"A0-{i}" for i in range(5)]
        again = await tf.tier(now=time.time() + LATER)
        assert again.workflows_moved == 0
    assert hot_files(data) == []
    manifests = [k for k, _ in store.list("warm/manifests")]
    assert len(manifests) == len(report.batches)


@workflow
async def waits(ctx: WorkflowContext) -> str:
    return await ctx.wait_for_signal("go")


@workflow
async def quick(ctx: WorkflowContext, n: int) -> int:
    return n


async def test_running_and_paused_never_move_and_age_policy(make_store, tmp_path: Path, clock):
    store = make_store()
    policy = TieringPolicy(min_age="1h", per_type={"quick": TypePolicy(min_age="3h")})
    async with Tierflow(
        tmp_path / "d", [waits, quick], warm_store=store, clock=clock, tiering=policy
    ) as tf:
        paused = await tf.run(waits, workflow_id="paused-1")
        done = await tf.run(quick, 1, workflow_id="quick-1")
        assert await paused.status() == "paused"
        report = await tf.tier(now=clock.now() + 7200)  # 2 h: quick needs 3 h
        assert report.workflows_moved == 0
        report = await tf.tier(now=clock.now() + 4 * 3600)
        assert report.workflows_moved == 1
        assert (await tf.describe("quick-1")).tier == "warm"
        assert (await tf.describe("paused-1")).tier == "hot"
        await paused.signal("go", "now")
        assert await paused.result(timeout=10) == "now"
        assert await done.result() == 1


async def test_unusable_store_fails_before_touching_hot(tmp_path: Path):
    from tierflow.warm.storage import ObjectStore

    store = ObjectStore.from_url(
        "s3://no-such-bucket-here/x",
        endpoint="http://127.0.0.1:9",
        access_key="k",
        secret_key="s",
        region="us-east-1",
    )
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=store) as tf:
        ids = await populate(tf, 6)
        before = await snapshot(tf, ids)
        with pytest.raises(StorageError) as err:
            await tf.tier(now=time.time() + LATER)
        assert "no-such-bucket-here" in str(err.value)
        assert await snapshot(tf, ids) == before
        assert len((await tf.list(tier="hot")).items) == 6


async def test_missing_bucket_on_s3(s3_server, tmp_path: Path, monkeypatch):
    from tierflow.warm.storage import ObjectStore

    missing = ObjectStore.from_url(
        "s3://bucket-that-does-not-exist/p",
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
    )
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=missing) as tf:
        await populate(tf, 3)
        with pytest.raises(StorageError, match="bucket-that-does-not-exist"):
            await tf.tier(now=time.time() + LATER)
        assert len((await tf.list(tier="hot")).items) == 3


async def test_wrong_credentials_fail_before_touching_hot(
    s3_server, s3_enforce_auth, tmp_path: Path
):
    from tierflow.warm.storage import ObjectStore

    wrong = ObjectStore.from_url(
        f"s3://{s3_enforce_auth.bucket}/p",
        endpoint=s3_server.endpoint,
        access_key=s3_enforce_auth.access_key,
        secret_key="not-the-secret",
        region=s3_server.region,
    )
    async with Tierflow(tmp_path / "d", WORKFLOWS, warm_store=wrong) as tf:
        ids = await populate(tf, 3)
        before = await snapshot(tf, ids)
        with pytest.raises(StorageError) as err:
            await tf.tier(now=time.time() + LATER)
        assert "secret" in str(err.value) and "not-the-secret" not in str(err.value)
        assert await snapshot(tf, ids) == before


def _env_for(store: Any) -> dict[str, str]:
    env = {**os.environ, "TIERFLOW_STORAGE_URL": store.url}
    s = store.settings
    if s.endpoint:
        env["TIERFLOW_S3_ENDPOINT"] = s.endpoint
        env["AWS_ACCESS_KEY_ID"] = s.access_key or ""
        env["AWS_SECRET_ACCESS_KEY"] = s.secret_key or ""
        env["TIERFLOW_S3_REGION"] = s.region
    return env


def _run(
    mode: str, data: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return procs.run("tests.tiering.tier_app", mode, str(data), *args, env=env, timeout=180)


async def outcome(tf: Tierflow, workflow_id: str) -> tuple[Any, ...]:
    """What ``result()`` gives: the value, or the error's type and message."""
    try:
        return ("ok", await tf.result(workflow_id, timeout=10))
    except TierflowError as exc:
        return ("error", type(exc).__name__, str(exc))


async def readable(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    """Everything ``snapshot`` reads, plus each result."""
    return {"snapshot": await snapshot(tf, ids), "results": {w: await outcome(tf, w) for w in ids}}


async def assert_readable_exactly_once(
    tf: Tierflow, ids: list[str], before: dict[str, Any]
) -> dict[str, int]:
    """Each workflow reads as ``before`` and counts in exactly one tier; return the tier counts."""
    assert await readable(tf, ids) == before
    listed = [i.workflow_id for i in (await tf.list(limit=len(ids) + 100)).items]
    assert sorted(listed) == sorted(ids)  # none missing, none twice
    rows = tf.index.execute("SELECT tier, count(*) FROM instances GROUP BY tier", ())
    per_tier = {str(tier): int(n) for tier, n in rows}
    assert sum(per_tier.values()) == len(ids), per_tier
    [(distinct,)] = tf.index.execute("SELECT count(DISTINCT workflow_id) FROM instances", ())
    assert distinct == len(ids)
    described: dict[str, int] = {}
    for wid in ids:
        tier = (await tf.describe(wid)).tier
        described[tier] = described.get(tier, 0) + 1
    assert described == per_tier  # reads go to the tier the index names
    return per_tier


def assert_manifests_list_the_files(store: Any, done: set[str]) -> None:
    """Each done batch has a published manifest; together they list every data object."""
    manifests = {k for k, _ in store.list("warm/manifests")}
    assert manifests == {f"warm/manifests/batch-{b}.json" for b in done}
    listed: dict[str, int] = {}
    for key in manifests:
        for f in json.loads(store.get(key))["files"]:
            listed[f["key"]] = f["bytes"]
    stored = dict(store.list("warm"))
    assert listed == {k: n for k, n in stored.items() if k.endswith(".parquet")}


# Every point on file://. On S3, a kill inside the upload (partial objects to clean up) and
# one after the commit (originals still to delete): the points between differ from these
# only in the move's own bookkeeping, which does not depend on the store.
KILL_CASES = [("file", p) for p in POINTS] + [("s3", "mid-write"), ("s3", "after-commit")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("backend", "point"), KILL_CASES)
async def test_kill_at_each_point_then_rerun(make_store, tmp_path: Path, point: str):
    store = make_store()
    data = tmp_path / "data"
    env = _env_for(store)
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        await populate(tf, 60)  # in this process: only the tiering passes need their own
        ids = [i.workflow_id for i in (await tf.list(limit=100)).items]
        before = await readable(tf, ids)
    killed = _run("tier", data, {**env, "TIERFLOW_CRASH_AT": point})
    assert killed.returncode == -9, killed.stderr
    # Between the kill and the repair: every workflow readable, once, as before.
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        per_tier = await assert_readable_exactly_once(tf, ids, before)
        [batch] = (await tf.tiering_status()).batches
    committed = point == "after-commit"
    assert per_tier == {"warm" if committed else "hot": len(ids)}
    assert batch.state == ("committed" if committed else "writing")
    # Readers only see committed batches: the manifest is published after the commit.
    assert store.list("warm/manifests") == []
    rerun = _run("tier", data, env)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout.splitlines()[-1])
    assert batch.batch_id in report["recovered_batches"]
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": len(ids)}
        status = await tf.tiering_status()
    assert hot_files(data) == []
    # No orphans: every data object belongs to a batch the ledger says is done.
    done = {b.batch_id for b in status.batches if b.state == "done"}
    assert status.instances == {"warm": len(ids)}
    assert sum(b.workflows or 0 for b in status.batches if b.state == "done") == len(ids)
    assert all(b.events for b in status.batches if b.state == "done")
    for key, _ in store.list("warm", unfinished=True):
        name = key.rsplit("/", 1)[-1]
        assert any(bid in name for bid in done), (key, point, report)
    # The rerun finished the committed batch (published its manifest) or wrote a new one.
    assert done == ({batch.batch_id} if committed else set(report["batches"]))
    assert_manifests_list_the_files(store, done)
