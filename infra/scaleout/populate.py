"""Fill the cold tables on an S3 endpoint with real tierflow workflows (main .venv).

Path taken, and why: on main, ``Tierflow.tier()`` moves finished instances to
*warm* Parquet only; nothing in the product compacts warm into cold yet. So this
script runs the product path as far as it goes and does the last step by hand:

1. the facade (``Tierflow``) runs real workflows on a ``ManualClock``, a few
   hundred per day over several days, so ``finished_date`` spans several
   partitions;
2. ``await tf.tier(now=...)`` writes them to warm Parquet on the S3 endpoint
   (one batch per pass; one pass per day here, so several warm batches);
3. ``tierflow.cold.compaction.compact`` moves the warm batches into the cold
   Iceberg tables (``tierflow.workflows``, ``tierflow.history``) through the SQL
   catalog, in two compaction commits, so each table has several snapshots.

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

from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.cold.compaction import compact
from tierflow.cold.writer import ColdWriter
from tierflow.facade import Tierflow
from tierflow.hot.authoring import workflow
from tierflow.hot.clock import ManualClock
from tierflow.hot.context import WorkflowContext
from tierflow.hot.errors import WorkflowFailed
from tierflow.hot.retry import RetryPolicy
from tierflow.tiering.policy import TieringPolicy
from tierflow.warm.storage import ObjectStore, StorageSettings
from tierflow.warm.writer import BatchManifest, manifest_key

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
    """Run the workflows, tier them to warm, compact warm into cold; return what happened."""
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
    batches: list[str] = []
    t0 = time.perf_counter()
    t_tier = 0.0
    async with Tierflow(
        work / "data",
        workflows=[order, report],
        warm_store=store,
        clock=clock,
        durability="normal",
        tiering=TieringPolicy(min_age="1h"),
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
            # Tier the day that just finished (its instances are >1 h old by then).
            t1 = time.perf_counter()
            rep = await tf.tier(now=clock.now() + 2 * 3600)
            t_tier += time.perf_counter() - t1
            batches.extend(rep.batches)
        t_run = time.perf_counter() - t0 - t_tier

    # Warm -> cold: the compaction step the tiering job does not run yet on main.
    catalog = CatalogSettings(url=f"sqlite:///{work / 'catalog.sqlite'}")
    cold = ColdTables(catalog, store)
    writer = ColdWriter(cold)
    manifests = [BatchManifest.from_json(store.get(manifest_key(b))) for b in batches]
    t2 = time.perf_counter()
    half = max(1, len(manifests) // 2)
    compacted = []
    for n, group in enumerate((manifests[:half], manifests[half:])):
        if group:
            res = compact(writer, store, f"scaleout-{n}", group)
            compacted.append(
                {
                    "commit_id": f"scaleout-{n}",
                    "workflows": res.workflows,
                    "events": res.events,
                    "batches": len(group),
                }
            )
    t_compact = time.perf_counter() - t2
    conn = {
        "catalog_name": catalog.name,
        "catalog_uri": catalog.url,
        "warehouse": f"{storage_url}/cold",
        "s3": settings.iceberg_io_properties(),  # dummy moto keys only
        "endpoint": args.endpoint,
        "tables": {
            d: cold.table(d, refresh=True).metadata_location for d in ("workflows", "history")
        },
    }
    cold.close()
    (work / "connection.json").write_text(json.dumps(conn, indent=1))
    return {
        "started": dict(started),
        "outcomes": dict(outcomes),
        "warm_batches": len(batches),
        "warm_workflows": sum(m.workflow_count for m in manifests),
        "warm_events": sum(m.event_count for m in manifests),
        "compaction_commits": compacted,
        "seconds": {
            "run": round(t_run, 2),
            "tier": round(t_tier, 2),
            "compact": round(t_compact, 2),
        },
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
