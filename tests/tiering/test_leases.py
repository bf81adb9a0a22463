"""Read leases (README, "Consistent reads and read leases"): a move deletes what it
replaced only when no query reads a cut taken before it, or once the grace period has passed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tierflow import ManualClock, Tierflow
from tierflow.tiering.leases import GRACE_SECONDS, ReadLeases
from tierflow.tiering.policy import TieringPolicy

from tests.tiering.test_sql import ALL, finished
from tests.tiering.test_tiering import ROOT

pytestmark = pytest.mark.timeout(120)

COUNT = "SELECT tier, count(*) FROM workflows GROUP BY 1 ORDER BY 1"


def test_a_lease_in_another_process_holds_off_deleters(tmp_path: Path):
    leases = ReadLeases(tmp_path)
    with leases.exclusive() as free:
        assert free
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from tierflow.tiering.leases import ReadLeases
                lease = ReadLeases({str(tmp_path)!r}).hold()
                print("held", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with leases.exclusive() as free:
            assert not free
        mine = leases.hold(deadline=None)  # shared leases do not exclude each other
        assert mine is not None
        mine.release()
        mine.release()  # idempotent
    finally:
        holder.kill()  # a dead process drops its lease
        holder.communicate()
    with leases.exclusive() as free:
        assert free


async def test_moves_keep_what_a_running_query_reads_and_delete_it_later(
    make_store, tmp_path: Path
):
    store = make_store()
    clock = ManualClock()
    policy = TieringPolicy(min_age=0, cold_after=0)
    data = tmp_path / "d"
    async with Tierflow(data, ALL, warm_store=store, tiering=policy, clock=clock) as tf:
        ids = await finished(tf, 0, 6)
        hot_files = [tf.engine.instance_path(w) for w in ids]
        assert all(p.exists() for p in hot_files)
        lease = ReadLeases(data).hold()  # a query that read its cut before the moves
        assert lease is not None
        warm = await tf.tier(now=clock.now() + 60, to="warm")
        assert warm.workflows_moved == 6
        # Its hot files stay (the query may read them); the index says warm.
        assert all(p.exists() for p in hot_files)
        assert (await tf.sql(COUNT)).rows == [("warm", 6)]
        warm_keys = {k for k, _ in store.list("") if "/warm/" in f"/{k}" or k.startswith("warm")}
        cold = await tf.tier(now=clock.now() + 60, to="cold")
        assert cold.cold is not None and cold.cold.workflows_moved == 6
        assert cold.cold.deletions_deferred == cold.cold.commits
        assert warm_keys <= {k for k, _ in store.list("")}  # warm originals kept
        assert (await tf.sql(COUNT)).rows == [("cold", 6)]
        # Still leased, and younger than the grace: the next passes keep them.
        again = await tf.tier(now=clock.now() + 60)
        assert again.cold is not None and again.cold.deletions_deferred == cold.cold.commits
        lease.release()
        done = await tf.tier(now=clock.now() + 60)
        assert done.cold is not None and done.cold.deletions_deferred == []
        assert done.cold.recovered_commits == cold.cold.commits
        assert not warm_keys & {k for k, _ in store.list("")}
        assert not any(p.exists() for p in hot_files)
        assert (await tf.sql(COUNT)).rows == [("cold", 6)]
        assert tf.sql_engine.retries == 0


async def test_past_the_grace_period_a_lease_no_longer_holds_files(tmp_path: Path):
    clock = ManualClock()
    policy = TieringPolicy(min_age=0, cold_after=0)
    data = tmp_path / "d"
    async with Tierflow(data, ALL, tiering=policy, clock=clock) as tf:
        ids = await finished(tf, 0, 3)
        hot_files = [tf.engine.instance_path(w) for w in ids]
        lease = ReadLeases(data).hold()
        assert lease is not None
        try:
            report = await tf.tier(now=clock.now() + 60)
            assert report.cold is not None and report.cold.deletions_deferred
            assert all(p.exists() for p in hot_files)  # kept for the query
            clock.advance(GRACE_SECONDS + 1)
            late = await tf.tier(now=clock.now() + 60)
            assert late.cold is not None and late.cold.deletions_deferred == []
            assert late.cold.recovered_commits == report.cold.deletions_deferred
            assert not any(p.exists() for p in hot_files)
        finally:
            lease.release()
