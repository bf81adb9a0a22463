"""Point reads of one workflow's rows from archive files, on file:// and moto S3.

``PointReader`` keeps each file's footer and size; a later lookup in the file reads the row
groups it needs with one ranged read (on S3: one GET, no HEAD) and skips a file whose
statistics rule the workflow out without any request.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tierflow.warm.lookup import PointReader

pytestmark = pytest.mark.timeout(60)

SCHEMA = pa.schema(
    [("workflow_id", pa.string()), ("event_id", pa.int64()), ("payload", pa.string())]
)


def archive_file(ids: list[str], events: int) -> bytes:
    """A Parquet file sorted by workflow id, a row group per id, as the archive writes."""
    rows = [(w, e, f"{w}/{e}" * 20) for w in sorted(ids) for e in range(events)]
    table = pa.table(list(zip(*rows, strict=True)), schema=SCHEMA)
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=events)
    return out.getvalue()


def test_a_second_lookup_reads_one_span_and_gives_the_same_rows(make_store, request: Any):
    store = make_store()
    ids = [f"wf-{i:03d}" for i in range(8)]
    store.put("warm/history/x.parquet", archive_file(ids, 50))
    path = store.path("warm/history/x.parquet")
    reader = PointReader(store.fs, read_range=store.read_range)
    plain = PointReader(store.fs)  # opens the file every time
    counted = request.getfixturevalue("s3_server").requests if store.url.startswith("s3") else None

    def requests() -> dict[str, int]:
        return dict(counted) if counted is not None else {}

    first = reader.read_file(path, "wf-003", SCHEMA)
    before = requests()
    second = reader.read_file(path, "wf-003", SCHEMA)
    after = requests()
    expected = plain.read_file(path, "wf-003", SCHEMA)
    assert first is not None and expected is not None
    assert second == first == expected
    assert second.column("event_id").to_pylist() == list(range(50))
    streamed = pa.concat_tables(reader.iter_file(path, "wf-005", SCHEMA, batch_rows=7))
    assert streamed == plain.read_file(path, "wf-005", SCHEMA)
    if counted is not None:
        delta = {m: after.get(m, 0) - before.get(m, 0) for m in after}
        assert delta.get("HEAD", 0) == 0 and delta.get("GET", 0) == 1, delta
        # An id outside every row group's bounds: no request at all.
        quiet = requests()
        assert reader.read_file(path, "zz-not-here", SCHEMA) is None
        assert requests() == quiet


def test_a_kept_file_that_is_gone_raises_file_not_found_as_an_open_would(make_store):
    store = make_store()
    store.put("warm/history/y.parquet", archive_file(["a", "b", "c"], 40))
    path = store.path("warm/history/y.parquet")
    reader = PointReader(store.fs, read_range=store.read_range)
    assert reader.read_file(path, "c", SCHEMA) is not None  # footer and size kept
    store.delete("warm/history/y.parquet")
    with pytest.raises(FileNotFoundError):
        reader.read_file(path, "c", SCHEMA)


@pytest.mark.parametrize("ids", [8, 1500], ids=["small-footer", "footer-over-64k"])
def test_a_first_lookup_with_the_size_known_reads_no_head(make_store, request: Any, ids: int):
    """Given a file's size (a cold manifest records it), the first lookup reads the footer
    with a ranged GET (two when the footer exceeds the tail read) and the row groups with
    another: no HEAD to ask a size that never changes."""
    store = make_store()
    data = archive_file([f"wf-{i:04d}" for i in range(ids)], 3)
    store.put("cold/x.parquet", data)
    path = store.path("cold/x.parquet")
    reader = PointReader(store.fs, read_range=store.read_range)
    counted = request.getfixturevalue("s3_server").requests if store.url.startswith("s3") else None
    before = dict(counted or {})
    found = reader.read_file(path, "wf-0003", SCHEMA, size=len(data))
    sent = {m: n - before.get(m, 0) for m, n in (counted or {}).items()}
    assert found == PointReader(store.fs).read_file(path, "wf-0003", SCHEMA)
    assert found is not None and found.column("event_id").to_pylist() == [0, 1, 2]
    footer = int.from_bytes(data[-8:-4], "little") + 8
    assert (footer > 64 * 1024) == (ids > 1000)
    if counted is not None:
        gets = 3 if footer > 64 * 1024 else 2
        assert sent.get("HEAD", 0) == 0 and sent.get("GET", 0) == gets, sent
    streamed = pa.concat_tables(
        PointReader(store.fs, read_range=store.read_range).iter_file(
            path, "wf-0005", SCHEMA, batch_rows=2, size=len(data)
        )
    )
    assert streamed == PointReader(store.fs).read_file(path, "wf-0005", SCHEMA)


def test_a_first_lookup_of_a_missing_file_of_known_size_raises_file_not_found(make_store):
    store = make_store()
    store.put("cold/y.parquet", archive_file(["a"], 2))
    path = store.path("cold/y.parquet")
    store.delete("cold/y.parquet")
    with pytest.raises(FileNotFoundError):
        PointReader(store.fs, read_range=store.read_range).read_file(path, "a", SCHEMA, size=500)
