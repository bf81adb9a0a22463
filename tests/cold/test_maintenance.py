"""Cold-table maintenance on both backends: rewrite, expiry, orphan removal, all three."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tierflow.cold import tables
from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.cold.maintenance import (
    OPERATION_PROPERTY,
    expire_snapshots,
    maintain,
    referenced_files,
    remove_orphan_files,
    rewrite_small_files,
)
from tierflow.cold.writer import ColdWriter, store_key
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.warm.storage import ObjectStore

pytestmark = pytest.mark.timeout(180)

DAYS = (date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3))
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def cid() -> str:
    return f"c-{uuid.uuid4()}"


def make_rows(dataset: str, day: date, tag: str, n: int) -> pa.Table:
    """``n`` rows of ``dataset`` on ``day``, every column filled (nullable ones sometimes null)."""
    schema = tables.arrow_schema(dataset)
    cols: dict[str, list[Any]] = {}
    for f in schema:
        if f.name == "workflow_id":
            # Descending ids: the writer must sort, the rewrite must keep them sorted.
            vals: list[Any] = [f"wf-{tag}-{n - i:03d}" for i in range(n)]
        elif f.name == "finished_date":
            vals = [day] * n
        elif pa.types.is_string(f.type):
            vals = [f"{f.name}-{tag}-{i}" for i in range(n)]
        elif pa.types.is_int64(f.type):
            vals = list(range(n))
        elif pa.types.is_float64(f.type):
            vals = [i * 0.5 for i in range(n)]
        elif pa.types.is_timestamp(f.type):
            vals = [
                datetime.combine(day, datetime.min.time(), UTC) + timedelta(seconds=i)
                for i in range(n)
            ]
        else:  # pragma: no cover - a new column type needs a value here
            raise AssertionError(f"no test values for {f}")
        if f.nullable:
            vals = [None if i % 3 == 2 else v for i, v in enumerate(vals)]
        cols[f.name] = vals
    return pa.table(cols, schema=schema)


@pytest.fixture
def cold(make_store: Callable[..., ObjectStore], tmp_path: Path) -> Iterator[ColdTables]:
    store = make_store()
    store.check()
    tabs = ColdTables(CatalogSettings(url=f"sqlite:///{tmp_path}/catalog.sqlite"), store)
    yield tabs
    tabs.close()


def commit_small(writer: ColdWriter, dataset: str, count: int, rows: int = 4) -> None:
    """``count`` commits of a few rows each, one or two of DAYS per commit."""
    for i in range(count):
        days = [DAYS[i % 3]] + ([DAYS[(i + 1) % 3]] if i % 4 == 0 else [])
        parts = [make_rows(dataset, d, f"{i}-{d.day}", rows) for d in days]
        writer.commit(dataset, cid(), [f"batch-{i}"], parts)


def all_rows(cold: ColdTables, dataset: str, snapshot_id: int | None = None) -> list[str]:
    """Every row of a table (or of one snapshot), as sorted JSON lines: a multiset."""
    table = cold.table(dataset, refresh=True)
    got = table.scan(snapshot_id=snapshot_id).to_arrow().cast(tables.arrow_schema(dataset))
    return sorted(json.dumps(r, default=str, sort_keys=True) for r in got.to_pylist())


def files_per_day(cold: ColdTables, dataset: str) -> Counter[date]:
    table = cold.table(dataset, refresh=True)
    # pyiceberg keeps an identity date partition as days since the epoch.
    epoch = date(1970, 1, 1)
    return Counter(epoch + timedelta(days=t.file.partition[0]) for t in table.scan().plan_files())


def existing(cold: ColdTables) -> list[str]:
    return [d for d in tables.DATASETS if cold.catalog.table_exists(tables.identifier(d))]


def store_keys(cold: ColdTables) -> set[str]:
    """Every object under both tables' locations."""
    out: set[str] = set()
    for dataset in existing(cold):
        prefix = store_key(cold.store.url, cold.table(dataset, refresh=True).location())
        assert prefix is not None
        out |= {k for k, _ in cold.store.list(prefix)}
    return out


