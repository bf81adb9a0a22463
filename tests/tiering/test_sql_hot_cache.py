"""The cache of finished hot instances' history: never stale, never double, bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from tierflow import Tierflow
from tierflow.tiering.policy import TieringPolicy, TypePolicy
from tierflow.tiering.sql import engine as sql_module
from tierflow.tiering.sql import hot as sql_hot
from tierflow.tiering.sql.hot_cache import HotCache

from tests.tiering.test_sql import ALL, events_of, finished, paused

pytestmark = pytest.mark.timeout(300)


def segment(ids: dict[str, int]) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
    """A table with ``n`` rows per id (column ``w``), and each id's span."""
    rows, spans = [], {}
    for i, n in ids.items():
        spans[i] = (len(rows), n)
        rows += [i] * n
    return pa.table({"w": rows}), spans


def ids_in(tables: list[pa.Table]) -> list[str]:
    return sorted(x for t in tables for x in t.column("w").to_pylist())


def test_entries_live_while_the_cut_lists_them_unchanged() -> None:
    cache = HotCache()
    keys: dict[str, Any] = {"a": ("a", 1), "b": ("b", 1), "c": ("c", 1)}
    table, spans = segment({"a": 2, "b": 3, "c": 1})
    cache.add(table, spans, keys)
    tables, missing = cache.history(keys, None)
    assert ids_in(tables) == ["a", "a", "b", "b", "b", "c"] and missing == []
    # b moved to warm (gone from the cut), c's row changed: neither is served again.
    keys2 = {"a": ("a", 1), "c": ("c", 2), "d": ("d", 1)}
    tables, missing = cache.history(keys2, None)
    assert ids_in(tables) == ["a", "a"]
    assert sorted(missing) == ["c", "d"]
    # A narrowed query gets exactly its ids.
    tables, missing = cache.history(keys2, ["a", "d"])
    assert ids_in(tables) == ["a", "a"] and missing == ["d"]


def test_bounded_oldest_first_and_off_at_zero() -> None:
    one, spans1 = segment({"a": 1000})
    two, spans2 = segment({"b": 1000})
    keys = {"a": 1, "b": 1}
    cache = HotCache(max_bytes=one.nbytes + two.nbytes // 2)
    cache.add(one, spans1, keys)
    cache.add(two, spans2, keys)
    tables, missing = cache.history(keys, None)
    assert set(ids_in(tables)) == {"b"} and missing == ["a"]
    assert cache.nbytes <= cache.max_bytes
    off = HotCache(max_bytes=0)
    off.add(one, spans1, keys)
    off.add_results({"a": '"x"'}, keys)
    assert off.history(keys, None) == ([], ["a", "b"])
    assert off.results(keys, ["a"]) == ({}, ["a"])


def test_results_follow_the_key() -> None:
    cache = HotCache()
    cache.add_results({"a": '"one"', "b": None}, {"a": 1, "b": 1})
    assert cache.results({"a": 1, "b": 1}, ["a", "b"]) == ({"a": '"one"', "b": None}, [])
    assert cache.results({"a": 2, "b": 1}, ["a", "b"]) == ({"b": None}, ["a"])


async def test_queries_stay_exact_as_instances_finish_and_move(make_store, tmp_path: Path):
    """Cached finished instances, live ones finishing, a tiering pass: counts stay the truth."""
    store = make_store()
    policy = TieringPolicy(min_age=0)
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        done = await finished(tf, 0, 12)
        waiting = await paused(tf, 3)
        engine = tf.sql_engine
        by_tier = "SELECT tier, count(*) FROM history GROUP BY 1 ORDER BY 1"

        async def truth() -> list[tuple[str, int]]:
            rows = (await tf.sql("SELECT workflow_id, tier FROM workflows")).rows
            counts: dict[str, int] = {}
            for wid, tier in rows:
                counts[tier] = counts.get(tier, 0) + await events_of(tf, [wid])
            return sorted(counts.items())

        first = (await tf.sql(by_tier)).rows
        assert first == await truth() == [("hot", await events_of(tf, done + waiting))]
        assert engine.hot_cache.nbytes > 0  # the finished ones were kept
        # The waiters finish: their rows change, so their files are read again.
        for wid in waiting:
            await tf.signal(wid, "go", wid)
        for wid in waiting:
            await tf.get_handle(wid).result()
        assert (await tf.sql(by_tier)).rows == await truth()
        # A tiering pass moves every finished instance to warm: none counted twice.
        await tf.tier(now=time.time() + 60, to="warm")
        after = (await tf.sql(by_tier)).rows
        assert after == await truth()
        assert [t for t, _ in after] == ["warm"]
        total = await events_of(tf, done + waiting)
        assert sum(n for _, n in after) == total
        # Nothing hot is left, so nothing stays cached.
        assert engine.hot_cache.history({}, None) == ([], [])


async def test_a_retry_reads_only_what_the_lost_attempt_could_not(
    make_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Files that moved under a query: what was read is kept, the next attempt reads the rest."""
    store = make_store()
    # alpha instances stay hot; the others move to warm.
    policy = TieringPolicy(min_age=0, per_type={"alpha": TypePolicy(min_age="30d")})
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        ids = await finished(tf, 0, 12)
        stale = sql_module.read_snapshot(tf.index)  # every instance hot
        await tf.tier(now=time.time() + 60, to="warm")  # deletes the movers' files
        stay = sorted(w for w in ids if w.startswith("alpha"))
        cuts, opened = [], []
        real_cut, real_read = sql_module.read_snapshot, sql_hot.read_instances

        def cut(index: Any) -> Any:
            cuts.append(1)
            return stale if len(cuts) == 1 else real_cut(index)

        def spy(base: Path, rows: Any, durability: str, gone: Any = None) -> Any:
            opened.append(sorted(r[0] for r in rows))
            return real_read(base, rows, durability, gone)

        monkeypatch.setattr(sql_module, "read_snapshot", cut)
        monkeypatch.setattr(sql_hot, "read_instances", spy)
        rows = (
            await tf.sql(
                "SELECT tier, count(DISTINCT workflow_id) FROM history GROUP BY 1 ORDER BY 1"
            )
        ).rows
        assert rows == [("hot", len(stay)), ("warm", len(ids) - len(stay))]
        assert len(cuts) == 2  # the stale cut lost the race once
        assert opened == [sorted(ids)]  # the second attempt found the stayers cached


async def test_a_worker_is_sent_unchanged_hot_tables_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Finished instances' tables go to the worker once; a change sends them again."""
    sent: list[int] = []
    real = sql_module._ipc

    def spy(table: pa.Table) -> bytes:
        sent.append(table.num_rows)
        return real(table)

    monkeypatch.setattr(sql_module, "_ipc", spy)
    async with Tierflow(tmp_path / "d", ALL) as tf:
        done = await finished(tf, 0, 6)
        query = "SELECT workflow_id, count(*) FROM hot_history GROUP BY 1 ORDER BY 1"
        first = (await tf.sql(query)).rows
        assert len(first) == 6 and sent
        sent.clear()
        assert (await tf.sql(query)).rows == first
        assert sent == []  # the same finished instances: the worker kept them
        waiting = await paused(tf, 1)  # a live instance: its events are sent every time
        rows = (await tf.sql(query)).rows
        assert [r[0] for r in rows] == sorted(done + waiting) and sent
        sent.clear()
        await tf.sql(query)
        assert sent  # never named: a live instance's file may have changed
