"""The ``tierflow`` command line.

Every command works on a data directory (``--data-dir`` or ``TIERFLOW_DATA_DIR``).
Commands that run workflow code (``worker``, ``start``) import the
application module that defines the workflows: ``--app mypkg.workflows``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from tierflow import cli_query, cli_serve
from tierflow.cli_common import (
    FROM_OPTIONS,
    AppOpt,
    AsJson,
    DataDir,
    Where,
    console,
    err_console,
    load_workflows,
    parse_json,
    storage_options,
)
from tierflow.cli_common import run_command as _run
from tierflow.cli_common import with_tf as _with_tf
from tierflow.cli_compliance import compliance_app
from tierflow.cli_demo import demo, dev_s3
from tierflow.hot.errors import NonDeterminismError, TierflowError

if TYPE_CHECKING:
    from tierflow.facade import Tierflow, TierTarget

__all__ = ["app", "main"]

app = typer.Typer(
    help="tierflow: durable workflows with storage tiers.",
    no_args_is_help=True,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
)
cli_query.register(app)
cli_serve.register(app)


@app.command()
def replay(
    workflow_id: str, app_module: AppOpt, data_dir: DataDir = None, as_json: AsJson = False
) -> None:
    """Replay an instance's history (any tier) against today's code; runs no step.

    Exits 1 on non-determinism, naming the first event where code and history disagree.
    """
    wfs = load_workflows(app_module)

    async def go(tf: Tierflow) -> None:
        try:
            r = await tf.replay(workflow_id)
        except NonDeterminismError as exc:
            if as_json:
                print(
                    json.dumps(
                        {
                            "workflow_id": workflow_id,
                            "deterministic": False,
                            "event_id": exc.event_id,
                            "expected": exc.expected,
                            "got": exc.got,
                            "message": exc.message,
                        }
                    )
                )
            else:
                err_console.print(f"[red]non-deterministic:[/red] {exc.message}")
                err_console.print(f"  event:    {exc.event_id}")
                err_console.print(f"  expected: {exc.expected}")
                err_console.print(f"  got:      {exc.got}")
            raise typer.Exit(1) from None
        out = {
            "workflow_id": r.workflow_id,
            "deterministic": True,
            "tier": r.tier,
            "status": r.status,
            "result": r.result,
            "error": r.error,
            "events": len(r.events),
        }
        if as_json:
            print(json.dumps(out))
        else:
            console.print(
                f"[green]replayed[/green] {r.workflow_id} from {r.tier}: {len(r.events)} events, "
                f"{r.status}, result {json.dumps(r.result)[:200]}"
            )

    _run(lambda: _with_tf(data_dir, go, wfs), as_json)


@app.command()
def fork(
    workflow_id: str,
    app_module: AppOpt,
    at_event: Annotated[int, typer.Option("--at-event", help="Last event the fork keeps")],
    new_id: Annotated[str | None, typer.Option("--id", help="The fork's workflow id")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Fork an instance (any tier) at a step boundary and run the fork live.

    Runs it until it completes or first pauses (a worker continues it), then
    prints its id and status.
    """
    wfs = load_workflows(app_module)

    async def go(tf: Tierflow) -> None:
        h = await tf.fork(workflow_id, at_event=at_event, workflow_id=new_id)
        _said(as_json, {"workflow_id": h.workflow_id, "status": await h.status()})

    _run(lambda: _with_tf(data_dir, go, wfs), as_json)


def _said(as_json: bool, out: dict[str, Any], text: str | None = None) -> None:
    """Print what a command did: ``out`` as JSON, or ``text`` (default: ``out`` as JSON)."""
    if as_json or text is None:
        print(json.dumps(out))
    else:
        console.print(text, highlight=False)


Reason = Annotated[str | None, typer.Option("--reason", help="Why (kept in the history)")]


@app.command()
def cancel(
    workflow_id: str,
    data_dir: DataDir = None,
    reason: Reason = None,
    app_module: Annotated[str | None, typer.Option("--app", "-a")] = None,
    as_json: AsJson = False,
) -> None:
    """Cancel an instance (cooperatively); prints its status after the request."""
    wfs = load_workflows(app_module) if app_module else []

    async def go(tf: Tierflow) -> None:
        status = await tf.cancel(workflow_id, reason)
        _said(as_json, {"workflow_id": workflow_id, "status": status}, f"{workflow_id}: {status}")

    _run(lambda: _with_tf(data_dir, go, wfs), as_json)


