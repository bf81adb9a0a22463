"""SQL across tiers: one read-only DuckDB query over hot, warm and cold.

Views (each row has the ``rows.WORKFLOWS`` / ``rows.HISTORY`` columns; history
gets a ``tier`` column too):

- ``workflows``, ``history``: every tier (``UNION ALL`` of the ones below);
- ``hot_workflows``, ``hot_history``: the index, and live instance files;
- ``warm_workflows``, ``warm_history``: the Parquet files of committed batches;
- ``cold_workflows``, ``cold_history``: the Iceberg tables, one snapshot each.

Stock DuckDB, no extensions. Warm and cold are exact file lists (batch
manifests; ``plan_files()`` of the chosen snapshot): on ``file://`` DuckDB
reads them itself (``read_parquet``, each file allowed by name in the
sandbox), on object stores they are registered ``pyarrow.dataset`` objects;
either way filters and projections push down into the Parquet scans. Which
files those are comes from one read transaction of the index
(:mod:`tierflow.tiering.sql_snapshot`), so a query counts each workflow once
even while another process tiers or compacts. A file deleted after that read
(a move finished meanwhile) fails the query before any row is returned; the
whole query then runs again on a fresh read (up to five attempts).

Hot history of finished instances is cached between queries
(:mod:`tierflow.tiering.sql_hot_cache`); sandboxes are opened ahead and a
clean one is reused for the next query over the same files
(:class:`tierflow.tiering.sql_guard.Sandboxes`).

Time travel (``as_of``): a timestamp (aware ``datetime`` or ISO 8601 text) or
a cold snapshot id reads the cold tables as they were then; ``hot_*`` and
``warm_*`` are empty, so ``workflows``/``history`` are the Iceberg archive
as of that moment (warm files of batches compacted since are gone, and hot
data is not archived).

Confinement is :mod:`tierflow.tiering.sql_guard`; a row limit cuts the
result (``SqlResult.truncated``) and a timeout interrupts the query.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.cold import tables as cold_tables
from tierflow.cold.catalog import ColdTables
from tierflow.cold.reader import fs_path
from tierflow.hot.errors import CorruptInstance, InvalidArgument, StorageError
from tierflow.hot.index import IndexDB
from tierflow.hot.router import Tier
from tierflow.hot.rows import HISTORY, WORKFLOWS, names
from tierflow.tiering import sql_guard, sql_hot
from tierflow.tiering.sql_guard import QueryTimeout
from tierflow.tiering.sql_hot_cache import DEFAULT_MAX_BYTES, HotCache
from tierflow.tiering.sql_snapshot import (
    TierSnapshot,
    ancestry,
    commit_of,
    commit_times,
    pick_snapshot,
    read_snapshot,
)
from tierflow.warm import reader as warm_reader
from tierflow.warm.schema import schema_for
from tierflow.warm.writer import BatchManifest, full_path

__all__ = ["VIEWS", "AsOf", "QueryTimeout", "SqlLimits", "SqlResult", "TierSQL"]

AsOf = datetime | str | int
"""A time-travel point: an aware ``datetime``, ISO 8601 text, or a cold snapshot id."""

VIEWS: tuple[str, ...] = tuple(
    f"{prefix}{d}" for prefix in ("", "hot_", "warm_", "cold_") for d in ("workflows", "history")
)
"""Every view a query can read."""

IO = Callable[..., Awaitable[Any]]

_DATASETS = ("workflows", "history")
# A file of the cut can vanish when a move commits right after the index read; each
# attempt reads a fresh cut. Hot files an attempt did read stay cached, so the next one
# reads only the rest and its window shrinks; tests/tiering/test_sql.py samples queries
# while another process tiers 5-workflow batches back to back. A few attempts, with a
# short pause between them, for a reader that still loses several times in a row.
_ATTEMPTS = 5
_PAUSE = 0.05
_COLUMNS = {"workflows": names(WORKFLOWS), "history": (*names(HISTORY), "tier")}
_PREFIX = {"workflows": sql_hot.WORKFLOWS_PREFIX, "history": sql_hot.HISTORY_PREFIX}


@dataclass(frozen=True)
class SqlLimits:
    """Bounds on one query; ``None`` switches a bound off.

    Attributes:
        max_rows: Rows returned at most; a longer result is cut
            (``SqlResult.truncated``).
        timeout: Seconds before the query is interrupted (:class:`QueryTimeout`);
            for a streamed result, counted until the last batch is read.
        memory_limit: DuckDB's ``memory_limit`` (nothing spills to disk).
        batch_rows: Rows per record batch when streaming.
    """

    max_rows: int | None = 100_000
    timeout: float | None = 60.0
    memory_limit: str = "1GB"
    batch_rows: int = 65_536


class SqlResult:
    """The answer of one query.

    Attributes:
        columns: Column names, in order.
        types: DuckDB type names, in order.
        truncated: True when the row limit cut the result.
        elapsed: Seconds the whole call took, from the statement check to the
            last row (0 for a streamed result).
    """

    def __init__(
        self,
        columns: list[str],
        types: list[str],
        batches: Iterator[pa.RecordBatch],
        schema: pa.Schema,
        close: Callable[[], None],
    ) -> None:
        self.columns = columns
        self.types = types
        self.truncated = False
        self.elapsed = 0.0
        self._schema = schema
        self._batches = batches
        self._close = close
        self._table: pa.Table | None = None

    def _materialise(self) -> pa.Table:
        if self._table is None:
            try:
                self._table = pa.Table.from_batches(list(self._batches), schema=self._schema)
            finally:
                self.close()
        return self._table

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow record batches, streamed while the query runs.

        Read them once (a materialised result yields its batches again).
        """
        if self._table is not None:
            yield from self._table.to_batches()
            return
        try:
            yield from self._batches
        finally:
            self.close()

    def to_arrow(self) -> pa.Table:
        """All rows as an Arrow table."""
        return self._materialise()

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """All rows as tuples (timestamps as aware ``datetime``)."""
        table = self._materialise()
        cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
        return list(zip(*cols, strict=True)) if cols else []

    def close(self) -> None:
        """Release the query's connection (idempotent)."""
        self._close()


