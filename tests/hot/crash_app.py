"""A tierflow program that the crash tests run as a real subprocess and kill.

Usage: python -m tests.hot.crash_app MODE DATA_DIR [ARGS...]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from tierflow import HttpSink, RetryPolicy, Tierflow, WorkflowContext, WorkflowFailed, workflow

MARKS = Path(os.environ.get("CRASH_MARKS", "/dev/null"))


def mark(text: str) -> str:
    with MARKS.open("a") as f:
        f.write(text + "\n")
    return text


def step_two() -> str:
    mark("s2")
    if os.environ.get("CRASH_BLOCK") == "1":
        Path(str(MARKS) + ".ready").touch()
        time.sleep(3600)  # killed here
    return "two"


@workflow
async def three_marks(ctx: WorkflowContext) -> list[str]:
    a = await ctx.step("one", mark, "s1")
    b = await ctx.step("two", step_two)
    c = await ctx.step("three", mark, "s3")
    return [a, b, c]


@workflow
async def sleeper(ctx: WorkflowContext, n: int) -> int:
    await ctx.sleep("1h")
    return n * 2


def die() -> None:
    mark("die")
    os.kill(os.getpid(), signal.SIGKILL)


@workflow
async def doomed(ctx: WorkflowContext) -> None:
    await ctx.step("suicide", die, retry=RetryPolicy(max_attempts=1))


def child_step(item: str) -> str:
    mark(f"child-{item}")
    if item == "b" and os.environ.get("CRASH_BLOCK") == "1":
        Path(str(MARKS) + ".ready").touch()
        time.sleep(3600)  # killed here
    return item.upper()


@workflow
async def kid(ctx: WorkflowContext, item: str) -> str:
    return await ctx.step("upper", child_step, item)


@workflow
async def fan_out(ctx: WorkflowContext, items: list[str]) -> list[str]:
    return list(await asyncio.gather(*(ctx.child(kid, i) for i in items)))


class OffsetClock:
    """The system clock shifted by a fixed offset (to make long timers due)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    async def sleep_until(self, deadline: float) -> None:
        while (delay := deadline - self.now()) > 0:
            await asyncio.sleep(delay)


WORKFLOWS = [three_marks, sleeper, doomed, kid, fan_out]


async def main(mode: str, data: str, args: list[str]) -> None:
    if mode == "run":
        async with Tierflow(data, WORKFLOWS) as tf:
            await tf.start(three_marks, workflow_id="crash-1")
            await tf.get_handle("crash-1").result(timeout=60)
    elif mode == "fanout":
        async with Tierflow(data, WORKFLOWS) as tf:
            await tf.start(fan_out, ["a", "b", "c"], workflow_id="fan-1")
            await tf.get_handle("fan-1").result(timeout=60)
    elif mode == "fanout-resume":
        async with Tierflow(data, WORKFLOWS) as tf:
            result = await tf.get_handle("fan-1").result(timeout=60)
            kids = (await tf.list(parent_workflow_id="fan-1")).items
        print(json.dumps({"result": result, "children": sorted(k.workflow_id for k in kids)}))
    elif mode == "stream-run":
        sink = HttpSink(args[0], batch_ms=10, max_backoff=0.2, timeout=1)
        async with Tierflow(data, WORKFLOWS, event_sinks=[sink]) as tf:
            for i in range(int(args[1])):
                await tf.run(three_marks, workflow_id=f"streamed-{i}")
            print("ready", flush=True)
            await asyncio.sleep(3600)
    elif mode == "stream-resume":
        sink = HttpSink(args[0], batch_ms=10, max_backoff=0.2, timeout=1)
        async with Tierflow(data, WORKFLOWS, event_sinks=[sink]):
            print("listening", flush=True)
            await asyncio.sleep(3600)
    elif mode == "resume":
        t0 = time.perf_counter()
        async with Tierflow(data, WORKFLOWS) as tf:
            result = await tf.get_handle("crash-1").result(timeout=60)
            elapsed = time.perf_counter() - t0
        print(json.dumps({"result": result, "seconds": elapsed}), flush=True)
    elif mode == "sleepers":
        n = int(args[0])
        async with Tierflow(data, WORKFLOWS) as tf:
            for i in range(n):
                await tf.start(sleeper, i, workflow_id=f"sleeper-{i}")
            while len((await tf.list(status="paused", limit=n)).items) < n:
                await asyncio.sleep(0.05)
            print("ready", flush=True)
            await asyncio.sleep(3600)
    elif mode == "wake":
        n = int(args[0])
        async with Tierflow(data, WORKFLOWS, clock=OffsetClock(float(args[1]))) as tf:
            results = [await tf.get_handle(f"sleeper-{i}").result(timeout=120) for i in range(n)]
        print(json.dumps({"sum": sum(results), "n": len(results)}), flush=True)
    elif mode == "doomed":
        async with Tierflow(data, WORKFLOWS, max_recovery_attempts=2) as tf:
            await tf.start(doomed, workflow_id="doomed-1")
            try:
                await tf.get_handle("doomed-1").result(timeout=60)
            except WorkflowFailed as exc:
                print(json.dumps({"failed": exc.cause}), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
