"""The Parquet files of a cut: warm batches' manifests, the cold snapshot each table is read at.

Pure lookups over the index cut (:mod:`tierflow.tiering.sql.cut`), the batch
manifests and the Iceberg metadata; nothing here runs a query. Manifests and
snapshot file lists never change, so they are cached by id.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument
from tierflow.hot.router import Tier
from tierflow.tiering.sql.cut import (
    TierSnapshot,
    ancestry,
    commit_of,
    commit_times,
    pick_snapshot,
)
from tierflow.warm.writer import BatchManifest, full_path

if TYPE_CHECKING:  # pyiceberg is imported only when cold data is read
    from tierflow.cold.catalog import ColdTables

__all__ = ["CutFiles"]

_DATASETS = ("workflows", "history")
_GLOB = re.compile(r"[*?\[\]{}]")


class CutFiles:
    """Lists the files of a cut, and tells whether they may be read natively or are gone.

    Args:
        store: The warm/cold object store.
        cold: Returns the cold tables (called only when cold data is needed).
        native_reads: Let DuckDB read local Parquet files itself (in a fenced worker).
    """

    def __init__(self, store: Any, cold: Callable[[], ColdTables], native_reads: bool) -> None:
        self.store = store
        self.native_reads = native_reads
        self._cold_factory = cold
        self._cold: ColdTables | None = None
        self._tables_seen = False
        self._manifests: dict[str, BatchManifest] = {}
        self._plans: dict[tuple[str, int], list[str]] = {}
        self._lock = threading.Lock()

    def native(self, files: dict[tuple[str, str], list[str]]) -> bool:
        """Whether DuckDB may read the Parquet files itself (local files, plain names)."""
        if not self.native_reads or self.store.settings.is_s3 or not files:
            return False
        # read_parquet expands glob characters; a path holding one is read through Arrow.
        return not any(_GLOB.search(p) for ps in files.values() for p in ps)

    def gone(self, files: dict[tuple[str, str], list[str]]) -> bool:
        """Whether a file of the cut no longer exists (checked on the store)."""
        paths = [p for ps in files.values() for p in ps]
        if not paths:
            return False
        if not self.store.settings.is_s3:
            return any(not os.path.exists(p) for p in paths)
        try:
            infos = self.store.fs.get_file_info(paths)
        except (OSError, pa.ArrowException):
            return False
        return any(i.type == pa.fs.FileType.NotFound for i in infos)

    def files(
        self, cut: TierSnapshot, moment: tuple[str, Any] | None
    ) -> dict[tuple[str, str], list[str]]:
        """The Parquet files of the cut: ``(tier, dataset)`` to paths on the store's filesystem.

        Warm: the files of the cut's batches (their manifests); cold: the data
        files of the snapshot each table is read at.
        """
        warm = [] if moment is not None else cut.warm
        cold = self._cold_files(cut, moment)
        if cold:
            from tierflow.cold.reader import fs_path
        root = self.store.root
        out: dict[tuple[str, str], list[str]] = {}
        for d in _DATASETS:
            keys = [k for bid, blob in warm for k in self._manifest(bid, blob).keys(d)]
            if keys:
                out[(Tier.WARM.value, d)] = [full_path(root, k) for k in keys]
            if cold.get(d):
                out[(Tier.COLD.value, d)] = [fs_path(p) for p in cold[d]]
        return out

    def _manifest(self, batch_id: str, blob: bytes) -> BatchManifest:
        with self._lock:
            found = self._manifests.get(batch_id)
        if found is None:
            found = BatchManifest.from_json(blob)
            with self._lock:
                self._manifests[batch_id] = found
        return found

    def _cold_tables(self) -> ColdTables:
        if self._cold is None:
            from tierflow.cold.catalog import ColdTables

            shared = self._cold_factory()
            # An own instance: refreshing tables here must not race the cold move's.
            self._cold = ColdTables(shared.settings, shared.store, shared.layout)
        return self._cold

    def _cold_files(
        self, cut: TierSnapshot, moment: tuple[str, Any] | None
    ) -> dict[str, list[str]]:
        """The data files of the snapshot each cold table is read at."""
        if moment is None and not cut.commits:
            return {}  # the index counts nothing as cold: no catalog I/O at all
        cold = self._cold_tables()
        if not self._tables_seen:  # tables, once created, stay: look them up once
            if not cold.exists():
                if moment is not None and moment[0] == "snapshot":
                    raise InvalidArgument(f"as_of: no cold snapshot {moment[1]} (no cold tables)")
                return {}
            self._tables_seen = True
        loaded = {d: cold.table(d, refresh=True) for d in _DATASETS}
        chains = {
            d: ancestry(t.current_snapshot(), t.metadata.snapshot_by_id) for d, t in loaded.items()
        }
        times = commit_times(chains.values())
        bound: int | None = None
        if moment is not None:
            bound = self._bound(moment, loaded, times)
            _check_reachable(chains, bound)
        ms = bound

        def included(commit: str) -> bool:
            if commit not in cut.commits:
                return False
            return ms is None or times.get(commit, ms + 1) <= ms

        out: dict[str, list[str]] = {}
        for d, table in loaded.items():
            snap = pick_snapshot(chains[d], included, bound)
            if snap is None:
                continue
            key = (d, snap.snapshot_id)
            with self._lock:
                paths = self._plans.get(key)
            if paths is None:
                paths = [t.file.file_path for t in table.scan(snapshot_id=key[1]).plan_files()]
                with self._lock:
                    self._plans[key] = paths
            out[d] = paths
        return out

    @staticmethod
    def _bound(moment: tuple[str, Any], loaded: dict[str, Any], times: dict[str, int]) -> int:
        kind, value = moment
        if kind == "time":
            return int(value)
        for table in loaded.values():
            snap = table.metadata.snapshot_by_id(value)
            if snap is not None:
                commit = commit_of(snap)
                stamp: int = snap.timestamp_ms
                return times.get(commit, stamp) if commit else stamp
        raise InvalidArgument(
            f"as_of: no cold snapshot {value} (expired, erased, or not a tierflow table's)"
        )


def _check_reachable(chains: dict[str, list[Any]], bound: int) -> None:
    """Refuse a time before what a table's ancestry still reaches back to.

    A table's first commit has sequence number 1; when the oldest snapshot its
    ancestry still reaches has a higher one, older snapshots were expired
    (maintenance's expiry, or an erasure, which expires every snapshot holding
    erased rows; pyiceberg then forgets the parent link too). As of an earlier
    time the table cannot be read, and an empty answer would be a wrong one.

    Raises:
        InvalidArgument: ``bound`` (epoch ms) is before the oldest reachable snapshot.
    """
    for dataset, chain in chains.items():
        if not chain or bound >= chain[0].timestamp_ms:
            continue
        if (chain[0].sequence_number or 0) > 1 or chain[0].parent_snapshot_id is not None:
            since = datetime.fromtimestamp(chain[0].timestamp_ms / 1000, UTC).isoformat()
            raise InvalidArgument(
                f"as_of: the cold {dataset} table keeps no history before {since} (older "
                "snapshots were expired by maintenance or by an erasure)"
            )
