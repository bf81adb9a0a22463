"""Running workflows: results, history, idempotent starts, listing."""

from __future__ import annotations

import enum
import json
import re
from pathlib import Path

import pytest
from tierflow import (
    EngineOptions,
    InvalidArgument,
    InvalidWorkflowId,
    PayloadError,
    Status,
    WorkflowAlreadyExists,
    WorkflowContext,
    WorkflowFailed,
    WorkflowNotFound,
    workflow,
)

calls: dict[str, int] = {}


def upper(item: str) -> str:
    calls[item] = calls.get(item, 0) + 1
    return item.upper()


@workflow
async def double(ctx: WorkflowContext, inp: dict) -> int:
    return inp["value"] * 2


@workflow
async def process_items(ctx: WorkflowContext, items: list[str]) -> list[str]:
    return [await ctx.step(f"process-{item}", upper, item) for item in items]


async def async_upper(item: str) -> str:
    return item.upper()


@workflow
async def mixed(ctx: WorkflowContext, item: str) -> list[str]:
    a = await ctx.step("sync", upper, item)
    b = await ctx.step("async", async_upper, item + "x")
    return [a, b]


@workflow
async def no_input(ctx: WorkflowContext) -> str:
    return "ok"


async def test_double_via_run_and_start(make_tf, uid):
    tf = await make_tf([double])
    h = await tf.run(double, {"value": 21}, workflow_id=uid())
    assert await h.status() == Status.COMPLETED
    assert await h.result() == 42
    h2 = await tf.start(double, {"value": 21}, workflow_id=uid())
    assert await h2.result(timeout=10) == 42
    info = await h2.describe()
    assert info.status == "completed" and info.result == 42 and info.input == {"value": 21}
    assert info.finished_at is not None and info.duration_ms is not None
    assert info.to_dict()["created_at"].endswith("+00:00")


async def test_three_steps_in_order(make_tf, uid):
    tf = await make_tf([process_items])
    h = await tf.run(process_items, ["a", "b", "c"], workflow_id=uid())
    assert await h.result() == ["A", "B", "C"]
    events = await h.history()
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    completed = [e for e in events if e.event_type == "step.completed"]
    assert [e.step_name for e in completed] == ["process-a", "process-b", "process-c"]
    assert [e.payload["result"] for e in completed] == ["A", "B", "C"]
    assert events[0].event_type == "workflow.queued"
    assert events[0].payload["input"] == ["a", "b", "c"]
    assert events[-1].event_type == "workflow.completed"
    assert events[-1].payload == {"result": ["A", "B", "C"]}
    assert all(e.workflow_type == "process_items" for e in events)


async def test_sync_and_async_steps(make_tf, uid):
    tf = await make_tf([mixed])
    h = await tf.run("mixed", "q", workflow_id=uid())
    assert await h.result() == ["Q", "QX"]