def referenced_keys(cold: ColdTables) -> set[str]:
    """Every file both tables' metadata references, found through pyiceberg's inspect tables."""
    out: set[str] = set()
    for dataset in existing(cold):
        table = cold.table(dataset, refresh=True)
        paths = {table.metadata_location}
        paths |= {e.metadata_file for e in table.metadata.metadata_log}
        paths |= set(table.inspect.snapshots().column("manifest_list").to_pylist())
        paths |= set(table.inspect.all_manifests().column("path").to_pylist())
        paths |= set(table.inspect.all_files().column("file_path").to_pylist())
        for p in paths:
            key = store_key(cold.store.url, p)
            assert key is not None, p
            out.add(key)
    return out


def uncompressed(cold: ColdTables, key: str) -> int:
    """A data file's uncompressed size: what the rewrite packs bins by."""
    meta = pq.read_metadata(cold.store.path(key), filesystem=cold.store.fs)
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def later() -> datetime:
    """A cut-off after everything written so far (grace 0)."""
    return datetime.now(UTC) + timedelta(seconds=1)


def test_rewrite_leaves_few_files_and_the_same_rows(
    cold: ColdTables, request: pytest.FixtureRequest
) -> None:
    """On S3 the rewrite sends no HEAD: data files are opened with their manifest sizes."""
    s3 = cold.store.url.startswith("s3://")
    counted = request.getfixturevalue("s3_server").requests if s3 else Counter[str]()
    writer = ColdWriter(cold)
    commit_small(writer, "history", 14)
    commit_small(writer, "workflows", 5)
    before = {d: all_rows(cold, d) for d in tables.DATASETS}
    assert min(files_per_day(cold, "history").values()) >= 5
    old_files = {t.file.file_path for t in cold.table("history").scan().plan_files()}

    heads = counted["HEAD"]
    result = rewrite_small_files(cold, writer, commit_id=cid())
    assert counted["HEAD"] == heads

    assert set(result.snapshots) == {"history", "workflows"}
    assert result.partitions == 6
    assert result.rows == sum(len(v) for v in before.values())
    for dataset in tables.DATASETS:
        per_day = files_per_day(cold, dataset)
        assert set(per_day) == set(DAYS)
        assert max(per_day.values()) <= 2, per_day
        assert all_rows(cold, dataset) == before[dataset]
        snap = cold.table(dataset).current_snapshot()
        assert snap is not None and snap.summary is not None
        assert snap.snapshot_id == result.snapshots[dataset]
        assert snap.summary.additional_properties[OPERATION_PROPERTY] == "rewrite"
        assert snap.summary.operation.value == "overwrite"
    # Every new file is sorted by the table's sort keys.
    history = cold.table("history")
    for task in history.scan().plan_files():
        assert task.file.file_path not in old_files
        key = store_key(cold.store.url, task.file.file_path)
        assert key is not None
        got = pq.read_table(cold.store.path(key), filesystem=cold.store.fs)
        ids = list(
            zip(
                got.column("workflow_id").to_pylist(),
                got.column("event_id").to_pylist(),
                strict=True,
            )
        )
        assert ids == sorted(ids)

    snapshots = len(history.metadata.snapshots)
    again = rewrite_small_files(cold, writer, commit_id=cid())
    assert again.snapshots == {} and again.removed_files == 0
    assert len(cold.table("history", refresh=True).metadata.snapshots) == snapshots


