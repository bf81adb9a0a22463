"""The end-to-end demo behind ``make demo`` (``tierflow demo``).

It runs a few thousand of the example workflows (:mod:`tierflow.examples`:
orders, payments, refunds, provisioning with children, approvals) in three
waves on a manual clock, moves the first wave hot → warm → cold and the
second hot → warm, keeps the third hot, then shows what a user gets from
that: SQL answers across the tiers, a replay of a cold workflow, a fork of
one, the erasure of one customer's workflows with its audit entries, and
where the files are with a DuckDB snippet that reads them without tierflow
(the demo runs the snippet it prints). ``--s3`` does all of it against a
moto S3 server on 127.0.0.1 that it starts and stops.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from tierflow.demo_sql import QUERIES, duckdb_snippet, run_snippet
from tierflow.demo_workload import Wave, drive, start_wave
from tierflow.examples import WORKFLOWS, orders, payments, provisioning
from tierflow.hot.clock import ManualClock
from tierflow.hot.options import EngineOptions

if TYPE_CHECKING:
    from tierflow.facade import Tierflow, TierTarget
    from tierflow.hot.models import HistoryEvent

__all__ = ["DemoSummary", "run_demo"]

HOUR = 3600.0
DAY = 86400.0


@dataclass
class DemoSummary:
    """What one demo run did (for tests and for callers that print their own report).

    Attributes:
        data_dir: The run's own data directory.
        storage_url: Where its warm and cold tiers are.
        workflows: Workflows run, children included (before the erasure).
        tiers: Workflows in each tier at the end (after the erasure).
        snippet: The DuckDB snippet printed (and run).
        seconds: Wall time of the run.
    """

    data_dir: Path
    storage_url: str
    workflows: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    snippet: str = ""
    seconds: float = 0.0


def _fresh_dir(base: Path) -> Path:
    """A new subdirectory of ``base`` for this run, so the demo can be run again."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = base / (f"demo-{stamp}" if n == 0 else f"demo-{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free demo directory under {base}")


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


async def _run_wave(
    tf: Tierflow, clock: ManualClock, bar: Progress, wave: Wave, label: str
) -> list[str]:
    """Start a wave and run it to the end; returns the orders that never got paid."""
    task = bar.add_task(f"{label}: starting", total=wave.count)
    started = await start_wave(tf, wave)
    bar.update(task, completed=wave.count)
    # Children count too: each provisioning account has three.
    total = wave.count + 3 * sum(1 for w in started.ids if "-account-" in w)
    run = bar.add_task(f"{label}: running", total=total)

    async def cancel_withdrawn() -> None:
        for wid in started.to_cancel:
            await tf.cancel(wid, "withdrawn by the submitter")

    def progress(done: int) -> None:
        bar.update(run, completed=min(total, done))

    await drive(tf, clock, total, progress, cancel_withdrawn)
    bar.update(run, completed=total)
    return started.expired_orders


async def _tier(tf: Tierflow, bar: Progress, now: float, to: TierTarget) -> Any:
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(f"tiering: {stage}", total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return await tf.tier(now=now, progress=progress, to=to)


def _reset_services() -> None:
    # The example services count calls per request id; a new run starts from zero.
    for service in (orders.inventory, payments.ledger, provisioning.cloud):
        service.reset()


async def run_demo(
    data_dir: str | None = None,
    *,
    s3: bool = False,
    size: int = 2000,
    console: Console | None = None,
) -> DemoSummary:
    """Run the demo and print what happened.

    Args:
        data_dir: Where its runs go (a fresh ``demo-<time>`` subdirectory each run);
            default ``TIERFLOW_DATA_DIR`` or ``./tierflow-data``.
        s3: Keep the warm and cold tiers on a local moto S3 server (started and
            stopped here) instead of a directory.
        size: Top-level workflows to run (children come on top).
        console: Where to print; default the terminal.

    Returns:
        A summary of the run.

    Raises:
        TierflowError: ``s3`` without moto installed (the message says how to install it).
    """
    from tierflow.settings import Settings

    console = console or Console()
    t0 = time.perf_counter()
    base = Path(Settings.resolve(data_dir=data_dir).data_dir)
    if not s3:
        return await _run(_fresh_dir(base), None, size, console, t0)
    from tierflow.devs3 import LocalS3

    with LocalS3(bucket="tierflow-demo") as server:
        console.print(f"[bold]local S3 server[/bold] (moto) on {server.endpoint}")
        try:
            return await _run(_fresh_dir(base), server, size, console, t0)
        finally:
            console.print("stopping the local S3 server; its bucket goes with it")


async def _run(data: Path, server: Any, size: int, console: Console, t0: float) -> DemoSummary:
    from tierflow.facade import Tierflow
    from tierflow.tiering.policy import TieringPolicy
    from tierflow.warm.storage import ObjectStore

    _reset_services()
    store = None
    if server is not None:
        store = ObjectStore.from_url(
            f"{server.storage_url}/{data.name}",
            endpoint=server.endpoint,
            region="us-east-1",
            access_key=server.environment()["AWS_ACCESS_KEY_ID"],
            secret_key=server.environment()["AWS_SECRET_ACCESS_KEY"],
        )
    clock = ManualClock(start=float(int(time.time() // DAY) * DAY) - 30 * DAY)
    tf = Tierflow(
        data,
        WORKFLOWS,
        warm_store=store,
        clock=clock,
        # Every timer suspends its instance, so the manual clock alone decides when it fires.
        options=EngineOptions(inline_sleep_threshold=0, durability="normal"),
        tiering=TieringPolicy(min_age="1h", cold_after="7d"),
    )
    async with tf:
        summary = DemoSummary(data_dir=data.resolve(), storage_url=tf.store.url)
        console.print(
            f"[bold]tierflow demo[/bold]: {size:,} workflows of 6 types; "
            f"hot files in {data.resolve() / 'hot'}, warm and cold in {tf.store.url}"
        )
        w1, w2 = int(size * 0.7), int(size * 0.25)
        waves = [Wave("w1", 0, w1), Wave("w2", w1, w2), Wave("w3", w1 + w2, size - w1 - w2)]
        with _progress(console) as bar:
            expired = await _run_wave(tf, clock, bar, waves[0], "wave 1")
            wave1_done = clock.now()
            await _tier(tf, bar, clock.now() + 2 * HOUR, "warm")
            clock.advance(3 * DAY)
            await _run_wave(tf, clock, bar, waves[1], "wave 2")
            await _tier(tf, bar, clock.now() + 2 * HOUR, "warm")
            # A week after wave 1 finished: wave 1 goes cold, wave 2 is too young.
            await _tier(tf, bar, wave1_done + 7 * DAY + HOUR, "cold")
            await _run_wave(tf, clock, bar, waves[2], "wave 3")
        await _report(tf, clock, console, summary, expired)
    summary.seconds = time.perf_counter() - t0
    console.print(
        f"[green]demo finished[/green] in {summary.seconds:.1f}s: "
        f"{summary.workflows:,} workflows, data in {summary.data_dir}"
    )
    return summary


async def _sql(tf: Tierflow, query: str, params: list[Any] | None = None) -> Any:
    return await tf.sql(query, params)


async def _report(
    tf: Tierflow, clock: ManualClock, console: Console, summary: DemoSummary, expired: list[str]
) -> None:
    where = await _sql(tf, QUERIES["tiers"])
    summary.workflows = sum(int(r[1]) for r in where.rows)
    console.print(_table("Where the workflows are (SQL over all tiers)", where.columns, where.rows))
    for key, title in (
        ("failures", "Failures by type"),
        ("p95", "Duration by type (timers and retry waits included)"),
        ("slowest_step", "The slowest steps"),
    ):
        r = await _sql(tf, QUERIES[key])
        console.print(_table(title, r.columns, r.rows))

    # A replay: today's code against a cold history; nothing runs, nothing is written.
    r = await _sql(tf, QUERIES["cold_retried_order"])
    cold_id = r.rows[0][0]
    replayed = await tf.replay(cold_id)
    console.print(
        f"[bold]replay[/bold] of {cold_id} from the [bold]{replayed.tier}[/bold] tier: "
        f"{len(replayed.events)} events, {replayed.status}, result {json.dumps(replayed.result)} "
        "(steps answered from history; nothing ran)"
    )

    # A fork: an order that expired waiting for payment, forked after its reservation.
    await _fork(tf, clock, console, expired)

    # Erasure: every workflow of one customer, in every tier.
    customer = "c-007"
    count = QUERIES["customer_count"]
    before = (await _sql(tf, count, [customer])).rows[0]
    report = await tf.compliance.erase(
        attribute={"customer": customer}, reason="GDPR art. 17 request", actor="dpo@example.com"
    )
    after = (await _sql(tf, count, [customer])).rows[0]
    console.print(
        f"[bold]erasure[/bold] of customer {customer}: {before[0]} workflows before "
        f"({before[1]}), {after[0]} after; {report.workflows_erased} erased with their "
        f"children (hot {report.per_tier.get('hot', 0)}, warm {report.per_tier.get('warm', 0)}, "
        f"cold {report.per_tier.get('cold', 0)}), {len(report.snapshots_expired)} cold "
        "snapshots expired"
    )
    records = await tf.compliance.audit_log(operation="erase", limit=100_000)
    rec = records[-1]
    console.print(
        _table(
            f"Audit log: {len(records)} erase records (ids kept only as keyed hashes); the last",
            ["seq", "at", "operation", "actor", "reason", "subject_hash", "counts"],
            [
                (
                    rec.seq,
                    rec.at.isoformat(timespec="seconds"),
                    rec.operation,
                    rec.actor,
                    rec.reason,
                    (rec.subject_hash or "")[:16] + "…",
                    json.dumps(rec.counts),
                )
            ],
        )
    )

    # Where the data lives, and how to read it without tierflow.
    console.print(
        f"[bold]the files[/bold]: hot SQLite instances and the index in "
        f"{summary.data_dir / 'hot'}; warm Parquet in {tf.store.url}/warm; cold Iceberg "
        f"tables in {tf.store.url}/cold with catalog {summary.data_dir / 'catalog.sqlite'}"
    )
    summary.snippet = duckdb_snippet(tf, summary.data_dir)
    console.print("Read them with DuckDB directly (no tierflow needed):")
    console.print(summary.snippet, markup=False, highlight=False, soft_wrap=True)
    if tf.store.settings.is_s3:
        console.print(
            "(moto keeps the bucket in memory, so this works only until the demo stops its "
            "server; for MinIO or AWS, put your endpoint and keys in the URI and catalog)"
        )
    rows = run_snippet(summary.snippet)
    # What the run leaves behind, after the erasure (the snippet counts the same).
    summary.tiers = {r[0]: int(r[1]) for r in (await _sql(tf, QUERIES["tiers"])).rows}
    console.print(_table("What that snippet prints here", ["tier", "status", "workflows"], rows))


async def _fork(tf: Tierflow, clock: ManualClock, console: Console, expired: list[str]) -> None:
    source = expired[0]
    events: list[HistoryEvent] = await tf.history(source)
    at = next(
        e.event_id for e in events if e.event_type == "step.completed" and e.step_name == "reserve"
    )
    info = await tf.describe(source)
    fork_id = f"{source}-fork"
    handle = await tf.fork(source, at_event=at, workflow_id=fork_id)
    order = json.loads(info.input) if isinstance(info.input, str) else info.input
    await tf.signal(fork_id, "payment", {"amount": order["amount"]})
    await drive(tf, clock, 1, lambda done: None)
    result = await handle.result(timeout=30)
    console.print(
        f"[bold]fork[/bold] of {source} ({info.tier}, {info.status}: "
        f"{json.dumps(info.result)}) at event {at}, after its reservation: {fork_id} kept "
        f"events 1..{at}, got its payment this time and finished {json.dumps(result)}"
    )
