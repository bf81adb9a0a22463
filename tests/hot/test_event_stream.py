"""The event stream: callbacks and an HTTP sink, at-least-once with stable ids."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tierflow import HttpSink, InvalidArgument, WorkflowContext, workflow

from tests.conftest import wait_for


def upper(x: str) -> str:
    return x.upper()


@workflow
async def three(ctx: WorkflowContext, items: list[str]) -> list[str]:
    return [await ctx.step(f"s-{i}", upper, x) for i, x in enumerate(items)]


async def recorded_ids(tf, ids) -> set[str]:
    out = set()
    for wid in ids:
        info = await tf.describe(wid)
        out |= {f"{wid}/{info.run_id}/{e.event_id}" for e in await tf.history(wid)}
    return out


async def test_callback_receives_every_event_in_order(make_tf, uid):
    got: list[dict] = []
    tf = await make_tf([three])
    tf.subscribe("audit", got.extend, batch_ms=5)
    ids = [(await tf.run(three, ["a", "b"], workflow_id=uid())).workflow_id for _ in range(5)]
    expected = await recorded_ids(tf, ids)

    async def complete() -> bool:
        return {e["id"] for e in got} >= expected

    await wait_for(complete)
    per_wf: dict[str, list[int]] = {}
    for e in got:
        per_wf.setdefault(e["workflow_id"], []).append(e["event_id"])
    assert all(v == sorted(v) for v in per_wf.values())
    sample = next(e for e in got if e["event_type"] == "step.completed")
    assert set(sample) == {
        "id",
        "workflow_id",
        "run_id",
        "event_id",
        "event_type",
        "event_time",
        "step_name",
        "attempt",
        "payload",
        "workflow_type",
    }
    assert sample["workflow_type"] == "three"


async def test_subscriber_name_is_durable_across_restart(make_tf, uid, tmp_path: Path):
    data = tmp_path / "d"
    first: list[dict] = []
    tf1 = await make_tf([three], data_dir=data)
    tf1.subscribe("billing", first.extend, batch_ms=0)
    a = (await tf1.run(three, ["x"], workflow_id=uid())).workflow_id
    await wait_for(lambda: _has(first, a, "workflow.completed"))
    await tf1.aclose()
    # Events committed while nobody listened under that name...
    tf2 = await make_tf([three], data_dir=data)
    b = (await tf2.run(three, ["y"], workflow_id=uid())).workflow_id
    await tf2.aclose()
    # ...arrive when the subscriber is back; already-acknowledged ones are not resent.
    later: list[dict] = []
    tf3 = await make_tf([three], data_dir=data, scheduler=False)
    tf3.subscribe("billing", later.extend, batch_ms=0)
    await tf3.start_scheduler()
    await wait_for(lambda: _has(later, b, "workflow.completed"))
    assert {e["workflow_id"] for e in later} == {b}


async def test_a_live_subscriber_sees_new_events_only_and_never_holds_back_tiering(
    make_tf, uid, tmp_path: Path
):
    data = tmp_path / "d"
    tf1 = await make_tf([three], data_dir=data)
    await tf1.run(three, ["x"], workflow_id=uid())
    await tf1.aclose()
    live: list[dict] = []
    tf = await make_tf([three], data_dir=data, scheduler=False)
    tf.subscribe("metrics", live.extend, batch_ms=0, durable=False)
    await tf.start_scheduler()
    new = (await tf.run(three, ["y", "z"], workflow_id=uid())).workflow_id
    await wait_for(lambda: _has(live, new, "workflow.completed"))
    assert {e["workflow_id"] for e in live} == {new}  # no backlog of what ran before
    assert [e["event_id"] for e in live] == sorted({e["event_id"] for e in live})  # each once
    # No cursor in the index, and tiering waits for durable subscribers only.
    rows = tf.index.execute("SELECT count(*) FROM stream_cursors WHERE subscriber = 'metrics'")
    assert rows == [(0,)]
    assert tf.engine.stream.acknowledged_condition() == ("1", [])


async def _has(events: list[dict], wid: str, etype: str) -> bool:
    return any(e["workflow_id"] == wid and e["event_type"] == etype for e in events)


class _Sink(BaseHTTPRequestHandler):
    received: list[dict] = []
    headers_seen: list[str] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.extend(body["events"])
        type(self).headers_seen.append(self.headers.get("X-Token", ""))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
async def test_http_sink_down_then_up_receives_everything(make_tf, uid, caplog):
    caplog.set_level(logging.WARNING, logger="tierflow.stream")
    port = _free_port()
    _Sink.received, _Sink.headers_seen = [], []
    sink = HttpSink(
        f"http://127.0.0.1:{port}/events",
        headers={"X-Token": "s3cret"},
        batch_size=50,
        batch_ms=20,
        max_backoff=0.2,
        timeout=2,
    )
    assert "s3cret" not in repr(sink)
    tf = await make_tf([three], event_sinks=[sink])
    ids = [
        (await tf.run(three, ["a", "b", "c"], workflow_id=uid())).workflow_id for _ in range(200)
    ]
    expected = await recorded_ids(tf, ids)

    # The sink is down: wait until deliveries have failed and been retried a few times.
    async def retried() -> bool:
        failures = [r for r in caplog.records if "delivery of" in r.getMessage()]
        return len(failures) >= 3

    await wait_for(retried)
    assert _Sink.received == []
    server = ThreadingHTTPServer(("127.0.0.1", port), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:

        async def complete() -> bool:
            return {e["id"] for e in _Sink.received} >= expected

        await wait_for(complete, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert set(_Sink.headers_seen) == {"s3cret"}
    assert all(len(e["id"].split("/")) == 3 for e in _Sink.received)


def test_sink_arguments_are_checked():
    with pytest.raises(InvalidArgument):
        HttpSink("ftp://example/x")
    with pytest.raises(InvalidArgument):
        HttpSink("http://127.0.0.1:1/x", batch_size=0)
