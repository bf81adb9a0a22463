"""Workflows for the erasure tests, and a program that runs one erasure (and gets killed).

Usage: python -m tests.tiering.erase_app MODE DATA_DIR ID...

Modes:

- ``warm``: ``erase_from_warm`` on the data dir's index and store; prints the result as JSON.
- ``cold``: ``erase_rows`` on the cold tables of the data dir (catalog
  ``<DATA_DIR>/catalog.sqlite``); the partition of each id comes from ``ERASE_APP_DAYS``
  (JSON ``{id: "YYYY-MM-DD"}``) when set. Prints the result as JSON.

Storage comes from the environment (TIERFLOW_STORAGE_URL, TIERFLOW_S3_ENDPOINT, AWS_*),
crash points from TIERFLOW_CRASH_AT: the warm ones are ``warm.CRASH_POINTS``, the cold
ones ``cold-erase-<step>`` for each of ``cold.erase.STEPS``. ERASE_APP_KILL_IN_PUT=N kills
the process inside the store write of the N-th Parquet object (``tier_app.kill_in_put``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from tierflow import ManualClock, Tierflow, WorkflowContext, workflow

DAY = 86_400.0
# Tiering judges age against this: everything finished "2 h ago".
LATER = 7200.0


def echo(data: dict[str, Any]) -> dict[str, Any]:
    return dict(data)


@workflow
async def keeper(ctx: WorkflowContext, data: dict[str, Any]) -> dict[str, Any]:
    """Keeps a secret in its input, a step result, an attribute and its result."""
    ctx.set_attributes(customer=data["customer"])
    echoed = await ctx.step("echo", echo, data)
    return {"kept": echoed["secret"]}


WORKFLOWS = [keeper]


def secret_of(workflow_id: str) -> str:
    """The unique marker in a workflow's input (nothing else contains it)."""
    return f"s3cr3t:{workflow_id}:{uuid.uuid5(uuid.NAMESPACE_URL, workflow_id).hex}"


async def populate(tf: Tierflow, clock: ManualClock, n: int, *, days: int = 3) -> list[str]:
    """Run ``n`` keepers over ``days`` days: workflow ``i`` finishes on day ``i % days``.

    Ids share a per-call token, so every test has its own.
    """
    token = uuid.uuid4().hex[:6]
    ids = [f"kp-{token}-{i:04d}" for i in range(n)]
    for day in range(days):
        for i, wid in enumerate(ids):
            if i % days == day:
                data = {"secret": secret_of(wid), "customer": f"c-{i % 4}"}
                await tf.run(keeper, data, workflow_id=wid)
        clock.advance(DAY)
    return ids


def finished_dates(tf: Tierflow, ids: list[str]) -> dict[str, str]:
    """Each id's partition date, from the index (what an erasure passes to ``erase_rows``)."""
    from tierflow.hot.models import from_micros

    out = {}
    for wid in ids:
        row = tf.index.get(wid)
        if row is not None and row.finished_at is not None:
            out[wid] = from_micros(row.finished_at).date().isoformat()
    return out


def _on_step(step: str) -> None:
    from tierflow.tiering.faults import crash_point

    crash_point(f"cold-erase-{step}")


async def main(mode: str, data: str, ids: list[str]) -> None:
    if "ERASE_APP_KILL_IN_PUT" in os.environ:
        from tests.tiering.tier_app import kill_in_put

        kill_in_put(int(os.environ["ERASE_APP_KILL_IN_PUT"]))
    if mode == "warm":
        from tierflow.tiering.compliance.warm import erase_from_warm

        async with Tierflow(data, WORKFLOWS) as tf:
            result = erase_from_warm(tf.index, tf.store, ids)
            print(json.dumps(result.to_dict()), flush=True)
    elif mode == "cold":
        from tierflow.cold.catalog import CatalogSettings, ColdTables
        from tierflow.cold.erase import erase_rows
        from tierflow.warm.storage import ObjectStore

        store = ObjectStore.from_url(os.environ["TIERFLOW_STORAGE_URL"])
        catalog = CatalogSettings(url=f"sqlite:///{Path(data).resolve() / 'catalog.sqlite'}")
        cold = ColdTables(catalog, store)
        days = json.loads(os.environ.get("ERASE_APP_DAYS", "{}"))
        try:
            done = erase_rows(cold, ids, finished_dates=days, on_step=_on_step)
        finally:
            cold.close()
        print(json.dumps(done.to_dict()), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
