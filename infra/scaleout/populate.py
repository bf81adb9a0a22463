"""Fill the cold tables on an S3 endpoint with real tierflow workflows (main .venv).

Everything goes through the product path, the ``Tierflow`` facade:

1. the facade runs real workflows on a ``ManualClock``, a few hundred per day
   over several days, so ``finished_date`` spans several partitions;
2. after each day, ``await tf.tier(now=...)`` moves that day hot -> warm Parquet
   on the S3 endpoint and, with ``TieringPolicy(cold_after="1h")``, moves the
   warm batch into the cold Iceberg tables (``tierflow.workflows``,
   ``tierflow.history``) through the SQL catalog in ``<work>/catalog.sqlite``:
   one cold commit per day, so each table has several snapshots.

It writes ``<work>/connection.json`` (catalog URI, warehouse, S3 properties: the
dummy moto keys only) for the readers, and prints what it did.

Usage: python populate.py --work DIR --endpoint http://127.0.0.1:PORT
       [--bucket B] [--days N] [--per-day N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tierflow.facade import Tierflow
from tierflow.hot.authoring import workflow
from tierflow.hot.clock import ManualClock
from tierflow.hot.context import WorkflowContext
from tierflow.hot.errors import WorkflowFailed
from tierflow.hot.options import EngineOptions
from tierflow.hot.retry import RetryPolicy
from tierflow.tiering.policy import TieringPolicy
from tierflow.warm.storage import ObjectStore, StorageSettings

DAY = 86_400.0
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NO_RETRY = RetryPolicy(max_attempts=1)


def reserve(order_id: str, items: int) -> dict[str, Any]:
    """Pretend to reserve stock."""
    return {"order": order_id, "items": items}


def charge(order_id: str, amount: float) -> str:
    """Pretend to charge; large amounts are declined (the workflow fails)."""
    if amount > 900:
        raise ValueError(f"card declined for {amount:.2f}")
    return f"ch_{order_id}"


def ship(order_id: str) -> str:
    """Pretend to ship."""
    return f"parcel-{order_id}"


def render(report_id: str) -> int:
    """Pretend to render a report."""
    return len(report_id)


@workflow
async def order(ctx: WorkflowContext, o: dict[str, Any]) -> dict[str, Any]:
    """Three steps, or two and a failure for large amounts."""
    ctx.set_attributes(customer=o["customer"])
    await ctx.step("reserve", reserve, o["id"], o["items"], retry=NO_RETRY)
    charge_id = await ctx.step("charge", charge, o["id"], o["amount"], retry=NO_RETRY)
    parcel = await ctx.step("ship", ship, o["id"], retry=NO_RETRY)
    return {"charge": charge_id, "parcel": parcel}


@workflow
async def report(ctx: WorkflowContext, report_id: str) -> int:
    """One step."""
    return int(await ctx.step("render", render, report_id, retry=NO_RETRY))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the workflows, tier them to warm, then move warm into cold; return what happened."""
    work = Path(args.work).resolve()
    storage_url = f"s3://{args.bucket}/lake"
    settings = StorageSettings(
        url=storage_url,
        endpoint=args.endpoint,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
    )
    store = ObjectStore(settings)
    clock = ManualClock(START)
    started = Counter[str]()
    outcomes = Counter[str]()
    moved = Counter[str]()
    t0 = time.perf_counter()
    t_tier = 0.0
    async with Tierflow(
        work / "data",
        workflows=[order, report],
        warm_store=store,
        catalog_url=f"sqlite:///{work / 'catalog.sqlite'}",
        clock=clock,
        options=EngineOptions(durability="normal"),
        tiering=TieringPolicy(min_age="1h", cold_after="1h"),
    ) as tf:
        for day in range(args.days):
            clock.advance(START + day * DAY + 8 * 3600 - clock.now())  # 08:00 each day
            n = args.per_day + 37 * day  # a different count per day
            for chunk in range(0, n, 100):
                handles = []
                for i in range(chunk, min(n, chunk + 100)):
                    if i % 4 == 3:
                        handles.append(
                            await tf.start(report, f"r{day}-{i}", workflow_id=f"rep-{day}-{i:05d}")
                        )
                        started["report"] += 1
                    else:
                        o = {
                            "id": f"{day}-{i}",
                            "customer": f"c-{i % 17}",
                            "items": 1 + i % 5,
                            "amount": 1000.0 if i % 29 == 0 else 10.0 + i % 50,
                        }
                        handles.append(await tf.start(order, o, workflow_id=f"ord-{day}-{i:05d}"))
                        started["order"] += 1
                for h in handles:
                    try:
                        await h.result(timeout=60)
                        outcomes["completed"] += 1
                    except WorkflowFailed:
                        outcomes["failed"] += 1
                clock.advance(300)  # five minutes between chunks
            # Tier the day that just finished (its instances are >1 h old by then):
            # hot -> warm, then warm -> cold for batches older than cold_after.
            t1 = time.perf_counter()
            rep = await tf.tier(now=clock.now() + 2 * 3600)
            t_tier += time.perf_counter() - t1
            moved["warm_batches"] += len(rep.batches)
            moved["warm_workflows"] += rep.workflows_moved
            moved["warm_events"] += rep.events_moved
            if rep.cold is not None:
                moved["cold_commits"] += len(rep.cold.commits)
                moved["cold_workflows"] += rep.cold.workflows_moved
                moved["cold_events"] += rep.cold.events_moved
        t_run = time.perf_counter() - t0 - t_tier
        cold = tf.cold
        conn = {
            "catalog_name": cold.settings.name,
            "catalog_uri": cold.settings.url,
            "warehouse": f"{storage_url}/cold",
            "s3": settings.iceberg_io_properties(),  # dummy moto keys only
            "endpoint": args.endpoint,
            "tables": {
                d: cold.table(d, refresh=True).metadata_location for d in ("workflows", "history")
            },
        }

    (work / "connection.json").write_text(json.dumps(conn, indent=1))
    return {
        "path": "facade: Tierflow.tier() hot -> warm -> cold",
        "started": dict(started),
        "outcomes": dict(outcomes),
        **moved,
        "seconds": {"run": round(t_run, 2), "tier_warm_and_cold": round(t_tier, 2)},
    }


def main() -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", default="tierflow-scaleout")
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--per-day", type=int, default=600)
    args = p.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    store = ObjectStore(
        StorageSettings(
            url=f"s3://{args.bucket}/lake",
            endpoint=args.endpoint,
            region="us-east-1",
            access_key="testing",
            secret_key="testing",
        )
    )
    store.client.create_bucket(Bucket=args.bucket)
    out = asyncio.run(run(args))
    Path(args.work, "populate.json").write_text(json.dumps(out, indent=1))
    print("populate:", json.dumps(out))


if __name__ == "__main__":
    main()
