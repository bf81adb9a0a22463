"""Sandbox connections: kept only for their own files, locked, closed when the engine closes."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
from tierflow import InvalidArgument, Tierflow
from tierflow.tiering import sql_guard
from tierflow.tiering.policy import TieringPolicy

from tests.tiering.test_sql import ALL, finished

pytestmark = pytest.mark.timeout(120)


def wait_for(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_kept_sandboxes_serve_only_their_key_and_close_with_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sql_guard, "_IDLE", 0.05)
    pool = sql_guard.Sandboxes("256MB")
    first = pool.take("256MB")
    sql_guard.lock(first)
    pool.keep("files-a", first)
    assert pool.reuse("files-b") is None
    assert pool.reuse("files-a") is first
    assert pool.reuse("files-a") is None  # handed out once
    # Still locked: a kept sandbox cannot be reconfigured by the next query.
    with pytest.raises(duckdb.Error):
        first.execute("SET enable_external_access=true")
    pool.keep("files-a", first)
    others = [pool.take("256MB") for _ in range(3)]
    for i, con in enumerate(others):
        pool.keep(f"other-{i}", con)
    # Only the newest few stay; older ones are closed on the worker thread.
    assert pool.reuse("files-a") is None
    wait_for(lambda: _closed(first))
    pool.close()
    for con in others[1:]:
        assert _closed(con)
    # The worker thread ends when idle.
    wait_for(lambda: pool._worker is None)


def _closed(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        con.execute("SELECT 1").fetchall()
    except duckdb.Error:
        return True
    return False


async def test_a_timed_out_or_failed_query_never_lends_its_sandbox(make_store, tmp_path: Path):
    store = make_store()
    policy = TieringPolicy(min_age=0)
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        await finished(tf, 0, 6)
        await tf.tier(now=time.time() + 60, to="warm")
        legit = "SELECT tier, count(*) FROM workflows GROUP BY 1"
        assert (await tf.sql(legit)).rows == [("warm", 6)]
        pool = tf.sql_engine._sandboxes
        assert len(pool._ready) == 1
        kept = next(iter(pool._ready.values()))
        with pytest.raises(InvalidArgument, match="timeout"):
            await tf.sql(
                "SELECT count(*) FROM range(10000000000000) t(a) WHERE a % 7 = 3", timeout=0.2
            )
        with pytest.raises(InvalidArgument):
            await tf.sql("SELECT no_such_column FROM workflows")
        # The kept sandbox served the timed-out query and was then closed, not kept.
        wait_for(lambda: _closed(kept))
        assert all(c is not kept for c in pool._ready.values())
        assert (await tf.sql(legit)).rows == [("warm", 6)]
    assert pool._ready == {}
