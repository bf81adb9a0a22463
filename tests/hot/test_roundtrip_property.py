"""Property: whatever a workflow records reads back unchanged (issue 10 §2.6).

Extends the hot → warm round trip of ``tests/tiering/test_tiering_more.py``
(step results only) to every kind of record: step results, failed steps,
durable timers, signals, child workflows (completed and failed), search
attributes and a failed workflow. For a generated script the test checks that
the result, ``describe`` and ``history`` say exactly what the script did, and
that they stay identical after a restart and after the instances move to the
warm tier.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tierflow import (
    ChildWorkflowFailed,
    ManualClock,
    StepError,
    Tierflow,
    WorkflowContext,
    WorkflowFailed,
    workflow,
)

# Hypothesis keeps its example database out of the repository (as tests/warm/test_format.py).
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "tierflow-hypothesis")
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
messages = st.text(min_size=1, max_size=30)
attribute_values = (
    st.text(max_size=20)
    | st.integers(-(2**53), 2**53)
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
)
ops = st.one_of(
    st.tuples(st.just("step"), json_values),
    st.tuples(st.just("fail"), messages),
    st.tuples(st.just("sleep"), st.integers(1, 3600)),
    st.tuples(st.just("signal"), st.sampled_from(["a", "b"]), json_values),
    st.tuples(st.just("child"), json_values, st.booleans()),
    st.tuples(
        st.just("attrs"),
        st.dictionaries(st.sampled_from(["k1", "k2", "k3"]), attribute_values, min_size=1),
    ),
)
scripts = st.fixed_dictionaries(
    {"ops": st.lists(ops, max_size=8), "fail": st.none() | messages}
).map(lambda s: {"ops": [list(op) for op in s["ops"]], "fail": s["fail"]})


# Every kind of record at least once, two signals of one name (their order
# matters), a failed child and a failed step, attributes set twice.
EVERY_KIND: list[list[Any]] = [
    ["signal", "a", 1],
    ["step", {"x": [1, 2.5, None]}],
    ["signal", "a", {"second": True}],
    ["signal", "b", "z"],
    ["sleep", 5],
    ["child", [3], False],
    ["child", "c", True],
    ["attrs", {"k1": "v", "k2": 1.5}],
    ["fail", "no"],
    ["attrs", {"k1": True, "k3": -7}],
]


def identity(value: Any) -> Any:
    return value


def refuse(message: str) -> None:
    raise ValueError(message)


@workflow
async def kid(ctx: WorkflowContext, arg: list[Any]) -> Any:
    value, fail = arg
    if fail:
        await ctx.step("refuse", refuse, "child refused")
    return await ctx.step("echo", identity, value)


@workflow
async def scripted(ctx: WorkflowContext, script: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for i, (kind, *args) in enumerate(script["ops"]):
        if kind == "step":
            out.append(await ctx.step(f"step-{i}", identity, args[0]))
        elif kind == "fail":
            try:
                await ctx.step(f"fail-{i}", refuse, args[0])
            except StepError as exc:
                out.append({"step_failed": exc.error_type})
        elif kind == "sleep":
            await ctx.sleep(args[0])
            out.append(None)
        elif kind == "signal":
            out.append(await ctx.wait_for_signal(args[0]))
        elif kind == "child":
            try:
                out.append(await ctx.child(kid, args))
            except ChildWorkflowFailed as exc:
                out.append({"child_failed": exc.error_type})
        else:
            ctx.set_attributes(**args[0])
            out.append(None)
    if script["fail"] is not None:
        raise ValueError(script["fail"])
    return out


def expected_result(script: dict[str, Any]) -> list[Any]:
    """What ``scripted`` returns for ``script``, derived from the script alone."""
    out: list[Any] = []
    for kind, *args in script["ops"]:
        if kind in ("step", "signal"):
            out.append(args[-1])
        elif kind == "fail":
            out.append({"step_failed": "builtins.ValueError"})
        elif kind == "child":
            value, fail = args
            out.append({"child_failed": "tierflow.hot.errors.StepError"} if fail else value)
        else:
            out.append(None)
    return out


def expected_attributes(script: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for kind, *args in script["ops"]:
        if kind == "attrs":
            attrs.update(args[0])
    return attrs


async def drive(tf: Tierflow, clock: ManualClock, script: dict[str, Any], wid: str) -> None:
    """Start the instance, send its signals, and move time on until it finishes.

    ``tf`` is open without its scheduler: signals named "a" all arrive while the
    instance is still queued (so each wait must take the oldest), those named
    "b" while it runs.
    """
    h = await tf.start(scripted, script, workflow_id=wid)
    signals = [op for op in script["ops"] if op[0] == "signal"]
    for _, name, payload in signals:
        if name == "a":
            await h.signal(name, payload)
    await tf.start_scheduler()
    for _, name, payload in signals:
        if name == "b":
            await h.signal(name, payload)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not (await h.describe()).finished:
        assert loop.time() < deadline, "the scripted workflow never finished"
        if await h.status() == "paused":
            clock.advance(3601)  # every timer in a script is due
        await asyncio.sleep(0.005)


async def read_back(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    """Everything a user can read about each instance (the tier aside), as plain data."""
    out: dict[str, Any] = {}
    for wid in ids:
        info = (await tf.describe(wid)).to_dict()
        info.pop("tier")
        try:
            result: Any = {"result": await tf.result(wid)}
        except WorkflowFailed as exc:
            result = {"error_type": exc.error_type, "cause": exc.cause}
        history = [e.to_dict() for e in await tf.history(wid)]
        out[wid] = {"info": info, "history": history, "result": result}
    return out


def check_children(script: dict[str, Any], children: list[dict[str, Any]]) -> None:
    """One child per child op, each with its input and the outcome that input asks for."""
    inputs = sorted(json.dumps(c["info"]["input"], sort_keys=True) for c in children)
    wanted = [json.dumps(op[1:], sort_keys=True) for op in script["ops"] if op[0] == "child"]
    assert inputs == sorted(wanted)
    for child in children:
        value, fail = child["info"]["input"]
        if fail:
            assert child["info"]["status"] == "failed"
            assert "child refused" in child["result"]["cause"]
        else:
            assert child["info"]["status"] == "completed"
            assert child["result"] == {"result": value}


def check_recorded(script: dict[str, Any], parent: dict[str, Any]) -> None:
    """The parent's history and description say exactly what the script did."""
    events = parent["history"]
    assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
    ops = script["ops"]
    completed = {
        e["step_name"]: e["payload"]["result"]
        for e in events
        if e["event_type"] == "step.completed"
    }
    failed = {
        e["step_name"]: e["payload"]["error"]["message"]
        for e in events
        if e["event_type"] == "step.failed"
    }
    assert completed == {f"step-{i}": op[1] for i, op in enumerate(ops) if op[0] == "step"}
    assert failed == {f"fail-{i}": op[1] for i, op in enumerate(ops) if op[0] == "fail"}
    for name in ("a", "b"):
        received = [
            e["payload"]
            for e in events
            if e["event_type"] == "signal.received" and e["step_name"] == name
        ]
        assert received == [op[2] for op in ops if op[0] == "signal" and op[1] == name]
    sleeps = [op[1] for op in ops if op[0] == "sleep"]
    started = [e["payload"]["duration"] for e in events if e["event_type"] == "timer.started"]
    assert started == sleeps
    assert sum(e["event_type"] == "timer.fired" for e in events) == len(sleeps)
    info = parent["info"]
    assert info["attributes"] == expected_attributes(script)
    if script["fail"] is None:
        assert info["status"] == "completed"
        assert parent["result"] == {"result": expected_result(script)}
    else:
        assert info["status"] == "failed"
        assert info["error"] == {"type": "builtins.ValueError", "message": script["fail"]}
        assert parent["result"]["cause"] == script["fail"]


