"""Figures for the cold tier (warm Parquet -> Iceberg): the load, point reads, layout, memory.

python -m tests.bench.cold_bench [--quick] [--out DIR]   (also a phase of ``make bench``)

1. Throughput of the warm -> cold load (``cold.load.load``) over warm batches of 20-event
   workflows, on ``file://`` and on a moto S3 server (127.0.0.1), beside its floor: pyarrow
   alone reading the same warm files and writing the same sorted Parquet (same sort keys,
   zstd, same row-group size), measured in the same run. Every pass runs in a subprocess,
   so its peak RSS (``ru_maxrss`` from ``os.wait4``) is the pass's own. A split of where the
   time goes (read / prep / sort / write / commit) comes from wrapping those calls, and a
   cProfile run lists the hottest functions.
2. An archive of many workflows (1M x 20 events in the full run) written straight into
   the cold tables with ``ColdWriter`` (one commit per few days, as cold-move groups do);
   then the real read paths: ``ColdReader.rows`` and ``Tierflow.history`` (index rows for
   the sampled ids only), p50/p99, and a one-day aggregate (``plan_files`` + a pyarrow
   dataset + Acero group-by), with files planned against files in the table.
3. Layouts compared at a smaller scale: ours (identity(finished_date), sorted by
   workflow_id, small row groups), the same partitions unsorted, and
   bucket(16, workflow_id) + day, unsorted and sorted.

``--quick``: tiny sizes; checks row counts and every read's rows, judges no speed.
The synthetic rows are built with pyarrow compute (no numpy here): workflow ids are
random 64-bit hex strings, so a day's files span the whole id range, as real ids do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyiceberg.expressions import And, EqualTo
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import BucketTransform, IdentityTransform
from tierflow.cold import load as cold_load
from tierflow.cold import tables
from tierflow.cold import writer as cold_writer
from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.cold.reader import ColdReader, fs_path
from tierflow.cold.writer import ColdWriter, sort_rows
from tierflow.hot.index import INDEX_COLUMNS, IndexDB
from tierflow.tiering.warm_ledger import BatchState, WarmLedger
from tierflow.warm import schema
from tierflow.warm.storage import ObjectStore
from tierflow.warm.writer import (
    BatchManifest,
    BatchWriter,
    full_path,
    new_batch_id,
    write_manifest,
)

from tests.bench.child import Failed, require, run_child

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODULE = "tests.bench.cold_bench"
KEYS = {"region": "us-east-1", "access_key": "testing", "secret_key": "testing"}

# Issue targets.
LOAD_EPS = 1_000_000
HISTORY_P50_MS = {"file": 20.0, "s3": 50.0}
AGG_S = 1.0
RSS_MB = 1024.0


@dataclass(frozen=True)
class ColdSizes:
    """How much data each part of the cold benchmark moves."""

    load_workflows: int  # 20-event workflows in the warm backlog one pass moves
    load_batches: int  # warm batches they are written as (all spanning load_days)
    load_days: int
    load_repeats: int  # passes on file:// (best reported), each on fresh tables
    archive_workflows: int  # workflows in the cold archive read back (file://)
    archive_workflows_s3: int  # the same on moto
    archive_days: int
    days_per_commit: int  # days one commit writes (a cold-move group's span)
    layout_workflows: int
    layout_days: int
    samples: int  # point reads per figure
    agg_days: int  # days aggregated per figure


FULL = ColdSizes(
    load_workflows=100_000,  # 2M events: one default cold-move group
    load_batches=4,
    load_days=3,
    load_repeats=2,
    archive_workflows=1_000_000,
    archive_workflows_s3=1_000_000,
    archive_days=30,
    days_per_commit=3,
    layout_workflows=200_000,
    layout_days=10,
    samples=200,
    agg_days=5,
)
QUICK = ColdSizes(
    load_workflows=2_000,
    load_batches=2,
    load_days=2,
    load_repeats=1,
    archive_workflows=3_000,
    archive_workflows_s3=3_000,
    archive_days=3,
    days_per_commit=2,
    layout_workflows=2_000,
    layout_days=2,
    samples=10,
    agg_days=2,
)

EVENTS = 20
# The tiering bench's workflow: queued, started, 8 steps x (started, completed), one
# recorded value, completed.
EVENT_TYPES = [
    "workflow.queued",
    "workflow.started",
    *["step.started", "step.completed"] * 8,
    "value.recorded",
    "workflow.completed",
]
STEP_NAMES = [None, None, *[f"step-{i // 2}" for i in range(16)], None, None]
ATTEMPTS = [None, None, *[1] * 16, None, None]
PAYLOAD_PREFIX = [
    '{"args":[',
    None,
    *[None, '"'] * 8,
    '"',
    '{"result":"',
]
PAYLOAD_SUFFIX = [
    "]}",
    None,
    *[None, '"'] * 8,
    '"',
    '"}',
]
STEP_SUFFIX = ["", "", *(["", f"-{i}"][j] for i in range(8) for j in range(2)), "", ""]
WORKFLOW_TYPES = ["order", "payment", "shipment", "refund"]
EPOCH = date(1970, 1, 1)
FIRST_DAY = date(2026, 1, 1)


# -- synthetic data ------------------------------------------------------------------


def synth_day(rng: random.Random, day: date, n: int, first_index: int) -> tuple[pa.Table, pa.Table]:
    """``n`` finished 20-event workflows of one finish date, as warm tables (tier "warm")."""
    day_us = (day - EPOCH).days * 86_400_000_000
    ids = [f"wf-{rng.getrandbits(64):016x}" for _ in range(n)]
    runs = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
    tokens = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
    wtypes = [WORKFLOW_TYPES[rng.randrange(4)] for _ in range(n)]
    finished = [day_us + rng.randrange(86_400_000_000) for _ in range(n)]
    duration = [rng.randrange(50_000, 60_000_000) for _ in range(n)]
    started = [f - d for f, d in zip(finished, duration, strict=True)]
    created = [s - rng.randrange(1_000, 5_000_000) for s in started]
    index = [str(first_index + i) for i in range(n)]
    workflows = schema.workflows_table(
        {
            "workflow_id": ids,
            "run_id": runs,
            "workflow_type": wtypes,
            "status": ["completed"] * n,
            "parent_workflow_id": [None] * n,
            "input": [f"[{i}]" for i in index],
            "result": [f'"{t}"' for t in tokens],
            "error": [None] * n,
            "attributes": ["{}"] * n,
            "created_at": created,
            "started_at": started,
            "finished_at": finished,
            "step_count": [8] * n,
        }
    )
    pos = pa.array(range(n * EVENTS), pa.int64())
    wf = pc.divide(pos, EVENTS)
    k = pc.subtract(pos, pc.multiply(wf, EVENTS))
    step_us = pc.divide(pa.array(duration, pa.int64()), EVENTS - 1)
    event_time = pc.add(
        pc.take(pa.array(started, pa.int64()), wf), pc.multiply(k, pc.take(step_us, wf))
    )
    token_k = pc.greater_equal(k, EVENTS - 2)
    middle = pc.if_else(
        token_k,
        pc.take(pa.array(tokens), wf),
        pc.binary_join_element_wise(
            pc.take(pa.array(index), wf), pc.take(pa.array(STEP_SUFFIX), k), ""
        ),
    )
    payload = pc.binary_join_element_wise(
        pc.take(pa.array(PAYLOAD_PREFIX, pa.string()), k),
        middle,
        pc.take(pa.array(PAYLOAD_SUFFIX, pa.string()), k),
        "",
    )
    history = schema.history_table(
        {
            "workflow_id": pc.take(pa.array(ids), wf),
            "run_id": pc.take(pa.array(runs), wf),
            "event_id": pc.add(k, 1),
            "event_type": pc.take(pa.array(EVENT_TYPES), k),
            "event_time": event_time,
            "step_name": pc.take(pa.array(STEP_NAMES, pa.string()), k),
            "attempt": pc.take(pa.array(ATTEMPTS, pa.int64()), k),
            "payload": payload,
            "workflow_type": pc.take(pa.array(wtypes), wf),
        },
        dict(zip(ids, finished, strict=True)),
    )
    return workflows, history


def record_warm_batch(tf: Any, wf: pa.Table, ev: pa.Table) -> BatchManifest:
    """One warm batch as a tiering pass leaves it: files, manifest, ledger row in state done.

    Args:
        tf: An open ``Tierflow`` (its store, index and clock).
        wf: The batch's workflows rows; ev: its history rows.
    """
    ledger = WarmLedger(tf.index)
    bid = new_batch_id()
    ledger.begin(bid, tf.engine.now_us(), tf.store.url)
    manifest = BatchWriter(tf.store, bid).write(wf, ev)
    write_manifest(tf.store, manifest)
    ledger.commit(bid, manifest.to_json(), [], wf.num_rows, ev.num_rows, tf.engine.now_us())
    ledger.set_state(bid, BatchState.DONE)
    return manifest


def to_cold(table: pa.Table, dataset: str, batch_id: str) -> pa.Table:
    """A warm table in the cold tables' schema (``batch_id`` added, workflows ``tier`` cold)."""
    cold = tables.arrow_schema(dataset)
    table = table.append_column(cold.field("batch_id"), pa.repeat(batch_id, table.num_rows))
    if dataset == "workflows":
        i = table.schema.get_field_index("tier")
        table = table.set_column(i, table.schema.field(i), pa.repeat(tables.TIER, table.num_rows))
    return table.cast(cold)


