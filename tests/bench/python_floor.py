"""The least Python that does a workflow's durable work: the floor of any asyncio engine.

Issue 21 judges the hot engine against the instance files alone (``files_floor`` in
hot_engine.py): SQLite and the disk, no Python between the commits. This module measures
what an asyncio program must add to that to do the same durable work with none of an
engine's logic (no replay, no records, no retries, no events for anyone to read). Per
workflow, as the engine's ``run`` does it:

- its row in a shared index of the engine's own schema (SQLite indexes included, copied
  from an index the engine made), committed without an fsync: the instance file written
  next is the durable record;
- an instance file written from the same empty image the engine uses, made durable 16 at a
  time with one ``syncfs`` on an I/O thread (as the engine's spare filler makes them);
- three steps, each run on an I/O thread, each followed by one commit on the loop (the
  step's two events, its operation record, the instance row) whose WAL is fdatasync'd on
  the I/O thread of the next hop, before the next step runs (the first commit also
  inserts the instance row and its two opening events);
- the last commit's fdatasync and the file's close (its checkpoint) on an I/O thread;
- the finished row mirrored into the index (one commit, not fsync'd).

In runs of their own, beside the 8 callers, a sampler does what ``start`` must: a queued
row and its change-feed row in the index, fsync'd before it returns, timed. It runs with
that fsync blocking the loop (as the engine's ``start`` does) and on an I/O thread, and
the better median is kept: the floor is Python at its best, not one choice of ours.

The hand-off to and from the I/O threads is tierflow's own (``IoThreads``: a job on a
queue, results drained on one eventfd wake-up), the cheapest one measured here; the
statements are the engine's (``INSERT``/``UPDATE`` with bound parameters). Whatever the
engine costs above this figure is its own logic; whatever this costs above the files
alone is the price of asyncio, threads and ``sqlite3`` in CPython on this machine.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.hot.durable_fs import sync_batch
from tierflow.hot.iothreads import IoThreads

from tests.bench.workload import CALLERS, ITEMS, STEPS, process_cpu_s


@dataclass(frozen=True)
class IndexShape:
    """The engine's index as the floor reproduces it: its schema and one of its rows.

    Read from a data directory the engine made (no private API), so the floor's
    ``start`` writes the same tables, SQLite indexes and row width as the engine's.
    """

    ddl: tuple[str, ...]
    columns: tuple[str, ...]
    row: tuple[Any, ...]

    @classmethod
    def read(cls, engine_data: Path) -> IndexShape:
        """The shape of ``engine_data``'s index (which holds at least one instance)."""
        src = sqlite3.connect(engine_data / "hot" / "index.sqlite")
        try:
            ddl = tuple(
                sql
                for (sql,) in src.execute(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
                )
            )
            cur = src.execute("SELECT * FROM instances LIMIT 1")
            columns = tuple(d[0] for d in cur.description)
            row = cur.fetchone()
        finally:
            src.close()
        return cls(ddl, columns, tuple(row))

    def new_row(self, workflow_id: str, **values: Any) -> tuple[Any, ...]:
        """A new instance's row: the engine's row with ``values`` set, its outcome cleared."""
        values["workflow_id"] = workflow_id
        cleared = ("finished_at", "error", "file", "batch_id", "events_upto")
        return tuple(
            values.get(c, None if c in cleared else v)
            for c, v in zip(self.columns, self.row, strict=True)
        )


_SPARE_BATCH = 16  # files made and synced at a time (the engine's spare batch)
_INPUT = '["a","b","c"]'  # the workflow's input as JSON text, as the engine stores it


def _step(x: str, wal_fd: int | None) -> str:
    # The previous commit is made durable before the next side effect, as the engine does.
    if wal_fd is not None:
        os.fdatasync(wal_fd)
    return x.upper()


def _new_files(
    root: Path, names: list[str], template: bytes
) -> list[tuple[Path, sqlite3.Connection]]:
    # A batch of instance files made durable with one syncfs (sync_batch) and opened, as
    # the engine's spare filler makes them: their data and directory entries are on disk
    # before SQLite opens them.
    paths = []
    for name in names:
        path = root / f"{name}.sqlite"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, template)
        finally:
            os.close(fd)
        paths.append(path)
    sync_batch(root, paths)
    opened = []
    for path in paths:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        opened.append((path, conn))
    return opened


