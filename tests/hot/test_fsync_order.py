"""A step's recorded result is durable before the next step's function runs.

With ``durability="full"`` an instance file commits at ``synchronous=NORMAL`` and the engine
makes each commit durable itself with an ``fdatasync`` of the WAL (``InstanceFile.sync``)
on an I/O thread. The engine runs in this process, so ``os.fdatasync`` is wrapped here to
log each call with its file and whether the WAL held step 1's result at that moment, in
one list with what the step functions log.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from tierflow import EngineOptions, WorkflowContext, workflow

pytestmark = pytest.mark.timeout(60)

_log: list[tuple[Any, ...]] = []


def _first(tag: str) -> str:
    _log.append(("step 1 returns",))
    return f"step-one-result-{tag}"


def _second(value: str) -> str:
    _log.append(("step 2 runs",))
    return value.upper()


async def _first_async(tag: str) -> str:
    return _first(tag)


async def _second_async(value: str) -> str:
    return _second(value)


@workflow
async def two_sync_steps(ctx: WorkflowContext, tag: str) -> str:
    one = await ctx.step("one", _first, tag)
    return await ctx.step("two", _second, one)


@workflow
async def two_async_steps(ctx: WorkflowContext, tag: str) -> str:
    one = await ctx.step("one", _first_async, tag)
    return await ctx.step("two", _second_async, one)


@workflow
async def two_steps_with_timeouts(ctx: WorkflowContext, tag: str) -> str:
    one = await ctx.step("one", _first, tag, timeout="30s")
    return await ctx.step("two", _second, one, timeout="30s")


@pytest.mark.parametrize(
    "wf",
    [two_sync_steps, two_async_steps, two_steps_with_timeouts],
    ids=["sync", "async", "timeout"],
)
async def test_step_result_synced_before_the_next_step_runs(
    make_tf, uid, monkeypatch: pytest.MonkeyPatch, wf: Any
) -> None:
    tag = uuid.uuid4().hex
    marker = f"step-one-result-{tag}".encode()
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        # Read through the same descriptor: opening and closing another one could drop
        # SQLite's locks on the file.
        size = os.fstat(fd).st_size
        holds = marker in os.pread(fd, size, 0)
        _log.append(("fdatasync", os.readlink(f"/proc/self/fd/{fd}"), holds))

    _log.clear()
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    tf = await make_tf([wf], options=EngineOptions(durability="full"))
    wid = uid()
    handle = await tf.run(wf, tag, workflow_id=wid)
    assert await handle.result(timeout=30) == f"STEP-ONE-RESULT-{tag.upper()}"
    wal = os.path.realpath(tf.engine.instance_path(wid)) + "-wal"
    returned = _log.index(("step 1 returns",))
    ran = _log.index(("step 2 runs",))
    synced = [i for i, e in enumerate(_log) if e == ("fdatasync", wal, True)]
    assert any(returned < i < ran for i in synced), (wal, _log)
