"""A program the cold-tier tests run as a real subprocess (and kill).

Usage: python -m tests.tiering.cold_app MODE DATA_DIR [ARGS...]

Modes:

- ``cold``: one warm → cold pass (``tier(to="cold")``) judged 2 h from now; prints the
  report as JSON.
- ``read ID...``: opens the data dir afresh and prints, as JSON, what ``describe``,
  ``history`` and ``result`` give for each id (or the error's type and message).

Storage and catalog come from the environment (TIERFLOW_STORAGE_URL, TIERFLOW_S3_ENDPOINT,
TIERFLOW_CATALOG_URL, AWS_*), crash points from TIERFLOW_CRASH_AT.

COLD_APP_EVENTS_PER_COMMIT=N bounds one cold commit to N events (several commits per
pass).

COLD_APP_SMALL_FILES=1 makes the cold writer split a partition into files of a few rows (a
test-only layout), so one commit writes several data files per table.

COLD_APP_KILL_IN_DATA_FILE=N kills the process while pyiceberg writes the N-th Parquet data
file of the pass (1: the first), which the product's crash points cannot reach: on
``file://`` after half of its first chunk is on disk (a torn file under its final name: pyiceberg
writes in place), on ``s3://`` before any byte of it is uploaded. The files before it are
complete. Use with ``PYICEBERG_MAX_WORKERS=1`` so files are written one after another.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import os
import signal
import sys
import time
from typing import Any

from tierflow import Tierflow, TierflowError
from tierflow.tiering.policy import TieringPolicy

from tests.tiering.tier_app import LATER, WORKFLOWS

POLICY = TieringPolicy(min_age=0, cold_after="1h")


def small_files() -> None:
    """Make new ``ColdTables`` use a layout of a few rows per data file and row group."""
    from tierflow.cold import tables

    real = tables.ColdLayout
    tables.ColdLayout = functools.partial(  # type: ignore[misc]
        real, target_file_bytes=1, row_group_rows=7
    )


def kill_in_data_file(n: int) -> None:
    """SIGKILL this process while pyiceberg writes the ``n``-th Parquet data file."""
    from pyiceberg.io.pyarrow import PyArrowFile

    seen = itertools.count(1)
    real_create = PyArrowFile.create

    class Torn:
        """An output stream that dies in its first write."""

        def __init__(self, raw: Any, local: bool) -> None:
            self.raw = raw
            self.local = local

        def write(self, data: Any) -> int:
            view = memoryview(data).cast("B")
            if self.local:  # leave a torn file under its final name
                self.raw.write(view[: len(view) // 2])
                self.raw.flush()
            os.kill(os.getpid(), signal.SIGKILL)
            raise AssertionError("unreachable")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.raw, name)

        def __enter__(self) -> Torn:
            return self

        def __exit__(self, *exc: object) -> None:
            self.raw.close()

    def create(self: PyArrowFile, overwrite: bool = False) -> Any:
        stream = real_create(self, overwrite=overwrite)
        if "/data/" in self.location and self.location.endswith(".parquet") and next(seen) == n:
            return Torn(stream, local=not self.location.startswith("s3"))
        return stream

    PyArrowFile.create = create  # type: ignore[method-assign]


async def outcome(tf: Tierflow, workflow_id: str) -> list[Any]:
    try:
        return ["ok", await tf.result(workflow_id, timeout=10)]
    except TierflowError as exc:
        return ["error", type(exc).__name__, str(exc)]


async def read(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for wid in ids:
        try:
            info = (await tf.describe(wid)).to_dict()
            history = [e.to_dict() for e in await tf.history(wid)]
            out[wid] = {"info": info, "history": history, "result": await outcome(tf, wid)}
        except TierflowError as exc:
            out[wid] = {"error": [type(exc).__name__, str(exc)]}
    return out


async def main(mode: str, data: str, args: list[str]) -> None:
    if os.environ.get("COLD_APP_SMALL_FILES"):
        small_files()
    if "COLD_APP_KILL_IN_DATA_FILE" in os.environ:
        kill_in_data_file(int(os.environ["COLD_APP_KILL_IN_DATA_FILE"]))
    policy = POLICY
    if "COLD_APP_EVENTS_PER_COMMIT" in os.environ:
        events = int(os.environ["COLD_APP_EVENTS_PER_COMMIT"])
        policy = dataclasses.replace(POLICY, max_events_per_cold_commit=events)
    async with Tierflow(data, WORKFLOWS, tiering=policy) as tf:
        if mode == "cold":
            report = await tf.tier(now=time.time() + LATER, to="cold")
            assert report.cold is not None
            print(json.dumps(report.cold.to_dict()), flush=True)
        elif mode == "read":
            print(json.dumps(await read(tf, args)), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