class Color(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


# Step results and what a workflow must see for each: the value decoded from its
# record, as a replay will give it back (tuples become lists, enums plain values,
# dictionary keys strings), never the object the step returned.
STEP_RESULTS = [
    ("text", "ü\U0001f600"),
    ("int", 2**70),
    ("float", -0.5),
    ("bool", True),
    ("none", None),
    ("tuple", (1, "a")),
    ("str-enum", Color.RED),
    ("int-enum", Size.BIG),
    ("int-keys", {1: [2.5]}),
]


def step_result(name: str) -> object:
    return dict(STEP_RESULTS)[name]


async def async_step_result(name: str) -> object:
    return dict(STEP_RESULTS)[name]


@workflow
async def results_as_replayed(ctx: WorkflowContext) -> list[list[object]]:
    seen = []
    for name, _ in STEP_RESULTS:
        for fn in (step_result, async_step_result):
            value = await ctx.step(f"{fn.__name__}-{name}", fn, name)
            seen.append([type(value).__name__, value])
    return seen


async def test_a_step_result_reaches_the_workflow_as_a_replay_gives_it(make_tf, uid):
    tf = await make_tf([results_as_replayed])
    h = await tf.run(results_as_replayed, workflow_id=uid())
    expected = [json.loads(json.dumps(v)) for _, v in STEP_RESULTS for _ in range(2)]
    assert await h.result() == [[type(v).__name__, v] for v in expected]
    completed = [e for e in await h.history() if e.event_type == "step.completed"]
    assert [e.payload["result"] for e in completed] == expected
    assert [e.payload["seq"] for e in completed] == [f"0:{i}" for i in range(1, 19)]


async def test_workflow_without_input(make_tf, uid):
    tf = await make_tf([no_input])
    assert await (await tf.run(no_input, workflow_id=uid())).result() == "ok"
    with pytest.raises(InvalidArgument):
        await tf.run(no_input, {"x": 1}, workflow_id=uid())


async def test_same_id_returns_first_instance(make_tf, uid):
    tf = await make_tf([process_items])
    wid = uid()
    calls.clear()
    h1 = await tf.run(process_items, ["m"], workflow_id=wid)
    h2 = await tf.run(process_items, ["zzz"], workflow_id=wid)
    assert h2.workflow_id == wid
    assert await h2.result() == ["M"]
    assert calls == {"m": 1}
    h3 = await tf.start(process_items, ["other"], workflow_id=wid)
    assert await h3.result() == ["M"]
    assert calls == {"m": 1}
    with pytest.raises(WorkflowAlreadyExists):
        await tf.start(process_items, ["x"], workflow_id=wid, on_conflict="fail")
    assert (await h1.describe()).input == ["m"]


@pytest.mark.parametrize("given_id", [True, False], ids=["given-id", "generated-id"])
async def test_bad_on_conflict_is_rejected_before_anything_is_written(make_tf, uid, given_id):
    tf = await make_tf([process_items], scheduler=False)
    wid = uid() if given_id else None
    for call in (tf.start, tf.run):
        with pytest.raises(InvalidArgument, match="on_conflict"):
            await call(process_items, ["a"], workflow_id=wid, on_conflict="replace")
    assert (await tf.list()).items == []


async def test_generated_ids_are_distinct_instances(make_tf):
    tf = await make_tf([double], scheduler=False)
    handles = [await tf.start(double, {"value": i}) for i in range(3)]
    handles.append(await tf.run(double, {"value": 3}))
    assert len({h.workflow_id for h in handles}) == 4
    page = await tf.list()
    assert sorted(i.workflow_id for i in page.items) == sorted(h.workflow_id for h in handles)


async def test_start_twice_queues_once(make_tf, uid):
    tf = await make_tf([process_items], scheduler=False)
    wid = uid()
    await tf.start(process_items, ["a"], workflow_id=wid)
    await tf.start(process_items, ["b"], workflow_id=wid)
    page = await tf.list(status="queued")
    assert [i.workflow_id for i in page.items] == [wid]
    assert (await tf.describe(wid)).input == ["a"]


@pytest.mark.parametrize("bad", ["../x", "", "a" * 300, "a/b", "a\x00b", ".hidden", "a b", "ü", 42])
async def test_invalid_ids_rejected_before_disk(make_tf, tmp_path: Path, bad):
    tf = await make_tf([double], scheduler=False)
    for call in (tf.run, tf.start):
        with pytest.raises(InvalidWorkflowId) as err:
            await call(double, {"value": 1}, workflow_id=bad)
        assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError):
        tf.get_handle(bad)
    with pytest.raises(ValueError):
        await tf.describe(bad)
    assert (await tf.list()).items == []
    # Instance files have random names (spares made ahead of need); no id reaches a path.
    for p in (tmp_path / "data" / "hot" / "instances").rglob("*"):
        assert p.is_dir() or re.fullmatch(r"\d+-[0-9a-f]+-[0-9a-f]{16}\.sqlite(-wal|-shm)?", p.name)
    assert not (tmp_path / "x").exists()


async def test_long_valid_id_gets_bounded_file_name(make_tf):
    tf = await make_tf([double])
    wid = "L" * 255
    h = await tf.run(double, {"value": 2}, workflow_id=wid)
    assert await h.result() == 4
    assert (await tf.describe(wid)).workflow_id == wid


async def test_unknown_workflow_type(make_tf, uid):
    tf = await make_tf([double, process_items])
    with pytest.raises(WorkflowNotFound) as err:
        await tf.start("nope", {}, workflow_id=uid())
    assert "double" in str(err.value) and "process_items" in str(err.value)
    assert err.value.known_types == ["double", "process_items"]
    with pytest.raises(WorkflowNotFound):
        await tf.describe("no-such-id")
    with pytest.raises(WorkflowNotFound):
        await tf.history("no-such-id")
    with pytest.raises(WorkflowNotFound):
        await tf.result("no-such-id")


async def test_input_must_be_json_and_bounded(make_tf, uid):
    tf = await make_tf([double], options=EngineOptions(max_payload_bytes=1000))
    with pytest.raises(PayloadError, match="not JSON"):
        await tf.run(double, {"value": object()}, workflow_id=uid())
    with pytest.raises(PayloadError, match="1000-byte"):
        await tf.run(double, {"value": "x" * 2000}, workflow_id=uid())
    assert (await tf.list()).items == []


def text_of(n: int) -> str:
    return "x" * n


@workflow
async def big_step(ctx: WorkflowContext, n: int) -> int:
    return len(await ctx.step("big", text_of, n))