class _Run:
    """One query's hold on its sandbox: the timeout, and where the connection goes after.

    A connection goes back to the pool (:meth:`Sandboxes.keep`) only when the
    query read its result to the end and the timeout never fired; any error,
    cut or interrupt closes it.
    """

    def __init__(self, sandboxes: sql_guard.Sandboxes, key: Any) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None
        self.clean = False
        self._sandboxes = sandboxes
        self._key = key
        self._lock = threading.Lock()
        self._done = False
        self._fired = False
        self._timer: threading.Timer | None = None

    def arm(self, timeout: float | None) -> None:
        """Interrupt the query after ``timeout`` seconds (None: never)."""
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:  # never interrupts a connection already handed back
            if self._done or self.con is None:
                return
            self._fired = True
            self.con.interrupt()

    def close(self) -> None:
        """Release the connection (idempotent)."""
        with self._lock:
            if self._done:
                return
            self._done = True
        if self._timer is not None:
            self._timer.cancel()
        if self.con is None:
            return
        if self.clean and not self._fired:
            self._sandboxes.keep(self._key, self.con)
        else:
            self._sandboxes.release(self.con)


class _Retry(Exception):
    """The data moved under the query (a file of the cut is gone): read again."""


class TierSQL:
    """Runs SQL across the tiers of one data directory.

    Args:
        index: The instance index (read on the caller's, i.e. the event loop's, thread).
        instances_dir: Where the hot instance files are.
        durability: The engine's durability (to open live instance files).
        store: The warm/cold object store.
        cold: Returns the cold tables (called only when cold data is needed).
        io: Runs blocking work off the event loop (``engine.io``).
        limits: Default bounds.
        native_reads: Let DuckDB read local (``file://``) Parquet files itself,
            allowed file by file; False reads them through Arrow datasets, as on
            object stores (about 2x slower, see the module docstring).
        hot_cache_bytes: Bound of the cache of finished hot instances' history
            (0 turns it off).

    Attributes:
        hot_cache: Finished hot instances' history and results, kept between queries.
    """

    def __init__(
        self,
        index: IndexDB,
        instances_dir: Path,
        durability: str,
        store: Any,
        cold: Callable[[], ColdTables],
        io: IO,
        limits: SqlLimits | None = None,
        *,
        native_reads: bool = True,
        hot_cache_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.index = index
        self.instances_dir = instances_dir
        self.durability = durability
        self.store = store
        self._cold_factory = cold
        self._cold: ColdTables | None = None
        self.io = io
        self.limits = limits or SqlLimits()
        self.native_reads = native_reads
        self.hot_cache = HotCache(hot_cache_bytes)
        self._sandboxes = sql_guard.Sandboxes(self.limits.memory_limit)
        self._tables_seen = False
        self._manifests: dict[str, BatchManifest] = {}
        self._plans: dict[tuple[str, int], list[str]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release what the engine keeps between queries (the spare sandbox, the cache)."""
        self._sandboxes.close()
        self.hot_cache.clear()

    async def run(
        self,
        query: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        as_of: AsOf | None = None,
        *,
        limits: SqlLimits | None = None,
        stream: bool = False,
    ) -> SqlResult:
        """Run one confined query (see the module docstring).

        Args:
            query: One SELECT statement; ``?``/``$1`` or ``$name`` placeholders.
            params: Values of the placeholders (a sequence or a mapping).
            as_of: Read the cold archive as of this time or snapshot id.
            limits: Bounds for this query (default: the engine's).
            stream: Return before reading the rows; read them with
                ``SqlResult.batches()`` (then ``close()`` if not exhausted).

        Raises:
            InvalidArgument: The statement is refused, malformed, or ``as_of``
                names no snapshot.
            QueryTimeout: The query ran past the timeout.
            StorageError: The index, the catalog or a file cannot be read.
        """
        t0 = time.perf_counter()
        sql_guard.check_statement(query)
        moment = _as_of(as_of)
        bounds = limits or self.limits
        for attempt in range(_ATTEMPTS):
            cut = read_snapshot(self.index)  # on the loop thread: one transaction
            try:
                result: SqlResult = await self.io(
                    self._execute, cut, query, params, moment, bounds, stream
                )
                if not stream:
                    result.elapsed = time.perf_counter() - t0
                return result
            except _Retry as exc:
                await asyncio.sleep(_PAUSE * (attempt + 1))
                if attempt == _ATTEMPTS - 1:
                    raise StorageError(
                        f"SQL across tiers: data moved under the query {_ATTEMPTS} times: {exc}"
                    ) from None
        raise AssertionError("unreachable")

    # -- on an I/O thread ------------------------------------------------------------

    def _execute(
        self,
        cut: TierSnapshot,
        query: str,
        params: Any,
        moment: tuple[str, Any] | None,
        bounds: SqlLimits,
        stream: bool,
    ) -> SqlResult:
        hot_rows = [] if moment is not None else cut.hot
        files: dict[tuple[str, str], list[str]] = {}
        native = False
        run: _Run | None = None
        try:
            files = self._files(cut, moment)
            native = self._native(files)
            # A sandbox is locked to its files, so one prepared for the same files and
            # limit (views made, access off) serves again; see sql_guard.Sandboxes.
            key = (
                native,
                bounds.memory_limit,
                tuple(sorted((k, tuple(v)) for k, v in files.items())),
            )
            run = _Run(self._sandboxes, key)
            con = self._sandboxes.reuse(key)
            if con is None:
                con = self._sandboxes.take(bounds.memory_limit)
                run.con = con
                self._views(con, files if native else {})
                # After this, DuckDB opens no file but the cut's Parquet files (read natively).
                readable = [p for ps in files.values() for p in ps] if native else ()
                sql_guard.lock(con, readable=readable)
            else:
                run.con = con
                self._empty_hot(con)  # nothing of the previous query's hot data stays
            run.arm(bounds.timeout)
            # Hot files first: they are the data that moves soonest after the index read.
            if hot_rows:
                self._fill_hot(con, query, params, hot_rows)
            if not native:
                self._register_datasets(con, files)
            rel = con.sql(query, params=params)
            if rel is None:  # not a SELECT after all: refused by check_statement already
                raise InvalidArgument("SQL refused: the statement returns no rows")
            reader = rel.to_arrow_reader(bounds.batch_rows)
            result = SqlResult(
                list(rel.columns),
                [str(t) for t in rel.types],
                iter(()),
                reader.schema,
                run.close,
            )
            result._batches = self._guarded(reader, result, bounds, run)
            if not stream:
                result.to_arrow()
            return result
        except BaseException as exc:
            if run is not None:
                run.close()
            if native and _gone(files):  # a move committed since the cut deleted a file
                raise _Retry("a Parquet file of the cut is gone") from None
            raise _translate(exc, bounds) from None

    def _guarded(
        self, reader: Any, result: SqlResult, bounds: SqlLimits, run: _Run
    ) -> Iterator[pa.RecordBatch]:
        seen = 0
        limit = bounds.max_rows
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    run.clean = True  # read to the end: the connection may serve again
                    return
                except BaseException as exc:
                    raise _translate(exc, bounds) from None
                if limit is not None and seen + batch.num_rows > limit:
                    yield batch.slice(0, limit - seen)
                    result.truncated = True
                    return
                seen += batch.num_rows
                yield batch
        finally:
            run.close()

    @staticmethod
    def _empty_hot(con: duckdb.DuckDBPyConnection) -> None:
        con.register("__tf_hot_workflows", sql_hot.workflows_schema().empty_table())
        con.register("__tf_hot_history", sql_hot.history_schema().empty_table())

    def _views(
        self, con: duckdb.DuckDBPyConnection, native: dict[tuple[str, str], list[str]]
    ) -> None:
        """Create the views over every tier's data, and what they read.

        Hot data gets empty stand-ins (:meth:`_fill_hot` registers what the plan
        reads); warm/cold data read natively (``native``, by ``(tier, dataset)``)
        is a ``read_parquet`` of its files; the rest gets empty stand-ins until
        Arrow datasets are registered (:meth:`_register_datasets`).

        Raises:
            _Retry: A native file is gone (its batch was compacted since the cut).
        """
        self._empty_hot(con)
        ddl = []
        for d in _DATASETS:
            for tier in (Tier.WARM.value, Tier.COLD.value):
                paths = native.get((tier, d))
                if paths:
                    # One statement binds once (a relation's create_view binds twice).
                    files = ", ".join(_literal(p) for p in paths)
                    ddl.append(
                        f"CREATE VIEW __tf_{tier}_{d} AS SELECT * FROM "
                        f"read_parquet([{files}], hive_partitioning = false)"
                    )
                else:
                    con.register(f"__tf_{tier}_{d}", cold_tables.arrow_schema(d).empty_table())
        for d in _DATASETS:
            cols = _COLUMNS[d]
            hot = ", ".join(
                f"{_PREFIX[d]}{c} AS {c}" for c in cols if c != "tier" or d != "history"
            )
            if d == "history":
                hot += f", '{Tier.HOT.value}' AS tier"
            ddl.append(f"CREATE VIEW hot_{d} AS SELECT {hot} FROM __tf_hot_{d}")
            for tier in (Tier.WARM.value, Tier.COLD.value):
                body = ", ".join(c for c in cols if c != "tier")
                ddl.append(
                    f"CREATE VIEW {tier}_{d} AS SELECT {body}, '{tier}' AS tier "
                    f"FROM __tf_{tier}_{d}"
                )
            ddl.append(
                f"CREATE VIEW {d} AS SELECT * FROM hot_{d} UNION ALL SELECT * FROM warm_{d} "
                f"UNION ALL SELECT * FROM cold_{d}"
            )
        try:
            con.execute(";\n".join(ddl))
        except duckdb.IOException as exc:
            if _gone(native):
                raise _Retry(str(exc).splitlines()[0]) from None
            raise

    def _files(
        self, cut: TierSnapshot, moment: tuple[str, Any] | None
    ) -> dict[tuple[str, str], list[str]]:
        """The Parquet files of the cut: ``(tier, dataset)`` to paths on the store's filesystem.

        Warm: the files of the cut's batches (their manifests); cold: the data
        files of the snapshot each table is read at.
        """
        warm = [] if moment is not None else cut.warm
        cold = self._cold_files(cut, moment)
        root = self.store.root
        out: dict[tuple[str, str], list[str]] = {}
        for d in _DATASETS:
            keys = [k for bid, blob in warm for k in self._manifest(bid, blob).keys(d)]
            if keys:
                out[(Tier.WARM.value, d)] = [full_path(root, k) for k in keys]
            if cold.get(d):
                out[(Tier.COLD.value, d)] = [fs_path(p) for p in cold[d]]
        return out

    def _native(self, files: dict[tuple[str, str], list[str]]) -> bool:
        """Whether DuckDB reads the Parquet files itself (local files, plain names)."""
        if not self.native_reads or self.store.settings.is_s3 or not files:
            return False
        # read_parquet expands glob characters; a path holding one is read through Arrow.
        return not any(_GLOB.search(p) for ps in files.values() for p in ps)

    def _register_datasets(
        self, con: duckdb.DuckDBPyConnection, files: dict[tuple[str, str], list[str]]
    ) -> None:
        """Register the cut's files as Arrow datasets (object stores, or native reads off)."""
        for (tier, d), paths in files.items():
            schema = schema_for(d) if tier == Tier.WARM.value else cold_tables.arrow_schema(d)
            try:
                data = warm_reader.analytic_dataset(self.store.fs, paths, schema)
            except StorageError as exc:  # a batch compacted since the cut: files gone
                raise _Retry(str(exc)) from None
            con.register(f"__tf_{tier}_{d}", data)

    def _fill_hot(
        self,
        con: duckdb.DuckDBPyConnection,
        query: str,
        params: Any,
        hot_rows: Sequence[tuple[Any, ...]],
    ) -> None:
        """Register the hot data the query can touch: cached, or read from instance files.

        Finished instances come from :attr:`hot_cache` when it has them (their
        files no longer change); live ones, and finished ones not seen before,
        are read from their files, and the finished ones are cached.
        """
        plan = con.sql(f"EXPLAIN (FORMAT json) {query}", params=params).fetchall()
        touched = sql_hot.touched(str(plan[0][1]))
        history_rows = touched.ids_for(hot_rows, touched.history)
        result_rows = touched.completed(touched.ids_for(hot_rows, touched.results))
        if not history_rows and not result_rows:
            if touched.workflows:
                con.register("__tf_hot_workflows", sql_hot.hot_workflows(hot_rows, {}))
            return
        keys = sql_hot.finished(hot_rows)
        cached: list[pa.Table] = []
        fresh: set[str] = set()  # finished instances to read and cache
        to_read: dict[str, tuple[Any, ...]] = {}
        if history_rows:
            everything = touched.history == sql_hot.Touched.ALL
            wanted = None if everything else [r[0] for r in history_rows if r[0] in keys]
            cached, missing = self.hot_cache.history(keys, wanted)
            fresh.update(missing)
            to_read.update((r[0], r) for r in history_rows if r[0] not in keys)
        results: dict[str, str | None] = {}
        if result_rows:
            results, missing = self.hot_cache.results(keys, [r[0] for r in result_rows])
            fresh.update(missing)
        to_read.update((i, keys[i]) for i in fresh)
        gone: list[str] = []
        read = self._read_hot(list(to_read.values()), gone)
        # Cache what was read before giving up on a gone file: the next attempt (a fresh
        # cut) then reads only what is still missing, so it loses the race less often.
        if result_rows:
            found = {r["workflow_id"]: r.get("result") for r, _ in read if r["workflow_id"] in keys}
            self.hot_cache.add_results(found, keys)
            results.update(found)
        hist = {r[0] for r in history_rows}
        done = [it for it in read if it[0]["workflow_id"] in keys and it[0]["workflow_id"] in hist]
        if done:
            table = sql_hot.hot_history(done)
            self.hot_cache.add(table, sql_hot.spans(done), keys)
            cached.append(table)
        if gone:
            raise _Retry(f"{len(gone)} hot instance files gone since the cut (moved to warm)")
        if touched.workflows:
            con.register("__tf_hot_workflows", sql_hot.hot_workflows(hot_rows, results))
        if history_rows:
            live = [it for it in read if it[0]["workflow_id"] not in keys]
            if live:
                cached.append(sql_hot.hot_history(live))
            if cached:
                con.register("__tf_hot_history", pa.concat_tables(cached))

    def _read_hot(
        self, rows: Sequence[tuple[Any, ...]], gone: list[str]
    ) -> list[tuple[dict[str, Any], list[tuple[Any, ...]]]]:
        if not rows:
            return []
        try:
            return sql_hot.read_instances(self.instances_dir, rows, self.durability, gone)
        except FileNotFoundError as exc:  # a live instance's file: not a move, but retry
            raise _Retry(f"instance file gone: {exc}") from None
        except CorruptInstance as exc:
            raise StorageError(f"SQL across tiers: {exc}") from None

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
            shared = self._cold_factory()
            # An own instance: refreshing tables here must not race the compaction job's.
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


_GLOB = re.compile(r"[*?\[\]{}]")


def _literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _gone(files: dict[tuple[str, str], list[str]]) -> bool:
    """Whether a local file of the cut no longer exists."""
    return any(not os.path.exists(p) for ps in files.values() for p in ps)


def _as_of(value: AsOf | None) -> tuple[str, Any] | None:
    """Normalise ``as_of``: ``("time", epoch ms)`` or ``("snapshot", id)``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgument("as_of must be a datetime, an ISO 8601 string or a snapshot id")
    if isinstance(value, int):
        return ("snapshot", value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return ("snapshot", int(text))
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument(f"as_of {value!r}: not an ISO 8601 time or snapshot id") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgument("as_of must be timezone-aware (e.g. ...+00:00)")
        return ("time", int(value.timestamp() * 1000))
    raise InvalidArgument("as_of must be a datetime, an ISO 8601 string or a snapshot id")


def _translate(exc: BaseException, bounds: SqlLimits) -> BaseException:
    """Map what DuckDB or the readers raised to tierflow's errors."""
    if isinstance(exc, InvalidArgument | StorageError | _Retry):
        return exc
    if isinstance(exc, duckdb.InterruptException):
        return QueryTimeout(f"SQL query cut: it ran past the {bounds.timeout}s timeout")
    refused = sql_guard.refusal(exc)
    if refused is not None:
        return refused
    text = str(exc)
    if isinstance(exc, duckdb.Error) and "registered as" in text and "IOError" in text:
        return _Retry(text.splitlines()[0])
    if isinstance(exc, FileNotFoundError | OSError):
        return _Retry(str(exc))
    if isinstance(exc, duckdb.InvalidInputException):
        return InvalidArgument(f"SQL error: {text.splitlines()[0] if text else exc}")
    if isinstance(exc, duckdb.Error):
        return StorageError(f"SQL across tiers failed: {text.splitlines()[0] if text else exc}")
    return exc


def replace_limits(limits: SqlLimits, **changes: Any) -> SqlLimits:
    """``limits`` with some bounds changed (``...`` keeps a bound)."""
    return replace(limits, **{k: v for k, v in changes.items() if v is not ...})