def split_days(n: int, days: int) -> list[int]:
    base = [n // days] * days
    for i in range(n % days):
        base[i] += 1
    return base


# -- stores --------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where a store lives, in a form a subprocess can reopen."""

    url: str
    endpoint: str | None = None

    def open(self) -> ObjectStore:
        if self.endpoint is None:
            return ObjectStore.from_url(self.url)
        return ObjectStore.from_url(self.url, endpoint=self.endpoint, **KEYS)


class Moto:
    """A moto S3 server on 127.0.0.1 in this process; a fresh bucket per ``place``."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def place(self, prefix: str) -> Place:
        import boto3

        bucket = f"cold-{uuid.uuid4().hex[:10]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=KEYS["region"],
            aws_access_key_id=KEYS["access_key"],
            aws_secret_access_key=KEYS["secret_key"],
        ).create_bucket(Bucket=bucket)
        return Place(f"s3://{bucket}/{prefix}", self.endpoint)

    def stop(self) -> None:
        self.server.stop()
        if self.server._server is not None:
            self.server._server.server_close()


def open_cold(place: Place, catalog: Path) -> ColdTables:
    return ColdTables(CatalogSettings(url=f"sqlite:///{catalog}"), place.open())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- 1. the load (and its floor), each pass in a subprocess -----------------------------


def write_backlog(place: Place, sizes: ColdSizes, rng: random.Random) -> list[BatchManifest]:
    """Warm batches of 20-event workflows, every batch spanning the same days."""
    store = place.open()
    store.check()
    manifests = []
    per_batch = split_days(sizes.load_workflows, sizes.load_batches)
    first = 0
    for b, n in enumerate(per_batch):
        wfs, hists = [], []
        for d, m in enumerate(split_days(n, sizes.load_days)):
            w, h = synth_day(rng, FIRST_DAY + timedelta(days=d), m, first)
            first += m
            wfs.append(w)
            hists.append(h)
        writer = BatchWriter(store, f"bench-{b:03d}-{uuid.uuid4().hex[:6]}")
        manifests.append(writer.write(pa.concat_tables(wfs), pa.concat_tables(hists)))
    return manifests


class Split:
    """Wall time of the load's stages, by wrapping the calls it makes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def add(self, name: str, dt: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + dt

    def wrap(self, owner: Any, attr: str, name: str, generator: bool = False) -> None:
        real = getattr(owner, attr)

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            result = real(*args, **kw)
            self.add(name, time.perf_counter() - t0)
            if generator:
                return self._timed_iter(result, name)
            return result

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, real))

    def _timed_iter(self, it: Any, name: str) -> Iterator[Any]:
        it = iter(it)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.add(name, time.perf_counter() - t0)
                return
            self.add(name, time.perf_counter() - t0)
            yield item

    def undo(self) -> None:
        for fn in reversed(self._undo):
            fn()


