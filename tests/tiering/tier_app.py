"""A program the tiering crash tests run as a real subprocess (and kill).

Usage: python -m tests.tiering.tier_app MODE DATA_DIR [N]

Storage comes from the environment (TIERFLOW_STORAGE_URL, TIERFLOW_S3_ENDPOINT,
AWS_*), crash points from TIERFLOW_CRASH_AT.

TIER_APP_KILL_IN_PUT=N kills the process inside the store write of the N-th Parquet
object (1: the batch's first file), which the product's crash points cannot reach:
on ``file://`` after half its bytes are in the temporary file, on ``s3://`` before the
PutObject request (a PUT is atomic: an interrupted one stores nothing).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from typing import Any

from tierflow import RetryPolicy, Tierflow, WorkflowContext, workflow

# Tiering judges age against this: everything finished "2 h ago".
LATER = 7200.0


def upper(x: str) -> str:
    return x.upper()


def boom(x: str) -> str:
    raise ValueError(f"bad input {x}")


@workflow
async def alpha(ctx: WorkflowContext, n: int) -> list[str]:
    ctx.set_attributes(kind="alpha", n=n)
    return [await ctx.step(f"s{i}", upper, f"a{n}-{i}") for i in range(5)]


@workflow
async def beta(ctx: WorkflowContext, n: int) -> dict:
    token = ctx.uuid()
    got = await ctx.step("one", upper, f"b{n}")
    return {"token": token, "got": got, "unicode": "ünïcødé ✓ 𝄞"}


@workflow
async def gamma(ctx: WorkflowContext, n: int) -> None:
    await ctx.step("fails", boom, f"g{n}", retry=RetryPolicy(max_attempts=2, initial_interval=0))


WORKFLOWS = [alpha, beta, gamma]


async def populate(tf: Tierflow, n: int) -> list[str]:
    ids = []
    for i in range(n):
        wf = WORKFLOWS[i % 3]
        h = await tf.run(wf, i, workflow_id=f"{wf.name}-{i:05d}")
        ids.append(h.workflow_id)
    return ids


def kill_in_put(n: int) -> None:
    """SIGKILL this process while it writes the ``n``-th Parquet object to the store."""
    from tierflow.hot.durable_fs import DurableFile
    from tierflow.warm.storage.s3 import _S3Backend

    seen = itertools.count(1)
    real_write, real_put_s3 = DurableFile.write, _S3Backend.put

    def write(self: DurableFile, data: bytes | memoryview) -> int:
        if self.path.suffix == ".parquet" and next(seen) == n:
            view = memoryview(data).cast("B")
            real_write(self, view[: len(view) // 2])
            self.flush()  # in the page cache: what a killed process leaves
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(self, data)

    def put_s3(self: _S3Backend, key: str, data: bytes | memoryview, **kw: Any) -> None:
        if key.endswith(".parquet") and next(seen) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        real_put_s3(self, key, data, **kw)

    DurableFile.write = write  # type: ignore[method-assign]
    _S3Backend.put = put_s3  # type: ignore[method-assign]


async def main(mode: str, data: str, args: list[str]) -> None:
    if "TIER_APP_KILL_IN_PUT" in os.environ:
        kill_in_put(int(os.environ["TIER_APP_KILL_IN_PUT"]))
    async with Tierflow(data, WORKFLOWS) as tf:
        if mode == "populate":
            await populate(tf, int(args[0]))
            print("ok", flush=True)
        elif mode == "tier":
            report = await tf.tier(now=time.time() + LATER)
            print(json.dumps(report.to_dict()), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
