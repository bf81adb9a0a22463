"""Reads of instances that live in the warm and cold tiers (the router's readers for them)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.cold.reader import ColdReader
from tierflow.hot import serde
from tierflow.hot.errors import StorageError
from tierflow.hot.index import IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo, from_micros
from tierflow.tiering.warm_ledger import WarmLedger
from tierflow.warm import writer
from tierflow.warm.lookup import PointReader, as_rows
from tierflow.warm.schema import schema_for
from tierflow.warm.storage import ObjectStore

__all__ = ["IO", "ColdSource", "WarmSource"]

# Runs blocking work off the event loop (``Engine.io``).
IO = Callable[..., Awaitable[Any]]


class WarmSource:
    """Answers ``describe``/``history`` for warm instances from their batch's files.

    The index row names the batch; the batch's manifest (kept in the ledger)
    names its files; the files are sorted by workflow id with row-group
    statistics, so a lookup reads only the row groups that can hold the id.

    Args:
        store: The warm object store.
        ledger: The tiering ledger (manifests of committed batches).
        io: Runs blocking work off the event loop.
    """

    def __init__(self, store: ObjectStore, ledger: WarmLedger, io: IO) -> None:
        self.store = store
        self.ledger = ledger
        self._io = io
        self._manifests: OrderedDict[str, writer.BatchManifest] = OrderedDict()
        self._points = PointReader(store.fs)

    def _manifest(self, row: IndexRow) -> writer.BatchManifest:
        bid = row.batch_id
        if bid is None:
            raise StorageError(
                f"workflow {row.workflow_id!r} is marked {row.tier} without a batch",
                workflow_id=row.workflow_id,
                url=self.store.url,
            )
        cached = self._manifests.get(bid)
        if cached is not None:
            self._manifests.move_to_end(bid)
            return cached
        batch = self.ledger.get(bid)
        if batch is None or batch.manifest is None:
            raise StorageError(
                f"batch {bid} of workflow {row.workflow_id!r} is not in the ledger",
                workflow_id=row.workflow_id,
                url=self.store.url,
            )
        if batch.store_url and batch.store_url != self.store.url:
            raise StorageError(
                f"workflow {row.workflow_id!r} is in warm batch {bid}, written to "
                f"{batch.store_url}, but this engine reads warm data from {self.store.url}; "
                "set TIERFLOW_STORAGE_URL (and TIERFLOW_S3_ENDPOINT) to that store",
                workflow_id=row.workflow_id,
                url=self.store.url,
            )
        manifest = writer.BatchManifest.from_json(batch.manifest)
        self._manifests[bid] = manifest
        while len(self._manifests) > 256:
            self._manifests.popitem(last=False)
        return manifest

    def _keys(self, row: IndexRow, dataset: str) -> list[str]:
        manifest = self._manifest(row)
        day = None
        if row.finished_at is not None:
            day = from_micros(row.finished_at).date().isoformat()
        keys = [
            f.key
            for f in manifest.files
            if f.dataset == dataset and (day is None or f.finished_date == day)
        ]
        return keys or [f.key for f in manifest.files if f.dataset == dataset]

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        """The instance's ``workflows`` row, read from warm."""
        rows = await self._io(self._rows_of, row, "workflows")
        if len(rows) > 1:
            raise StorageError(
                f"workflow {row.workflow_id!r} appears {len(rows)} times in warm batch "
                f"{row.batch_id}",
                workflow_id=row.workflow_id,
                url=self.store.url,
            )
        found = rows[0] if rows else None
        if found is None:
            raise StorageError(
                f"workflow {row.workflow_id!r} is missing from its warm batch {row.batch_id}",
                workflow_id=row.workflow_id,
                url=self.store.url,
            )
        return workflow_info(found, row.tier)

    async def history(self, row: IndexRow) -> list[HistoryEvent]:
        """Every event of the instance, in order, read from warm."""
        rows = await self._io(self._rows_of, row, "history")
        rows.sort(key=lambda r: r["event_id"])
        return history_events(rows)

    def _rows_of(self, row: IndexRow, dataset: str) -> list[dict[str, Any]]:
        paths = [writer.full_path(self.store.root, k) for k in self._keys(row, dataset)]
        try:
            found = self._points.read(paths, row.workflow_id, schema_for(dataset))
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(
                f"cannot read warm {dataset} of {row.workflow_id!r}: {exc}",
                workflow_id=row.workflow_id,
                url=self.store.url,
            ) from exc
        return as_rows(found)


def workflow_info(found: dict[str, Any], tier: str) -> WorkflowInfo:
    """A ``workflows`` row read from Parquet (timestamps in µs) as a :class:`WorkflowInfo`."""
    return WorkflowInfo(
        workflow_id=found["workflow_id"],
        run_id=found["run_id"],
        workflow_type=found["workflow_type"],
        status=found["status"],
        parent_workflow_id=found["parent_workflow_id"],
        input=serde.decode(found["input"]),
        result=serde.decode(found["result"]),
        error=serde.decode(found["error"]),
        attributes=serde.decode(found["attributes"]) or {},
        created_at=_dt(found["created_at"]),
        started_at=_dt_opt(found["started_at"]),
        finished_at=_dt_opt(found["finished_at"]),
        duration_ms=found["duration_ms"],
        step_count=found["step_count"],
        tier=tier,
    )


def history_events(rows: list[dict[str, Any]]) -> list[HistoryEvent]:
    """``history`` rows read from Parquet (in order) as :class:`HistoryEvent` objects."""
    return [
        HistoryEvent(
            workflow_id=r["workflow_id"],
            run_id=r["run_id"],
            event_id=r["event_id"],
            event_type=r["event_type"],
            event_time=_dt(r["event_time"]),
            step_name=r["step_name"],
            attempt=r["attempt"],
            payload=serde.decode(r["payload"]),
            workflow_type=r["workflow_type"],
        )
        for r in rows
    ]


class ColdSource:
    """Answers ``describe``/``history`` for cold instances from the Iceberg tables.

    The index row gives the partition (the date of ``finished_at``); the
    reader prunes to the files whose ``workflow_id`` bounds hold the id.

    Args:
        reader: The cold reader.
        io: Runs blocking work off the event loop.
    """

    def __init__(self, reader: ColdReader, io: IO) -> None:
        self.reader = reader
        self._io = io

    @staticmethod
    def _day(row: IndexRow) -> str:
        if row.finished_at is None:
            raise StorageError(
                f"workflow {row.workflow_id!r} is marked cold without a finish time",
                workflow_id=row.workflow_id,
            )
        return from_micros(row.finished_at).date().isoformat()

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        """The instance's ``workflows`` row, read from cold."""
        found = await self._io(self.reader.rows, "workflows", row.workflow_id, self._day(row))
        if len(found) != 1:
            raise StorageError(
                f"workflow {row.workflow_id!r} has {len(found)} rows in the cold workflows "
                f"table (expected 1; batch {row.batch_id})",
                workflow_id=row.workflow_id,
                url=self.reader.cold.where,
            )
        return workflow_info(found[0], row.tier)

    async def history(self, row: IndexRow) -> list[HistoryEvent]:
        """Every event of the instance, in order, read from cold."""
        rows = await self._io(self.reader.rows, "history", row.workflow_id, self._day(row))
        return history_events(rows)


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return from_micros(int(value))


def _dt_opt(value: Any) -> datetime | None:
    return None if value is None else _dt(value)
