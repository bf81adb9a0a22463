"""``cold.erase.erase_rows`` on tables written directly (file:// and moto): which files it
reads, what it refuses, and that nothing of an erased id survives in the warehouse."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from tierflow.cold import tables
from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.cold.erase import STEPS, erase_rows
from tierflow.cold.writer import ColdWriter
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.warm.storage import ObjectStore

from tests.tiering.forensics import find_marker

pytestmark = pytest.mark.timeout(120)

DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))


def rows(dataset: str, day: date, ids: list[str]) -> pa.Table:
    """Rows of ``ids`` finished on ``day`` (two events each in history), every column set."""
    schema = tables.arrow_schema(dataset)
    per = 2 if dataset == "history" else 1
    wids = [w for w in ids for _ in range(per)]
    cols: dict[str, list[Any]] = {}
    for f in schema:
        if f.name == "workflow_id":
            vals: list[Any] = wids
        elif f.name == "event_id":
            vals = [i % per + 1 for i in range(len(wids))]
        elif f.name == "finished_date":
            vals = [day] * len(wids)
        elif f.name in ("input", "payload"):
            vals = [f'{{"secret": "s3cr3t-{w}"}}' for w in wids]
        elif pa.types.is_string(f.type):
            vals = [f"{f.name}-x" for _ in wids]
        elif pa.types.is_int64(f.type):
            vals = list(range(len(wids)))
        elif pa.types.is_float64(f.type):
            vals = [0.5] * len(wids)
        elif pa.types.is_timestamp(f.type):
            vals = [
                datetime(day.year, day.month, day.day, 12) + timedelta(seconds=i)
                for i in range(len(wids))
            ]
        else:  # pragma: no cover - a new column type needs a value here
            raise AssertionError(f"no test values for {f}")
        cols[f.name] = vals
    return pa.table(cols, schema=schema)


@pytest.fixture
def cold(make_store: Callable[..., ObjectStore], tmp_path: Path) -> Iterator[ColdTables]:
    store = make_store()
    store.check()
    (tmp_path / "data").mkdir()
    tabs = ColdTables(CatalogSettings(url=f"sqlite:///{tmp_path}/data/catalog.sqlite"), store)
    yield tabs
    tabs.close()


def load(cold: ColdTables, rounds: list[dict[date, list[str]]]) -> None:
    """One commit per round to each table, with one file per day of the round."""
    writer = ColdWriter(cold)
    for per_day in rounds:
        commit = f"c-{uuid.uuid4()}"
        for ds in ("history", "workflows"):
            parts = [rows(ds, day, sorted(ids)) for day, ids in sorted(per_day.items())]
            writer.commit(ds, commit, [commit], parts)


def table_rows(cold: ColdTables, dataset: str) -> list[tuple[Any, ...]]:
    t = cold.table(dataset, refresh=True).scan().to_arrow()
    return (
        sorted(
            zip(t.column("workflow_id").to_pylist(), t.column("event_id").to_pylist(), strict=True)
        )
        if dataset == "history"
        else sorted(t.column("workflow_id").to_pylist())
    )  # type: ignore[return-value]


def traces(tmp_path: Path, cold: ColdTables, wid: str) -> list[str]:
    return find_marker(tmp_path / "data", cold.store, wid) + find_marker(
        tmp_path / "data", cold.store, f"s3cr3t-{wid}"
    )


def test_partition_pruning_reads_only_the_victims_day(cold: ColdTables, tmp_path: Path) -> None:
    # Ids interleaved over the days: every file spans the whole id range, so bounds alone
    # prune nothing, and the partition from the index is what narrows the read.
    token = uuid.uuid4().hex[:6]
    ids = [f"w-{token}-{i:03d}" for i in range(24)]
    load(cold, [{d: ids[n + k :: 6] for n, d in enumerate(DAYS)} for k in (0, 3)])
    assert len(cold.table("workflows", refresh=True).scan().plan_files()) == 6
    victim, other = ids[4], ids[14]  # day 1 (its second commit), day 2 (its first)
    before = {ds: table_rows(cold, ds) for ds in ("history", "workflows")}
    assert traces(tmp_path, cold, victim)

    with_day = erase_rows(cold, [victim], finished_dates={victim: DAYS[1]})
    print(f"with its partition: {with_day}")
    # Day 1 holds two files per table; both can hold the id by their bounds, one does.
    assert (with_day.live_files, with_day.files_scanned, with_day.files_rewritten) == (12, 4, 2)

    blind = erase_rows(cold, [other])
    print(f"without: {blind}")
    assert (blind.live_files, blind.files_scanned, blind.files_rewritten) == (12, 12, 2)

    for wid in (victim, other):
        assert traces(tmp_path, cold, wid) == []
    for ds, was in before.items():
        gone = {victim, other}
        assert table_rows(cold, ds) == [
            r for r in was if (r[0] if ds == "history" else r) not in gone
        ]


def test_bounds_prune_sorted_ids_without_a_partition(cold: ColdTables, tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:6]
    ids = [f"w-{token}-{i:03d}" for i in range(18)]
    load(cold, [{d: ids[6 * n + k : 6 * n + k + 3] for n, d in enumerate(DAYS)} for k in (0, 3)])
    done = erase_rows(cold, [ids[7]])
    assert (done.live_files, done.files_scanned, done.files_rewritten) == (12, 2, 2)
    assert traces(tmp_path, cold, ids[7]) == []
    # Ids the tables never held: the pruning, and nothing else.
    before = {
        ds: cold.table(ds, refresh=True).current_snapshot() for ds in ("history", "workflows")
    }
    none = erase_rows(cold, [f"w-{token}-999", "zzz"])
    assert (none.files_scanned, none.files_rewritten, none.files_deleted) == (0, 0, 0)
    assert none.snapshots_expired == ()
    assert {ds: s.snapshot_id for ds, s in before.items() if s} == none.snapshot_after


def test_no_tables_and_bad_ids(make_store: Callable[..., ObjectStore], tmp_path: Path) -> None:
    store = make_store()
    cold = ColdTables(CatalogSettings(url=f"sqlite:///{tmp_path}/catalog.sqlite"), store)
    try:
        done = erase_rows(cold, ["w-1"], on_step=lambda s: pytest.fail(f"step {s}"))
        assert done.snapshot_before == done.snapshot_after == {"history": None, "workflows": None}
        with pytest.raises(InvalidArgument):
            erase_rows(cold, "w-1")
        with pytest.raises(InvalidArgument):
            erase_rows(cold, ["w-1", ""])
    finally:
        cold.close()


@pytest.mark.parametrize("backend", ["file"])  # refs are metadata: one backend is enough
def test_a_tag_on_a_snapshot_to_expire_is_refused_then_the_rerun_finishes(
    cold: ColdTables, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:6]
    ids = [f"w-{token}-{i:03d}" for i in range(6)]
    load(cold, [{DAYS[0]: ids[:3]}, {DAYS[0]: ids[3:]}])
    table = cold.table("workflows", refresh=True)
    tagged = table.current_snapshot()
    assert tagged is not None
    table.manage_snapshots().create_tag(tagged.snapshot_id, "audit-2026").commit()
    steps: list[str] = []
    with pytest.raises(StorageError, match="audit-2026"):
        erase_rows(cold, [ids[4]], on_step=steps.append)
    assert steps == ["rewritten", "sealed"]  # rows gone from the current snapshot already
    assert ids[4] not in table_rows(cold, "workflows")
    cold.table("workflows", refresh=True).manage_snapshots().remove_tag("audit-2026").commit()
    steps.clear()
    erase_rows(cold, [ids[4]], on_step=steps.append)
    assert steps == list(STEPS)
    assert traces(tmp_path, cold, ids[4]) == []
