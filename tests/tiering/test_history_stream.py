"""``tf.iter_history``: a history streamed in chunks from every tier (issue 20); file:// and s3://.

One workflow of ``N + 5`` events is read in chunks of 7 in hot, warm and cold and
must equal ``tf.history`` there. It is spread over several files in both archive
tiers (a warm file of at most 10 rows, cold files of at most 5, as in
``test_cold_point_reads``), so the readers merge files by ``event_id``. Two
workflows move tiers between their first chunk and the rest: the router finds each
where it went and resumes after the last event it yielded (the spy records where).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import pytest
from tierflow import (
    InvalidArgument,
    InvalidWorkflowId,
    StorageError,
    Tierflow,
    WorkflowContext,
    WorkflowNotFound,
    workflow,
)
from tierflow.cold import tables
from tierflow.cold.reader import ColdReader
from tierflow.hot.index import IndexRow
from tierflow.hot.router import TierReader
from tierflow.tiering.policy import TieringPolicy
from tierflow.tiering.source import ColdSource
from tierflow.warm import writer

from tests.conftest import wait_closed
from tests.history_spy import spying

pytestmark = pytest.mark.timeout(300)

LATER = 7200.0  # tiering judges ages as if it were this much later
N = 40  # recorded values: 45 events


@workflow(name="chatty")
async def chatty(ctx: WorkflowContext, n: int) -> int:
    values = [ctx.uuid() for _ in range(n)]
    return await ctx.step("count", len, values)


def make_tf(data: Path, store: Any) -> Tierflow:
    policy = TieringPolicy(min_age=0, cold_after=0, max_rows_per_file=10)
    return Tierflow(data, [chatty], warm_store=store, tiering=policy)


def plain(events: list[Any]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in events]


async def chunks_of(tf: Tierflow, wid: str, **kw: Any) -> list[list[dict[str, Any]]]:
    return [plain(c) async for c in tf.iter_history(wid, **kw)]


@pytest.fixture
def small_cold_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cold data files of at most 5 rows (each history spans several)."""
    layout = functools.partial(tables.ColdLayout, target_file_bytes=1, row_group_rows=5)
    monkeypatch.setattr(tables, "ColdLayout", layout)


async def test_chunks_equal_history_in_every_tier(make_store, tmp_path, uid, small_cold_files):
    wid = uid("chatty")
    store = make_store()
    async with make_tf(tmp_path / "d", store) as tf:
        await tf.run(chatty, N, workflow_id=wid)
        reference = plain(await tf.history(wid))
        assert [e["event_id"] for e in reference] == list(range(1, N + 6))
        for tier in ("hot", "warm", "cold"):
            if tier != "hot":
                await tf.tier(now=time.time() + LATER, to=tier)
            assert (await tf.describe(wid)).tier == tier
            chunks = await chunks_of(tf, wid, chunk=7)
            assert [len(c) for c in chunks] == [7] * 6 + [3], tier
            assert [e for c in chunks for e in c] == reference, tier
            assert plain(await tf.history(wid)) == reference, tier
            tail = await chunks_of(tf, wid, after_seq=10, chunk=100)
            assert tail == [reference[10:]], tier
            assert await chunks_of(tf, wid, after_seq=N + 5) == [], tier
            handle = tf.get_handle(wid)
            assert [plain(c) async for c in handle.iter_history(chunk=50)] == [reference], tier
            if tier == "warm":
                keys = [k for k, _ in store.list("warm") if "/history/" in k]
                assert len(keys) >= 2, keys  # the merge across files was needed
                await _stops_early_and_closes(tf, wid, store, keys)
        row = tf.index.get(wid)
        assert row is not None
        assert len(ColdReader(tf.cold).candidates("history", wid, ColdSource._day(row))) >= 2


async def _stops_early_and_closes(tf: Tierflow, wid: str, store: Any, keys: list[str]) -> None:
    """A consumer that stops after one chunk leaves no file open."""
    it = tf.iter_history(wid, chunk=3)
    assert len(await anext(it)) == 3
    await it.aclose()
    if store.url.startswith("file://"):
        for key in keys:
            await wait_closed(Path(writer.full_path(store.root, key)))


async def test_moving_tiers_mid_iteration_yields_every_event_once(make_store, tmp_path, uid):
    a, b = uid("a"), uid("b")
    async with make_tf(tmp_path / "d", make_store()) as tf:
        for wid in (a, b):
            await tf.run(chatty, N, workflow_id=wid)
        reference = {w: plain(await tf.history(w)) for w in (a, b)}
        hot_files = [tf.engine.instance_path(w) for w in (a, b)]
        with spying(tf, a) as spy_a, spying(tf, b) as spy_b:
            it_a = tf.iter_history(a, chunk=5)
            it_b = tf.iter_history(b, chunk=5)
            got_a, got_b = [plain(await anext(it_a))], [plain(await anext(it_b))]
            await tf.tier(now=time.time() + LATER, to="warm")
            assert not any(f.exists() for f in hot_files)
            got_a += [plain(c) async for c in it_a]  # resumes in warm after event 5
            await tf.tier(now=time.time() + LATER, to="cold")
            assert (await tf.describe(b)).tier == "cold"
            got_b += [plain(c) async for c in it_b]  # hot file and warm batch gone: cold
        assert [e for c in got_a for e in c] == reference[a]
        assert [e for c in got_b for e in c] == reference[b]
        assert spy_a.calls == [("hot", 0), ("warm", 5)]
        assert spy_b.calls == [("hot", 0), ("cold", 5)]


async def test_a_tier_that_repeats_events_is_refused(make_tf, uid):
    """The router checks every event id it passes on: a duplicated chunk is an error."""
    wid = uid()
    tf = await make_tf([chatty])
    await tf.run(chatty, 3, workflow_id=wid)
    router = tf.engine.router
    row = tf.index.get(wid)
    assert row is not None
    hot = router.reader(row)

    class Stutter:
        async def describe(self, row: IndexRow) -> Any:
            return await hot.describe(row)

        async def iter_history(self, row: IndexRow, *, after_seq: int = 0, chunk: int = 1):
            async for part in hot.iter_history(row, after_seq=after_seq, chunk=chunk):
                yield part
                yield part

    stutter: TierReader = Stutter()
    router.register("hot", stutter)
    try:
        with pytest.raises(StorageError, match="out of order or duplicated"):
            await chunks_of(tf, wid, chunk=2)
    finally:
        router.register("hot", hot)
    assert len(await tf.history(wid)) == 8


async def test_queued_instance_and_bad_arguments(make_tf, uid):
    tf = await make_tf([chatty], scheduler=False)
    wid = uid()
    await tf.start(chatty, 2, workflow_id=wid)
    assert await tf.status(wid) == "queued"
    queued = await chunks_of(tf, wid)
    assert queued == [plain(await tf.history(wid))]
    assert [e["event_type"] for e in queued[0]] == ["workflow.queued"]
    assert await chunks_of(tf, wid, after_seq=1) == []
    # Checked when called, before any read.
    with pytest.raises(WorkflowNotFound):
        tf.iter_history(uid("missing"))
    with pytest.raises(InvalidWorkflowId):
        tf.iter_history("bad id!")
    for bad in ({"chunk": 0}, {"chunk": True}, {"chunk": 2.5}, {"after_seq": -1}):
        with pytest.raises(InvalidArgument):
            tf.iter_history(wid, **bad)
