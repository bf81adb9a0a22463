"""The hot history of finished instances, kept as Arrow between SQL queries.

A finished instance's file never changes again (a terminal instance refuses
every command), yet reading it costs a SQLite open per instance: with a few
thousand finished instances waiting for their tiering pass, that was 70 % of
a GROUP BY over 10M events. So the SQL engine keeps their events here, in
memory, and a query opens only the files of live instances and of instances
it has not seen before.

Correctness rests on the key: an entry is used only while the query's index
cut lists the same instance with exactly the same index row (run id, status,
finish time, file, ...). An instance that moved to warm is not in the cut's
hot rows, so its cached events are never read again and are dropped; a new run
under the same id has another key. The cache is bounded (``max_bytes``);
when it is full the oldest segments go first, and a query never depends on
the cache for correctness, only for speed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

__all__ = ["HotCache"]

DEFAULT_MAX_BYTES = 256 * 2**20
"""Default bound of one engine's cache (Arrow buffer bytes)."""


@dataclass
class _Segment:
    """Events of several instances, each instance's rows contiguous."""

    table: pa.Table
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (offset, length)
    live: int = 0  # rows of instances still cached


class HotCache:
    """Finished hot instances' history (an Arrow table per batch of reads) and results.

    Thread-safe: queries run on several I/O threads.

    Args:
        max_bytes: Arrow bytes kept at most; 0 turns the cache off.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._where: dict[str, tuple[_Segment, tuple[Any, ...]]] = {}  # id -> (segment, key)
        self._results: dict[str, tuple[tuple[Any, ...], str | None]] = {}
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Arrow bytes held now."""
        return self._bytes

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._segments.clear()
            self._where.clear()
            self._results.clear()
            self._bytes = 0

    def history(
        self, keys: Mapping[str, tuple[Any, ...]], wanted: Sequence[str] | None
    ) -> tuple[list[pa.Table], list[str]]:
        """The cached events of ``wanted`` (None: every key), and the ids not cached.

        Args:
            keys: Every finished hot instance of the query's cut: id to index row.
                Entries whose id is missing here or whose row differs are dropped.
            wanted: The ids the query reads; None for all of ``keys``.

        Returns:
            Arrow tables holding exactly the cached events of the wanted ids,
            and the wanted ids the caller must read from their files.
        """
        with self._lock:
            self._prune(keys)
            ids = keys.keys() if wanted is None else wanted
            missing = [i for i in ids if i not in self._where]
            if wanted is None:
                return [s.table for s in self._segments if s.table.num_rows], missing
            parts = []
            for i in wanted:
                found = self._where.get(i)
                if found is not None:
                    offset, length = found[0].spans[i]
                    parts.append(found[0].table.slice(offset, length))
            return parts, missing

    def add(
        self, table: pa.Table, spans: Mapping[str, tuple[int, int]], keys: Mapping[str, Any]
    ) -> None:
        """Keep ``table`` (events of the instances in ``spans``, keyed by ``keys``)."""
        if self.max_bytes <= 0 or not spans:
            return
        size = table.nbytes
        if size > self.max_bytes:
            return  # one read bigger than the whole cache: not worth keeping
        with self._lock:
            for i in spans:
                self._drop(i)
            seg = _Segment(table, dict(spans), sum(n for _, n in spans.values()))
            self._segments.append(seg)
            for i in spans:
                self._where[i] = (seg, keys[i])
            self._bytes += size
            while self._bytes > self.max_bytes and self._segments:
                old = self._segments[0]
                for i in list(old.spans):
                    self._drop(i)
                self._forget(old)

    def results(
        self, keys: Mapping[str, tuple[Any, ...]], wanted: Iterable[str]
    ) -> tuple[dict[str, str | None], list[str]]:
        """Cached ``result`` texts of ``wanted`` (completed instances), and the ids not cached."""
        found: dict[str, str | None] = {}
        missing = []
        with self._lock:
            for i in wanted:
                hit = self._results.get(i)
                if hit is not None and hit[0] == keys.get(i):
                    found[i] = hit[1]
                else:
                    missing.append(i)
        return found, missing

    def add_results(self, values: Mapping[str, str | None], keys: Mapping[str, Any]) -> None:
        """Keep ``result`` texts of completed instances."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            for i, v in values.items():
                self._results[i] = (keys[i], v)

    # -- under the lock -------------------------------------------------------------------

    def _prune(self, keys: Mapping[str, tuple[Any, ...]]) -> None:
        """Drop entries the cut no longer lists as they were; rewrite thinned segments."""
        for i, (_, key) in list(self._where.items()):
            if keys.get(i) != key:
                self._drop(i)
        for i in [i for i, (key, _) in self._results.items() if keys.get(i) != key]:
            del self._results[i]
        for seg in list(self._segments):
            if seg.live == 0:
                self._forget(seg)
            elif seg.live < seg.table.num_rows:
                self._repack(seg)

    def _drop(self, workflow_id: str) -> None:
        found = self._where.pop(workflow_id, None)
        if found is not None:
            seg = found[0]
            seg.live -= seg.spans.pop(workflow_id)[1]

    def _forget(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        self._bytes -= seg.table.nbytes

    def _repack(self, seg: _Segment) -> None:
        """Rewrite ``seg`` with its live instances only (a full scan reads no stale row)."""
        parts, spans, offset = [], {}, 0
        for i, (start, length) in seg.spans.items():
            parts.append(seg.table.slice(start, length))
            spans[i] = (offset, length)
            offset += length
        table = pa.concat_tables(parts).combine_chunks()
        self._bytes += table.nbytes - seg.table.nbytes
        seg.table, seg.spans = table, spans