@pytest.mark.timeout(600)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=scripts)
@example(script={"ops": EVERY_KIND, "fail": None})
@example(script={"ops": EVERY_KIND, "fail": "the end"})
def test_property_every_kind_of_record_reads_back_unchanged(script: dict[str, Any]):
    async def go(data: Path) -> None:
        clock = ManualClock()
        wid = "scripted-1"
        tf = Tierflow(data, [scripted, kid], clock=clock)
        tf.open()
        try:
            await drive(tf, clock, script, wid)
            children = [i.workflow_id for i in (await tf.list(parent_workflow_id=wid)).items]
            ids = [wid, *sorted(children)]
            recorded = await read_back(tf, ids)
            check_recorded(script, recorded[wid])
            check_children(script, [recorded[c] for c in children])
            for attr, value in expected_attributes(script).items():
                found = await tf.list(attributes={attr: value})
                assert wid in [i.workflow_id for i in found.items]
        finally:
            await tf.aclose()
        async with Tierflow(data, [scripted, kid], clock=clock) as tf:  # a restart
            assert await read_back(tf, ids) == recorded
            report = await tf.tier(now=clock.now() + 7200)
            assert report.workflows_moved == len(ids)
            assert {(await tf.describe(i)).tier for i in ids} == {"warm"}
            assert await read_back(tf, ids) == recorded

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))
