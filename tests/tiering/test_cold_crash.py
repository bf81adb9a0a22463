"""The warm → cold move under crashes: SIGKILL at each crash point, in the middle of
writing the Iceberg data files, and two cold-move processes at once; on file:// and on a moto
S3 server.

After the repair every workflow is cold exactly once, reads as it did while hot, the Iceberg
tables hold each row once, the warm files are gone, and every file under the tables' locations
is referenced by their metadata (no orphan).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tierflow import Tierflow
from tierflow.cold.tables import identifier
from tierflow.cold.writer import COMMIT_ID_PROPERTY, batches_of, find_commit, write_uuid
from tierflow.warm.storage import ObjectStore

from tests import procs
from tests.tiering.cold_app import POLICY
from tests.tiering.test_tiering import _env_for, assert_readable_exactly_once, readable
from tests.tiering.tier_app import LATER, WORKFLOWS, populate

pytestmark = pytest.mark.timeout(150)

ROOT = Path(__file__).resolve().parents[2]

KILL_POINTS = (
    "cold-after-claim",
    "cold-after-history",
    "cold-after-workflows",
    "cold-after-index-commit",
)


# -- helpers (test_cold_readers imports them) ---------------------------------------------


def run_app(
    mode: str, data: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``tests.tiering.cold_app`` to completion (or its death)."""
    return procs.run("tests.tiering.cold_app", mode, str(data), *args, env=env)


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


async def prepare(
    store: ObjectStore, data: Path, n: int, **policy: Any
) -> tuple[list[str], dict[str, Any], set[str]]:
    """Run ``n`` workflows, read them all (the originals), tier them to warm.

    Returns:
        The ids, what they read as before tiering, and the warm batch ids.
    """
    tiering = POLICY if not policy else _policy(**policy)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=tiering) as tf:
        ids = await populate(tf, n)
        before = await readable(tf, ids)
        report = await tf.tier(now=time.time() + LATER, to="warm")
        assert report.workflows_moved == n
        assert tf.index.count_by_tier() == {"warm": n}
    return ids, before, set(report.batches)


def _policy(**kw: Any) -> Any:
    from dataclasses import replace

    return replace(POLICY, **kw)


def warm_batches_in_store(store: ObjectStore) -> set[str]:
    """Batch ids whose manifest is published in the warm store."""
    out = set()
    for key, _ in store.list("warm/manifests"):
        name = key.rsplit("/", 1)[-1]
        assert name.startswith("batch-") and name.endswith(".json"), key
        out.add(name[len("batch-") : -len(".json")])
    return out


def table_rows(tf: Tierflow, dataset: str) -> Any:
    """Every row of one cold table, through pyiceberg's own scan (fresh metadata)."""
    return tf.cold.table(dataset, refresh=True).scan().to_arrow()