def _finish(conn: sqlite3.Connection, wal_fd: int) -> None:
    os.fdatasync(wal_fd)
    os.close(wal_fd)
    conn.close()  # checkpoints the WAL into the file (two more syncs), as the engine's close


_FEED = (
    "INSERT INTO changes (workflow_id, workflow_type, kind, detail, origin, at) "
    "VALUES (?,?,?,NULL,?,?)"
)
# The finished row mirrored into the index, as the engine's mirror writes it.
_MIRROR = (
    "UPDATE instances SET status='completed', wake_at=NULL, step_count=?, lease_owner=NULL, "
    "events_upto=?, finished_at=?, error=NULL, input=NULL WHERE workflow_id=?"
)
_EVENTS = "INSERT INTO events VALUES (NULL,?,?,?,?,?)"


async def _run(
    root: Path,
    template: bytes,
    shape: IndexShape,
    n: int,
    callers: int,
    starts_synced_on: str | None,
    start_every: float,
) -> tuple[float, float, float | None]:
    # Returns (wf/s, CPU ms per workflow, median start ms or None). starts_synced_on: None
    # for the callers alone; "loop" or "thread" for a start sampler beside them whose
    # fsync blocks the loop or runs on an I/O thread.
    io = IoThreads(8, name="floor-io")
    index = sqlite3.connect(root / "index.sqlite", isolation_level=None, check_same_thread=False)
    index.execute("PRAGMA journal_mode=WAL")
    index.execute("PRAGMA synchronous=NORMAL")
    for sql in shape.ddl:
        index.execute(sql)
    insert = (
        f"INSERT INTO instances ({','.join(shape.columns)}) "
        f"VALUES ({','.join('?' * len(shape.columns))})"
    )
    index_wal = os.open(root / "index.sqlite-wal", os.O_RDONLY)
    per = n // callers
    starts: list[float] = []
    stop = asyncio.Event()
    spares: list[tuple[Path, sqlite3.Connection]] = []
    refill = asyncio.Lock()

    async def one(k: int, i: int) -> None:
        wid = f"wf-{k}-{i}"
        now = time.time_ns() // 1000
        index.execute("BEGIN IMMEDIATE")
        index.execute(
            insert,
            shape.new_row(
                wid, status="running", input=_INPUT, created_at=now, started_at=now, file=wid
            ),
        )
        index.execute("COMMIT")
        async with refill:  # one batch at a time, however many callers find none left
            if not spares:
                # Made off the loop (the engine's filler makes them ahead, on a thread
                # of its own).
                batch = [f"spare-{k}-{i}-{j}" for j in range(_SPARE_BATCH)]
                spares.extend(await io.call(_new_files, root, batch, template))
            path, conn = spares.pop()
        wal_fd: int | None = None
        for s in range(STEPS):
            result = await io.call(_step, ITEMS[s % len(ITEMS)], wal_fd)
            conn.execute("BEGIN IMMEDIATE")
            events = [
                ("step.started", now, f"step-{s}", 1, f'{{"seq":"0:{s + 1}"}}'),
                ("step.completed", now, f"step-{s}", 1, f'{{"seq":"0:{s + 1}","result":"A"}}'),
            ]
            if s == 0:
                conn.execute(
                    "INSERT INTO instance (id,workflow_id,run_id,workflow_type,status,input,"
                    "attributes,created_at,started_at,step_count) VALUES (1,?,?,?,?,?,?,?,?,?)",
                    (wid, "run", "three_steps", "running", _INPUT, "{}", now, now, 2),
                )
                events[:0] = [
                    ("workflow.queued", now, None, None, '{"input":["a","b","c"]}'),
                    ("workflow.started", now, None, None, None),
                ]
            else:
                conn.execute("UPDATE instance SET step_count=? WHERE id=1", (s + 2,))
            conn.execute(
                "INSERT INTO operations VALUES (?,?,?,?,?,?,?,?)",
                (f"0:{s + 1}", "step", f"step-{s}", "completed", 1, f'"{result}"', None, None),
            )
            conn.execute(
                f"{_EVENTS}{',(NULL,?,?,?,?,?)' * (len(events) - 1)}",
                [v for e in events for v in e],
            )
            conn.execute("COMMIT")
            if wal_fd is None:
                wal_fd = os.open(f"{path}-wal", os.O_RDONLY)
        assert wal_fd is not None
        await io.call(_finish, conn, wal_fd)
        index.execute("BEGIN IMMEDIATE")
        index.execute(_MIRROR, (STEPS, 9, time.time_ns() // 1000, wid))
        index.execute("COMMIT")

    async def sampler() -> None:
        # start: a queued row and its change-feed row, durable before it returns.
        k = 0
        while not stop.is_set():
            wid, now = f"queued-{k}", time.time_ns() // 1000
            t0 = time.perf_counter()
            index.execute("BEGIN IMMEDIATE")
            index.execute(insert, shape.new_row(wid, status="queued", input=_INPUT, created_at=now))
            index.execute(_FEED, (wid, "three_steps", "queued", "floor", now))
            index.execute("COMMIT")
            if starts_synced_on == "thread":
                await io.call(os.fdatasync, index_wal)
            else:
                os.fdatasync(index_wal)  # blocks the loop, as the engine's start does
            starts.append(time.perf_counter() - t0)
            k += 1
            await asyncio.sleep(start_every)

    async def caller(k: int) -> None:
        for i in range(per):
            await one(k, i)

    try:
        t0, c0 = time.perf_counter(), process_cpu_s()
        sampling = asyncio.create_task(sampler()) if starts_synced_on else None
        await asyncio.gather(*(caller(k) for k in range(callers)))
        elapsed, cpu = time.perf_counter() - t0, process_cpu_s() - c0
        stop.set()
        if sampling is not None:
            await sampling
    finally:
        io.shutdown()
        for _, unused in spares:
            unused.close()
        os.close(index_wal)
        index.close()
    done = callers * per
    start_ms = statistics.median(starts) * 1000 if starts else None
    return done / elapsed, cpu / done * 1000, start_ms


def python_floor(
    root: Path, template: bytes, shape: IndexShape, n: int, callers: int, start_every: float
) -> dict[str, float]:
    """The durable work of ``n`` workflows from ``callers`` tasks, in the least Python.

    The callers' figures are the best of two runs with nothing beside them. With 8
    callers two more runs time ``start`` beside them, its fsync blocking the loop and on
    an I/O thread, and the better median is kept (see the module's docstring).

    Args:
        root: A fresh directory for the files.
        template: The empty instance image (``hot_engine._floor_template``).
        shape: The engine's index schema and row (:meth:`IndexShape.read`).
        n: Workflows per run.
        callers: Concurrent asyncio tasks.
        start_every: Seconds between two timed starts (the engine's phase's pacing).

    Returns:
        ``{name}_py_floor_wps``, ``..._cpu_ms`` (CPU per workflow) and, with 8 callers,
        ``..._start_ms`` (median time of a ``start``'s durable index write under that
        load), where ``name`` is ``conc8`` for 8 callers and ``seq`` otherwise.
    """
    # The figures of the callers alone come from a run without starts beside them (as the
    # engine's conc8 and seq phases have none); start is timed in runs of its own.
    # Two runs of the callers alone, best figure kept: one run lasts a few seconds, and a
    # floor that a passing disk stall lowered would flatter the engine.
    plans: list[str | None] = [None, None]
    if callers == CALLERS:
        plans += ["loop", "thread"]
    runs = []
    for k, plan in enumerate(plans):
        where = root / f"{plan or 'callers'}-{k}"
        where.mkdir(parents=True)
        runs.append(asyncio.run(_run(where, template, shape, n, callers, plan, start_every)))
    alone = [r for r, plan in zip(runs, plans, strict=True) if plan is None]
    name = "conc8" if callers == CALLERS else "seq"
    figures = {
        f"{name}_py_floor_wps": max(r[0] for r in alone),
        f"{name}_py_floor_cpu_ms": min(r[1] for r in alone),
    }
    timed = [r[2] for r in runs if r[2] is not None]
    if timed:
        figures[f"{name}_py_floor_start_ms"] = min(timed)
    return figures
