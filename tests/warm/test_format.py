"""The warm archive format: builders, batch writer, manifest, verification and reads."""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import tempfile
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.models import from_micros
from tierflow.warm.reader import dataset, read_history, read_manifest, read_workflow, verify
from tierflow.warm.schema import (
    HISTORY_COLUMNS,
    HISTORY_SCHEMA,
    WORKFLOW_COLUMNS,
    WORKFLOWS_SCHEMA,
    history_table,
    workflows_table,
)
from tierflow.warm.storage import ObjectStore
from tierflow.warm.writer import (
    BatchManifest,
    BatchWriter,
    WrittenFile,
    batch_id_of,
    batch_keys,
    data_key,
    full_path,
    list_batches,
    manifest_key,
    write_manifest,
)

# pyproject's norecursedirs replaces pytest's defaults, so a .hypothesis directory in the
# repository root makes every later pytest run fail collection (hypothesis warns, and
# warnings are errors). Hypothesis writes its cache on first use, after collection, so
# pointing it elsewhere here is in time. Remove once norecursedirs keeps ".*".
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "tierflow-hypothesis")
)

DAY_US = 86_400_000_000
BASE = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
TERMINAL = ["completed", "failed", "cancelled", "terminated"]


# -- building test batches -------------------------------------------------------------


