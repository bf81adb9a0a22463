"""A step's recorded result is durable before the next step's function runs.

With ``durability="full"`` an instance file commits at ``synchronous=NORMAL`` and the engine
makes each commit durable itself with an ``fdatasync`` of the WAL (``InstanceFile.sync``)
on an I/O thread. The engine runs in this process, so ``os.fdatasync`` is wrapped here to
log each call with its file and whether the WAL held step 1's result at that moment, in
one list with what the step functions log.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
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


# -- the last commit (finish or pause) is made durable by closing the file --------------------

_readers: list[sqlite3.Connection] = []
_held_path: list[Path] = []


def _hold_a_reader() -> str:
    """Open the instance file for reading and keep a read transaction: no checkpoint can run."""
    conn = sqlite3.connect(_held_path[0], check_same_thread=False)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM events").fetchone()
    _readers.append(conn)
    return "held"


@workflow
async def finishes_with_a_marker(ctx: WorkflowContext, args: dict[str, Any]) -> str:
    if args["hold"]:
        await ctx.step("hold", _hold_a_reader)
    return f"final-result-{args['tag']}"


async def test_a_finished_run_is_checkpointed_into_its_file_before_run_returns(make_tf, uid):
    # SQLite checkpoints when the last connection closes: at synchronous=NORMAL it syncs the
    # WAL, copies it into the file, syncs the file and deletes the WAL. No WAL left means the
    # whole history, result included, was synced into the file.
    tf = await make_tf([finishes_with_a_marker], options=EngineOptions(durability="full"))
    wid, tag = uid(), uuid.uuid4().hex
    handle = await tf.run(finishes_with_a_marker, {"tag": tag, "hold": False}, workflow_id=wid)
    path = tf.engine.instance_path(wid)
    assert not Path(f"{path}-wal").exists()
    assert f"final-result-{tag}".encode() in path.read_bytes()
    assert await handle.result(timeout=30) == f"final-result-{tag}"


async def test_the_last_commit_is_synced_when_a_reader_keeps_the_checkpoint_from_running(
    make_tf, uid, monkeypatch: pytest.MonkeyPatch
):
    tag = uuid.uuid4().hex
    marker = f"final-result-{tag}".encode()
    real_fdatasync = os.fdatasync
    synced: list[tuple[str, bool]] = []

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        holds = marker in os.pread(fd, os.fstat(fd).st_size, 0)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), holds))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    tf = await make_tf([finishes_with_a_marker], options=EngineOptions(durability="full"))
    wid = uid()
    tf.engine.open()
    # The spare the run takes is chosen at run time: learn its path from the index once
    # the run has it, by starting the reader inside the workflow's step.
    _readers.clear()
    _held_path.clear()
    real_take = tf.engine.runtime.take_spare

    async def take_spare() -> Any:
        spare = await real_take()
        _held_path.append(spare.path)
        return spare

    monkeypatch.setattr(tf.engine.runtime, "take_spare", take_spare)
    try:
        handle = await tf.run(finishes_with_a_marker, {"tag": tag, "hold": True}, workflow_id=wid)
        wal = os.path.realpath(tf.engine.instance_path(wid)) + "-wal"
        assert Path(wal).exists()  # the reader kept SQLite from checkpointing at close
        assert (wal, True) in synced, synced  # so the engine synced the WAL itself
        assert await handle.result(timeout=30) == f"final-result-{tag}"
    finally:
        for conn in _readers:
            conn.close()