def test_expiry_keeps_recent_current_and_tagged_snapshots(cold: ColdTables) -> None:
    writer = ColdWriter(cold)
    commit_small(writer, "history", 8, rows=2)
    table = cold.table("history", refresh=True)
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    assert len(ids) == 8
    table.manage_snapshots().create_tag(ids[1], "audit").commit()

    with pytest.raises(InvalidArgument):
        expire_snapshots(cold, older_than=datetime(2026, 1, 1), keep_last=3)
    assert expire_snapshots(cold, older_than=LONG_AGO, keep_last=3) == {}

    expired = expire_snapshots(cold, older_than=later(), keep_last=3)

    assert expired == {"history": [ids[0], *ids[2:5]]}
    table = cold.table("history", refresh=True)
    assert [s.snapshot_id for s in table.metadata.snapshots] == [ids[1], *ids[5:]]
    assert table.metadata.current_snapshot_id == ids[-1]
    # Time travel to a kept snapshot still reads its rows; to an expired one it fails.
    assert len(all_rows(cold, "history", ids[5])) == 2 * (6 + 2)
    assert len(all_rows(cold, "history", ids[1])) == 2 * (2 + 1)
    with pytest.raises(ValueError):
        table.scan(snapshot_id=ids[0]).to_arrow()

    # keep_last=1 leaves the current snapshot and the tagged one.
    assert expire_snapshots(cold, older_than=later(), keep_last=1) == {"history": ids[5:-1]}
    table = cold.table("history", refresh=True)
    assert [s.snapshot_id for s in table.metadata.snapshots] == [ids[1], ids[-1]]


def test_after_rewrite_expiry_and_orphans_storage_is_what_metadata_references(
    cold: ColdTables,
) -> None:
    writer = ColdWriter(cold)
    commit_small(writer, "history", 9)
    commit_small(writer, "workflows", 4)
    before = {d: all_rows(cold, d) for d in tables.DATASETS}
    old_files = {
        store_key(cold.store.url, t.file.file_path)
        for d in tables.DATASETS
        for t in cold.table(d).scan().plan_files()
    }
    rewrite_small_files(cold, writer, commit_id=cid())
    # Files rewritten away (a partition with one file keeps it).
    old_files -= {
        store_key(cold.store.url, t.file.file_path)
        for d in tables.DATASETS
        for t in cold.table(d, refresh=True).scan().plan_files()
    }
    assert len(old_files) >= 9
    expire_snapshots(cold, older_than=later(), keep_last=1)
    assert len(store_keys(cold) - referenced_keys(cold)) > len(old_files)

    # A grace period that covers every file keeps them all (and deletes nothing).
    young = remove_orphan_files(cold, older_than=datetime.now(UTC) - timedelta(hours=1))
    assert young.deleted == []
    assert set(young.kept_young) == store_keys(cold) - referenced_keys(cold)

    result = remove_orphan_files(cold, older_than=later())

    assert set(result.deleted) >= old_files
    assert not old_files & store_keys(cold)
    assert result.kept_young == [] and result.missing == []
    assert store_keys(cold) == referenced_keys(cold)
    for dataset in tables.DATASETS:
        table = cold.table(dataset)
        assert len(table.metadata.snapshots) == 1
        implementation = {store_key(cold.store.url, p) for p in referenced_files(table)}
        assert implementation <= referenced_keys(cold)
        assert all_rows(cold, dataset) == before[dataset]

    # An unreferenced file younger than the grace period stays; once older, it goes.
    prefix = store_key(cold.store.url, cold.table("history").location())
    stray = f"{prefix}/data/finished_date=2026-11-01/00000-0-{uuid.uuid4()}.parquet"
    cold.store.put(stray, b"PAR1 half written")
    cut = datetime.now(UTC) - timedelta(minutes=10)
    kept = remove_orphan_files(cold, older_than=cut)
    assert kept.deleted == [] and kept.kept_young == [stray]
    assert cold.store.exists(stray)
    assert remove_orphan_files(cold, older_than=later()).deleted == [stray]
    assert store_keys(cold) == referenced_keys(cold)


