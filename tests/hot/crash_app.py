"""A tierflow program that the crash tests run as a real subprocess and kill.

Usage: python -m tests.hot.crash_app MODE DATA_DIR [ARGS...]

CRASH_SPY_SYNCS=1 appends ``fsync:SIZE:PATH`` or ``fdatasync:SIZE:PATH`` to the marks file
after each ``os.fsync``/``os.fdatasync`` returns (SIZE: the file's size when the call was
made, so its first SIZE bytes are durable), in one sequence with the steps' marks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tierflow import (
    EngineOptions,
    HttpSink,
    RetryPolicy,
    Tierflow,
    WorkflowContext,
    WorkflowFailed,
    workflow,
)


def marks_path() -> Path:
    # Read at call time so a test process that imports these workflows can set it.
    return Path(os.environ.get("CRASH_MARKS", "/dev/null"))


def mark(text: str) -> str:
    with marks_path().open("a") as f:
        f.write(text + "\n")
    return text


def blocks_here(text: str) -> bool:
    """True (after saying so in ``<marks>.ready``) where ``CRASH_BLOCK_AT`` names ``text``."""
    if os.environ.get("CRASH_BLOCK_AT") != text:
        return False
    Path(str(marks_path()) + ".ready").touch()
    return True


def spy_syncs() -> None:
    """Log every ``os.fsync``/``os.fdatasync`` of this process to the marks file."""
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def sync(fd: int, real: Any = real, name: str = name) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            size = os.fstat(fd).st_size
            real(fd)
            mark(f"{name}:{size}:{path}")

        setattr(os, name, sync)


def step_two() -> str:
    mark("s2")
    if os.environ.get("CRASH_BLOCK") == "1":
        Path(str(marks_path()) + ".ready").touch()
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
        Path(str(marks_path()) + ".ready").touch()
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


def sync_mark(text: str) -> str:
    mark(text)
    if blocks_here(text):
        time.sleep(3600)  # killed here
    return text


async def async_mark(text: str) -> str:
    mark(text)
    if blocks_here(text):
        await asyncio.sleep(3600)  # killed here
    return text


@workflow
async def async_marks(ctx: WorkflowContext) -> list[str]:
    return [await ctx.step(n, async_mark, n) for n in ("a1", "a2", "a3")]


@workflow
async def plain_marks(ctx: WorkflowContext) -> list[str]:
    return [await ctx.step(n, sync_mark, n) for n in ("p1", "p2", "p3")]


@workflow
async def timed_marks(ctx: WorkflowContext) -> list[str]:
    return [await ctx.step(n, sync_mark, n, timeout=600) for n in ("t1", "t2", "t3")]


@workflow
async def signal_taker(ctx: WorkflowContext) -> dict[str, object]:
    await ctx.step("busy", sync_mark, "busy")
    got = await ctx.wait_for_signal("go")
    await ctx.step("took", mark, f"took-{got}")
    # Any second delivery of the same signal would be taken here.
    extra = await ctx.wait_for_signal("go", timeout="100ms", default=None)
    return {"got": got, "extra": extra}


def double(n: int) -> int:
    mark(f"double-{n}")
    return n * 2


def boom() -> None:
    raise ValueError("boom")


@workflow
async def tagged(ctx: WorkflowContext, n: int) -> int:
    ctx.set_attributes(customer=f"c-{n}", n=n)
    return int(await ctx.step("double", double, n))


@workflow
async def failing(ctx: WorkflowContext) -> None:
    await ctx.step("boom", boom)


WORKFLOWS = [
    three_marks,
    sleeper,
    doomed,
    kid,
    fan_out,
    async_marks,
    plain_marks,
    timed_marks,
    signal_taker,
    tagged,
    failing,
]
BY_NAME = {w.name: w for w in WORKFLOWS}


async def poll(predicate: object, timeout: float = 60) -> None:
    """Wait until ``await predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("condition not met in time")
        await asyncio.sleep(0.01)


def die_now() -> None:
    """SIGKILL this process: nothing after the caller's last statement runs."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


async def main(mode: str, data: str, args: list[str]) -> None:
    if os.environ.get("CRASH_SPY_SYNCS") == "1":
        spy_syncs()
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
        async with Tierflow(data, WORKFLOWS, options=EngineOptions(max_recovery_attempts=2)) as tf:
            await tf.start(doomed, workflow_id="doomed-1")
            try:
                await tf.get_handle("doomed-1").result(timeout=60)
            except WorkflowFailed as exc:
                print(json.dumps({"failed": exc.cause}), flush=True)
    elif mode == "start-kill":  # ARGS: TYPE ID
        async with Tierflow(data, WORKFLOWS) as tf:
            await tf.start(BY_NAME[args[0]], workflow_id=args[1])
            die_now()
    elif mode == "run-kill":  # ARGS: TYPE ID; CRASH_BLOCK_AT names the step to die in
        async with Tierflow(data, WORKFLOWS) as tf:
            await tf.start(BY_NAME[args[0]], workflow_id=args[1])
            ready = Path(str(marks_path()) + ".ready")

            async def blocked() -> bool:
                return ready.exists()

            await poll(blocked)
            die_now()
    elif mode == "signal-kill":  # ARGS: ID; with CRASH_BLOCK_AT=busy the run is mid-step
        async with Tierflow(data, WORKFLOWS) as tf:
            await tf.start(signal_taker, workflow_id=args[0])
            ready = Path(str(marks_path()) + ".ready")

            async def busy_or_waiting() -> bool:
                if os.environ.get("CRASH_BLOCK_AT") == "busy":
                    return ready.exists()
                return await tf.status(args[0]) == "paused"

            await poll(busy_or_waiting)
            await tf.signal(args[0], "go", "first")
            die_now()  # the signal is accepted; no wait has taken it
    elif mode == "finish":  # ARGS: ID TIMEOUT
        async with Tierflow(data, WORKFLOWS) as tf:
            result = await tf.get_handle(args[0]).result(timeout=float(args[1]))
        print(json.dumps({"result": result}), flush=True)
    elif mode == "populate":  # instances in every state, then SIGKILL mid-step
        async with Tierflow(data, WORKFLOWS) as tf:
            report: dict[str, object] = {}
            for wid, wf, arg in (
                ("done-1", tagged, 1),
                ("done-2", tagged, 2),
                ("failed-1", failing, None),
                ("sleeping-1", sleeper, 5),
            ):
                await tf.run(wf, arg, workflow_id=wid)
                info = (await tf.describe(wid)).to_dict()
                events = [e.to_dict() for e in await tf.history(wid)]
                report[wid] = {"info": info, "history": events}
            await tf.start(signal_taker, workflow_id="waiting-1")
            await tf.start(three_marks, workflow_id="crash-1")  # CRASH_BLOCK=1: dies in s2

            async def settled() -> bool:
                return (
                    Path(str(marks_path()) + ".ready").exists()
                    and await tf.status("waiting-1") == "paused"
                    and await tf.status("sleeping-1") == "paused"
                )

            await poll(settled)
            print(json.dumps(report), flush=True)
            die_now()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
