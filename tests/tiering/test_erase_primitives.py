"""The warm and cold erasure primitives on real tiers (file:// and a moto S3 server).

Workflows keep a unique secret in their input, step results, attributes and result; they
are tiered to warm (and to cold), then one is erased with ``erase_from_warm`` /
``erase_rows``. Afterwards the forensic scanner finds neither its id nor its secret in any
object of the store, raw or decoded; the only copies left are the instance index's rows,
which the compliance service erases after these primitives. Every other workflow reads as
before, batches verify against their new manifests, and reruns change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tierflow import InvalidArgument, ManualClock, StorageError, Tierflow
from tierflow.cold.erase import erase_rows
from tierflow.tiering.cold_ledger import ColdLedger
from tierflow.tiering.compliance.warm import erase_from_warm
from tierflow.tiering.leases import ReadLeases
from tierflow.tiering.policy import TieringPolicy
from tierflow.tiering.warm_ledger import WarmLedger
from tierflow.warm import reader
from tierflow.warm.storage import ObjectStore
from tierflow.warm.writer import BatchManifest, manifest_key

from tests.tiering.erase_app import LATER, WORKFLOWS, finished_dates, populate, secret_of
from tests.tiering.forensics import find_marker
from tests.tiering.test_cold_crash import assert_no_orphans

pytestmark = pytest.mark.timeout(120)

POLICY = TieringPolicy(min_age=0, cold_after="1h")


async def reads(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    """What a user reads of each workflow (the tier aside)."""
    out = {}
    for wid in ids:
        info = (await tf.describe(wid)).to_dict()
        info.pop("tier")
        out[wid] = {"info": info, "history": [e.to_dict() for e in await tf.history(wid)]}
    return out


def outside_index(found: list[str]) -> list[str]:
    """Findings anywhere but the instance index (whose rows the compliance service erases)."""
    return [f for f in found if "/hot/index.sqlite" not in f]


def assert_warm_batches_verify(tf: Tierflow, store: ObjectStore) -> set[str]:
    """Every live batch verifies; the store holds exactly their files and manifests."""
    ledger = WarmLedger(tf.index)
    expected: set[str] = set()
    for batch in ledger.in_state("committed", "done"):
        assert batch.manifest is not None
        manifest = BatchManifest.from_json(batch.manifest)
        reader.verify(store.fs, store.root, manifest)
        assert store.get(manifest_key(batch.batch_id)) == batch.manifest
        expected |= {*manifest.keys(), manifest_key(batch.batch_id)}
    assert {k for k, _ in store.list("warm", unfinished=True)} == expected
    [(pending,)] = tf.index.execute("SELECT count(*) FROM warm_erasures", ())
    assert pending == 0
    return expected


async def test_warm_erasure_leaves_no_trace(
    make_store: Callable[..., ObjectStore], tmp_path: Path, clock: ManualClock
) -> None:
    store = make_store()
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS, warm_store=store, clock=clock, tiering=POLICY) as tf:
        ids = await populate(tf, clock, 12)
        moved = await tf.tier(now=clock.now() + LATER, to="warm")
        assert len(moved.batches) == 1 and moved.files_written == 6  # 3 days x 2 datasets
        before = await reads(tf, ids)
        victim = ids[4]  # finished on day 1
        others = [w for w in ids if w != victim]
        assert any("/warm/" in f for f in find_marker(data, store, secret_of(victim)))
        count = "SELECT count(*) FROM warm_history WHERE workflow_id = ?"
        assert (await tf.sql(count, [victim])).rows[0][0] == len(before[victim]["history"])

        done = erase_from_warm(tf.index, store, [victim])
        print(f"warm erasure: {done}")
        # Only the two files of the victim's day were read and rewritten; the other four
        # stay as they were, listed under their old keys by the new manifest.
        assert done.files_read == 2 and done.files_rewritten == 2
        assert done.batches_rewritten == 1 and done.objects_deleted == 3  # 2 files + manifest
        assert done.bytes_removed > 0
        assert done.batches == {moved.batches[0]: tf.index.get(others[0]).batch_id}

        for marker in (victim, secret_of(victim)):
            assert outside_index(find_marker(data, store, marker)) == []
        assert await reads(tf, others) == {w: before[w] for w in others}
        assert_warm_batches_verify(tf, store)
        assert (await tf.sql(count, [victim])).rows[0][0] == 0
        assert (await tf.sql("SELECT count(*) FROM warm_workflows")).rows[0][0] == 11

        again = erase_from_warm(tf.index, store, [victim])
        assert (again.batches_rewritten, again.objects_deleted, again.batches) == (0, 0, {})


async def test_cold_erasure_leaves_no_trace(
    make_store: Callable[..., ObjectStore], tmp_path: Path, clock: ManualClock
) -> None:
    store = make_store()
    data = tmp_path / "data"
    # Batches of two workflows (a day's first two, its last two), three batches per cold
    # commit (5 events a workflow): the two commits both write day 1, so its partition has
    # two files per table; a maintenance rewrite merges them, and the two small files stay,
    # read by older snapshots only.
    policy = TieringPolicy(
        min_age=0, cold_after="1h", max_workflows_per_batch=2, max_events_per_cold_commit=30
    )
    async with Tierflow(data, WORKFLOWS, warm_store=store, clock=clock, tiering=policy) as tf:
        ids = await populate(tf, clock, 12)
        await tf.tier(now=clock.now() + LATER)
        rewrite = await tf.maintain_cold(snapshot_retention="3650d", orphan_grace="3650d")
        assert rewrite.rewrite is not None and rewrite.rewrite.removed_files == 4
        assert tf.index.count_by_tier() == {"cold": 12}
        before = await reads(tf, ids)
        victim = ids[1]  # day 1's first id: a lower bound in its files' manifest entries
        others = [w for w in ids if w != victim]
        history = tf.cold.table("history", refresh=True)
        old_snapshot = history.current_snapshot()
        assert old_snapshot is not None
        assert any("avro block" in f for f in find_marker(data, store, victim)), (
            "a manifest bound spells the id before the erasure"
        )
        rows_before = {d: _rows(tf, d) for d in ("workflows", "history")}
        instant = datetime.now(UTC)

        done = erase_rows(tf.cold, [victim], finished_dates=finished_dates(tf, [victim]))
        print(f"cold erasure: {done}")
        # Per table: 3 live files (one a day); only the victim's day's file is read and
        # rewritten, and of the replaced small files only the one whose bounds hold it.
        assert (done.live_files, done.files_scanned, done.files_rewritten) == (6, 4, 2)
        assert len(done.snapshots_expired) >= 4
        assert old_snapshot.snapshot_id in done.snapshots_expired
        assert done.snapshot_after["history"] != done.snapshot_before["history"]

        for marker in (victim, secret_of(victim)):
            assert outside_index(find_marker(data, store, marker)) == []
        for dataset, rows in rows_before.items():
            assert _rows(tf, dataset) == [r for r in rows if r["workflow_id"] != victim]
        assert await reads(tf, others) == {w: before[w] for w in others}
        assert_no_orphans(tf)

        count = "SELECT count(*) FROM cold_workflows WHERE workflow_id = ?"
        assert (await tf.sql(count, [victim])).rows[0][0] == 0
        assert (await tf.sql("SELECT count(*) FROM cold_history")).rows[0][0] == sum(
            len(before[w]["history"]) for w in others
        )
        # Time travel to before the erasure is gone: a clear error, not an empty answer.
        with pytest.raises(InvalidArgument, match="keeps no history before"):
            await tf.sql(count, [victim], as_of=instant - timedelta(seconds=1))
        with pytest.raises(InvalidArgument, match="no cold snapshot"):
            await tf.sql(count, [victim], as_of=old_snapshot.snapshot_id)

        again = erase_rows(tf.cold, [victim], finished_dates=finished_dates(tf, [victim]))
        assert (again.files_rewritten, again.files_deleted, again.snapshots_expired) == (0, 0, ())
        assert again.snapshot_after == again.snapshot_before == done.snapshot_after


def _rows(tf: Tierflow, dataset: str) -> list[dict[str, Any]]:
    keys = ["workflow_id", "event_id"] if dataset == "history" else ["workflow_id"]
    table = tf.cold.table(dataset, refresh=True).scan().to_arrow()
    return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in keys))


async def test_warm_originals_of_a_batch_in_cold_are_deleted(
    make_store: Callable[..., ObjectStore], tmp_path: Path, clock: ManualClock
) -> None:
    store = make_store()
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS, warm_store=store, clock=clock, tiering=POLICY) as tf:
        ids = await populate(tf, clock, 6)
        await tf.tier(now=clock.now() + LATER, to="warm")
        lease = ReadLeases(data).hold()  # a query keeps the warm originals from deletion
        assert lease is not None
        try:
            report = await tf.tier(now=clock.now() + LATER, to="cold")
        finally:
            lease.release()
        assert report.cold is not None and report.cold.deletions_deferred
        victim = ids[2]
        assert any("/warm/" in f for f in find_marker(data, store, victim))

        done = erase_from_warm(tf.index, store, [victim])
        assert done.batches == {report.cold.batches[0]: None}
        assert done.objects_deleted == 7  # 6 data files + the manifest
        assert store.list("warm", unfinished=True) == []
        # The cold move's own deletion then finds nothing left, and finishes.
        again = await tf.tier(now=clock.now() + LATER, to="cold")
        assert again.cold is not None and again.cold.recovered_commits
        assert (await tf.describe(ids[0])).tier == "cold"


async def test_a_batch_claimed_by_a_cold_move_is_refused(
    make_store: Callable[..., ObjectStore], tmp_path: Path, clock: ManualClock
) -> None:
    store = make_store()
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS, warm_store=store, clock=clock, tiering=POLICY) as tf:
        ids = await populate(tf, clock, 3)
        moved = await tf.tier(now=clock.now() + LATER, to="warm")
        ColdLedger(tf.index).claim("cold-test-claim", moved.batches, tf.engine.now_us())
        keys = store.list("warm")
        with pytest.raises(StorageError, match="finish that cold move"):
            erase_from_warm(tf.index, store, [ids[0]])
        assert store.list("warm") == keys
        with pytest.raises(InvalidArgument):
            erase_from_warm(tf.index, store, ids[0])