def assert_each_row_once(tf: Tierflow, before: dict[str, Any]) -> None:
    """The workflows table holds each workflow once, the history table each event once."""
    ids = sorted(before["snapshot"])
    workflows = table_rows(tf, "workflows")
    per_id = Counter(workflows.column("workflow_id").to_pylist())
    assert per_id == Counter(ids), {k: n for k, n in per_id.items() if n != 1}
    assert set(workflows.column("tier").to_pylist()) == {"cold"}
    history = table_rows(tf, "history")
    events = Counter(history.column("workflow_id").to_pylist())
    assert events == {w: len(before["snapshot"][w]["history"]) for w in ids}
    keys = list(
        zip(
            history.column("workflow_id").to_pylist(),
            history.column("event_id").to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == len(set(keys))


def referenced(table: Any) -> tuple[set[str], set[str]]:
    """Locations the table's metadata references: (current, earlier metadata files).

    Current: the metadata file, and for every snapshot its manifest list, its manifests and
    every data file a manifest names (added, existing or deleted).
    """
    md = table.metadata
    refs = {table.metadata_location}
    all_files = table.inspect.all_files()
    refs |= set(all_files.column("file_path").to_pylist())
    refs |= set(table.inspect.all_manifests().column("path").to_pylist())
    for snap in md.snapshots:
        refs.add(snap.manifest_list)
        for manifest in snap.manifests(table.io):
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                refs.add(entry.data_file.file_path)
    earlier = {e.metadata_file for e in md.metadata_log}
    return refs, earlier


def assert_no_orphans(tf: Tierflow) -> list[str]:
    """Every object under the cold tables' locations is referenced by their metadata.

    Metadata files of earlier table versions count when the metadata log lists them.
    Returns the stored keys (for further checks).
    """
    store = tf.cold.store
    root = store.url.rstrip("/") + "/"
    known: set[str] = set()
    prefixes = []
    for dataset in ("workflows", "history"):
        table = tf.cold.table(dataset, refresh=True)
        refs, earlier = referenced(table)
        known |= refs | earlier
        location = table.location().rstrip("/")
        assert location.startswith(root), (location, root)
        prefixes.append(location[len(root) :])
    stored = [k for k, _ in store.list("cold", unfinished=True)]
    for key in stored:
        assert any(key.startswith(p + "/") for p in prefixes), f"{key} outside the tables"
    orphans = [k for k in stored if root + k not in known]
    assert orphans == [], f"orphans under the cold tables: {orphans}"
    return stored


def assert_summaries_name_the_batches(tf: Tierflow, batches: set[str]) -> None:
    """In each table, the snapshots that tierflow commits made list every batch exactly once."""
    for dataset in ("workflows", "history"):
        table = tf.cold.table(dataset, refresh=True)
        listed: list[str] = []
        commits: list[str] = []
        for snap in table.metadata.snapshots:
            named = batches_of(snap)
            assert snap.summary is not None
            commit = snap.summary.additional_properties.get(COMMIT_ID_PROPERTY)
            if named:
                assert commit is not None, snap
                commits.append(commit)
            listed.extend(named)
        assert sorted(listed) == sorted(batches), (dataset, listed, batches)
        assert len(commits) == len(set(commits)), commits  # one snapshot per commit and table


async def assert_all_cold(
    store: ObjectStore, data: Path, ids: list[str], before: dict[str, Any], batches: set[str]
) -> None:
    """The end state of a repaired pass: cold once, readable as before, nothing left over."""
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"cold": len(ids)}
        assert_each_row_once(tf, before)
        assert_summaries_name_the_batches(tf, batches)
        [(pending,)] = tf.index.execute(
            "SELECT count(*) FROM cold_commits WHERE state != 'done'", ()
        )
        assert pending == 0
        assert store.list("warm", unfinished=True) == []
        assert_no_orphans(tf)


def commit_state(data: Path) -> list[tuple[str, str, list[str]]]:
    """The cold ledger's commits: (commit id, state, batch ids), oldest first."""
    import sqlite3

    conn = sqlite3.connect(data / "hot" / "index.sqlite")
    try:
        rows = conn.execute(
            "SELECT commit_id, state, batch_ids FROM cold_commits ORDER BY created_at"
        ).fetchall()
    finally:
        conn.close()
    return [(c, s, json.loads(b)) for c, s, b in rows]


# -- 1. SIGKILL at each crash point, reads in between, the rerun repairs ---------------


# Every point on file://; on S3 one between the two Iceberg commits and one after the index
# flip (warm originals left to delete), the two whose leftovers live in the bucket.
KILL_CASES = [("file", p) for p in KILL_POINTS] + [
    ("s3", "cold-after-history"),
    ("s3", "cold-after-index-commit"),
]


@pytest.mark.parametrize(("backend", "point"), KILL_CASES)
async def test_kill_at_each_cold_point_then_rerun(make_store, tmp_path: Path, point: str):
    store = make_store()
    data = tmp_path / "data"
    env = _env_for(store)
    ids, before, batches = await prepare(store, data, 24, max_workflows_per_batch=8)
    assert len(batches) == 3
    assert warm_batches_in_store(store) == batches
    warm_keys = store.list("warm")

    killed = run_app("cold", data, {**env, "TIERFLOW_CRASH_AT": point})
    assert killed.returncode == -9, killed.stderr
    [(commit_id, state, claimed)] = commit_state(data)
    flipped = point == "cold-after-index-commit"
    assert state == ("committed" if flipped else "writing")
    assert set(claimed) == batches

    # Between the kill and the repair: every workflow reads as before, from the tier the
    # index names (warm until the flip, cold after it), and the warm files are untouched.
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        per_tier = await assert_readable_exactly_once(tf, ids, before)
        assert per_tier == {"cold" if flipped else "warm": len(ids)}
        landed = {}
        for dataset in ("history", "workflows"):
            landed[dataset] = tf.cold.catalog.table_exists(identifier(dataset)) and (
                find_commit(tf.cold.table(dataset), commit_id) is not None
            )
    expect_history = point != "cold-after-claim"
    expect_workflows = point in ("cold-after-workflows", "cold-after-index-commit")
    assert landed == {"history": expect_history, "workflows": expect_workflows}
    assert store.list("warm") == warm_keys

    rerun = run_app("cold", data, env)
    report = last_json(rerun)
    assert report["recovered_commits"] == [commit_id]
    assert report["commits"] == ([] if flipped else [commit_id])
    assert commit_state(data) == [(commit_id, "done", claimed)]
    await assert_all_cold(store, data, ids, before, batches)


# -- 2. Two cold-move processes at once -------------------------------------------------


async def test_two_cold_move_processes_at_once(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    ids, before, batches = await prepare(store, data, 24, max_workflows_per_batch=4)
    assert len(batches) == 6
    # Small commits: each pass makes several, so the two processes could interleave them.
    env = {**_env_for(store), "COLD_APP_EVENTS_PER_COMMIT": "30"}
    children = [procs.popen("tests.tiering.cold_app", "cold", str(data), env=env) for _ in range(2)]
    outs = []
    for p in children:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.splitlines()[-1]))
    moved = [b for r in outs for b in r["batches"]]
    assert sorted(moved) == sorted(batches)  # each batch moved by exactly one process
    assert sum(r["workflows_moved"] for r in outs) == len(ids)
    commits = commit_state(data)
    assert len(commits) > 1
    assert sorted(b for _, _, bs in commits for b in bs) == sorted(batches)
    await assert_all_cold(store, data, ids, before, batches)