def test_data_files_of_a_killed_commit_are_removed(
    cold: ColdTables, request: pytest.FixtureRequest
) -> None:
    """The orphans' ages come from the listing: on S3 no HEAD per candidate (counted)."""
    s3 = cold.store.url.startswith("s3://")
    counted = request.getfixturevalue("s3_server").requests if s3 else Counter[str]()
    writer = ColdWriter(cold)
    commit_small(writer, "workflows", 3)
    before = all_rows(cold, "workflows")
    # A commit killed after writing its data files and before the catalog swap.
    killed = cid()
    table = cold.table("workflows", refresh=True)
    parts = [make_rows("workflows", d, f"killed-{d.day}", 5) for d in DAYS]
    written = list(writer.data_files(table, "workflows", killed, parts))
    stray = {store_key(cold.store.url, f.file_path) for f in written}
    assert len(stray) == 3 and set(writer.leftovers("workflows", killed)) == stray

    heads = counted["HEAD"]
    dry = remove_orphan_files(cold, older_than=later(), dry_run=True)
    assert counted["HEAD"] == heads
    assert dry.dry_run and set(dry.deleted) == stray
    assert all(k is not None and cold.store.exists(k) for k in stray)

    heads = counted["HEAD"]
    result = remove_orphan_files(cold, older_than=later())
    assert counted["HEAD"] == heads

    assert set(result.deleted) == stray
    assert writer.leftovers("workflows", killed) == []
    assert all_rows(cold, "workflows") == before
    assert store_keys(cold) == referenced_keys(cold)


def test_nothing_to_do_without_tables_and_nothing_deleted_outside_the_store(
    cold: ColdTables, make_store: Callable[..., ObjectStore], tmp_path: Path
) -> None:
    writer = ColdWriter(cold)
    # No table yet: every step is a no-op and creates nothing.
    assert rewrite_small_files(cold, writer, commit_id=cid()).snapshots == {}
    assert expire_snapshots(cold, older_than=later(), keep_last=1) == {}
    assert remove_orphan_files(cold, older_than=later()).deleted == []
    assert not cold.exists()
    commit_small(writer, "history", 2)
    commit_small(writer, "workflows", 2)
    keys = store_keys(cold)
    # The same catalog seen with another store: the tables are not under it, so the
    # orphan pass refuses instead of treating every file as unreferenced.
    other = make_store()
    other.check()
    elsewhere = ColdTables(CatalogSettings(url=f"sqlite:///{tmp_path}/catalog.sqlite"), other)
    try:
        with pytest.raises(StorageError, match="outside the store"):
            remove_orphan_files(elsewhere, older_than=later())
    finally:
        elsewhere.close()
    assert store_keys(cold) == keys


def test_maintain_runs_all_three(cold: ColdTables) -> None:
    writer = ColdWriter(cold)
    commit_small(writer, "history", 5)
    commit_small(writer, "workflows", 5)
    before = {d: all_rows(cold, d) for d in tables.DATASETS}
    snapshots = {
        d: sorted(s.snapshot_id for s in cold.table(d, refresh=True).metadata.snapshots)
        for d in tables.DATASETS
    }
    keys_before = store_keys(cold)
    data_files = {k for k in keys_before if "/data/" in k}
    # commit_small's five commits per table: two files on DAYS[0], three on DAYS[1], two on
    # DAYS[2]; each day is rewritten into one file.
    assert len(data_files) == 2 * 7
    with pytest.raises(InvalidArgument):
        maintain(cold, writer, now=datetime(2026, 1, 1), expire_older_than=later())

    now = later()
    report = maintain(
        cold, writer, now=now, expire_older_than=now, keep_last=1, orphan_grace=timedelta(0)
    )

    rewrite = report.rewrite
    assert rewrite is not None
    assert (rewrite.partitions, rewrite.removed_files, rewrite.added_files) == (6, 14, 6)
    assert rewrite.rows == sum(len(v) for v in before.values()) == 2 * 7 * 4
    # Every snapshot but the rewrite's (the current one, kept by keep_last=1) expired.
    assert set(rewrite.snapshots) == set(tables.DATASETS)
    assert {d: sorted(v) for d, v in report.expired.items()} == snapshots
    for d in tables.DATASETS:
        table = cold.table(d, refresh=True)
        assert [s.snapshot_id for s in table.metadata.snapshots] == [rewrite.snapshots[d]]
    # Deleted: exactly what is gone from the store, the replaced data files among it.
    deleted = set(report.orphans.deleted)
    keys_after = store_keys(cold)
    assert deleted == keys_before - keys_after
    assert data_files <= deleted
    assert (report.orphans.kept_young, report.orphans.missing) == ([], [])
    assert not report.orphans.dry_run
    assert json.loads(json.dumps(report.to_dict())) == {
        "rewrite": {
            "snapshots": rewrite.snapshots,
            "partitions": 6,
            "removed_files": 14,
            "added_files": 6,
            "rows": 56,
        },
        "expired": report.expired,
        "orphans": {
            "deleted": report.orphans.deleted,
            "kept_young": [],
            "missing": [],
            "dry_run": False,
        },
    }
    assert keys_after == referenced_keys(cold)
    for dataset in tables.DATASETS:
        assert all_rows(cold, dataset) == before[dataset]
        assert max(files_per_day(cold, dataset).values()) == 1


