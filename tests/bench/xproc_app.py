"""Workflows for the cross-process benchmark: each stamps when the runner acts.

Stamps are lines ``<key> <time.time()>`` appended to ``TIERFLOW_BENCH_STAMPS``.
"""

from __future__ import annotations

import asyncio
import os
import time

from tierflow import WorkflowCancelled, WorkflowContext, workflow


def _stamp(key: str) -> None:
    line = f"{key} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["TIERFLOW_BENCH_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def stamp_now(key: str) -> str:
    """A step: stamp, first thing."""
    _stamp(key)
    return key


async def stamp_when_cancelled(key: str) -> None:
    """A step that waits forever; stamps ``key-in`` on entry and ``key`` when cancelled."""
    _stamp(f"{key}-in")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        _stamp(key)
        raise


@workflow
async def stamp_first(ctx: WorkflowContext) -> str:
    """Queued work: the stamp is the first thing the runner does."""
    return await ctx.step("stamp", stamp_now, ctx.workflow_id)


@workflow
async def stamp_signal(ctx: WorkflowContext) -> str:
    """Paused for a signal; stamps when resumed by it, or in cleanup when cancelled."""
    try:
        await ctx.wait_for_signal("go", timeout="1h")
        return await ctx.step("stamp", stamp_now, ctx.workflow_id)
    except WorkflowCancelled:
        await ctx.step("stamp-cancelled", stamp_now, ctx.workflow_id)
        raise


@workflow
async def stamp_terminated(ctx: WorkflowContext) -> None:
    """Inside a step that never ends: terminating it stamps from the cancelled step."""
    await ctx.step("wait", stamp_when_cancelled, ctx.workflow_id)