@app.command("signal")
def signal_cmd(
    workflow_id: str,
    name: str,
    payload_json: Annotated[
        str, typer.Option("--payload", "-p", help="JSON payload [default: null]")
    ] = "null",
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Send a signal; the process running the instance (or a worker) acts on it."""
    payload = parse_json(payload_json, "--payload")

    async def go(tf: Tierflow) -> None:
        await tf.signal(workflow_id, name, payload)
        out = {"workflow_id": workflow_id, "signal": name, "delivered": True}
        _said(as_json, out, f"{workflow_id}: signal {name!r} delivered")

    _run(lambda: _with_tf(data_dir, go), as_json)


@app.command()
def terminate(
    workflow_id: str, data_dir: DataDir = None, reason: Reason = None, as_json: AsJson = False
) -> None:
    """Terminate an instance immediately."""

    async def go(tf: Tierflow) -> None:
        await tf.terminate(workflow_id, reason)
        out = {"workflow_id": workflow_id, "status": "terminated"}
        _said(as_json, out, f"{workflow_id}: terminated")

    _run(lambda: _with_tf(data_dir, go), as_json)


@app.command()
def start(
    workflow_type: str,
    app_module: AppOpt,
    input_json: Annotated[str, typer.Option("--input", "-i", help="JSON input")] = "null",
    workflow_id: Annotated[str | None, typer.Option("--id")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Queue a workflow and print its id; a running ``tierflow worker`` picks it up."""
    payload = parse_json(input_json, "--input")
    wfs = load_workflows(app_module)

    async def go(tf: Tierflow) -> None:
        h = await tf.start(workflow_type, payload, workflow_id=workflow_id)
        _said(as_json, {"workflow_id": h.workflow_id}, h.workflow_id)

    _run(lambda: _with_tf(data_dir, go, wfs), as_json)


@app.command()
def worker(
    app_module: AppOpt,
    data_dir: DataDir = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Also serve /metrics, /healthz and /readyz on this port (the steps this "
            "worker runs among them)",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host", help="Address for --metrics-port (beyond loopback needs API keys)"
        ),
    ] = "127.0.0.1",
) -> None:
    """Run the scheduler for an application's workflows until interrupted."""
    wfs = load_workflows(app_module)
    if metrics_port is not None:
        cli_serve.check_host(metrics_host)
    metrics: list[cli_serve.MetricsServer] = []

    def prepare(tf: Tierflow) -> None:
        if metrics_port is not None:
            metrics.append(cli_serve.MetricsServer(tf, metrics_host, metrics_port))

    async def go(tf: Tierflow) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        served = [asyncio.create_task(m.serve()) for m in metrics]
        where = f"; metrics on http://{metrics_host}:{metrics_port}" if metrics else ""
        console.print(
            f"worker running {', '.join(w.name for w in wfs)} on {tf.data_dir}{where} "
            "(Ctrl-C to stop)"
        )
        await stop.wait()
        for m in metrics:
            m.stop()
        await asyncio.gather(*served)

    _run(lambda: _with_tf(data_dir, go, wfs, scheduler=True, prepare=prepare))


def _progress_bar(disable: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=disable,
    )


