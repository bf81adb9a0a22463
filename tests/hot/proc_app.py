"""Workflows run by real worker processes (``tierflow worker --app tests.hot.proc_app``).

Every step appends ``<workflow_id> <step>`` to the file named by
``TIERFLOW_TEST_LOG`` (one small ``O_APPEND`` write: lines from several
processes never interleave), so a test can count how often each step ran.
"""

from __future__ import annotations

import os
import time

from tierflow import WorkflowContext, workflow


def record(workflow_id: str, step: str) -> float:
    """Append one line to the shared log; return the wall-clock time it ran."""
    line = f"{workflow_id} {step}\n".encode()
    fd = os.open(os.environ["TIERFLOW_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return time.time()


def hold(seconds: float) -> None:
    """A step that takes a while (a blocking call on a worker thread)."""
    time.sleep(seconds)


@workflow
async def first_then_signal(ctx: WorkflowContext, hold_seconds: float = 0.0) -> dict:
    """Step, optionally a slow step, wait for ``go``, step; returns what ``go`` carried."""
    started = await ctx.step("first", record, ctx.workflow_id, "first")
    if hold_seconds:
        await ctx.step("hold", hold, hold_seconds)
    got = await ctx.wait_for_signal("go", timeout="1h")
    resumed = await ctx.step("second", record, ctx.workflow_id, "second")
    return {"got": got, "started": started, "resumed": resumed}


@workflow
async def guarded(ctx: WorkflowContext) -> str:
    """Waits for a signal that never comes; its cleanup step runs when cancelled."""
    try:
        await ctx.wait_for_signal("never", timeout="1h")
        return "signalled"
    finally:
        await ctx.step("cleanup", record, ctx.workflow_id, "cleanup")


@workflow
async def long_then_more(ctx: WorkflowContext, hold_seconds: float) -> str:
    """A slow step, then another; terminating during the first means no ``after``."""
    await ctx.step("slow", hold, hold_seconds)
    await ctx.step("after", record, ctx.workflow_id, "after")
    return "done"
