"""The user path of erasure and retention (``tf.compliance``), for ``erasure_bench``.

``erasure_bench`` times the cold primitive (``cold.erase.erase_rows``) alone; the issue's
targets are for what a user calls: ``tf.compliance.apply_retention(...)`` and
``tf.compliance.erase(workflow_id=...)``. Those find their workflows through the instance
index, so the synthetic cold archive needs index rows too: **synthetic** rows, one per
cold workflow (tier ``cold``, status ``completed``, its created/started/finished times and
type, ``batch_id`` the archive batch as a cold move leaves it), read back from the cold
``workflows`` table and inserted in large ``executemany`` transactions through
``IndexDB.write_now``, untimed. No warm ledger row names those batches, so the warm step
of the erasure finds nothing to rewrite, as for an archive whose warm originals are gone.

The timed call runs in a child process on a freshly opened ``Tierflow(data_dir, [])``, with
the cold tables already opened (as a running service has them). Public functions of the
path are wrapped in the child to split the time (selection, intent, warm, cold rewrite,
index forget, audit records, WAL checkpoint); ``profile`` runs the call under cProfile
and returns the top 15 functions by cumulative time.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import functools
import importlib
import inspect
import io
import pstats
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from tierflow.cold.catalog import ColdTables
from tierflow.hot.index import INDEX_COLUMNS

from tests.bench.cold_bench import Place, open_cold

CHUNK = 50_000

_READ = ("workflow_id", "run_id", "workflow_type", "created_at", "started_at", "finished_at")
_FIXED: dict[str, Any] = {
    "status": "completed",
    "attributes": "{}",
    "step_count": 8,
    "recovery_count": 0,
    "cancel_requested": 0,
    "tier": "cold",
}
_INSERT = (
    f"INSERT INTO instances ({','.join(INDEX_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(INDEX_COLUMNS))})"
)

# (module, attribute[, class]) of the path's public steps, timed in the child.
_STEPS: tuple[tuple[str, str, str | None, str], ...] = (
    ("tierflow.tiering.compliance.service", "select_expired", None, "select expired (index)"),
    ("tierflow.tiering.compliance.erase", "Eraser", "erase", "eraser total"),
    ("tierflow.hot.erasing", "mark", None, "intent: mark erasing"),
    ("tierflow.tiering.compliance.warm", "erase_from_warm", None, "warm step"),
    ("tierflow.cold.erase", "erase_rows", None, "cold rewrite + expiry"),
    ("tierflow.hot.erasing", "forget", None, "index forget"),
    ("tierflow.tiering.compliance.records", "ComplianceRecords", "values", "audit: build"),
    ("tierflow.tiering.compliance.records", "ComplianceRecords", "redact", "audit: redact"),
    ("tierflow.tiering.compliance.records", "ComplianceRecords", "insert", "audit: insert"),
    ("tierflow.hot.index", "IndexDB", "checkpoint", "index WAL checkpoint"),
)


def index_cold_workflows(data: Path, place: Place, catalog: Path) -> int:
    """Insert a synthetic index row for every workflow of the cold archive; how many."""
    cold = open_cold(place, catalog)
    try:
        wf = cold.table("workflows", refresh=True).scan(selected_fields=(*_READ, "batch_id"))
        table = wf.to_arrow()
    finally:
        cold.close()
    cols = {c: table.column(c) for c in (*_READ, "batch_id")}
    for c in ("created_at", "started_at", "finished_at"):
        cols[c] = cols[c].cast(pa.timestamp("us")).cast(pa.int64())
    py = {c: v.to_pylist() for c, v in cols.items()}
    template = [_FIXED.get(c) for c in INDEX_COLUMNS]
    where = {c: INDEX_COLUMNS.index(c) for c in py}
    rows: list[tuple[Any, ...]] = []
    for i in range(table.num_rows):
        row = list(template)
        for c, k in where.items():
            row[k] = py[c][i]
        rows.append(tuple(row))
    return asyncio.run(_insert(data, rows))


async def _insert(data: Path, rows: list[tuple[Any, ...]]) -> int:
    from tierflow import Tierflow

    tf = Tierflow(data, [])
    tf.open()
    try:
        for i in range(0, len(rows), CHUNK):
            chunk = rows[i : i + CHUNK]
            tf.index.write_now(lambda c, chunk=chunk: c.executemany(_INSERT, chunk))
        return int(tf.index.execute("SELECT count(*) FROM instances")[0][0])
    finally:
        await tf.aclose()


def index_count(data: Path, workflow_id: str | None = None) -> int:
    """Rows in the index (or rows for one id)."""
    return asyncio.run(_count(data, workflow_id))


async def _count(data: Path, workflow_id: str | None) -> int:
    from tierflow import Tierflow

    tf = Tierflow(data, [])
    tf.open()
    try:
        if workflow_id is None:
            return int(tf.index.execute("SELECT count(*) FROM instances")[0][0])
        return int(
            tf.index.execute("SELECT count(*) FROM instances WHERE workflow_id=?", (workflow_id,))[
                0
            ][0]
        )
    finally:
        await tf.aclose()


@contextlib.contextmanager
def timed_steps() -> Iterator[dict[str, float]]:
    """Wrap the path's public steps; yields label → seconds spent (summed)."""
    spent: dict[str, float] = {}
    undo: list[Callable[[], None]] = []

    def wrap(fn: Any, label: str, is_async: bool) -> Any:
        if is_async:

            @functools.wraps(fn)
            async def awrapper(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await fn(*a, **k)
                finally:
                    spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

            return awrapper

        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        return wrapper

    for module, attr, method, label in _STEPS:
        owner: Any = importlib.import_module(module)
        name = attr
        if method is not None:
            owner, name = getattr(owner, attr), method
        raw = inspect.getattr_static(owner, name)
        fn = getattr(owner, name)
        new = wrap(fn, label, inspect.iscoroutinefunction(fn))
        if isinstance(raw, staticmethod):
            new = staticmethod(new)
        setattr(owner, name, new)
        undo.append(lambda owner=owner, name=name, raw=raw: setattr(owner, name, raw))
    try:
        yield spent
    finally:
        for u in reversed(undo):
            u()


def child_full(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``apply_retention`` or ``erase`` call through ``Tierflow``: report, time, steps."""
    return asyncio.run(_full(spec))


async def _full(spec: dict[str, Any]) -> dict[str, Any]:
    from tierflow import Tierflow

    place = Place(**spec["place"])
    async with Tierflow(
        Path(spec["data"]),
        [],
        warm_store=place.open(),
        catalog_url=f"sqlite:///{spec['catalog']}",
    ) as tf:
        cold: ColdTables = tf.cold
        cold.tables()  # opened, as a running service has them; not part of the call
        if spec["mode"] == "full-retention":
            await tf.compliance.set_retention("*", "1d", actor="bench", reason="bench")
        profiler = cProfile.Profile() if spec.get("profile") else None
        with timed_steps() as steps:
            t0 = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            if spec["mode"] == "full-retention":
                now = datetime.fromisoformat(spec["now"]).replace(tzinfo=UTC)
                rep = await tf.compliance.apply_retention(now=now, actor="bench")
                erasure = rep.erasure
                extra = {"expired": rep.expired, "held_back": rep.held_back}
            else:
                erasure = await tf.compliance.erase(
                    workflow_id=spec["workflow_id"], reason="bench", actor="bench"
                )
                extra = {}
            if profiler is not None:
                profiler.disable()
            seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "seconds": seconds,
        "steps": dict(steps),
        "report": None if erasure is None else erasure.to_dict(),
        **extra,
    }
    if out["report"] is not None:
        out["report"]["audit_seqs"] = len(out["report"]["audit_seqs"])
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(15)
        out["profile"] = text.getvalue()
    return out
