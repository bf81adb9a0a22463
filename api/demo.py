"""The end-to-end demo behind ``make demo``: order processing on the embedded default.

Runs a batch of order workflows with retries, a durable timer, a failure and
a cancellation, shows the instance list and one order's history, then tiers
the finished orders to warm Parquet (``<data_dir>/lake``), moves them into
the cold Iceberg tables (catalog ``<data_dir>/catalog.sqlite``) and reads one
back from each tier. No server to start: everything lives under the data
directory.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table
from tierflow.facade import Tierflow
from tierflow.hot.authoring import workflow
from tierflow.hot.context import WorkflowContext
from tierflow.hot.errors import WorkflowCancelledError, WorkflowFailed
from tierflow.hot.retry import RetryPolicy

__all__ = ["process_order", "run_demo"]

_flaky: dict[str, int] = {}


def reserve_inventory(order_id: str, items: list[str]) -> dict[str, Any]:
    """Pretend to reserve stock; fails twice for orders ending in 7 (transient)."""
    if order_id.endswith("7"):
        _flaky[order_id] = _flaky.get(order_id, 0) + 1
        if _flaky[order_id] <= 2:
            raise ConnectionError("inventory service unavailable")
    return {"order": order_id, "reserved": items}


def charge(order_id: str, amount: float) -> str:
    """Pretend to charge a card; amounts over 1000 are declined."""
    if amount > 1000:
        raise ValueError(f"card declined for {amount:.2f}")
    return f"ch_{order_id}"


def release_inventory(order_id: str) -> str:
    """Undo a reservation."""
    return f"released {order_id}"


@workflow
async def process_order(ctx: WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    """Reserve, wait briefly for fraud checks, charge; release stock on failure."""
    ctx.set_attributes(customer=order["customer"], amount=order["amount"])
    await ctx.step(
        "reserve",
        reserve_inventory,
        order["id"],
        order["items"],
        retry=RetryPolicy(max_attempts=5, initial_interval=0.05),
    )
    try:
        await ctx.sleep(0.1)  # a durable timer: survives restarts
        charge_id = await ctx.step(
            "charge",
            charge,
            order["id"],
            order["amount"],
            retry=RetryPolicy(max_attempts=3, non_retryable=[ValueError]),
        )
    except BaseException:
        await ctx.step("release", release_inventory, order["id"])
        raise
    return {"status": "completed", "charge": charge_id}


async def run_demo(data_dir: str | None = None) -> None:
    """Run the demo and print what happened."""
    console = Console()
    run = time.strftime("%Y%m%d-%H%M%S")
    async with Tierflow(data_dir, workflows=[process_order]) as tf:
        console.print(f"[bold]tierflow demo[/bold] — data in {tf.data_dir.resolve()}")
        orders = [
            {
                "id": f"{run}-{n}",
                "customer": f"c-{n % 3}",
                "items": ["book", "pen"],
                "amount": 1500.0 if n == 4 else 20.0 + n,
            }
            for n in range(1, 11)
        ]
        t0 = time.perf_counter()
        handles = [await tf.start(process_order, o, workflow_id=f"order-{o['id']}") for o in orders]
        await handles[5].cancel("customer changed their mind")
        outcomes: dict[str, str] = {}
        for h in handles:
            try:
                await h.result(timeout=30)
                outcomes[h.workflow_id] = "completed"
            except WorkflowFailed as exc:
                outcomes[h.workflow_id] = f"failed: {exc.cause}"
            except WorkflowCancelledError:
                outcomes[h.workflow_id] = "cancelled"
        elapsed = time.perf_counter() - t0
        table = Table("order", "customer", "status", "steps", "outcome")
        for h in handles:
            info = await h.describe()
            table.add_row(
                h.workflow_id,
                str(info.attributes.get("customer")),
                info.status,
                str(info.step_count),
                outcomes[h.workflow_id],
            )
        console.print(table)
        console.print(f"{len(handles)} orders in {elapsed:.2f}s")
        flaky = next(h for h in handles if h.workflow_id.endswith("7"))
        hist = Table("#", "event", "step", "attempt", title=f"history of {flaky.workflow_id}")
        for e in await flaky.history():
            hist.add_row(str(e.event_id), e.event_type, e.step_name or "", str(e.attempt or ""))
        console.print(hist)
        by_customer = await tf.list(attributes={"customer": "c-1"}, limit=100)
        console.print(f"instances for customer c-1 (from the index): {len(by_customer.items)}")

        # Tiering moves finished instances older than an hour; pretend two have passed.
        before = await flaky.history()
        report = await tf.tier(now=time.time() + 2 * 3600)
        console.print(
            f"tiering: moved {report.workflows_moved} finished workflows "
            f"({report.events_moved} events) to {tf.store.url} in {len(report.batches)} "
            f"batch(es), {report.files_written} Parquet files, {report.seconds:.2f}s"
        )
        moved = await flaky.describe()
        events = await flaky.history()
        console.print(
            f"{flaky.workflow_id} now lives in the [bold]{moved.tier}[/bold] tier; its "
            f"{len(events)} events and its result {moved.result} are read from Parquet"
        )
        # Warm batches go cold after a week (TieringPolicy.cold_after); pretend it has passed.
        report = await tf.tier(now=time.time() + 8 * 86400, to="cold")
        cold = report.cold
        assert cold is not None
        console.print(
            f"warm → cold: {cold.workflows_moved} workflows ({cold.events_moved} events) of "
            f"{len(cold.batches)} warm batch(es) into the Iceberg tables tierflow.workflows "
            f"and tierflow.history in {len(cold.commits)} commit(s), {cold.seconds:.2f}s; "
            f"{cold.warm_objects_deleted} warm objects deleted"
        )
        archived = await flaky.describe()
        events = await flaky.history()
        same = "identical to" if events == before else "DIFFERENT from"
        console.print(
            f"{flaky.workflow_id} now lives in the [bold]{archived.tier}[/bold] tier; its "
            f"{len(events)} events, read from Iceberg, are {same} what the hot tier returned"
        )
        console.print("[green]demo finished[/green]")
