"""Reads of instances that live in the warm and cold tiers (the router's readers for them).

``iter_history`` streams an instance's history: its Parquet row groups are
decoded a record batch at a time and converted a chunk at a time, each step on
an I/O thread; the router's ``history`` is that stream in one chunk.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
from tierflow.cold.reader import ColdReader
from tierflow.hot import serde
from tierflow.hot.errors import StorageError
from tierflow.hot.index import IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo, from_micros
from tierflow.hot.router import HISTORY_CHUNK
from tierflow.tiering.warm_ledger import WarmLedger
from tierflow.warm import writer
from tierflow.warm.lookup import PointReader, as_rows
from tierflow.warm.schema import schema_for
from tierflow.warm.storage import ObjectStore

__all__ = ["IO", "ColdSource", "EventChunks", "WarmSource", "drain"]

# Runs blocking work off the event loop (``Engine.io``).
IO = Callable[..., Awaitable[Any]]
# Parquet rows decoded at a time, at least (see ``_batch``).
_BATCH_ROWS = 4096


class WarmSource:
    """Answers ``describe``/``iter_history`` for warm instances from their batch's files.

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
        self._points = PointReader(store.fs, read_range=store.read_range)

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

    async def iter_history(
        self, row: IndexRow, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """The instance's events after ``after_seq``, in order, ``chunk`` at a time, from warm.

        The batch's history files are read a record batch at a time (only the
        row groups that can hold the id) and merged by ``event_id``: a batch
        splits its files by size, so one long workflow can span several.
        """

        def parts() -> Generator[pa.Table, None, None]:
            # Runs on the I/O thread with the first read: the manifest costs no hop of its own.
            keys = self._keys(row, "history")
            paths = [writer.full_path(self.store.root, k) for k in keys]
            yield from self._points.iter_sorted(
                paths, row.workflow_id, schema_for("history"), "event_id", batch_rows=_batch(chunk)
            )

        chunks = EventChunks(parts(), chunk, after_seq)

        def take() -> list[HistoryEvent]:
            try:
                return chunks.take()
            except (OSError, pa.ArrowException) as exc:
                raise self._unreadable("history", row, exc) from exc

        async for events in drain(self._io, chunks, take):
            yield events

    def _rows_of(self, row: IndexRow, dataset: str) -> list[dict[str, Any]]:
        paths = [writer.full_path(self.store.root, k) for k in self._keys(row, dataset)]
        try:
            found = self._points.read(paths, row.workflow_id, schema_for(dataset))
        except (OSError, pa.ArrowException) as exc:
            raise self._unreadable(dataset, row, exc) from exc
        return as_rows(found)

    def _unreadable(self, dataset: str, row: IndexRow, exc: Exception) -> StorageError:
        return StorageError(
            f"cannot read warm {dataset} of {row.workflow_id!r}: {exc}",
            workflow_id=row.workflow_id,
            url=self.store.url,
        )


def _batch(chunk: int) -> int:
    """Rows to decode at a time for chunks of ``chunk`` events.

    A row group (16,384 rows) holds many workflows; the batches are filtered
    to one. Measured on one workflow of 6 events (Arrow reads alone) and one
    of 50,000 (server's peak RSS growth over HTTP), decoding 1,000 / 4,096 /
    16,384 rows at a time: 7.2 / 5.3 / 4.8 ms, 15-23 / 17-35 / 27-51 MiB.
    4,096 keeps most of the short read's speed for a fraction of the memory.
    """
    return max(chunk, _BATCH_ROWS)


class EventChunks:
    """Turns a stream of one workflow's history rows (Arrow tables) into chunks of events.

    Converts ``chunk`` rows per :meth:`take`, gathered from as many tables as
    it takes (a table is one record batch's rows of the workflow, often fewer
    than a chunk), so every chunk but the last is full, as in the hot tier, and
    at most one chunk of Python objects exists at a time. After each chunk it
    looks ahead for more rows, so the end is known with the last chunk (no
    extra trip to an I/O thread to learn it).

    Args:
        parts: The tables, ascending in ``event_id``.
        chunk: Events per chunk.
        after_seq: Skip rows with an ``event_id`` up to this one.

    Attributes:
        done: No rows are left.
    """

    def __init__(
        self, parts: Generator[pa.Table, None, None], chunk: int, after_seq: int = 0
    ) -> None:
        self.parts = parts
        self.chunk = chunk
        self.after_seq = after_seq
        self.done = False
        self._held: pa.Table | None = None

    def _fill(self) -> bool:
        """Hold a non-empty table if any rows are left; False when there are none."""
        while self._held is None or not self._held.num_rows:
            part = next(self.parts, None)
            if part is None:
                self.done = True
                return False
            if self.after_seq:
                part = part.filter(pc.greater(part.column("event_id"), self.after_seq))
            self._held = part
        return True

    def take(self) -> list[HistoryEvent]:
        """The next chunk of events, empty once :attr:`done` (reads files: I/O thread)."""
        pieces = []
        need = self.chunk
        while need and self._fill():
            held = self._held
            assert held is not None
            pieces.append(held.slice(0, need))
            self._held = held.slice(need)
            need -= pieces[-1].num_rows
        if not pieces:
            return []
        self._fill()
        return history_events(as_rows(pa.concat_tables(pieces)))

    def close(self) -> None:
        """Close the files the rows come from."""
        # After a cancellation an I/O thread may still be inside ``take``; the files
        # are then closed when the generator is collected.
        with contextlib.suppress(ValueError):
            self.parts.close()


async def drain(
    io: IO, chunks: EventChunks, take: Callable[[], list[HistoryEvent]]
) -> AsyncGenerator[list[HistoryEvent], None]:
    """Yield the chunks ``take`` returns (each call on an I/O thread) until ``chunks`` is done.

    ``take`` is ``chunks.take``, or a wrapper of it that translates errors.
    The files are closed at the end, or when the consumer stops early.
    """
    try:
        while not chunks.done:
            events = await io(take)
            if events:
                yield events
    finally:
        chunks.close()


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
    """Answers ``describe``/``iter_history`` for cold instances from the Iceberg tables.

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

    async def iter_history(
        self, row: IndexRow, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        """The instance's events after ``after_seq``, in order, ``chunk`` at a time, from cold.

        See :meth:`~tierflow.cold.reader.ColdReader.iter_history`.
        """
        parts = self.reader.iter_history(
            row.workflow_id, self._day(row), after=after_seq, batch_rows=_batch(chunk)
        )
        chunks = EventChunks(parts, chunk)
        async for events in drain(self._io, chunks, chunks.take):
            yield events


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return from_micros(int(value))


def _dt_opt(value: Any) -> datetime | None:
    return None if value is None else _dt(value)