@app.command()
@storage_options
def tier(
    where: Where = FROM_OPTIONS,
    min_age: Annotated[str, typer.Option("--min-age", help="age after finish, e.g. 1h")] = "1h",
    cold_after: Annotated[
        str, typer.Option("--cold-after", help="age after finish before going cold, e.g. 7d")
    ] = "7d",
    to: Annotated[
        str | None,
        typer.Option("--to", help="only one move: 'warm' (hot → warm) or 'cold' (warm → cold)"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Move finished workflows hot → warm Parquet, then old warm batches → cold Iceberg."""
    from tierflow.tiering.policy import TieringPolicy

    if to not in (None, "warm", "cold"):
        raise typer.BadParameter("--to must be 'warm' or 'cold'")
    target: TierTarget | None = None if to is None else "warm" if to == "warm" else "cold"

    async def go(tf: Tierflow) -> None:
        with _progress_bar(as_json) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            report = await tf.tier(progress=progress, to=target)
        if as_json:
            print(json.dumps(report.to_dict()))
            return
        if to != "cold":
            console.print(
                f"hot → warm: moved {report.workflows_moved} workflows ({report.events_moved} "
                f"events) in {len(report.batches)} batches, {report.files_written} files, "
                f"{report.bytes_written} bytes, {report.seconds:.2f}s to {tf.store.url}"
            )
        for wid, reason in report.skipped:
            console.print(f"[yellow]skipped[/yellow] {wid}: {reason}")
        cold = report.cold
        if cold is not None:
            console.print(
                f"warm → cold: moved {cold.workflows_moved} workflows ({cold.events_moved} "
                f"events) of {len(cold.batches)} batches in {len(cold.commits)} commits, "
                f"deleted {cold.warm_objects_deleted} warm objects, {cold.seconds:.2f}s"
            )
            if cold.recovered_commits:
                console.print(f"recovered {len(cold.recovered_commits)} interrupted commits")

    policy = TieringPolicy(min_age=min_age, cold_after=cold_after)
    _run(lambda: _with_tf(where.data_dir, go, tiering=policy, **where.options()), as_json)


cold_app = typer.Typer(help="The cold tier: Iceberg tables of old workflows.", no_args_is_help=True)
app.add_typer(cold_app, name="cold")
app.add_typer(compliance_app, name="compliance")
app.command()(demo)
app.command("dev-s3")(dev_s3)


@cold_app.command("maintain")
@storage_options
def cold_maintain(
    where: Where = FROM_OPTIONS,
    retention: Annotated[
        str, typer.Option("--retention", help="keep snapshots younger than this, e.g. 7d")
    ] = "7d",
    keep: Annotated[int, typer.Option("--keep", help="keep at least this many snapshots")] = 10,
    orphan_grace: Annotated[
        str, typer.Option("--orphan-grace", help="never delete unreferenced files younger")
    ] = "1d",
    no_rewrite: Annotated[
        bool, typer.Option("--no-rewrite", help="skip rewriting small files")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Rewrite small files, expire old snapshots and remove orphan files of the cold tables."""

    async def go(tf: Tierflow) -> None:
        report = await tf.maintain_cold(
            rewrite=not no_rewrite,
            snapshot_retention=retention,
            keep_snapshots=keep,
            orphan_grace=orphan_grace,
        )
        if as_json:
            print(json.dumps(report.to_dict()))
            return
        rewrite = report.rewrite
        rewritten = (
            "skipped"
            if rewrite is None
            else f"{rewrite.removed_files} small files → {rewrite.added_files}"
        )
        console.print(
            f"rewrite: {rewritten}; expired "
            f"{sum(len(v) for v in report.expired.values())} snapshots; deleted "
            f"{len(report.orphans.deleted)} orphan files"
        )

    _run(lambda: _with_tf(where.data_dir, go, **where.options()), as_json)


@cold_app.command("status")
@storage_options
def cold_status(
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Show the cold tables: snapshots, data files, rows and bytes of each."""

    async def go(tf: Tierflow) -> None:
        status = await tf.cold_status()
        if as_json:
            print(json.dumps(status.to_dict()))
            return
        console.print(f"catalog {status.catalog}, warehouse {status.warehouse}")
        table = Table("table", "snapshot", "snapshots", "data files", "rows", "bytes")
        for name, t in status.tables.items():
            table.add_row(
                name,
                str(t.snapshot_id),
                str(t.snapshots),
                str(t.data_files),
                str(t.rows),
                str(t.bytes),
            )
        console.print(table)

    _run(lambda: _with_tf(where.data_dir, go, **where.options()), as_json)


@app.command("sql")
@storage_options
def sql_cmd(
    query: Annotated[str, typer.Argument(help="One SELECT statement over the tierflow views")],
    where: Where = FROM_OPTIONS,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="value of the next ? placeholder (repeatable)"),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="read the cold archive as of an ISO time or snapshot id"),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="row limit (0: none)")] = 100_000,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds (0: none)")] = 60.0,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, json, csv or parquet")
    ] = "table",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="write to this file (parquet needs it)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Run one read-only SQL query across hot, warm and cold (views: workflows, history, ...)."""
    if as_json:
        fmt = "json"
    if fmt not in ("table", "json", "csv", "parquet"):
        raise typer.BadParameter("--format must be table, json, csv or parquet")
    if fmt == "parquet" and output is None:
        raise typer.BadParameter("--format parquet needs --output FILE")
    if len(query) <= 16 * 2**10:
        from tierflow.tiering.sql.guard import check_kind

        try:  # a statement that is not a SELECT is refused before the data is opened
            check_kind(query)
        except TierflowError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    async def go(tf: Tierflow) -> None:
        from tierflow.tiering.sql.output import write_result

        result = await tf.sql(
            query,
            list(param) if param else None,
            as_of,
            limit=limit or None,
            timeout=timeout or None,
            stream=fmt != "table",
        )
        try:
            write_result(result, fmt, output, console)
        finally:
            result.close()

    _run(lambda: _with_tf(where.data_dir, go, **where.options()), as_json)


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of the ``tierflow`` console script."""
    return app(args=list(argv) if argv is not None else None)


if __name__ == "__main__":
    main()
