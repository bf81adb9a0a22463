"""SQL across tiers: one read-only DuckDB query over hot, warm and cold.

Views (each row has the ``rows.WORKFLOWS`` / ``rows.HISTORY`` columns; history
gets a ``tier`` column too):

- ``workflows``, ``history``: every tier (``UNION ALL`` of the ones below);
- ``hot_workflows``, ``hot_history``: the index, and live instance files;
- ``warm_workflows``, ``warm_history``: the Parquet files of committed batches;
- ``cold_workflows``, ``cold_history``: the Iceberg tables, one snapshot each;
- ``audit``: the compliance audit log (``rows.AUDIT``; a workflow appears only
  as the keyed hash of its id), as of the same index read; it is read only by
  a query whose text names it, and time travel does not change it.

Stock DuckDB, no extensions. Warm and cold are exact file lists (batch
manifests; ``plan_files()`` of the chosen snapshot). Which files those are
comes from one read transaction of the index
(:mod:`tierflow.tiering.sql.cut`), so a query counts each workflow once even
while another process moves workflows between tiers.

Each query runs in a worker process (:mod:`tierflow.tiering.sql.worker`,
lent by :mod:`tierflow.tiering.sql.pool`): the statement check, the plan,
DuckDB and the result all happen there, under one deadline and an
operating-system memory limit; past the deadline the worker is killed. This
side reads the index, the catalog and the hot instance files (bounded by
the data, not by the query's text) and sends the hot rows the plan touches.
Where the worker runs under the kernel fence and the files are local,
DuckDB reads them itself (each file allowed by name); elsewhere they are
Arrow datasets. Either way filters and projections push down.

One retry rule: only a proven "a file of the cut is gone" (a move finished
after the index read) runs the query again, on a fresh cut, within the same
deadline; every other failure surfaces once, as ``InvalidArgument``,
``QueryTimeout`` or ``StorageError`` with DuckDB's message (absolute paths
removed).

Time travel (``as_of``): a timestamp (aware ``datetime`` or ISO 8601 text) or
a cold snapshot id reads the cold tables as they were then; ``hot_*`` and
``warm_*`` are empty, so ``workflows``/``history`` are the Iceberg archive
as of that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.cold.schema import AUDIT_SCHEMA
from tierflow.cold.schema import arrow_schema as cold_schema
from tierflow.hot.errors import CorruptInstance, InvalidArgument, StorageError
from tierflow.hot.index import IndexDB
from tierflow.hot.rows import HISTORY, WORKFLOWS, names
from tierflow.tiering.compliance.audit import audit_table
from tierflow.tiering.leases import Lease, ReadLeases
from tierflow.tiering.sql import guard
from tierflow.tiering.sql import hot as sql_hot
from tierflow.tiering.sql.cut import TierSnapshot, read_snapshot
from tierflow.tiering.sql.files import CutFiles
from tierflow.tiering.sql.hot_cache import DEFAULT_MAX_BYTES, HotCache
from tierflow.tiering.sql.inputs import AsOf, as_of_point, checked_params
from tierflow.tiering.sql.plan import Touched
from tierflow.tiering.sql.pool import Deadline, WorkerGone, WorkerProcess, Workers
from tierflow.tiering.sql.result import SqlLimits, SqlResult, memory_bytes
from tierflow.warm.schema import schema_for

if TYPE_CHECKING:  # pyiceberg is imported only when cold data is read
    from tierflow.cold.catalog import ColdTables

__all__ = ["QueryTimeout", "TierSQL"]


class QueryTimeout(InvalidArgument, TimeoutError):
    """A query ran past its timeout; its worker process was stopped."""


IO = Callable[..., Awaitable[Any]]

# A query holds a read lease, so the files of its cut stay until it ends; only a query
# that outlives the lease's grace period can find one gone. It then runs once more, on a
# fresh cut, within the same deadline.
_ATTEMPTS = 2
_PAUSE = 0.05
_MAX_TEXT = 16 * 2**20  # characters of SQL text
_PRECHECK_TEXT = 16 * 2**10  # texts up to this long are parsed here too (about 10 ms)
_COLUMNS = {"workflows": names(WORKFLOWS), "history": (*names(HISTORY), "tier")}
# A query can read the audit view only by naming it (the statement check allows no other
# way to reach a table), so the audit log is read for the queries whose text holds the word.
_AUDIT_WORD = re.compile(r"audit", re.IGNORECASE)


class _Gone(Exception):
    """A file of the cut is gone (proven): the query may run again on a fresh cut."""


class _Run:
    """One query's hold on a worker: gives it back when the result is read, else kills it."""

    def __init__(
        self, workers: Workers, worker: WorkerProcess, deadline: float | None, lease: Lease
    ) -> None:
        self.workers = workers
        self.worker = worker
        self.deadline = deadline
        self.lease = lease
        self._lock = threading.Lock()
        self._done = False

    def recv(self) -> tuple[str, Any]:
        return self.worker.recv(self.deadline)

    @contextlib.contextmanager
    def guarded(self, bounds: SqlLimits) -> Iterator[None]:
        """Kill the worker when anything goes wrong; translate a deadline or a stopped worker.

        A worker already given back (its query ended) is not touched again; one
        still busy, e.g. a stream abandoned mid-way (``GeneratorExit``), can only
        be stopped by a kill.
        """
        try:
            yield
        except BaseException as exc:
            self.finish(clean=False)
            if isinstance(exc, Deadline):
                raise _timeout(bounds) from None
            if isinstance(exc, WorkerGone):
                raise StorageError(
                    f"SQL across tiers: the query stopped its worker: {exc}"
                ) from None
            raise

    def finish(self, clean: bool) -> None:
        """Give the worker back (it is between queries) or kill it (idempotent)."""
        with self._lock:
            if self._done:
                return
            self._done = True
        self.lease.release()
        if clean:
            self.workers.give_back(self.worker)
        else:
            self.workers.discard(self.worker)


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
        native_reads: Let DuckDB read local (``file://``) Parquet files itself
            where the worker runs under the kernel fence; False always reads
            them through Arrow datasets, as on object stores (about 2x slower).
        hot_cache_bytes: Bound of the cache of finished hot instances' history
            (0 turns it off).
        leases: The data directory's read leases (default: beside the instance files).
        max_workers: Queries that run at once (one worker process each).

    Attributes:
        hot_cache: Finished hot instances' history and results, kept between queries.
        retries: Queries run again because a file of their cut was gone (a count).
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
        leases: ReadLeases | None = None,
        max_workers: int = 4,
    ) -> None:
        self.index = index
        self.instances_dir = instances_dir
        self.durability = durability
        self.store = store
        self.io = io
        self.limits = limits or SqlLimits()
        self.cut_files = CutFiles(store, cold, native_reads)
        self.hot_cache = HotCache(hot_cache_bytes)
        self.workers = Workers(max_workers)
        # The first query needs a worker, which imports for about a second: start it now, so
        # that it gets ready while this side reads the index, the catalog and hot files.
        self.workers.prestart()
        self.leases = leases or ReadLeases(instances_dir.parent)
        self.retries = 0
        self._schemas = _schemas()
        self._roots = tuple(
            r for r in {str(store.root), str(instances_dir.parent), str(instances_dir)} if r
        )

    @property
    def native_reads(self) -> bool:
        """Whether DuckDB may read local Parquet files itself (in a fenced worker)."""
        return self.cut_files.native_reads

    def close(self) -> None:
        """Stop the idle workers and drop the cache."""
        self.workers.close()
        self.hot_cache.clear()

    def forget(self) -> None:
        """Drop every copy of hot data this engine keeps: its cache, and its idle workers'.

        Erasure calls it; a query running now ends with the copy it has.
        """
        self.hot_cache.clear()
        self.workers.forget()

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
        bounds = limits or self.limits
        deadline = None if bounds.timeout is None else time.monotonic() + bounds.timeout
        if not isinstance(query, str) or len(query) > _MAX_TEXT:
            raise InvalidArgument(
                f"SQL refused: the query must be text of at most {_MAX_TEXT} bytes"
            )
        if len(query) <= _PRECHECK_TEXT:
            # The statement type, refused without a worker; a longer text takes long to
            # parse, so it is checked only in the worker, under the deadline.
            guard.check_kind(query)
        params = checked_params(params)
        moment = as_of_point(as_of)
        memory = memory_bytes(bounds.memory_limit)
        for attempt in range(_ATTEMPTS):
            # The lease keeps the files of the cut from being deleted while the query
            # reads them (tierflow.tiering.leases); it is taken before the cut is read.
            lease = await self.io(self.leases.hold, deadline)
            if lease is None:
                raise _timeout(bounds)
            try:
                # On the loop thread: one transaction.
                if _AUDIT_WORD.search(query) is not None:
                    cut = read_snapshot(self.index, audit=True)
                else:
                    cut = read_snapshot(self.index)
                result: SqlResult = await self.io(
                    self._execute,
                    cut,
                    query,
                    params,
                    moment,
                    bounds,
                    memory,
                    stream,
                    deadline,
                    lease,
                )
            except BaseException as exc:
                lease.release()  # idempotent: the query's end released it already
                if not isinstance(exc, _Gone):
                    raise
                if attempt == _ATTEMPTS - 1:
                    raise StorageError(
                        f"SQL across tiers: data moved under the query {_ATTEMPTS} times: {exc}"
                    ) from None
                self.retries += 1
                await asyncio.sleep(_PAUSE * (attempt + 1))
                continue
            if not stream:
                result.elapsed = time.perf_counter() - t0
            return result
        raise AssertionError("unreachable")

    # -- on an I/O thread ------------------------------------------------------------

    def _execute(
        self,
        cut: TierSnapshot,
        query: str,
        params: Any,
        moment: tuple[str, Any] | None,
        bounds: SqlLimits,
        memory: int,
        stream: bool,
        deadline: float | None,
        lease: Lease,
    ) -> SqlResult:
        hot_rows = [] if moment is not None else cut.hot
        files = self.cut_files.files(cut, moment)
        try:
            worker = self.workers.take(deadline)
        except Deadline:
            raise _timeout(bounds) from None
        run = _Run(self.workers, worker, deadline, lease)
        with run.guarded(bounds):
            native = self.cut_files.native(files) and worker.fenced
            worker.send(
                {
                    "op": "query",
                    "query": query,
                    "params": params,
                    "files": files,
                    "native": native,
                    "fs": None if native or not files else self.store.fs,
                    "schemas": self._schemas,
                    "memory_bytes": memory,
                    "max_rows": bounds.max_rows,
                    "max_bytes": bounds.max_bytes,
                    "batch_rows": bounds.batch_rows,
                    "hot": bool(hot_rows),
                    "audit": None if cut.audit is None else _ipc(audit_table(cut.audit)),
                    "erasing": _ipc(pa.table({"workflow_id": pa.array(cut.erasing, pa.string())}))
                    if cut.erasing
                    else None,
                    "roots": self._roots,
                }
            )
            tag, msg = run.recv()
            if tag == "J" and msg.get("t") == "touched":
                have = msg.get("have") if isinstance(msg.get("have"), dict) else {}
                tag, msg = self._send_hot(run, _touched(msg), hot_rows, have)
            if tag == "J" and msg.get("t") == "error":
                run.finish(clean=True)  # the worker caught it and is between queries
                raise self._failure(msg, files)
            if tag != "J" or msg.get("t") != "schema":
                raise WorkerGone(f"unexpected message {tag!r} from the SQL worker")
            tag, raw = run.recv()
            if tag != "S":
                raise WorkerGone("the SQL worker sent no schema")
            try:
                schema = pa.ipc.read_schema(pa.py_buffer(raw))
                columns, types = list(msg["columns"]), list(msg["types"])
            except (KeyError, TypeError, pa.ArrowException) as exc:
                raise WorkerGone(f"the SQL worker sent a bad schema ({exc})") from None
            result = SqlResult(
                [str(c) for c in columns],
                [str(t) for t in types],
                iter(()),
                schema,
                lambda: run.finish(clean=False),
            )
            result._batches = self._batches(run, schema, result, files, bounds, retry=not stream)
            if not stream:
                result.to_arrow()
            return result

    def _send_hot(
        self,
        run: _Run,
        touched: Touched,
        hot_rows: Sequence[tuple[Any, ...]],
        have: dict[str, Any],
    ) -> tuple[str, Any]:
        """Read the hot data the worker's plan touches and send it; its next message."""
        try:
            tables, tokens = self._hot_tables(touched, hot_rows)
        except _Gone:
            run.worker.send({"op": "stop"})
            tag, msg = run.recv()
            run.finish(clean=tag == "J" and msg.get("t") == "stopped")
            raise
        if run.deadline is not None and time.monotonic() >= run.deadline:
            raise Deadline()
        reply: dict[str, Any] = {"op": "hot"}
        for name, table in tables.items():
            token = tokens.get(name)
            if token is not None and have.get(name) == token:
                reply[name] = "same"  # the worker registered this very table last time
            else:
                reply[name] = _ipc(table)
                reply[f"{name}_token"] = token
        run.worker.send(reply)
        return run.recv()

    def _batches(
        self,
        run: _Run,
        schema: pa.Schema,
        result: SqlResult,
        files: dict[tuple[str, str], list[str]],
        bounds: SqlLimits,
        retry: bool,
    ) -> Iterator[pa.RecordBatch]:
        """The result's batches as the worker sends them; the worker goes back at the end."""
        with run.guarded(bounds):
            while True:
                tag, msg = run.recv()
                if tag == "B":
                    try:
                        batch = pa.ipc.read_record_batch(pa.py_buffer(msg), schema)
                    except pa.ArrowException as exc:
                        raise WorkerGone(f"the SQL worker sent a bad batch ({exc})") from None
                    yield batch
                    continue
                if tag == "J" and msg.get("t") == "end":
                    result.truncated = bool(msg.get("truncated"))
                    run.finish(clean=True)
                    return
                if tag == "J" and msg.get("t") == "error":
                    run.finish(clean=True)
                    failure = self._failure(msg, files)
                    if isinstance(failure, _Gone) and not retry:
                        raise StorageError(f"SQL across tiers: {failure}") from None
                    raise failure
                raise WorkerGone(f"unexpected message {tag!r} from the SQL worker")

    def _failure(self, msg: dict[str, Any], files: dict[tuple[str, str], list[str]]) -> Exception:
        """The error a worker's failure report stands for."""
        kind, text = msg.get("kind"), str(msg.get("message") or "")
        # A file deleted after the cut shows as an I/O error, or as a permission error when
        # DuckDB, finding no such file, treats the name as a pattern: check the files.
        checked = kind == "io" or (kind == "invalid" and not text.startswith("SQL "))
        if checked and self.cut_files.gone(files):
            return _Gone("a Parquet file of the cut is gone")
        if kind == "invalid":
            if text.startswith("SQL refused") or text.startswith("SQL error"):
                return InvalidArgument(text)
            if (
                "Permission Error" in text
                or "disabled by configuration" in text
                or "Operation not permitted" in text
            ):
                return InvalidArgument(
                    f"SQL refused: file, network or configuration access: {text}"
                )
            return InvalidArgument(f"SQL error: {text}")
        if kind == "memory":
            return InvalidArgument(
                f"SQL refused: the query needs more than the memory limit: {text}"
            )
        return StorageError(f"SQL across tiers failed: {text}")

    def _scrub(self, text: str) -> str:
        return guard.scrub(text, self._roots)

    def _hot_tables(
        self, touched: Touched, hot_rows: Sequence[tuple[Any, ...]]
    ) -> tuple[dict[str, pa.Table], dict[str, str | None]]:
        """The hot data the query can touch: cached, or read from instance files.

        Finished instances come from :attr:`hot_cache` when it has them (their
        files no longer change); live ones, and finished ones not seen before,
        are read from their files, and the finished ones are cached.

        Returns:
            The tables, and for each a token that names its content when that
            content follows from index rows alone (the workflows; the history
            of finished instances), else None: a worker that holds a table
            with the same token is not sent it again.
        """
        out: dict[str, pa.Table] = {}
        tokens: dict[str, str | None] = {}
        history_rows = touched.ids_for(hot_rows, touched.history)
        result_rows = sql_hot.completed(touched.ids_for(hot_rows, touched.results))
        if not history_rows and not result_rows:
            if touched.workflows:
                out["workflows"] = sql_hot.hot_workflows(hot_rows, {})
                tokens["workflows"] = _token("w", hot_rows, ())
            return out, tokens
        keys = sql_hot.finished(hot_rows)
        cached: list[pa.Table] = []
        fresh: set[str] = set()  # finished instances to read and cache
        to_read: dict[str, tuple[Any, ...]] = {}
        if history_rows:
            everything = touched.history == Touched.ALL
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
            raise _Gone(f"{len(gone)} hot instance files gone since the cut (moved to warm)")
        if touched.workflows:
            out["workflows"] = sql_hot.hot_workflows(hot_rows, results)
            tokens["workflows"] = _token("w", hot_rows, sorted(results.items()))
        if history_rows:
            live = [it for it in read if it[0]["workflow_id"] not in keys]
            if live:
                cached.append(sql_hot.hot_history(live))
            if cached:
                out["history"] = pa.concat_tables(cached)
                # Finished instances' events follow from their index rows (the cache's key).
                finished_only = all(r[0] in keys for r in history_rows)
                tokens["history"] = _token("h", history_rows, ()) if finished_only else None
        return out, tokens

    def _read_hot(
        self, rows: Sequence[tuple[Any, ...]], gone: list[str]
    ) -> list[tuple[dict[str, Any], list[tuple[Any, ...]]]]:
        if not rows:
            return []
        try:
            return sql_hot.read_instances(self.instances_dir, rows, self.durability, gone)
        except FileNotFoundError:  # a live instance's file: not a move, but retry
            raise _Gone("a live instance file is gone") from None
        except CorruptInstance as exc:
            raise StorageError(f"SQL across tiers: {self._scrub(str(exc))}") from None