async def test_a_step_result_up_to_the_engines_limit_is_recorded(make_tf, uid):
    # Above the 2 MiB default, which once also capped the step's event (its payload
    # wraps the result) whatever the engine's limit said.
    limit = 3 * 1024 * 1024
    tf = await make_tf([big_step], options=EngineOptions(max_payload_bytes=limit))
    h = await tf.run(big_step, limit - 2, workflow_id=uid())  # JSON with quotes: the limit
    assert await h.result() == limit - 2
    done = [e for e in await h.history() if e.event_type == "step.completed"]
    assert done[0].payload["result"] == text_of(limit - 2)
    over = await tf.run(big_step, limit - 1, workflow_id=uid())
    with pytest.raises(WorkflowFailed, match="payload limit"):
        await over.result()


class Opaque:
    pass


def returns_object() -> Opaque:
    return Opaque()


@workflow
async def bad_result(ctx: WorkflowContext) -> None:
    await ctx.step("make-object", returns_object)


async def test_non_json_step_result_fails_step_with_name_and_type(make_tf, uid):
    tf = await make_tf([bad_result])
    h = await tf.run(bad_result, workflow_id=uid())
    with pytest.raises(WorkflowFailed) as err:
        await h.result()
    assert "make-object" in str(err.value) and "Opaque" in str(err.value)
    failed = [e for e in await h.history() if e.event_type == "step.failed"]
    assert failed[0].payload["retryable"] is False


async def test_list_filters_and_cursor_paging(make_tf, uid):
    tf = await make_tf([double, process_items])
    ids = [(await tf.run(double, {"value": i}, workflow_id=uid("d"))).workflow_id for i in range(5)]
    await tf.run(process_items, ["a"], workflow_id=uid("p"))
    page = await tf.list(workflow_type=double, limit=2)
    seen = [i.workflow_id for i in page.items]
    while page.next_cursor:
        page = await tf.list(workflow_type="double", limit=2, cursor=page.next_cursor)
        seen += [i.workflow_id for i in page.items]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    assert len((await tf.list(status=["completed"])).items) == 6
    assert (await tf.list(status="failed")).items == []
    with pytest.raises(InvalidArgument):
        await tf.list(status="bogus")
    with pytest.raises(InvalidArgument):
        await tf.list(cursor="!!not-a-cursor!!")


async def test_describe_is_json_ready(make_tf, uid):
    tf = await make_tf([double])
    h = await tf.run(double, {"value": 1}, workflow_id=uid(), attributes={"customer": "c-7"})
    d = (await h.describe()).to_dict()
    json.dumps(d)
    assert d["attributes"] == {"customer": "c-7"}
    assert d["tier"] == "hot"
    assert (await tf.list(attributes={"customer": "c-7"})).items[0].workflow_id == h.workflow_id


@workflow
async def parent_of_double(ctx: WorkflowContext, inp: dict) -> int:
    return await ctx.child(double, inp, workflow_id=f"{ctx.workflow_id}-child")


@pytest.mark.parametrize("how", ["run", "start"])
async def test_queued_event_carries_input_attributes_and_parent_as_given(make_tf, uid, how):
    # The queued event's payload is the instance's input, attributes and parent exactly
    # as started (unicode, nesting, key order kept), whichever way it was started.
    tf = await make_tf([double, parent_of_double])
    inp = {"value": 21, "note": "naïve ☃", "nested": [1, 2.5, None, {"z": True}]}
    attrs = {"region": "eu", "tier": 3}
    starter = tf.run if how == "run" else tf.start
    h = await starter(parent_of_double, inp, workflow_id=uid(), attributes=attrs)
    assert await h.result(timeout=30) == 42
    queued = (await h.history())[0]
    assert queued.event_type == "workflow.queued"
    assert queued.payload == {"input": inp, "attributes": attrs, "parent_workflow_id": None}
    assert list(queued.payload["input"]) == ["value", "note", "nested"]
    child = (await tf.get_handle(f"{h.workflow_id}-child").history())[0]
    assert child.payload == {"input": inp, "attributes": {}, "parent_workflow_id": h.workflow_id}


async def test_a_start_whose_sync_fails_says_so_and_loses_nothing(
    make_tf, uid, monkeypatch: pytest.MonkeyPatch
):
    """The index's WAL cannot be synced: ``start`` raises a StorageError naming it.

    The queue entry was committed before the sync failed, so starting the same id again
    (once the disk is back) returns that instance, which then runs once.
    """
    import os

    from tierflow import StorageError

    tf = await make_tf([process_items])
    wid = uid("sync-fails")
    real = os.fdatasync
    wal = str(tf.engine.index.wal_path)

    def failing(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == wal:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(StorageError, match=r"cannot sync the instance index's WAL"):
        await tf.start(process_items, ["z"], workflow_id=wid)
    monkeypatch.setattr(os, "fdatasync", real)
    handle = await tf.start(process_items, ["z"], workflow_id=wid)
    assert await handle.result(timeout=30) == ["Z"]
    assert [i.workflow_id for i in (await tf.list(limit=100)).items].count(wid) == 1
