"""A program the SQL tests run as a real subprocess: hot → warm and warm → cold in many small steps.

Usage: python -m tests.tiering.sql_app DATA_DIR

Moves every finished hot instance to warm in batches of ``SQL_APP_BATCH`` workflows
(default 15), then moves every warm batch into cold in commits of at most
``SQL_APP_COMMIT_EVENTS`` events (default 120): many index transactions, so a reader
sampling meanwhile sees many different cuts. Prints
"done" and the final tier counts as JSON. Storage from the environment (TIERFLOW_*, AWS_*).

With ``SQL_APP_STEP=1`` it stops before writing each warm batch and each cold commit: it
prints "step" and reads a line from stdin. A reader that samples at each "step" and then sends
a line sees every committed state, at any load.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from tierflow import Tierflow
from tierflow.tiering.policy import TieringPolicy

from tests.tiering.tier_app import LATER, WORKFLOWS


async def main(data: str) -> None:
    policy = TieringPolicy(
        min_age=0,
        cold_after=0,
        max_workflows_per_batch=int(os.environ.get("SQL_APP_BATCH", "15")),
        max_events_per_cold_commit=int(os.environ.get("SQL_APP_COMMIT_EVENTS", "120")),
    )
    stepped = os.environ.get("SQL_APP_STEP") == "1"

    def step(stage: str, done: int, total: int) -> None:
        # Before each warm batch is written, and once each cold commit's rows are all written.
        warm_batch = stage == "write" and done == 0
        cold_commit = stage == "warm → cold" and done == total
        if stepped and (warm_batch or cold_commit):
            print("step", flush=True)
            sys.stdin.readline()

    tf = Tierflow(data, WORKFLOWS, tiering=policy)
    tf.open()
    try:
        # Each warm batch is its own index commit; each bounded cold commit too.
        await tf.tier(now=time.time() + LATER, to="warm", progress=step)
        await tf.tier(now=time.time() + LATER, to="cold", progress=step)
        print(json.dumps({"done": tf.index.count_by_tier()}), flush=True)
    finally:
        await tf.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