def make_rows(
    n_workflows: int, events: int | Callable[[int], int], days: int = 3, seed: int = 7
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return workflows rows and history rows (timestamps in µs), in shuffled order."""
    rnd = random.Random(seed)
    workflows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for i in range(n_workflows):
        wid = f"wf-{rnd.getrandbits(32):08x}-{i}"
        finished = BASE + (i % days) * DAY_US + rnd.randrange(DAY_US)
        started = None if i % 11 == 0 else finished - rnd.randrange(1, 10**9)
        status = TERMINAL[i % 4]
        workflows.append(
            {
                "workflow_id": wid,
                "run_id": f"run-{i}",
                "workflow_type": ["order", "ship"][i % 2],
                "status": status,
                "parent_workflow_id": None if i % 3 else f"parent-{i}",
                "input": None if i % 5 == 0 else json.dumps({"i": i, "name": "Zoë 🦀"}),
                "result": json.dumps({"ok": i}) if status == "completed" else None,
                "error": json.dumps({"type": "E", "message": "no"}) if status == "failed" else None,
                "attributes": json.dumps({"customer": f"c-{i % 7}"}),
                "created_at": finished - 2 * 10**9,
                "started_at": started,
                "finished_at": finished,
                "duration_ms": None if started is None else (finished - started) / 1000,
                "step_count": i % 9,
                "tier": "warm",
            }
        )
        count = events(i) if callable(events) else events
        for e in range(1, count + 1):
            step = e % 2 == 0
            history.append(
                {
                    "workflow_id": wid,
                    "run_id": f"run-{i}",
                    "event_id": e,
                    "event_type": "step.completed" if step else "workflow.started",
                    "event_time": finished - 10**9 + e,
                    "step_name": f"step-{e}" if step else None,
                    "attempt": 1 if step else None,
                    "payload": json.dumps({"e": e}) if e % 3 else None,
                    "workflow_type": ["order", "ship"][i % 2],
                }
            )
    rnd.shuffle(workflows)
    rnd.shuffle(history)
    return workflows, history


def columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in names}


def tables(
    workflows: list[dict[str, Any]], history: list[dict[str, Any]]
) -> tuple[pa.Table, pa.Table]:
    finished = {w["workflow_id"]: w["finished_at"] for w in workflows}
    return (
        workflows_table(columns(workflows, WORKFLOW_COLUMNS)),
        history_table(columns(history, HISTORY_COLUMNS), finished),
    )


def read_file(fs: pafs.FileSystem, root: str, key: str, **kwargs: Any) -> pa.Table:
    """Read one file with plain pyarrow, as a tool that knows nothing of tierflow would."""
    with fs.open_input_file(full_path(root, key)) as f:
        return pq.read_table(f, **kwargs)


def footer(fs: pafs.FileSystem, root: str, key: str) -> pq.FileMetaData:
    with fs.open_input_file(full_path(root, key)) as f:
        return pq.read_metadata(f)


def store_at(root: str) -> ObjectStore:
    """The object store whose root is the local directory ``root``."""
    return ObjectStore.from_url(Path(root).as_uri())


def day_of(micros: int) -> str:
    return date.fromordinal(date(1970, 1, 1).toordinal() + micros // DAY_US).isoformat()


@pytest.fixture
def fs() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "lake")


@pytest.fixture
def batch(
    fs: pafs.FileSystem, root: str
) -> tuple[BatchManifest, list[dict[str, Any]], list[dict[str, Any]]]:
    """A written batch: 600 workflows x 10 events over 3 days, row groups of 500."""
    workflows, history = make_rows(600, 10)
    manifest = BatchWriter(store_at(root), "b1", row_group_rows=500).write(
        *tables(workflows, history)
    )
    return manifest, workflows, history


# -- layout ------------------------------------------------------------------------------


def test_many_workflows_become_one_file_per_dataset_and_date(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest, workflows, _ = batch
    days = sorted({day_of(w["finished_at"]) for w in workflows})
    assert len(days) == 3
    assert sorted(f.key for f in manifest.files) == sorted(
        data_key(dataset, day, "b1", 0) for dataset in ("workflows", "history") for day in days
    )
    assert manifest.workflow_count == 600 and manifest.event_count == 6000
    assert sum(f.rows for f in manifest.files if f.dataset == "history") == 6000
    for f in manifest.files:
        assert f.key == f"warm/{f.dataset}/finished_date={f.finished_date}/batch-b1-0.parquet"
        table = read_file(fs, root, f.key)
        assert table.num_rows == f.rows
        # The partition column is inside the file, and right for every row.
        assert set(table.column("finished_date").to_pylist()) == {
            date.fromisoformat(f.finished_date)
        }
        ids = table.column("workflow_id").to_pylist()
        if f.dataset == "workflows":
            assert ids == sorted(ids)
            expected = {
                w["workflow_id"] for w in workflows if day_of(w["finished_at"]) == f.finished_date
            }
            assert set(ids) == expected
        else:
            pairs = list(zip(ids, table.column("event_id").to_pylist(), strict=True))
            assert pairs == sorted(pairs)


def test_row_groups_are_sized_as_configured_and_carry_statistics(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest, _, _ = batch
    for f in manifest.files:
        meta = footer(fs, root, f.key)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sum(sizes) == f.rows
        # max(1, rows // target) equal groups: never a small trailing one.
        assert len(sizes) == max(1, f.rows // 500)
        if f.rows >= 500:
            assert all(500 <= s < 1000 for s in sizes), sizes
        assert max(sizes) - min(sizes) <= 1
        col = meta.schema.to_arrow_schema().get_field_index("workflow_id")
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            stats = rg.column(col).statistics
            assert stats is not None and stats.has_min_max
            assert rg.sorting_columns[0].column_index == col
            assert rg.column(0).compression == "ZSTD"
        # Row groups do not overlap in workflow_id, so a lookup prunes to one.
        bounds = [
            (
                meta.row_group(i).column(col).statistics.min,
                meta.row_group(i).column(col).statistics.max,
            )
            for i in range(meta.num_row_groups)
        ]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(bounds))
        if f.dataset == "history":
            payload = meta.schema.to_arrow_schema().get_field_index("payload")
            assert meta.row_group(0).column(payload).statistics is None  # JSON: no min/max


def test_max_rows_per_file_splits_between_workflows(fs: pafs.FileSystem, root: str) -> None:
    workflows, history = make_rows(300, lambda i: 1 + i % 13, days=1)
    manifest = BatchWriter(store_at(root), "b2", max_rows_per_file=400, row_group_rows=100).write(
        *tables(workflows, history)
    )
    hist = [f for f in manifest.files if f.dataset == "history"]
    assert len(hist) > 1 and all(f.rows <= 400 for f in hist)
    assert [f.key for f in hist] == [
        data_key("history", hist[0].finished_date, "b2", n) for n in range(len(hist))
    ]
    seen: dict[str, str] = {}
    previous_max = ""
    for f in hist:
        ids = read_file(fs, root, f.key).column("workflow_id").to_pylist()
        assert min(ids) > previous_max  # files follow each other in id order
        previous_max = max(ids)
        for wid in ids:
            assert seen.setdefault(wid, f.key) == f.key, "a workflow's events span two files"
    wf_files = [f for f in manifest.files if f.dataset == "workflows"]
    assert [f.rows for f in wf_files] == [300]


def test_a_workflow_larger_than_a_file_is_split(fs: pafs.FileSystem, root: str) -> None:
    workflows, history = make_rows(3, lambda i: 25, days=1)
    manifest = BatchWriter(store_at(root), "big", max_rows_per_file=10, row_group_rows=4).write(
        *tables(workflows, history)
    )
    hist = [f for f in manifest.files if f.dataset == "history"]
    assert sum(f.rows for f in hist) == 75 and all(f.rows <= 10 for f in hist)
    verify(fs, root, manifest)
    keys = manifest.keys("history")
    for w in workflows:
        assert [e["event_id"] for e in read_history(fs, root, keys, w["workflow_id"])] == list(
            range(1, 26)
        )


def test_plain_parquet_readers_see_the_documented_schema(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest, _, _ = batch
    for f in manifest.files:
        table = read_file(fs, root, f.key)
        expected = WORKFLOWS_SCHEMA if f.dataset == "workflows" else HISTORY_SCHEMA
        assert table.schema.equals(expected, check_metadata=True)
        assert table.schema.metadata[b"tierflow.schema_version"] == b"1"
        assert table.schema.field("workflow_id").metadata[b"doc"]
        # Without the embedded Arrow schema (what DuckDB/Spark see): UTC timestamps, text JSON.
        parquet_schema = footer(fs, root, f.key).schema
        time_col = "finished_at" if f.dataset == "workflows" else "event_time"
        logical = parquet_schema.column(expected.get_field_index(time_col)).logical_type
        details = json.loads(logical.to_json())
        assert logical.type == "TIMESTAMP" and details["isAdjustedToUTC"] is True
        assert details["timeUnit"] == "microseconds"
        json_col = "attributes" if f.dataset == "workflows" else "payload"
        assert (
            parquet_schema.column(expected.get_field_index(json_col)).logical_type.type == "STRING"
        )
        date_col = parquet_schema.column(expected.get_field_index("finished_date"))
        assert date_col.logical_type.type == "DATE"


def test_empty_batch_writes_nothing(fs: pafs.FileSystem, root: str) -> None:
    manifest = BatchWriter(store_at(root), "empty").write(*tables([], []))
    assert manifest.files == [] and manifest.workflow_count == 0 and manifest.event_count == 0
    assert manifest.min_finished_at is None and manifest.max_finished_at is None
    verify(fs, root, manifest)
    assert read_history(fs, root, [], "x") == []
    assert read_workflow(fs, root, [], "x") is None


# -- manifest, keys, garbage collection ---------------------------------------------------


def test_manifest_json_round_trip(batch: tuple[BatchManifest, Any, Any]) -> None:
    manifest, workflows, _ = batch
    data = manifest.to_json()
    assert BatchManifest.from_json(data) == manifest
    doc = json.loads(data)
    assert doc["format"] == "tierflow.warm.batch" and doc["schema_version"] == 1
    assert doc["files"][0].keys() == {"key", "dataset", "finished_date", "rows", "bytes", "sha256"}
    finished = sorted(w["finished_at"] for w in workflows)
    assert manifest.min_finished_at == from_micros(finished[0]).isoformat()
    assert manifest.max_finished_at == from_micros(finished[-1]).isoformat()
    assert manifest.min_finished_at.endswith("+00:00")
    empty = BatchManifest(batch_id="x", created_at="t")
    assert BatchManifest.from_json(empty.to_json()) == empty


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        b'{"format": "other"}',
        b'{"format": "tierflow.warm.batch", "batch_id": "x", "files": []}',
    ],
)
def test_malformed_manifest_is_a_storage_error(data: bytes) -> None:
    with pytest.raises(StorageError, match="malformed batch manifest"):
        BatchManifest.from_json(data)


def test_manifest_with_wrong_field_type_is_rejected(batch: tuple[BatchManifest, Any, Any]) -> None:
    doc = json.loads(batch[0].to_json())
    doc["files"][0]["rows"] = "12"
    with pytest.raises(StorageError):
        BatchManifest.from_json(json.dumps(doc).encode())


def test_write_and_read_manifest(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest = batch[0]
    with pytest.raises(StorageError, match="no manifest"):
        read_manifest(fs, root, "b1")
    assert (
        write_manifest(store_at(root), manifest)
        == manifest_key("b1")
        == "warm/manifests/batch-b1.json"
    )
    assert write_manifest(store_at(root), manifest) == manifest_key("b1")  # idempotent
    assert read_manifest(fs, root, "b1") == manifest
    assert not [k for k in batch_keys(store_at(root), "b1") if ".tmp-" in k]


def test_keys_name_their_batch() -> None:
    assert data_key("history", "2026-01-02", "b-1", 3) == (
        "warm/history/finished_date=2026-01-02/batch-b-1-3.parquet"
    )
    for key in (data_key("workflows", "2026-01-02", "a-0", 0), manifest_key("a-0")):
        assert batch_id_of(key) == "a-0"
    assert batch_id_of("warm/manifests/batch-a-0.json.tmp-0123abcd") == "a-0"
    assert batch_id_of("warm/history/finished_date=2026-01-02/other.parquet") is None
    for bad in ("", "a/b", "../x", "a.b", "-a", "x" * 129):
        with pytest.raises(InvalidArgument):
            manifest_key(bad)
    with pytest.raises(InvalidArgument):
        data_key("events", "2026-01-02", "b", 0)


def test_gc_finds_every_object_of_a_batch(fs: pafs.FileSystem, root: str) -> None:
    workflows, history = make_rows(40, 3, days=2)
    wf, hist = tables(workflows, history)
    # "abc" is a prefix of "abc-0": listing must not mix them up.
    first = BatchWriter(store_at(root), "abc").write(wf, hist)
    second = BatchWriter(store_at(root), "abc-0").write(wf, hist)
    write_manifest(store_at(root), second)
    assert batch_keys(store_at(root), "abc") == sorted(first.keys())
    assert batch_keys(store_at(root), "abc-0") == sorted([*second.keys(), manifest_key("abc-0")])
    assert set(list_batches(store_at(root))) == {"abc", "abc-0"}
    # A file a crash left under its temporary name belongs to its batch too.
    first_dir = Path(full_path(root, first.keys()[0])).parent
    leftover = first_dir / ".batch-abc-7.parquet.tierflow-tmp-0123456789ab"
    leftover.write_bytes(b"PAR1 half")
    leftover_key = str(leftover.relative_to(root))
    assert batch_keys(store_at(root), "abc") == sorted([*first.keys(), leftover_key])
    store_at(root).delete_many(batch_keys(store_at(root), "abc"))
    assert batch_keys(store_at(root), "abc") == []
    assert not leftover.exists()
    assert batch_keys(store_at(root), "nothing") == []
    assert list_batches(store_at(full_path(root, "void"))) == {}
    assert batch_keys(store_at(root + "/"), "abc") == batch_keys(store_at(root), "abc")


# -- verification --------------------------------------------------------------------------


def test_verify_passes_on_an_intact_batch(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    verify(fs, root, batch[0])


def _damage(fs: pafs.FileSystem, root: str, manifest: BatchManifest, how: str) -> WrittenFile:
    victim = manifest.files[-1]
    path = full_path(root, victim.key)
    with fs.open_input_stream(path) as f:
        data = bytearray(f.read())
    if how == "delete":
        fs.delete_file(path)
        return victim
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    with fs.open_output_stream(path) as out:
        out.write(bytes(data))
    return victim


@pytest.mark.parametrize(
    ("how", "message"), [("truncate", "size is"), ("flip", "sha256 is"), ("delete", "missing")]
)
def test_verify_detects_damage(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any], how: str, message: str
) -> None:
    victim = _damage(fs, root, batch[0], how)
    with pytest.raises(StorageError, match=message) as info:
        verify(fs, root, batch[0])
    assert victim.key in str(info.value)


def test_verify_checks_row_counts_against_the_footer(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest = batch[0]
    files = list(manifest.files)
    f = files[0]
    files[0] = WrittenFile(f.key, f.dataset, f.finished_date, f.rows + 1, f.bytes, f.sha256)
    lying = BatchManifest(**{**manifest.__dict__, "files": files})
    with pytest.raises(StorageError, match="footer says"):
        verify(fs, root, lying)


# -- reads ----------------------------------------------------------------------------------


def test_read_history_returns_exactly_the_events_in_order(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest, workflows, history = batch
    keys = manifest.keys("history")
    for w in workflows[:25]:
        wid = w["workflow_id"]
        expected = sorted(
            (e for e in history if e["workflow_id"] == wid), key=lambda e: e["event_id"]
        )
        assert read_history(fs, root, keys, wid) == expected
    assert read_history(fs, root, keys, "no-such-workflow") == []


def test_read_workflow(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest, workflows, _ = batch
    keys = manifest.keys("workflows")
    for w in workflows[:25]:
        assert read_workflow(fs, root, keys, w["workflow_id"]) == w
    assert read_workflow(fs, root, keys, "no-such-workflow") is None


def test_read_workflow_in_overlapping_batches_is_an_error(fs: pafs.FileSystem, root: str) -> None:
    workflows, history = make_rows(5, 2, days=1)
    keys = [
        *BatchWriter(store_at(root), "one").write(*tables(workflows, history)).keys("workflows"),
        *BatchWriter(store_at(root), "two").write(*tables(workflows, history)).keys("workflows"),
    ]
    with pytest.raises(StorageError, match="appears 2 times"):
        read_workflow(fs, root, keys, workflows[0]["workflow_id"])


class _CountingHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """A local filesystem that counts the bytes read through it."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()
        self.read = 0
        self.lock = threading.Lock()

    def open_input_file(self, path: str) -> Any:
        handler = self

        class Counting(io.RawIOBase):
            def __init__(self) -> None:
                self.raw = open(path, "rb")  # noqa: SIM115

            def readable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return True

            def seek(self, offset: int, whence: int = 0) -> int:
                return self.raw.seek(offset, whence)

            def tell(self) -> int:
                return self.raw.tell()

            def read(self, size: int = -1) -> bytes:
                data = self.raw.read(size)
                with handler.lock:
                    handler.read += len(data)
                return data

            def close(self) -> None:
                self.raw.close()
                super().close()

        return pa.PythonFile(Counting(), mode="r")

    def open_input_stream(self, path: str) -> Any:
        return self.open_input_file(path)

    def get_type_name(self) -> str:
        return "counting"

    def normalize_path(self, path: str) -> str:
        return str(self.local.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> Any:
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> Any:
        return self.local.get_file_info(selector)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return id(self)

    def create_dir(self, path: str, recursive: bool) -> None:
        raise NotImplementedError

    def delete_dir(self, path: str) -> None:
        raise NotImplementedError

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        raise NotImplementedError

    def delete_root_dir_contents(self) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        raise NotImplementedError

    def move(self, src: str, dest: str) -> None:
        raise NotImplementedError

    def copy_file(self, src: str, dest: str) -> None:
        raise NotImplementedError

    def open_output_stream(self, path: str, metadata: Any = None) -> Any:
        raise NotImplementedError

    def open_append_stream(self, path: str, metadata: Any = None) -> Any:
        raise NotImplementedError


def test_point_lookup_reads_one_row_group_not_the_file(fs: pafs.FileSystem, root: str) -> None:
    workflows, history = make_rows(2000, 10, days=1)
    rnd = random.Random(3)
    for e in history:  # incompressible payloads: row groups much larger than the footer
        e["payload"] = json.dumps(rnd.randbytes(100).hex())
    manifest = BatchWriter(store_at(root), "prune", row_group_rows=1000).write(
        *tables(workflows, history)
    )
    (hist,) = [f for f in manifest.files if f.dataset == "history"]
    meta = footer(fs, root, hist.key)
    assert meta.num_row_groups == 20
    handler = _CountingHandler()
    counting = pafs.PyFileSystem(handler)
    wid = workflows[0]["workflow_id"]
    events = read_history(counting, root, [hist.key], wid)
    assert [e["event_id"] for e in events] == list(range(1, 11))
    # The footer (pyarrow reads the last 64 KiB at once) plus one row group of twenty.
    assert 0 < handler.read < 64 * 1024 + 2 * hist.bytes / 20, (handler.read, hist.bytes)


def test_dataset_for_analytics(
    fs: pafs.FileSystem, root: str, batch: tuple[BatchManifest, Any, Any]
) -> None:
    manifest, workflows, history = batch
    events = dataset(fs, root, manifest.keys("history"), "history")
    assert events.schema.equals(HISTORY_SCHEMA, check_metadata=True)
    assert events.count_rows() == len(history)
    day = manifest.files[0].finished_date
    in_day = events.count_rows(filter=ds.field("finished_date") == date.fromisoformat(day))
    ids = {w["workflow_id"] for w in workflows if day_of(w["finished_at"]) == day}
    assert in_day == sum(1 for e in history if e["workflow_id"] in ids) > 0
    wfs = dataset(fs, root, manifest.keys("workflows"), "workflows")
    failed = wfs.to_table(filter=ds.field("status") == "failed").num_rows
    assert failed == sum(1 for w in workflows if w["status"] == "failed")
    assert dataset(fs, root, [], "workflows").count_rows() == 0
    with pytest.raises(InvalidArgument):
        dataset(fs, root, manifest.keys("history"), "workflows")
    with pytest.raises(InvalidArgument):
        dataset(fs, root, [], "events")


# -- the row-group hook ----------------------------------------------------------------------


def test_on_row_group_fires_after_each_row_group(fs: pafs.FileSystem, root: str) -> None:
    workflows, history = make_rows(300, 10, days=2)
    calls: list[str] = []
    manifest = BatchWriter(
        store_at(root), "hook", row_group_rows=400, on_row_group=calls.append
    ).write(*tables(workflows, history))
    expected = []
    for f in manifest.files:
        expected += [f.key] * footer(fs, root, f.key).num_row_groups
    assert calls == expected
    assert len(calls) > len(manifest.files)  # some file had several row groups


def test_a_crash_mid_file_leaves_only_whole_files(fs: pafs.FileSystem, root: str) -> None:
    workflows, history = make_rows(300, 10, days=2)
    calls: list[str] = []

    def crash(key: str) -> None:
        calls.append(key)
        if "history" in key:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        BatchWriter(store_at(root), "crash", row_group_rows=400, on_row_group=crash).write(
            *tables(workflows, history)
        )
    left = batch_keys(store_at(root), "crash")
    assert left and all(k.startswith("warm/workflows/") for k in left)
    assert calls[-1] not in left
    for key in left:
        footer(fs, root, key)  # complete Parquet files


# -- validation --------------------------------------------------------------------------------


def test_builders_reject_bad_columns() -> None:
    workflows, history = make_rows(3, 2, days=1)
    wf = columns(workflows, WORKFLOW_COLUMNS)
    with pytest.raises(InvalidArgument, match="missing columns"):
        workflows_table({k: v for k, v in wf.items() if k != "run_id"})
    with pytest.raises(InvalidArgument, match="unknown columns"):
        workflows_table({**wf, "color": ["red"] * 3})
    with pytest.raises(InvalidArgument, match="differ in length"):
        workflows_table({**wf, "run_id": ["r"]})
    with pytest.raises(InvalidArgument, match="'workflow_id' holds nulls"):
        workflows_table({**wf, "workflow_id": [None, "a", "b"]})
    with pytest.raises(InvalidArgument, match="'created_at'"):
        workflows_table({**wf, "created_at": ["yesterday"] * 3})
    with pytest.raises(InvalidArgument, match="'input'"):
        workflows_table({**wf, "input": [{"not": "text"}] * 3})
    hist = columns(history, HISTORY_COLUMNS)
    with pytest.raises(InvalidArgument, match="no finished_at"):
        history_table(hist, {})


def test_workflows_builder_derives_duration_tier_and_date() -> None:
    workflows, _ = make_rows(12, 0, days=3)
    wf = columns(workflows, WORKFLOW_COLUMNS)
    del wf["duration_ms"], wf["tier"]
    rows = workflows_table(wf).to_pylist()
    for row, w in zip(rows, workflows, strict=True):
        assert row["duration_ms"] == w["duration_ms"]
        assert row["tier"] == "warm"
        assert row["finished_date"].isoformat() == day_of(w["finished_at"])


def test_finished_date_is_the_utc_date() -> None:
    edges = [BASE - 1, BASE, BASE + DAY_US - 1, -1, -DAY_US, -DAY_US - 1]
    workflows, _ = make_rows(len(edges), 0, days=1)
    for w, t in zip(workflows, edges, strict=True):
        w["finished_at"] = t
        w["created_at"] = w["started_at"] = t - 5
        w["duration_ms"] = 0.005
    dates = workflows_table(columns(workflows, WORKFLOW_COLUMNS)).column("finished_date")
    assert [d.isoformat() for d in dates.to_pylist()] == [
        "2025-12-31", "2026-01-01", "2026-01-01", "1969-12-31", "1969-12-31", "1969-12-30"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("duplicate", "appears more than once"),
        ("gap", "event ids must be 1..n"),
        ("repeat", "event ids must be 1..n"),
        ("start_at_2", "event ids must be 1..n"),
        ("running", "invalid status 'running'"),
        ("orphan", "not in the batch"),
        ("hot_tier", "invalid tier 'hot'"),
        ("other_run", "invalid run_id 'elsewhere'"),
        ("other_type", "invalid workflow_type 'elsewhere'"),
    ],
)
def test_writer_rejects_an_inconsistent_batch(
    fs: pafs.FileSystem, root: str, change: str, message: str
) -> None:
    workflows, history = make_rows(6, 4, days=2)
    history.sort(key=lambda e: (e["workflow_id"], e["event_id"]))
    finished = {w["workflow_id"]: w["finished_at"] for w in workflows}
    if change == "duplicate":
        workflows.append(dict(workflows[0]))
    elif change == "gap":
        history = [
            e
            for e in history
            if not (e["workflow_id"] == history[0]["workflow_id"] and e["event_id"] == 2)
        ]
    elif change == "repeat":
        history.append(dict(history[1]))
    elif change == "start_at_2":
        history = history[1:]
    elif change == "running":
        workflows[2]["status"] = "running"
    elif change == "orphan":
        history.append({**history[0], "workflow_id": "ghost"})
        finished["ghost"] = BASE
    elif change == "hot_tier":
        workflows[1]["tier"] = "hot"
    elif change == "other_run":
        history[3]["run_id"] = "elsewhere"
    elif change == "other_type":
        history[3]["workflow_type"] = "elsewhere"
    wf = workflows_table(columns(workflows, WORKFLOW_COLUMNS))
    hist = history_table(columns(history, HISTORY_COLUMNS), finished)
    with pytest.raises(InvalidArgument, match=message):
        BatchWriter(store_at(root), "bad").write(wf, hist)
    assert batch_keys(store_at(root), "bad") == []


def test_writer_rejects_tables_of_the_wrong_shape(fs: pafs.FileSystem, root: str) -> None:
    wf, hist = tables(*make_rows(3, 2, days=1))
    writer = BatchWriter(store_at(root), "shape")
    with pytest.raises(InvalidArgument, match="columns"):
        writer.write(hist, wf)
    with pytest.raises(InvalidArgument):
        BatchWriter(store_at(root), "x", compression="zip")
    with pytest.raises(InvalidArgument):
        BatchWriter(store_at(root), "x", row_group_rows=0)
    # A finished_date that is not the date of finished_at.
    shifted = wf.set_column(
        wf.schema.get_field_index("finished_date"),
        WORKFLOWS_SCHEMA.field("finished_date"),
        pa.array([date(2000, 1, 1)] * 3, pa.date32()),
    )
    with pytest.raises(InvalidArgument, match="invalid finished_date"):
        writer.write(shifted, hist)
    # A table without the schema's metadata (e.g. made by hand) is conformed, not refused.
    plain = pa.Table.from_arrays(wf.columns, names=wf.column_names)
    assert writer.write(plain, hist).workflow_count == 3


# -- property: arbitrary histories round-trip unchanged -----------------------------------------

_text = st.text(max_size=12)  # any unicode, astral plane included
_json_text = st.builds(lambda s: json.dumps(s, ensure_ascii=False), _text)
_big_text = st.builds(
    lambda s, n: json.dumps(s * (100_000 // max(1, len(s.encode())) + n), ensure_ascii=False),
    st.text(min_size=1, max_size=4),
    st.integers(0, 3),
)
# 1900-01-01 .. 2200-01-01 in µs, both sides of the epoch.
_micros = st.integers(-2_208_988_800_000_000, 7_258_118_400_000_000)


@st.composite
def _workflow(draw: st.DrawFn, wid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    finished = draw(_micros)
    started = draw(st.none() | st.integers(finished - 10**12, finished))
    wtype = draw(_text.filter(bool))
    run_id = draw(_text)
    row = {
        "workflow_id": wid,
        "run_id": run_id,
        "workflow_type": wtype,
        "status": draw(st.sampled_from(TERMINAL)),
        "parent_workflow_id": draw(st.none() | _text),
        "input": draw(st.none() | _json_text),
        "result": draw(st.none() | _json_text),
        "error": draw(st.none() | _json_text),
        "attributes": draw(_json_text),
        "created_at": draw(st.integers(finished - 10**12, finished)),
        "started_at": started,
        "finished_at": finished,
        "duration_ms": None if started is None else (finished - started) / 1000,
        "step_count": draw(st.integers(0, 2**40)),
        "tier": "warm",
    }
    n = draw(st.integers(0, 40))
    big = draw(st.dictionaries(st.integers(1, max(1, n)), _big_text, max_size=2))
    events = [
        {
            "workflow_id": wid,
            "run_id": run_id,
            "event_id": e,
            "event_type": draw(
                st.sampled_from(["workflow.started", "step.completed", "timer.fired"])
            ),
            "event_time": draw(_micros),
            "step_name": draw(st.none() | _text),
            "attempt": draw(st.none() | st.integers(0, 2**62)),
            "payload": big.get(e) or draw(st.none() | _json_text),
            "workflow_type": wtype,
        }
        for e in range(1, n + 1)
    ]
    return row, events


@st.composite
def _batches(draw: st.DrawFn) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    ids = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=6, unique=True))
    return [draw(_workflow(wid)) for wid in ids]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    batch=_batches(),
    max_rows=st.integers(1, 100),
    group_rows=st.integers(1, 64),
    derive=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_histories_round_trip_unchanged(
    batch: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    max_rows: int,
    group_rows: int,
    derive: bool,
    seed: int,
) -> None:
    workflows = [w for w, _ in batch]
    history = [e for _, events in batch for e in events]
    random.Random(seed).shuffle(history)  # the writer sorts; input order must not matter
    wf_cols = columns(workflows, WORKFLOW_COLUMNS)
    if derive:
        del wf_cols["duration_ms"], wf_cols["tier"]
    finished = {w["workflow_id"]: w["finished_at"] for w in workflows}
    fs = pafs.LocalFileSystem()
    with tempfile.TemporaryDirectory() as root:
        manifest = BatchWriter(
            store_at(root), "prop", max_rows_per_file=max_rows, row_group_rows=group_rows
        ).write(
            workflows_table(wf_cols), history_table(columns(history, HISTORY_COLUMNS), finished)
        )
        verify(fs, root, manifest)
        assert BatchManifest.from_json(manifest.to_json()) == manifest
        wf_keys, hist_keys = manifest.keys("workflows"), manifest.keys("history")
        for w, events in batch:
            assert read_workflow(fs, root, wf_keys, w["workflow_id"]) == w
            assert read_history(fs, root, hist_keys, w["workflow_id"]) == events
        # Whole files, read by plain pyarrow in key order, are sorted by (date, id, event).
        for f in manifest.files:
            ids = read_file(fs, root, f.key, columns=["workflow_id"]).column(0).to_pylist()
            assert ids == sorted(ids)