def test_rewrite_bins_are_bounded_by_the_target(cold: ColdTables) -> None:
    """With a small target a partition becomes several files, each from at most a few old ones."""
    writer = ColdWriter(cold)
    commit_small(writer, "history", 12)
    assert files_per_day(cold, "history") == dict.fromkeys(DAYS, 5)
    before = all_rows(cold, "history")
    table = cold.table("history", refresh=True)
    sizes = []
    for task in table.scan().plan_files():
        key = store_key(cold.store.url, task.file.file_path)
        assert key is not None
        sizes.append(uncompressed(cold, key))
    target = int(max(sizes) * 2.5)  # two old files fit in a bin, three do not
    commit_id = cid()

    result = rewrite_small_files(cold, writer, commit_id=commit_id, target_file_bytes=target)

    # Five files per day: two bins of two, one file left alone.
    assert files_per_day(cold, "history") == dict.fromkeys(DAYS, 3)
    assert (result.removed_files, result.added_files) == (12, 6), result
    assert all_rows(cold, "history") == before
    # Rerunning the same commit changes nothing.
    snapshots = len(cold.table("history", refresh=True).metadata.snapshots)
    assert rewrite_small_files(cold, writer, commit_id=commit_id).snapshots == {}
    assert len(cold.table("history", refresh=True).metadata.snapshots) == snapshots
    # Merged files encode better than their parts, so a later pass may merge them again;
    # every pass removes files and respects the target, and a fixpoint comes soon.
    for _ in range(4):
        count = sum(files_per_day(cold, "history").values())
        again = rewrite_small_files(cold, writer, commit_id=cid(), target_file_bytes=target)
        if not again.snapshots:
            break
        assert sum(files_per_day(cold, "history").values()) < count
    else:
        raise AssertionError("rewrite never reached a fixpoint")
    assert all_rows(cold, "history") == before
    for task in cold.table("history", refresh=True).scan().plan_files():
        key = store_key(cold.store.url, task.file.file_path)
        assert key is not None
        assert uncompressed(cold, key) <= target
    with pytest.raises(InvalidArgument):
        rewrite_small_files(cold, writer, commit_id=cid(), target_file_bytes=0)


def test_a_lost_data_file_fails_the_rewrite_and_commits_nothing(cold: ColdTables) -> None:
    writer = ColdWriter(cold)
    commit_small(writer, "workflows", 4)
    table = cold.table("workflows", refresh=True)
    snapshot = table.metadata.current_snapshot_id
    lost = store_key(cold.store.url, next(iter(table.scan().plan_files())).file.file_path)
    assert lost is not None
    cold.store.delete(lost)

    with pytest.raises(StorageError, match="rewriting cold workflows"):
        rewrite_small_files(cold, writer, commit_id=cid())

    assert cold.table("workflows", refresh=True).metadata.current_snapshot_id == snapshot
    # The orphan pass reports the missing file and deletes nothing it references.
    result = remove_orphan_files(cold, older_than=later())
    assert result.missing == [lost]
    assert store_keys(cold) == referenced_keys(cold) - {lost}
