"""Figures for erasure from the cold tier: one workflow out of a large archive, and retention.

python -m tests.bench.erasure_bench [--quick] [--out DIR]
(also a phase of ``make bench``, alone: ``python -m tests.bench --only erasure``)

1. **One workflow** out of a cold archive of 1M 20-event workflows (20M events) on a moto S3
   server: ``cold.erase.erase_rows`` with the workflow's finish date, as the compliance
   service passes it from the index. Target: at most 10 s, touching only the files that
   hold the workflow (one per table).
2. **Retention**: an ``apply_retention``-style deletion of 100k expired workflows (every
   workflow of the oldest 10 of 20 days; 2M events) from a 200k-workflow archive on
   ``file://``, by one ``erase_rows`` call. Target: at most 30 s.
3. **The user path** of both, as the issue's targets mean them, on the same archives with
   synthetic instance-index rows for every cold workflow (``erasure_full``):
   ``tf.compliance.erase(workflow_id=...)`` of another workflow of the 1M archive (moto),
   and ``tf.compliance.apply_retention(now=...)`` under ``set_retention("*", "1d")`` with
   ``now`` one day after the 10th day, so exactly the oldest half (100k) expires (file://;
   the archive is restored from a copy after the primitive's run). The time is split over
   the path's steps (selection, cold rewrite, index forget, audit records, ...);
   ``--profile`` runs these calls under cProfile and prints the top 15 functions by
   cumulative time.

Building archives this large through the engine would take hours, so each is written
straight into the cold tables with the cold writer (``cold_bench.write_archive``:
synthetic workflows in the warm files' schema, random 64-bit ids, so a day's file spans the
whole id range and only the partition narrows a read; one commit per three days, as
cold moves group them). Each erasure runs in a child process (``--child``), so its time and
peak RSS (``VmHWM``) are its own; the parent checks the result: the erased ids are gone,
every other row is still there, and the counts the erasure reports (files scanned,
rewritten, deleted, snapshots expired) are printed beside the time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pyiceberg.expressions import EqualTo, In, LessThan
from tierflow.cold.catalog import ColdTables
from tierflow.cold.erase import erase_rows

from tests.bench.child import Failed, require, run_child
from tests.bench.cold_bench import FIRST_DAY, Moto, Place, open_cold, write_archive
from tests.bench.erasure_full import child_full, index_cold_workflows, index_count

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODULE = "tests.bench.erasure_bench"

ONE_S = 10.0
RETENTION_S = 30.0


@dataclass(frozen=True)
class ErasureSizes:
    """How large the archives are."""

    one_workflows: int  # the archive one workflow is erased from (moto)
    one_days: int
    retention_workflows: int  # the archive retention deletes from (file://)
    retention_days: int
    retention_expired_days: int  # its oldest days, every workflow of which expired
    days_per_commit: int


FULL = ErasureSizes(
    one_workflows=1_000_000,
    one_days=30,
    retention_workflows=200_000,
    retention_days=20,
    retention_expired_days=10,
    days_per_commit=3,
)
QUICK = ErasureSizes(
    one_workflows=3_000,
    one_days=3,
    retention_workflows=2_000,
    retention_days=4,
    retention_expired_days=2,
    days_per_commit=2,
)


def totals(cold: ColdTables) -> dict[str, int]:
    """Rows in each table now (the current snapshot's summary)."""
    out = {}
    for dataset in ("workflows", "history"):
        snap = cold.table(dataset, refresh=True).current_snapshot()
        assert snap is not None and snap.summary is not None
        out[dataset] = int(snap.summary["total-records"])
    return out


def child_erase(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``erase_rows`` call on the spec's tables: its result and its time."""
    cold = open_cold(Place(**spec["place"]), Path(spec["catalog"]))
    ids = spec["ids"]
    days = dict(zip(ids, spec["days"], strict=True))
    cold.tables()  # opened, as a running service has them; not part of the erasure
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    done = erase_rows(
        cold,
        ids,
        finished_dates=days,
        on_step=lambda s: steps.setdefault(s, time.perf_counter() - t0),
    )
    seconds = time.perf_counter() - t0
    cold.close()
    return {
        "seconds": seconds,
        "steps": steps,
        "result": done.to_dict(),
        "rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak RSS since it started its program (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that high-water mark across ``execve``, so a child
    started from a parent holding a large moto bucket reports the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def expired_ids(cold: ColdTables, before: date) -> tuple[list[str], list[str]]:
    """Ids and finish dates of every workflow that finished before ``before`` (the index's
    answer to a retention policy; read from the table here, outside the timing)."""
    table = cold.table("workflows", refresh=True)
    rows = table.scan(
        row_filter=LessThan("finished_date", before.isoformat()),
        selected_fields=("workflow_id", "finished_date"),
    ).to_arrow()
    return (
        rows.column("workflow_id").to_pylist(),
        [d.isoformat() for d in rows.column("finished_date").to_pylist()],
    )


def one_workflow(
    moto: Moto, work: Path, sizes: ErasureSizes, rng: random.Random, profile: bool
) -> dict[str, Any]:
    place = moto.place("archive")
    catalog = work / "one.sqlite"
    cold = open_cold(place, catalog)
    t0 = time.perf_counter()
    samples, _ = write_archive(
        cold, sizes.one_workflows, sizes.one_days, sizes.days_per_commit, 5, rng
    )
    built = time.perf_counter() - t0
    before = totals(cold)
    victim = samples[len(samples) // 2]
    cold.close()
    spec = {
        "mode": "erase",
        "place": asdict(place),
        "catalog": str(catalog),
        "ids": [victim.workflow_id],
        "days": [victim.day],
    }
    figs = run_child(MODULE, spec, work, "erasing one workflow")
    cold = open_cold(place, catalog)
    try:
        after = totals(cold)
        require(
            after == {"workflows": before["workflows"] - 1, "history": before["history"] - 20},
            f"rows {before} -> {after}",
        )
        for dataset in ("workflows", "history"):
            left = (
                cold.table(dataset)
                .scan(row_filter=EqualTo("workflow_id", victim.workflow_id))
                .to_arrow()
            )
            require(left.num_rows == 0, f"{victim.workflow_id} still in cold {dataset}")
    finally:
        cold.close()
    figs.update({"build_seconds": built, "rows_before": before, "rows_after": after})
    # The user path: tf.compliance.erase of another workflow, located by the index.
    data = work / "one-data"
    t0 = time.perf_counter()
    indexed = index_cold_workflows(data, place, catalog)
    require(indexed == after["workflows"], f"indexed {indexed} of {after['workflows']}")
    other = samples[0]
    spec = {
        "mode": "full-erase",
        "place": asdict(place),
        "catalog": str(catalog),
        "data": str(data),
        "workflow_id": other.workflow_id,
        "profile": profile,
    }
    full = run_child(MODULE, spec, work, "tf.compliance.erase")
    full["index_seconds"] = time.perf_counter() - t0 - full["seconds"]
    cold = open_cold(place, catalog)
    try:
        final = totals(cold)
    finally:
        cold.close()
    require(
        final == {"workflows": after["workflows"] - 1, "history": after["history"] - 20},
        f"full path: rows {after} -> {final}",
    )
    require(index_count(data, other.workflow_id) == 0, "erased workflow still in the index")
    figs["full"] = full
    return figs


def retention(work: Path, sizes: ErasureSizes, rng: random.Random, profile: bool) -> dict[str, Any]:
    place = Place((work / "retention").as_uri())
    place.open().check()
    catalog = work / "retention.sqlite"
    cold = open_cold(place, catalog)
    t0 = time.perf_counter()
    write_archive(
        cold, sizes.retention_workflows, sizes.retention_days, sizes.days_per_commit, 1, rng
    )
    built = time.perf_counter() - t0
    before = totals(cold)
    cutoff = FIRST_DAY + timedelta(days=sizes.retention_expired_days)
    ids, days = expired_ids(cold, cutoff)
    cold.close()
    # A copy for the user path after the primitive's run, restored to the same place (the
    # Iceberg metadata names its files by absolute URL).
    saved = work / "retention-saved"
    shutil.copytree(work / "retention", saved / "retention")
    shutil.copy2(catalog, saved / catalog.name)
    spec = {
        "mode": "erase",
        "place": asdict(place),
        "catalog": str(catalog),
        "ids": ids,
        "days": days,
    }
    figs = run_child(MODULE, spec, work, "retention")
    cold = open_cold(place, catalog)
    try:
        after = totals(cold)
        expected = {
            "workflows": before["workflows"] - len(ids),
            "history": before["history"] - 20 * len(ids),
        }
        require(after == expected, f"rows {before} -> {after}, expected {expected}")
        left = cold.table("workflows").scan(row_filter=In("workflow_id", ids[:1000])).to_arrow()
        require(left.num_rows == 0, "expired workflows still in cold")
    finally:
        cold.close()
    figs.update(
        {"build_seconds": built, "rows_before": before, "rows_after": after, "erased": len(ids)}
    )
    shutil.rmtree(work / "retention")
    (saved / "retention").rename(work / "retention")
    (saved / catalog.name).replace(catalog)
    data = work / "retention-data"
    t0 = time.perf_counter()
    indexed = index_cold_workflows(data, place, catalog)
    require(indexed == before["workflows"], f"indexed {indexed} of {before['workflows']}")
    now = datetime.combine(cutoff + timedelta(days=1), datetime.min.time())
    spec = {
        "mode": "full-retention",
        "place": asdict(place),
        "catalog": str(catalog),
        "data": str(data),
        "now": now.isoformat(),
        "profile": profile,
    }
    full = run_child(MODULE, spec, work, "tf.compliance.apply_retention")
    full["index_seconds"] = time.perf_counter() - t0 - full["seconds"]
    cold = open_cold(place, catalog)
    try:
        final = totals(cold)
    finally:
        cold.close()
    require(final == after, f"full path: rows {before} -> {final}, expected {after}")
    left = index_count(data)
    require(left == before["workflows"] - len(ids), f"index keeps {left} rows")
    require(full["expired"]["cold"] == len(ids), f"expired {full['expired']}")
    figs["full"] = full
    return figs


def measure(quick: bool, console: Any = None, profile: bool = False) -> dict[str, Any]:
    """Both figures; raises Failed when a check fails."""
    say = console.print if console is not None else print
    sizes = QUICK if quick else FULL
    rng = random.Random(19)
    work = Path(tempfile.mkdtemp(prefix="tierflow-erasebench-"))
    out: dict[str, Any] = {"sizes": asdict(sizes), "loadavg_start": os.getloadavg()}
    moto = None
    try:
        moto = Moto()
        say(f"  one workflow out of {sizes.one_workflows:,} (20 events each), moto s3:// ...")
        out["one"] = one_workflow(moto, work, sizes, rng, profile)
        expired = sizes.retention_workflows * sizes.retention_expired_days // sizes.retention_days
        say(f"  retention: {expired:,} of {sizes.retention_workflows:,} workflows, file:// ...")
        out["retention"] = retention(work, sizes, rng, profile)
        out["loadavg_end"] = os.getloadavg()
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def report(console: Any, figs: dict[str, Any], judged: bool) -> None:
    """Print the erasure table (rich)."""
    from rich.table import Table

    mark = (lambda ok: "yes" if ok else "[red]NO[/red]") if judged else (lambda ok: "-")
    t = Table(
        "erasure (cold)",
        "time",
        "target",
        "met",
        "files scanned / rewritten / live",
        "deleted objects, MB",
        "snapshots expired",
        "peak RSS MB",
        title="issue 19: erasure and retention"
        + ("" if judged else "; QUICK: smoke sizes, figures mean nothing"),
    )
    for key, name, target in (
        ("one", f"1 of {figs['sizes']['one_workflows']:,} workflows (moto)", ONE_S),
        (
            "retention",
            f"{figs['retention']['erased']:,} expired of {figs['sizes']['retention_workflows']:,} (file://)",
            RETENTION_S,
        ),
    ):
        f = figs[key]
        r = f["result"]
        t.add_row(
            name,
            f"{f['seconds']:.2f} s",
            f"<= {target:.0f} s",
            mark(f["seconds"] <= target),
            f"{r['files_scanned']} / {r['files_rewritten']} / {r['live_files']}",
            f"{r['files_deleted']}, {r['bytes_removed'] / 1e6:.1f}",
            f"{len(r['snapshots_expired'])}",
            f"{f['rss_mb']:.0f}",
        )
    console.print(t)
    full_table(console, figs, mark)
    for key in ("one", "retention"):
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in figs[key]["steps"].items())
        built = figs[key]["build_seconds"]
        console.print(f"  {key}: steps done at {steps}; archive built in {built:.0f} s (untimed)")
    start, end = figs["loadavg_start"], figs.get("loadavg_end")
    console.print(f"  load average: {start} at the start, {end} at the end")


def full_table(console: Any, figs: dict[str, Any], mark: Any) -> None:
    """Print the user-path figures (rich) and where their time went."""
    from rich.table import Table

    t = Table(
        "user path (tf.compliance)",
        "time",
        "target",
        "met",
        "primitive alone",
        "erased hot / warm / cold",
        "cold files rewritten / deleted",
        "snapshots expired",
        "audit records",
        title="issue 19: the full path (index + audit + tiers)",
    )
    sizes = figs["sizes"]
    for key, name, target in (
        ("one", f"erase(workflow_id=...): 1 of {sizes['one_workflows']:,} (moto)", ONE_S),
        (
            "retention",
            f"apply_retention: {figs['retention']['erased']:,} of "
            f"{sizes['retention_workflows']:,} (file://)",
            RETENTION_S,
        ),
    ):
        f = figs[key]["full"]
        r = f["report"] or {}
        tiers = r.get("per_tier", {})
        t.add_row(
            name,
            f"{f['seconds']:.2f} s",
            f"<= {target:.0f} s",
            mark(f["seconds"] <= target),
            f"{figs[key]['seconds']:.2f} s",
            " / ".join(str(tiers.get(k, 0)) for k in ("hot", "warm", "cold")),
            f"{r.get('files_rewritten', {}).get('cold', 0)} / "
            f"{r.get('files_deleted', {}).get('cold', 0)}",
            f"{len(r.get('snapshots_expired', []))}",
            f"{r.get('audit_seqs', 0)}",
        )
    console.print(t)
    for key in ("one", "retention"):
        f = figs[key]["full"]
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in f["steps"].items())
        console.print(
            f"  {key} (user path): {steps}; index rows inserted in {f['index_seconds']:.0f} s "
            "(untimed)"
        )
        if f.get("profile"):
            console.print(f"  {key} profile (top 15 by cumtime):", markup=False)
            console.print(f["profile"], markup=False, highlight=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench-results"))
    p.add_argument("--profile", action="store_true", help="cProfile the user-path calls")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        run = child_full if spec["mode"].startswith("full") else child_erase
        print(json.dumps(run(spec)))
        return 0
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 180)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        figs = measure(args.quick, console, args.profile)
    except Failed as exc:
        console.print(f"[bold red]FAILED:[/] {exc}")
        return 1
    report(console, figs, judged=not args.quick)
    figs["duration_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "erasure-quick-latest.json" if args.quick else "erasure-latest.json"
    text = json.dumps(figs, indent=2, default=str) + "\n"
    (out / name).write_text(text)
    if not args.quick:
        (out / f"erasure-{started.strftime('%Y%m%dT%H%M%SZ')}.json").write_text(text)
    console.print(f"erasure phase: {figs['duration_s']:.0f} s; figures in {out / name}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
