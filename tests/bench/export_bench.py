"""Issue 19's export figure: a verified export of a 1,000-event cold workflow (≤ 200 ms).

python -m tests.bench.export_bench [--quick] [--file | --s3]   (also a phase of ``make bench``)

On ``file://`` and on a moto S3 server (127.0.0.1), through the facade:

1. A cold archive of synthetic 20-event workflows is written straight into the Iceberg
   tables (``cold_bench.write_archive``: sorted files, one commit per few days), the first
   day being the day the real workflows finish, so their partition holds other files too.
2. Real 499-step workflows (1,001 events each) run on an injected clock and are tiered for
   real, hot → warm → cold (``Tierflow.tier``).
3. Each is exported (``tf.compliance.export``: index lookup, the cold row and history reads
   pruned by partition and ``workflow_id`` bounds, the snapshot ids, three files written and
   fsync'd, the audit record) into a fresh directory, after one warm-up export that opens the
   catalog and lists the files; then each export is verified, by its files alone
   (``verify_export``) and with the comparison with the archive (``tf.compliance``).

The figure is the wall time of one export, p50 and p99, printed beside the target with the
number of cold data files the reads opened out of those in the partition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from tierflow import ManualClock, Tierflow, WorkflowContext, workflow
from tierflow.cold.reader import ColdReader
from tierflow.tiering.compliance.export import verify_export
from tierflow.tiering.policy import TieringPolicy
from tierflow.warm.storage import ObjectStore

from tests.bench.cold_bench import FIRST_DAY, Moto, pct, write_archive

TARGET_MS = 200.0
STEPS = 499  # queued, started, 499 x (step started, step completed), completed: 1,001 events
EVENTS = 2 * STEPS + 3


@dataclass(frozen=True)
class Sizes:
    archived: int  # synthetic 20-event workflows already in the cold tables
    days: int  # the days they finished on (the first is the real workflows' day)
    real: int  # 1,001-event workflows run and tiered for real
    exports: int  # timed exports of each


FULL = Sizes(archived=100_000, days=5, real=5, exports=4)
QUICK = Sizes(archived=2_000, days=2, real=2, exports=2)


def upper(x: str) -> str:
    return x.upper()


@workflow(name="bench_export_long")
async def long_flow(ctx: WorkflowContext, n: int) -> int:
    for i in range(STEPS):
        await ctx.step(f"s{i}", upper, f"e{n}-{i}")
    return n


async def run(work: Path, store: ObjectStore, sizes: Sizes) -> dict[str, Any]:
    noon = datetime.combine(FIRST_DAY, dtime(12), tzinfo=UTC).timestamp()
    clock = ManualClock(noon)
    policy = TieringPolicy(min_age=0, cold_after="1h")
    figures: dict[str, Any] = {"sizes": asdict(sizes), "loadavg_start": os.getloadavg()}
    async with Tierflow(
        work / "d", [long_flow], warm_store=store, tiering=policy, clock=clock
    ) as tf:
        t = time.perf_counter()
        write_archive(tf.cold, sizes.archived, sizes.days, sizes.days, 0, random.Random(7))
        figures["setup_archive_s"] = time.perf_counter() - t

        t = time.perf_counter()
        ids = []
        for n in range(sizes.real):
            h = await tf.run(long_flow, n, workflow_id=f"long-{n:03d}")
            ids.append(h.workflow_id)
        report = await tf.tier(now=clock.now() + 7200)
        if report.cold is None or report.cold.workflows_moved != sizes.real:
            raise RuntimeError(f"the real workflows did not reach cold: {report.to_dict()}")
        figures["setup_real_s"] = time.perf_counter() - t

        reader = ColdReader(tf.cold)
        day = FIRST_DAY.isoformat()
        figures["files_read"] = len(reader.candidates("history", ids[0], day)) + len(
            reader.candidates("workflows", ids[0], day)
        )
        figures["files_in_partition"] = len(reader.files("history", day)) + len(
            reader.files("workflows", day)
        )

        out = work / "exports"
        await tf.compliance.export(ids[0], out / "warm-up")
        timings, verify_files, verify_archive = [], [], []
        for k in range(sizes.exports):
            for wid in ids:
                target = out / f"{wid}-{k}"
                t = time.perf_counter()
                m = await tf.compliance.export(wid, target)
                timings.append((time.perf_counter() - t) * 1000)
                if m.events != EVENTS or m.tier != "cold" or m.cold_snapshot_id is None:
                    raise RuntimeError(f"export of {wid}: {m.events} events from {m.tier}")
                t = time.perf_counter()
                verify_export(target)
                verify_files.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                tf.compliance.verify_export(target)
                verify_archive.append((time.perf_counter() - t) * 1000)
        figures["export_ms"] = pct(timings, 0.5)
        figures["export_p99_ms"] = pct(timings, 0.99)
        figures["verify_files_ms"] = pct(verify_files, 0.5)
        figures["verify_archive_ms"] = pct(verify_archive, 0.5)
        figures["samples"] = len(timings)
        figures["export_bytes"] = sum(f.size for f in m.files)
    figures["loadavg_end"] = os.getloadavg()
    return figures


def measure(
    quick: bool, console: Any = None, backends: tuple[str, ...] = ("file", "s3")
) -> dict[str, Any]:
    """Run the benchmark on each backend; return the figures by backend (milliseconds).

    ``console`` is accepted for the ``--only`` phases of ``python -m tests.bench``.
    """
    sizes = QUICK if quick else FULL
    out: dict[str, Any] = {}
    moto = Moto() if "s3" in backends else None
    try:
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="export-bench-") as work:
                if backend == "s3":
                    assert moto is not None
                    store = moto.place("lake").open()
                else:
                    store = ObjectStore.from_url(Path(work, "lake").as_uri())
                out[backend] = asyncio.run(run(Path(work), store, sizes))
    finally:
        if moto is not None:
            moto.stop()
    return out


def report(console: Any, figures: dict[str, Any], judged: bool) -> None:
    """Print the figures beside the target."""
    from rich.table import Table

    names = {"file": "file://", "s3": "moto s3://"}
    backends = list(figures)
    s = figures[backends[0]]["sizes"]
    t = Table(
        "figure",
        *(names[b] for b in backends),
        "target",
        title=f"issue 19: verified export of a {EVENTS:,}-event cold workflow "
        f"({s['archived']:,} other workflows in the cold tables)"
        + ("" if judged else "; QUICK: smoke sizes, figures mean nothing"),
    )

    def ok(value: float) -> str:
        if not judged:
            return ""
        return " ✓" if value <= TARGET_MS else " [red]NOT MET[/red]"

    t.add_row(
        "export, p50",
        *(f"{figures[b]['export_ms']:.1f} ms{ok(figures[b]['export_ms'])}" for b in backends),
        f"<= {TARGET_MS:g} ms",
    )
    t.add_row("export, p99", *(f"{figures[b]['export_p99_ms']:.1f} ms" for b in backends), "")
    t.add_row(
        "verify_export, files only, p50",
        *(f"{figures[b]['verify_files_ms']:.1f} ms" for b in backends),
        "",
    )
    t.add_row(
        "verify_export with the archive, p50",
        *(f"{figures[b]['verify_archive_ms']:.1f} ms" for b in backends),
        "",
    )
    t.add_row(
        "cold files read / in the partition (both tables)",
        *(f"{figures[b]['files_read']} / {figures[b]['files_in_partition']}" for b in backends),
        "",
    )
    t.add_row(
        "exports timed; bytes per export",
        *(f"{figures[b]['samples']}; {figures[b]['export_bytes']:,} B" for b in backends),
        "",
    )
    t.add_row(
        "setup: archive / real workflows",
        *(
            f"{figures[b]['setup_archive_s']:.0f} / {figures[b]['setup_real_s']:.0f} s"
            for b in backends
        ),
        "",
    )
    t.add_row(
        "load average (1 min) start / end",
        *(
            f"{figures[b]['loadavg_start'][0]:.1f} / {figures[b]['loadavg_end'][0]:.1f}"
            for b in backends
        ),
        "",
    )
    console.print(t)


def main() -> None:
    from rich.console import Console

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--file", action="store_true", help="file:// only")
    group.add_argument("--s3", action="store_true", help="moto s3:// only")
    args = p.parse_args()
    backends = ("file",) if args.file else ("s3",) if args.s3 else ("file", "s3")
    figures = measure(args.quick, backends=backends)
    report(Console(), figures, not args.quick)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