def _timeout(bounds: SqlLimits) -> QueryTimeout:
    return QueryTimeout(f"SQL query stopped: it ran past the {bounds.timeout}s timeout")


def _touched(msg: dict[str, Any]) -> Touched:
    try:
        return Touched.from_json(msg)
    except (ValueError, TypeError, AttributeError) as exc:
        raise WorkerGone(f"the SQL worker sent a bad plan summary ({exc})") from None


def _token(kind: str, rows: Sequence[tuple[Any, ...]], extra: Sequence[Any]) -> str:
    """A name for hot data built from these index rows (and results)."""
    return f"{kind}:{len(rows)}:{hash((tuple(rows), tuple(extra)))}"


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    out: bytes = sink.getvalue().to_pybytes()
    return out


def _schemas() -> dict[str, bytes]:
    """What the worker needs to build the views: every source's Arrow schema, the columns."""
    out = {
        "hot_workflows": sql_hot.workflows_schema(),
        "hot_history": sql_hot.history_schema(),
        "warm_workflows": schema_for("workflows"),
        "warm_history": schema_for("history"),
        "cold_workflows": cold_schema("workflows"),
        "cold_history": cold_schema("history"),
        "audit": AUDIT_SCHEMA,
    }
    blobs = {k: bytes(v.serialize().to_pybytes()) for k, v in out.items()}
    blobs["columns"] = json.dumps({d: list(c) for d, c in _COLUMNS.items()}).encode()
    return blobs
