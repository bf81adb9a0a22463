"""``merge_sorted``: streams of tables, each ascending in a key, merged into one."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from tierflow.warm.lookup import merge_sorted


def stream(*batches: list[int]) -> Iterator[pa.Table]:
    for keys in batches:
        yield pa.table({"k": keys, "v": [f"v{k}" for k in keys]})


def merged(*streams: Iterator[pa.Table]) -> tuple[list[int], list[int]]:
    """The merged keys, and the size of each table it yielded."""
    out = list(merge_sorted(list(streams), "k"))
    return [k for t in out for k in t.column("k").to_pylist()], [t.num_rows for t in out]


def test_interleaved_streams_come_out_in_order_with_their_rows():
    keys, sizes = merged(stream([1, 4], [6, 9]), stream([2, 3], [5]), stream([7, 8, 10]))
    assert keys == list(range(1, 11))
    assert sum(sizes) == 10 and all(sizes)
    out = list(merge_sorted([stream([2, 3]), stream([1])], "k"))
    assert [r["v"] for t in out for r in t.to_pylist()] == ["v1", "v2", "v3"]


def test_one_stream_passes_through_and_none_is_empty():
    keys, sizes = merged(stream([1, 2, 3], [4, 5]))
    assert (keys, sizes) == ([1, 2, 3, 4, 5], [3, 2])
    assert merged() == ([], [])


def test_disjoint_files_of_one_workflow_concatenate():
    # A workflow split where a file ended: each file holds a run of its events.
    keys, _ = merged(stream([11, 12], [13]), stream([1, 2, 3], [4, 5, 6, 7, 8, 9, 10]))
    assert keys == list(range(1, 14))
