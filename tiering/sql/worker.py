"""The SQL worker: a process that runs one confined query at a time for the engine.

``python -m tierflow.tiering.sql.worker FD``, or forked from the template
(:mod:`tierflow.tiering.sql.template`), which calls :func:`main`: FD is a
connected socket to the engine (:mod:`tierflow.tiering.sql.pool`). The
worker imports what it needs (a forked one has it already), installs the
kernel fence (:mod:`tierflow.tiering.sql.fence`: from then on it cannot
create, change or delete any file) and says ``ready``.
Then, per query (or ``forget``: drop what it keeps between queries):

1. the statement check (:class:`tierflow.tiering.sql.guard.Checker`);
2. a sandbox: an in-memory DuckDB with the views over the cut's files
   (``read_parquet`` of exactly those files when the fence is on and the
   files are local; else Arrow datasets the engine describes), then external
   access off and the configuration locked. A sandbox whose query ended
   cleanly is kept for the next query over the same files;
3. if the cut has hot instances, ``EXPLAIN`` tells which ones the query can
   touch (:mod:`tierflow.tiering.sql.plan`); the engine reads those and sends
   them as Arrow;
4. the query runs and its rows stream back as Arrow IPC, cut at the row and
   byte limits.

Everything that depends on the query's text happens here, so the engine's
deadline covers it: past the deadline the engine kills this process. Memory
is bounded by the OS (``RLIMIT_DATA``: DuckDB's own limit does not cover
lists, strings or results) as well as by DuckDB's ``memory_limit``.

Wire format: the engine sends pickles (it is trusted); the worker answers
with JSON control messages (``J``), an Arrow schema (``S``) and record
batches (``B``), so a compromised worker cannot make the engine run code.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import resource
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument
from tierflow.tiering.sql import fence, guard, plan

__all__ = ["SLACK", "classify", "lock", "main", "sandbox"]

SLACK = 64 * 2**20
"""Bytes a query may map beyond its limit (hot data, result batches in flight)."""

# The limits the worker started with: restored while a query is checked and prepared. Read
# again by main(): a worker forked from the template starts with the engine's limits of the
# moment, not the template's.
_START = resource.getrlimit(resource.RLIMIT_DATA)
_INVALID_PREFIXES = (
    "Invalid Input Error",
    "Binder Error",
    "Parser Error",
    "Catalog Error",
    "Conversion Error",
    "Out of Range Error",
    "Not implemented Error",
    "Constraint Error",
    "Type Mismatch Error",
    "Permission Error",
)
_KEEP = 2  # sandboxes kept for reuse (distinct file sets: now, and as_of)


def classify(exc: BaseException) -> str:
    """What kind of failure ``exc`` is: invalid, memory, io or storage."""
    if isinstance(exc, InvalidArgument | duckdb.PermissionException):
        return "invalid"
    if isinstance(exc, duckdb.OutOfMemoryException | MemoryError | pa.ArrowMemoryError):
        return "memory"
    # Errors that reach Python through the Arrow stream lose their DuckDB class; DuckDB's
    # message still starts with it.
    text = str(exc).lstrip()
    if "Out of Memory" in text or "bad_alloc" in text:
        return "memory"
    if text.startswith(_INVALID_PREFIXES) or "Operation not permitted" in text:
        return "invalid"  # the last: the kernel fence stopped a write
    if text.startswith("IO Error"):
        return "io"
    if isinstance(
        exc,
        duckdb.ParserException
        | duckdb.BinderException
        | duckdb.CatalogException
        | duckdb.ConversionException
        | duckdb.OutOfRangeException
        | duckdb.InvalidInputException
        | duckdb.NotImplementedException
        | duckdb.ConstraintException
        | duckdb.TypeMismatchException
        | pa.ArrowInvalid
        | pa.ArrowNotImplementedError
        | OverflowError
        | ValueError,
    ):
        return "invalid"
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException | OSError | pa.ArrowIOError):
        return "io"
    if isinstance(exc, duckdb.Error) and "IOError" in str(exc):
        return "io"
    return "storage"


class _Worker:
    def __init__(self, conn: Connection, fenced: bool) -> None:
        self.conn = conn
        self.fenced = fenced
        self.checker = guard.Checker()
        self.kept: dict[Any, duckdb.DuckDBPyConnection] = {}
        # The last hot tables the engine sent that it can name (token, table): a query over
        # the same finished instances is not sent them again.
        self.hot: dict[str, tuple[str, pa.Table]] = {}

    def send(self, msg: dict[str, Any]) -> None:
        self.conn.send_bytes(b"J" + json.dumps(msg).encode())

    def serve(self) -> None:
        while True:
            try:
                request = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                return  # the engine closed the socket or went away
            if request.get("op") == "exit":
                return
            if request.get("op") == "forget":
                self.forget()
                continue
            self.query(request)

    def forget(self) -> None:
        """Drop the hot data and sandboxes kept for the next query (after an erasure)."""
        self.hot.clear()
        for con in self.kept.values():
            con.close()
        self.kept.clear()

    def _memory(self, limit: int) -> None:
        """Let the process grow by ``limit`` (plus a little) from what it maps now.

        ``RLIMIT_DATA`` counts mapped memory, not touched memory, and the
        worker already maps its interpreter, DuckDB's threads and the kept
        sandboxes; so the bound is set from the current size before each query.
        """
        soft = _data_size() + limit + SLACK
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        with contextlib.suppress(OSError, ValueError):  # where the OS has no such limit
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

    def query(self, req: dict[str, Any]) -> None:
        con: duckdb.DuckDBPyConnection | None = None
        roots = tuple(req.get("roots") or ())
        try:
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_DATA, _START)
            self._memory(int(req["memory_bytes"]))  # the check's tree is bounded too
            self.checker.check(req["query"])
            native = bool(req["native"]) and self.fenced
            files: dict[tuple[str, str], list[str]] = req["files"]
            erasing = req.get("erasing")
            key = (
                native,
                req["memory_bytes"],
                tuple(sorted((k, tuple(v)) for k, v in files.items())),
                erasing is not None,
            )
            con = self.kept.pop(key, None)
            if con is None:
                con = sandbox(req["memory_bytes"])
                _views(con, req["schemas"], files if native else {}, erasing is not None)
                readable = [p for ps in files.values() for p in ps] if native else []
                lock(con, readable)
            else:
                _empty_hot(con, req["schemas"])
            if erasing is not None:
                con.register("__tf_erasing", pa.ipc.open_stream(erasing).read_all())
            audit = req.get("audit")
            con.register(
                "__tf_audit",
                pa.ipc.open_stream(audit).read_all()
                if audit
                else _schema(req["schemas"]["audit"]).empty_table(),
            )
            self._memory(int(req["memory_bytes"]))
            if req["hot"] and not self._hot(con, req):
                self._keep(key, con)  # the engine stopped: the data moved; nothing ran
                return
            if not native and files:
                _datasets(con, req["fs"], files, req["schemas"])
            self._run(con, req)
            self._keep(key, con)
        except BaseException as exc:
            if con is not None:
                con.close()
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self.send(
                {
                    "t": "error",
                    "kind": classify(exc),
                    "message": guard.scrub(guard.first_line(exc), roots),
                }
            )

    def _hot(self, con: duckdb.DuckDBPyConnection, req: dict[str, Any]) -> bool:
        """Ask the engine for the hot data the plan touches; False if it says stop."""
        text = con.sql(f"EXPLAIN (FORMAT json) {req['query']}", params=req["params"]).fetchall()
        have = {name: token for name, (token, _) in self.hot.items()}
        self.send({"t": "touched", "have": have, **plan.touched(str(text[0][1])).to_json()})
        reply = pickle.loads(self.conn.recv_bytes())
        if reply.get("op") != "hot":
            self.send({"t": "stopped"})
            return False
        for name in ("workflows", "history"):
            data = reply.get(name)
            if data is None:
                continue
            if data == "same":  # the engine's table is the one this worker holds
                table = self.hot[name][1]
            else:
                table = pa.ipc.open_stream(data).read_all()
                token = reply.get(f"{name}_token")
                if token is not None:
                    self.hot[name] = (token, table)
                else:
                    self.hot.pop(name, None)
            con.register(f"__tf_hot_{name}", table)
        return True

    def _run(self, con: duckdb.DuckDBPyConnection, req: dict[str, Any]) -> None:
        rel = con.sql(req["query"], params=req["params"])
        if rel is None:
            raise InvalidArgument("SQL refused: the statement returns no rows")
        reader = rel.to_arrow_reader(int(req["batch_rows"]))
        self.send(
            {"t": "schema", "columns": list(rel.columns), "types": [str(t) for t in rel.types]}
        )
        self.conn.send_bytes(b"S" + reader.schema.serialize().to_pybytes())
        max_rows, max_bytes = req["max_rows"], req["max_bytes"]
        rows = size = 0
        truncated = False
        for batch in reader:
            if max_rows is not None and rows + batch.num_rows > max_rows:
                batch = batch.slice(0, max_rows - rows)
                truncated = True
            body = batch.serialize()
            if max_bytes is not None and size + body.size > max_bytes:
                batch = _fit(batch, max_bytes - size)
                body = batch.serialize()
                truncated = True
            if batch.num_rows:
                self.conn.send_bytes(b"B" + body.to_pybytes())
            rows += batch.num_rows
            size += body.size
            if truncated:
                break
        self.send({"t": "end", "truncated": truncated})

    def _keep(self, key: Any, con: duckdb.DuckDBPyConnection) -> None:
        self.kept[key] = con
        while len(self.kept) > _KEEP:
            self.kept.pop(next(iter(self.kept))).close()


def _data_size() -> int:
    """Bytes of data memory the process maps now (``VmData``; 0 where unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _fit(batch: pa.RecordBatch, budget: int) -> pa.RecordBatch:
    """The longest head of ``batch`` whose IPC form fits ``budget`` bytes (maybe empty)."""
    lo, hi = 0, batch.num_rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if batch.slice(0, mid).serialize().size <= budget:
            lo = mid
        else:
            hi = mid - 1
    return batch.slice(0, lo)


def sandbox(memory_bytes: int) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB, not yet locked: nothing spills, memory capped."""
    con = duckdb.connect(":memory:", config={"python_enable_replacements": False})
    con.execute("SET temp_directory=''")  # nothing spills to disk
    con.execute(f"SET memory_limit='{int(memory_bytes) // 2**20}MiB'")
    return con


def lock(con: duckdb.DuckDBPyConnection, readable: Sequence[str]) -> None:
    """Turn off file and network access, then freeze the configuration (in this order)."""
    if readable:
        # Settable only while external access is on; a list, so no quoting of paths.
        con.execute("SET allowed_paths = ?", [list(readable)])
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")


def _schema(data: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(data))


def _empty_hot(con: duckdb.DuckDBPyConnection, schemas: dict[str, bytes]) -> None:
    for d in ("workflows", "history"):
        con.register(f"__tf_hot_{d}", _schema(schemas[f"hot_{d}"]).empty_table())


def _views(
    con: duckdb.DuckDBPyConnection,
    schemas: dict[str, bytes],
    native: dict[tuple[str, str], list[str]],
    erasing: bool = False,
) -> None:
    """Create the views over every tier's data (see :mod:`tierflow.tiering.sql.engine`).

    Hot data and Arrow-read files get empty stand-ins until they are
    registered; files read natively are a ``read_parquet`` of exactly them.
    With ``erasing``, the warm and cold views leave out the workflows listed in
    the table ``__tf_erasing`` (registered per query): an erasure in progress.
    """
    _empty_hot(con, schemas)
    if erasing:
        con.register("__tf_erasing", pa.table({"workflow_id": pa.array([], pa.string())}))
    columns: dict[str, list[str]] = json.loads(schemas["columns"])
    ddl = []
    for d in ("workflows", "history"):
        for tier in ("warm", "cold"):
            paths = native.get((tier, d))
            if paths:
                # One statement binds once (a relation's create_view binds twice).
                files = ", ".join(_literal(p) for p in paths)
                ddl.append(
                    f"CREATE VIEW __tf_{tier}_{d} AS SELECT * FROM "
                    f"read_parquet([{files}], hive_partitioning = false)"
                )
            else:
                con.register(f"__tf_{tier}_{d}", _schema(schemas[f"{tier}_{d}"]).empty_table())
    for d in ("workflows", "history"):
        cols = columns[d]
        prefix = plan.HISTORY_PREFIX if d == "history" else plan.WORKFLOWS_PREFIX
        hot = ", ".join(f"{prefix}{c} AS {c}" for c in cols if c != "tier" or d != "history")
        if d == "history":
            hot += ", 'hot' AS tier"
        ddl.append(f"CREATE VIEW hot_{d} AS SELECT {hot} FROM __tf_hot_{d}")
        body = ", ".join(c for c in cols if c != "tier")
        hidden = (
            " WHERE workflow_id NOT IN (SELECT workflow_id FROM __tf_erasing)" if erasing else ""
        )
        for tier in ("warm", "cold"):
            ddl.append(
                f"CREATE VIEW {tier}_{d} AS SELECT {body}, '{tier}' AS tier "
                f"FROM __tf_{tier}_{d}{hidden}"
            )
        ddl.append(
            f"CREATE VIEW {d} AS SELECT * FROM hot_{d} UNION ALL SELECT * FROM warm_{d} "
            f"UNION ALL SELECT * FROM cold_{d}"
        )
    # The compliance audit log; its rows are registered per query.
    con.register("__tf_audit", _schema(schemas["audit"]).empty_table())
    ddl.append("CREATE VIEW audit AS SELECT * FROM __tf_audit")
    con.execute(";\n".join(ddl))


def _datasets(
    con: duckdb.DuckDBPyConnection,
    fs: Any,
    files: dict[tuple[str, str], list[str]],
    schemas: dict[str, bytes],
) -> None:
    """Register the cut's files as Arrow datasets (object stores, or no fence here)."""
    from tierflow.warm.reader import analytic_dataset

    for (tier, d), paths in files.items():
        con.register(
            f"__tf_{tier}_{d}", analytic_dataset(fs, paths, _schema(schemas[f"{tier}_{d}"]))
        )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def main(argv: Sequence[str] | None = None) -> None:
    """Serve queries on the socket whose descriptor is the first argument."""
    global _START
    args = sys.argv[1:] if argv is None else list(argv)
    _START = resource.getrlimit(resource.RLIMIT_DATA)
    conn = Connection(int(args[0]))
    try:
        import pyarrow.dataset  # type: ignore[import-untyped, unused-ignore]  # noqa: F401

        checker_probe = guard.Checker()  # DuckDB's first connection sets up shared state
        checker_probe.close()
        fenced = fence.install()
        worker = _Worker(conn, fenced)
        worker.send({"t": "ready", "fenced": fenced})
        worker.serve()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    main()