# -- 3. SIGKILL in the middle of writing the data files ----------------------------------


async def test_kill_while_writing_data_files_leaves_no_orphan(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    ids, before, batches = await prepare(store, data, 30)
    env = _env_for(store)
    killed = run_app(
        "cold",
        data,
        {
            **env,
            "COLD_APP_SMALL_FILES": "1",  # several data files per table and commit
            "COLD_APP_KILL_IN_DATA_FILE": "3",
            "PYICEBERG_MAX_WORKERS": "1",  # one file after another: files 1-2 are complete
        },
    )
    assert killed.returncode == -9, killed.stderr
    [(commit_id, state, _)] = commit_state(data)
    assert state == "writing"
    marker = str(write_uuid(commit_id, "history"))
    left = [k for k, _ in store.list("cold", unfinished=True) if marker in k]
    # file:// keeps the torn third file under its final name; an S3 PUT never started.
    assert len(left) == (3 if store.url.startswith("file:") else 2), left

    # The rerun writes with the default layout: one file per partition, so the leftovers'
    # names are not all overwritten; recovery has to delete them.
    rerun = run_app("cold", data, env)
    report = last_json(rerun)
    assert report["recovered_commits"] == [commit_id]
    assert report["leftovers_deleted"] == len(left)
    await assert_all_cold(store, data, ids, before, batches)


# -- the orphan bug on its own: no crash, two passes in two processes --------------------


async def test_second_pass_in_a_new_process_leaves_no_orphan(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    env = _env_for(store)
    _, _, first = await prepare(store, data, 6)
    assert last_json(run_app("cold", data, env))["batches"] == sorted(first)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        for i in range(6):
            await tf.run(WORKFLOWS[i % 3], i, workflow_id=f"second-{i}")
        second = set((await tf.tier(now=time.time() + LATER, to="warm")).batches)
    assert last_json(run_app("cold", data, env))["batches"] == sorted(second)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        assert tf.index.count_by_tier() == {"cold": 12}
        assert_summaries_name_the_batches(tf, first | second)
        assert_no_orphans(tf)