def child_load(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``load()`` pass over the spec's manifests into fresh cold tables."""
    warm = Place(**spec["warm"]).open()
    cold = open_cold(Place(**spec["cold"]), Path(spec["catalog"]))
    manifests = [BatchManifest.from_json(m.encode()) for m in spec["manifests"]]
    cold.tables(create=True)  # a pass finds its tables in place
    writer = ColdWriter(cold)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    split = Split()
    # Stages, nested as they run: read_partitions (its next() = read + prep + sort) holds
    # pq.read_table and sort_rows; write_file's iterator waits for pyiceberg's writer threads.
    split.wrap(pq, "read_table", "read")
    split.wrap(cold_load, "sort_rows", "sort")
    split.wrap(cold_load, "read_partitions", "read_partitions", generator=True)
    split.wrap(cold_writer, "write_file", "write", generator=True)
    split.wrap(ColdWriter, "commit_files", "commit")
    profiler = cProfile.Profile() if spec.get("cprofile") else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    result = cold_load.load(writer, warm, f"bench-{uuid.uuid4().hex[:8]}", manifests)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - t0
    split.undo()
    s = split.seconds
    stages = {
        "read": s.get("read", 0.0),
        "prep (concat, cast, check)": s.get("read_partitions", 0.0)
        - s.get("read", 0.0)
        - s.get("sort", 0.0),
        "sort": s.get("sort", 0.0),
        "write (pyiceberg write_file)": s.get("write", 0.0),
        "commit (manifests, catalog, sync)": s.get("commit", 0.0),
    }
    stages["other"] = seconds - sum(stages.values())
    live = {
        d: sum(t.file.record_count for t in cold.table(d, refresh=True).scan().plan_files())
        for d in tables.DATASETS
    }
    files = {d: len(list(cold.table(d).scan().plan_files())) for d in tables.DATASETS}
    out: dict[str, Any] = {
        "seconds": seconds,
        "events": result.events,
        "workflows": result.workflows,
        "expected_events": sum(m.event_count for m in manifests),
        "expected_workflows": sum(m.workflow_count for m in manifests),
        "live_rows": live,
        "files": files,
        "stages": stages,
        "rss_before_mb": rss0,
    }
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(18)
        stats.sort_stats("cumulative").print_stats(25)
        out["profile"] = text.getvalue()
    return out


def child_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """pyarrow alone: the same warm files read, sorted the same way, written as zstd Parquet."""
    warm = Place(**spec["warm"]).open()
    out_store = Place(**spec["cold"]).open()
    manifests = [BatchManifest.from_json(m.encode()) for m in spec["manifests"]]
    row_group = tables.ColdLayout().row_group_rows
    stages = {"read": 0.0, "prep (concat)": 0.0, "sort": 0.0, "write": 0.0}
    rows = 0
    t0 = time.perf_counter()
    base = out_store.root.rstrip("/") + "/floor"
    if out_store.url.startswith("file://"):
        out_store.fs.create_dir(base, recursive=True)
    for dataset in cold_load.ORDER:
        by_day: dict[str, list[tuple[str, str]]] = {}
        for m in manifests:
            for f in m.files:
                if f.dataset == dataset:
                    by_day.setdefault(f.finished_date, []).append((m.batch_id, f.key))
        keys = [(k, "ascending") for k in tables.sort_keys(dataset)]
        for day in sorted(by_day):
            parts = []
            for batch_id, key in by_day[day]:
                a = time.perf_counter()
                part = pq.read_table(full_path(warm.root, key), filesystem=warm.fs)
                b = time.perf_counter()
                stages["read"] += b - a
                parts.append(part.append_column("batch_id", pa.repeat(batch_id, part.num_rows)))
                stages["prep (concat)"] += time.perf_counter() - b
            a = time.perf_counter()
            table = pa.concat_tables(parts)
            b = time.perf_counter()
            table = table.take(pc.sort_indices(table, keys))
            c = time.perf_counter()
            pq.write_table(
                table,
                f"{base}/{dataset}-{day}.parquet",
                filesystem=out_store.fs,
                compression="zstd",
                row_group_size=row_group,
            )
            d = time.perf_counter()
            stages["prep (concat)"] += b - a
            stages["sort"] += c - b
            stages["write"] += d - c
            if dataset == "history":
                rows += table.num_rows
    return {"seconds": time.perf_counter() - t0, "events": rows, "stages": stages}


def load_figures(
    name: str,
    warm: Place,
    cold_places: Callable[[str], Place],
    work: Path,
    sizes: ColdSizes,
    repeats: int,
    cprofile: bool,
) -> dict[str, Any]:
    rng = random.Random(4)
    manifests = write_backlog(warm, sizes, rng)
    manifests_json = [m.to_json().decode() for m in manifests]
    events = sum(m.event_count for m in manifests)
    runs, floors = [], []
    for r in range(repeats):
        spec = {
            "mode": "load",
            "warm": asdict(warm),
            "cold": asdict(cold_places(f"cold-{r}")),
            "catalog": str(work / f"catalog-{name}-{r}.sqlite"),
            "manifests": manifests_json,
        }
        run = run_child(MODULE, spec, work, f"load child ({spec['mode']})")
        require(
            run["events"] == events == run["live_rows"]["history"]
            and run["workflows"] == run["expected_workflows"] == run["live_rows"]["workflows"],
            f"load on {name}: {run['events']} events / {run['live_rows']} live rows,"
            f" expected {events} events, {run['expected_workflows']} workflows",
        )
        runs.append(run)
        floor_spec = {**spec, "mode": "floor", "cold": asdict(cold_places(f"floor-{r}"))}
        fl = run_child(MODULE, floor_spec, work, "load floor child")
        require(fl["events"] == events, f"floor on {name}: {fl['events']} != {events} events")
        floors.append(fl)
    best = min(runs, key=lambda x: x["seconds"])
    best_floor = min(floors, key=lambda x: x["seconds"])
    out: dict[str, Any] = {
        "events": events,
        "workflows": sizes.load_workflows,
        "warm_files": sum(len(m.files) for m in manifests),
        "eps": events / best["seconds"],
        "floor_eps": events / best_floor["seconds"],
        "runs_s": [x["seconds"] for x in runs],
        "floor_runs_s": [x["seconds"] for x in floors],
        "stages": best["stages"],
        "floor_stages": best_floor["stages"],
        "cold_files": best["files"],
        "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
        "rss_before_mb": best["rss_before_mb"],
        "floor_peak_rss_mb": max(x["peak_rss_mb"] for x in floors),
    }
    if cprofile:
        spec = {
            "mode": "load",
            "cprofile": True,
            "warm": asdict(warm),
            "cold": asdict(cold_places("cold-prof")),
            "catalog": str(work / f"catalog-{name}-prof.sqlite"),
            "manifests": manifests_json,
        }
        prof = run_child(MODULE, spec, work, "profiled load child")
        out["profile"] = prof["profile"]
        out["profiled_s"] = prof["seconds"]
    return out


# -- 2. the archive and its read paths --------------------------------------------------


@dataclass(frozen=True)
class Sample:
    workflow_id: str
    day: str
    run_id: str
    workflow_type: str
    created_at: int
    started_at: int
    finished_at: int


def write_archive(
    cold: ColdTables,
    workflows: int,
    days: int,
    days_per_commit: int,
    samples: int,
    rng: random.Random,
    layout: str = "ours",
) -> tuple[list[Sample], dict[str, int]]:
    """Write ``workflows`` straight into cold tables, one commit per ``days_per_commit`` days.

    ``layout``: "ours" (ColdWriter, sorted), "unsorted" (ColdWriter, arrival order),
    "bucket" / "bucket_sorted" (pyiceberg append into the table as created by the caller).

    Returns:
        Sampled workflows (for point reads) and the event count of every day.
    """
    writer = ColdWriter(cold)
    per_day = split_days(workflows, days)
    picked: list[Sample] = []
    day_events: dict[str, int] = {}
    per_day_samples = split_days(samples, days)
    first = 0
    for g in range(0, days, days_per_commit):
        group: dict[str, list[pa.Table]] = {"workflows": [], "history": []}
        batch_ids = []
        for d in range(g, min(days, g + days_per_commit)):
            day = FIRST_DAY + timedelta(days=d)
            w, h = synth_day(rng, day, per_day[d], first)
            first += per_day[d]
            bid = f"archive-{day.isoformat()}"
            batch_ids.append(bid)
            day_events[day.isoformat()] = h.num_rows
            for i in rng.sample(range(w.num_rows), per_day_samples[d]):
                r = w.slice(i, 1).to_pylist()[0]
                picked.append(
                    Sample(
                        r["workflow_id"],
                        day.isoformat(),
                        r["run_id"],
                        r["workflow_type"],
                        *(
                            int(w.column(c)[i].cast(pa.int64()).as_py())
                            for c in ("created_at", "started_at", "finished_at")
                        ),
                    )
                )
            for dataset, t in (("workflows", w), ("history", h)):
                t = to_cold(t, dataset, bid)
                if layout in ("ours", "bucket_sorted"):
                    t = sort_rows(t, dataset)
                group[dataset].append(t)
        for dataset in cold_load.ORDER:
            if layout in ("ours", "unsorted"):
                writer.commit(dataset, f"archive-{g}", batch_ids, iter(group[dataset]))
            else:
                cold.table(dataset).append(pa.concat_tables(group[dataset]))
    return picked, day_events


def row_groups_hit(fs: Any, paths: list[str], workflow_id: str, cache: dict[str, Any]) -> int:
    """Row groups of ``paths`` whose workflow_id statistics admit ``workflow_id``."""
    hit = 0
    for path in paths:
        meta = cache.get(path)
        if meta is None:
            with fs.open_input_file(path) as f:
                meta = cache[path] = pq.ParquetFile(f).metadata
        col = meta.schema.names.index("workflow_id")
        for i in range(meta.num_row_groups):
            st = meta.row_group(i).column(col).statistics
            if st is None or not st.has_min_max or st.min <= workflow_id <= st.max:
                hit += 1
    return hit


def total_row_groups(fs: Any, paths: list[str], cache: dict[str, Any]) -> int:
    n = 0
    for path in paths:
        meta = cache.get(path)
        if meta is None:
            with fs.open_input_file(path) as f:
                meta = cache[path] = pq.ParquetFile(f).metadata
        n += meta.num_row_groups
    return n


def check_history(rows: list[dict[str, Any]], s: Sample, what: str) -> None:
    ids = [r["event_id"] for r in rows]
    require(
        ids == list(range(1, EVENTS + 1)) and all(r["workflow_id"] == s.workflow_id for r in rows),
        f"{what}: {s.workflow_id} ({s.day}) gave event ids {ids}",
    )


def plan_read(table: Any, fs: Any, workflow_id: str, day: str) -> tuple[pa.Table, list[str]]:
    """The generic point read: pyiceberg plans with both predicates, pyarrow reads."""
    tasks = table.scan(
        row_filter=And(EqualTo("finished_date", day), EqualTo("workflow_id", workflow_id))
    ).plan_files()
    paths = [fs_path(t.file.file_path) for t in tasks]
    data = ds.dataset(paths, schema=tables.arrow_schema("history"), format="parquet", filesystem=fs)
    return data.to_table(filter=ds.field("workflow_id") == workflow_id), paths


def day_aggregate(table: Any, fs: Any, day: str) -> tuple[pa.Table, int]:
    """Count of events by event_type for one finished_date; and the files planned."""
    tasks = list(table.scan(row_filter=EqualTo("finished_date", day)).plan_files())
    data = ds.dataset(
        [fs_path(t.file.file_path) for t in tasks],
        schema=tables.arrow_schema("history"),
        format="parquet",
        filesystem=fs,
    )
    counts = (
        data.to_table(columns=["event_type"])
        .group_by("event_type")
        .aggregate([("event_type", "count")])
    )
    return counts, len(tasks)


def measure_aggregate(table: Any, fs: Any, day_events: dict[str, int], days: int) -> dict[str, Any]:
    times, planned = [], []
    for day in sorted(day_events)[:days]:
        t0 = time.perf_counter()
        counts, n = day_aggregate(table, fs, day)
        times.append(time.perf_counter() - t0)
        planned.append(n)
        got = sum(counts.column("event_type_count").to_pylist())
        require(got == day_events[day], f"aggregate of {day}: {got} != {day_events[day]} events")
        require(counts.num_rows == len(set(EVENT_TYPES)), f"aggregate of {day}: {counts}")
    return {"p50_s": pct(times, 0.5), "max_s": max(times), "files_planned": max(planned)}


def index_row(s: Sample) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(INDEX_COLUMNS)
    row.update(
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        status="completed",
        attributes="{}",
        created_at=s.created_at,
        started_at=s.started_at,
        finished_at=s.finished_at,
        step_count=8,
        recovery_count=0,
        cancel_requested=0,
        tier="cold",
        batch_id=f"archive-{s.day}",
    )
    return row


async def facade_history(
    data: Path, place: Place, catalog: Path, picked: list[Sample]
) -> list[float]:
    """``Tierflow.history`` for every sample: index rows (cold) for the samples only."""
    from tierflow import Tierflow

    times = []
    async with Tierflow(
        data, [], warm_store=place.open(), catalog_url=f"sqlite:///{catalog}"
    ) as tf:
        for s in picked:
            tf.index.write_now(IndexDB.insert_fn(index_row(s)))
        await tf.history(picked[0].workflow_id)  # opens the catalog and lists the files
        for s in picked:
            t0 = time.perf_counter()
            events = await tf.history(s.workflow_id)
            times.append(time.perf_counter() - t0)
            check_history([asdict(e) for e in events], s, "Tierflow.history")
    return times


def archive_figures(
    name: str, place: Place, work: Path, sizes: ColdSizes, workflows: int
) -> dict[str, Any]:
    catalog = work / f"archive-{name}.sqlite"
    cold = open_cold(place, catalog)
    cold.store.check()
    cold.tables(create=True)
    t0 = time.perf_counter()
    picked, day_events = write_archive(
        cold,
        workflows,
        sizes.archive_days,
        sizes.days_per_commit,
        sizes.samples,
        random.Random(7),
    )
    setup_s = time.perf_counter() - t0
    events = sum(day_events.values())
    live = sum(t.file.record_count for t in cold.table("history").scan().plan_files())
    require(live == events, f"archive on {name}: {live} rows in history, wrote {events}")
    reader = ColdReader(cold)
    s0 = picked[0]
    t0 = time.perf_counter()
    check_history(reader.rows("history", s0.workflow_id, s0.day), s0, "ColdReader.rows")
    first_ms = (time.perf_counter() - t0) * 1000
    times, cands, groups = [], [], []
    cache: dict[str, Any] = {}
    fs = cold.store.fs
    for s in picked:
        t0 = time.perf_counter()
        rows = reader.rows("history", s.workflow_id, s.day)
        times.append((time.perf_counter() - t0) * 1000)
        check_history(rows, s, "ColdReader.rows")
        files = reader.candidates("history", s.workflow_id, s.day)
        cands.append(len(files))
        groups.append(row_groups_hit(fs, [fs_path(f.path) for f in files], s.workflow_id, cache))
    all_files = reader.files("history")
    day_files = reader.files("history", s0.day)
    facade = asyncio.run(facade_history(work / f"tf-{name}", place, catalog, picked))
    facade_ms = [t * 1000 for t in facade]
    agg = measure_aggregate(cold.table("history"), fs, day_events, sizes.agg_days)
    return {
        "workflows": workflows,
        "events": events,
        "days": sizes.archive_days,
        "setup_s": setup_s,
        "bytes": sum(f.bytes for f in all_files),
        "first_read_ms": first_ms,
        "rows_p50_ms": pct(times, 0.5),
        "rows_p99_ms": pct(times, 0.99),
        "history_p50_ms": pct(facade_ms, 0.5),
        "history_p99_ms": pct(facade_ms, 0.99),
        "files_total": len(all_files),
        "files_in_day": len(day_files),
        "files_planned_mean": statistics.mean(cands),
        "row_groups_read_mean": statistics.mean(groups),
        "row_groups_in_day": total_row_groups(fs, [fs_path(f.path) for f in day_files], cache),
        "agg_p50_s": agg["p50_s"],
        "agg_max_s": agg["max_s"],
        "agg_files_planned": agg["files_planned"],
        "samples": len(picked),
    }


# -- 3. layouts --------------------------------------------------------------------------

LAYOUTS = {
    "ours": "identity(finished_date), sorted by workflow_id, 16k-row groups",
    "unsorted": "identity(finished_date), arrival order",
    "bucket": "identity(finished_date) + bucket(16, workflow_id), unsorted",
    "bucket_sorted": "identity(finished_date) + bucket(16, workflow_id), sorted",
}


def create_bucket_tables(cold: ColdTables) -> None:
    cat = cold.catalog
    cat.create_namespace_if_not_exists(tables.NAMESPACE)
    for dataset in tables.DATASETS:
        sch = tables.iceberg_schema(dataset)
        spec = PartitionSpec(
            PartitionField(
                source_id=sch.find_field("finished_date").field_id,
                field_id=1000,
                transform=IdentityTransform(),
                name="finished_date",
            ),
            PartitionField(
                source_id=sch.find_field("workflow_id").field_id,
                field_id=1001,
                transform=BucketTransform(16),
                name="workflow_id_bucket",
            ),
        )
        cat.create_table(
            tables.identifier(dataset),
            schema=sch,
            partition_spec=spec,
            properties=tables.table_properties(dataset, cold.layout),
        )


def layout_figures(layout: str, place: Place, work: Path, sizes: ColdSizes) -> dict[str, Any]:
    catalog = work / f"layout-{layout}.sqlite"
    cold = open_cold(place, catalog)
    cold.store.check()
    if layout.startswith("bucket"):
        create_bucket_tables(cold)
    else:
        cold.tables(create=True)
    t0 = time.perf_counter()
    picked, day_events = write_archive(
        cold,
        sizes.layout_workflows,
        sizes.layout_days,
        sizes.days_per_commit,
        sizes.samples,
        random.Random(11),
        layout,
    )
    setup_s = time.perf_counter() - t0
    table = cold.table("history", refresh=True)
    fs = cold.store.fs
    reader = ColdReader(cold)
    cache: dict[str, Any] = {}
    plan_ms, reader_ms, files, groups = [], [], [], []
    for s in picked[:1] + picked:  # the first read warms the reader's file list
        t0 = time.perf_counter()
        found, paths = plan_read(table, fs, s.workflow_id, s.day)
        plan_ms.append((time.perf_counter() - t0) * 1000)
        require(found.num_rows == EVENTS, f"{layout}: {found.num_rows} rows for {s.workflow_id}")
        t0 = time.perf_counter()
        rows = reader.rows("history", s.workflow_id, s.day)
        reader_ms.append((time.perf_counter() - t0) * 1000)
        check_history(rows, s, f"ColdReader.rows ({layout})")
        files.append(len(paths))
        groups.append(row_groups_hit(fs, paths, s.workflow_id, cache))
    plan_ms, reader_ms, files, groups = plan_ms[1:], reader_ms[1:], files[1:], groups[1:]
    all_paths = [fs_path(t.file.file_path) for t in table.scan().plan_files()]
    day_paths = [
        fs_path(t.file.file_path)
        for t in table.scan(row_filter=EqualTo("finished_date", picked[0].day)).plan_files()
    ]
    agg = measure_aggregate(table, fs, day_events, sizes.agg_days)
    return {
        "description": LAYOUTS[layout],
        "setup_s": setup_s,
        "files_total": len(all_paths),
        "bytes": sum(t.file.file_size_in_bytes for t in table.scan().plan_files()),
        "files_in_day": len(day_paths),
        "row_groups_in_day": total_row_groups(fs, day_paths, cache),
        "point_p50_ms": pct(plan_ms, 0.5),
        "point_p99_ms": pct(plan_ms, 0.99),
        "reader_p50_ms": pct(reader_ms, 0.5),
        "files_read_mean": statistics.mean(files),
        "row_groups_read_mean": statistics.mean(groups),
        "agg_p50_s": agg["p50_s"],
        "agg_files": agg["files_planned"],
    }


# -- the phase ----------------------------------------------------------------------------


def measure(quick: bool, console: Any = None) -> dict[str, Any]:
    """Every cold figure; raises Failed when a correctness check fails."""
    say = console.print if console is not None else print
    sizes = QUICK if quick else FULL
    work = Path(tempfile.mkdtemp(prefix="tierflow-coldbench-"))
    moto = None
    # Other processes on the machine skew every figure: record the load beside them.
    out: dict[str, Any] = {"sizes": asdict(sizes), "loadavg_start": os.getloadavg()}
    try:
        moto = Moto()
        local = lambda prefix: Place((work / prefix).as_uri())  # noqa: E731
        say("  warm -> cold load, file:// ...")
        out["load_file"] = load_figures(
            "file", local("warm"), local, work, sizes, sizes.load_repeats, cprofile=True
        )
        say("  warm -> cold load, moto s3:// ...")
        assert moto is not None
        out["load_s3"] = load_figures(
            "s3", moto.place("warm"), moto.place, work, sizes, 1, cprofile=False
        )
        say(f"  archive of {sizes.archive_workflows:,} workflows, file:// ...")
        out["archive_file"] = archive_figures(
            "file", local("archive"), work, sizes, sizes.archive_workflows
        )
        say(f"  archive of {sizes.archive_workflows_s3:,} workflows, moto s3:// ...")
        out["archive_s3"] = archive_figures(
            "s3", moto.place("archive"), work, sizes, sizes.archive_workflows_s3
        )
        out["layouts"] = {}
        for layout in LAYOUTS:
            say(f"  layout {layout}, {sizes.layout_workflows:,} workflows, file:// ...")
            out["layouts"][layout] = layout_figures(layout, local(f"layout-{layout}"), work, sizes)
        out["loadavg_end"] = os.getloadavg()
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def ratio(value: float, target: float, higher: bool) -> str:
    r = value / target if higher else target / value
    return f"{r:.2f}x of target" if higher else f"{r:.1f}x under target"


def report(console: Any, figs: dict[str, Any], judged: bool) -> None:
    """Print the cold tables (rich)."""
    from rich.table import Table

    mark = (lambda ok: "yes" if ok else "[red]NO[/red]") if judged else (lambda ok: "-")
    t = Table(
        "metric",
        "file://",
        "moto s3://",
        "target",
        "met (file / s3)",
        title="cold tier: load warm -> Iceberg"
        + ("" if judged else "; QUICK: smoke sizes, figures mean nothing"),
    )
    cf, cs = figs["load_file"], figs["load_s3"]
    t.add_row(
        "warm -> cold load events/s",
        f"{cf['eps']:,.0f} ({cf['eps'] / LOAD_EPS:.2f}x target)",
        f"{cs['eps']:,.0f} ({cs['eps'] / LOAD_EPS:.2f}x target)",
        ">= 1,000,000 ev/s",
        f"{mark(cf['eps'] >= LOAD_EPS)} / {mark(cs['eps'] >= LOAD_EPS)}",
    )
    t.add_row(
        "floor: pyarrow read+sort+write",
        f"{cf['floor_eps']:,.0f} ev/s (ours = {cf['eps'] / cf['floor_eps']:.0%})",
        f"{cs['floor_eps']:,.0f} ev/s (ours = {cs['eps'] / cs['floor_eps']:.0%})",
        "same files, keys, zstd, row groups",
        "",
    )
    t.add_row(
        "peak RSS of a pass",
        f"{cf['peak_rss_mb']:.0f} MB ({cf['peak_rss_mb'] / RSS_MB:.0%} of budget)",
        f"{cs['peak_rss_mb']:.0f} MB ({cs['peak_rss_mb'] / RSS_MB:.0%} of budget)",
        "<= 1024 MB",
        f"{mark(cf['peak_rss_mb'] <= RSS_MB)} / {mark(cs['peak_rss_mb'] <= RSS_MB)}",
    )
    t.add_row(
        "  floor's peak RSS / after imports",
        f"{cf['floor_peak_rss_mb']:.0f} MB / {cf['rss_before_mb']:.0f} MB",
        f"{cs['floor_peak_rss_mb']:.0f} MB / {cs['rss_before_mb']:.0f} MB",
        "",
        "",
    )
    t.add_row(
        "events (workflows) per pass",
        f"{cf['events']:,} ({cf['workflows']:,}) from {cf['warm_files']} warm files",
        f"{cs['events']:,} ({cs['workflows']:,})",
        "",
        "",
    )
    for stage in cf["stages"]:
        t.add_row(
            f"  {stage}",
            f"{cf['stages'][stage]:.2f} s ({cf['stages'][stage] / sum(cf['stages'].values()):.0%})",
            f"{cs['stages'][stage]:.2f} s ({cs['stages'][stage] / sum(cs['stages'].values()):.0%})",
            "",
            "",
        )
    for stage in cf["floor_stages"]:
        t.add_row(
            f"  floor {stage}",
            f"{cf['floor_stages'][stage]:.2f} s",
            f"{cs['floor_stages'][stage]:.2f} s",
            "",
            "",
        )
    console.print(t)

    a, b = figs["archive_file"], figs["archive_s3"]
    t2 = Table(
        "metric",
        "file://",
        "moto s3://",
        "target",
        "met (file / s3)",
        title=f"cold tier: point reads and a one-day aggregate over {a['workflows']:,} /"
        f" {b['workflows']:,} archived workflows ({a['events']:,} / {b['events']:,} events)",
    )

    def ms_row(key: str, label: str, judge: bool) -> None:
        fv, sv = a[key], b[key]
        ft, st = HISTORY_P50_MS["file"], HISTORY_P50_MS["s3"]
        t2.add_row(
            label,
            f"{fv:.1f} ms ({ratio(fv, ft, False)})" if judge else f"{fv:.1f} ms",
            f"{sv:.1f} ms ({ratio(sv, st, False)})" if judge else f"{sv:.1f} ms",
            f"<= {ft:g} / {st:g} ms" if judge else "",
            f"{mark(fv <= ft)} / {mark(sv <= st)}" if judge else "",
        )

    ms_row("history_p50_ms", "Tierflow.history p50", True)
    ms_row("history_p99_ms", "Tierflow.history p99", True)
    ms_row("rows_p50_ms", "ColdReader.rows p50", False)
    ms_row("rows_p99_ms", "ColdReader.rows p99", False)
    ms_row("first_read_ms", "first read (lists the files)", False)
    t2.add_row(
        "files planned / in table (point)",
        f"{a['files_planned_mean']:.2f} / {a['files_total']}",
        f"{b['files_planned_mean']:.2f} / {b['files_total']}",
        "",
        "",
    )
    t2.add_row(
        "row groups read / in the day",
        f"{a['row_groups_read_mean']:.2f} / {a['row_groups_in_day']}",
        f"{b['row_groups_read_mean']:.2f} / {b['row_groups_in_day']}",
        "",
        "",
    )
    t2.add_row(
        "one-day count by event_type p50 (max)",
        f"{a['agg_p50_s'] * 1000:.0f} ms ({a['agg_max_s'] * 1000:.0f}) "
        f"({ratio(a['agg_p50_s'], AGG_S, False)})",
        f"{b['agg_p50_s'] * 1000:.0f} ms ({b['agg_max_s'] * 1000:.0f}) "
        f"({ratio(b['agg_p50_s'], AGG_S, False)})",
        "<= 1 s",
        f"{mark(a['agg_p50_s'] <= AGG_S)} / {mark(b['agg_p50_s'] <= AGG_S)}",
    )
    t2.add_row(
        "  files planned / in table (day)",
        f"{a['agg_files_planned']} / {a['files_total']}",
        f"{b['agg_files_planned']} / {b['files_total']}",
        "",
        "",
    )
    t2.add_row(
        "setup (write the archive), size",
        f"{a['setup_s']:.0f} s, {a['bytes'] / 1e6:.0f} MB",
        f"{b['setup_s']:.0f} s, {b['bytes'] / 1e6:.0f} MB",
        "",
        "",
    )
    console.print(t2)

    lay = figs["layouts"]
    t3 = Table(
        "layout",
        "point p50 / p99 (plan+read)",
        "ColdReader p50",
        "files read / in day",
        "row groups read / in day",
        "one-day scan p50 (files)",
        "files, MB",
        title=f"cold layouts, {figs['sizes']['layout_workflows']:,} workflows over "
        f"{figs['sizes']['layout_days']} days, file://",
    )
    for name, f in lay.items():
        t3.add_row(
            f"{name}: {f['description']}",
            f"{f['point_p50_ms']:.1f} / {f['point_p99_ms']:.1f} ms",
            f"{f['reader_p50_ms']:.1f} ms",
            f"{f['files_read_mean']:.2f} / {f['files_in_day']}",
            f"{f['row_groups_read_mean']:.2f} / {f['row_groups_in_day']}",
            f"{f['agg_p50_s'] * 1000:.0f} ms ({f['agg_files']})",
            f"{f['files_total']}, {f['bytes'] / 1e6:.0f}",
        )
    console.print(t3)
    console.print(
        f"load average (1 min) at start / end of the cold phase: {figs['loadavg_start'][0]:.1f}"
        f" / {figs['loadavg_end'][0]:.1f} on {os.cpu_count()} CPUs"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench-results"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        fn = child_load if spec["mode"] == "load" else child_floor
        print(json.dumps(fn(spec)))
        return 0
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 180)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        figs = measure(args.quick, console)
    except Failed as exc:
        console.print(f"[bold red]FAILED:[/] {exc}")
        return 1
    report(console, figs, judged=not args.quick)
    if not args.quick and "profile" in figs["load_file"]:
        console.print(figs["load_file"]["profile"], markup=False, highlight=False)
    figs["duration_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "cold-quick-latest.json" if args.quick else "cold-latest.json"
    (out / name).write_text(json.dumps(figs, indent=2, default=str) + "\n")
    if not args.quick:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        (out / f"cold-{stamp}.json").write_text(json.dumps(figs, indent=2, default=str) + "\n")
    console.print(f"cold phase: {figs['duration_s']:.0f} s; figures in {out / name}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
