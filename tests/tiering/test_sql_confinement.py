"""SQL confinement against any SQL text (README, "Confinement").

Every attack runs against a real cut of warm and cold data (and hot instances),
on file:// and moto: it is refused, every archive object keeps its sha256, no
file appears, and a legal query answers the same before and after. The layers
are also tested one by one: the statement check, the sandbox without the
check, and the kernel fence without either. Time and memory limits are hard:
the worker process is killed or bounded by the OS.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest
from tierflow import InvalidArgument, StorageError, Tierflow
from tierflow.tiering.policy import TieringPolicy
from tierflow.tiering.sql import QueryTimeout, fence, guard, worker

from tests import procs
from tests.hostile_sql import PROBES, archive, statements_against
from tests.tiering.test_sql import ALL, finished, paused
from tests.tiering.test_tiering import ROOT

pytestmark = pytest.mark.timeout(300)

LEGIT = "SELECT tier, count(*) FROM workflows GROUP BY 1 ORDER BY 1"
# A ~1 MB filter on hot history: parsing it and the plan analysis take seconds, all of it
# in the worker, under the query's timer.
NESTED = "SELECT count(*) FROM hot_history WHERE " + " OR ".join(
    f"(workflow_id = 'w{i:06d}' AND event_id = {i})" for i in range(24_000)
)


async def _cut(tf: Tierflow) -> None:
    """Cold, warm and hot data: 6 workflows cold, 6 warm, 3 finished and 2 paused hot."""
    now = time.time() + 86400 * 30
    await finished(tf, 0, 6)
    await tf.tier(now=now)
    await finished(tf, 6, 12)
    await tf.tier(now=now, to="warm")
    await finished(tf, 12, 15)
    await paused(tf, 2)


async def test_no_sql_text_changes_any_archive_file(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "d"
    policy = TieringPolicy(min_age=0, cold_after=0)
    async with Tierflow(data, ALL, warm_store=store, tiering=policy) as tf:
        await _cut(tf)
        expected = (await tf.sql(LEGIT)).rows
        assert expected == [("cold", 6), ("hot", 5), ("warm", 6)]
        before = archive(store)
        assert any("metadata" in k for k in before) and any(k.endswith(".parquet") for k in before)
        files_before = sorted(p for p in tmp_path.rglob("*") if "read.lease" not in str(p))
        targets = [store.path(k) for k in before]
        if store.settings.is_s3:
            targets = [f"s3://{t}" for t in targets]
        attacks = [*PROBES]
        for target in targets:
            attacks += [
                f"WITH x AS (COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet, "
                "USE_TMP_FILE false)) SELECT * FROM x",
                "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('WITH x AS "
                f"(COPY (SELECT 1 AS x) TO ''{target}'' (FORMAT parquet)) SELECT * FROM x'))",
            ]
        attacks += statements_against(targets[0])
        attacks += statements_against(str(tmp_path / "new.parquet"))
        for i, query in enumerate(attacks):
            with pytest.raises(InvalidArgument) as info:
                await tf.sql(query, timeout=30)
            message = str(info.value)
            assert message.startswith(("SQL refused", "SQL error")), (query, message)
            assert str(tmp_path) not in message and str(store.root) not in message, message
            if i % 8 == 0:
                assert (await tf.sql(LEGIT)).rows == expected, query
        assert (await tf.sql(LEGIT)).rows == expected
        assert tf.sql_engine.retries == 0
    assert archive(store) == before
    after = sorted(p for p in tmp_path.rglob("*") if "read.lease" not in str(p))
    assert [p for p in after if p not in files_before] == []


def test_the_check_allows_what_analysts_write():
    checker = guard.Checker()
    try:
        for query in [
            "SELECT * FROM history WHERE workflow_id = ? ORDER BY event_id",
            "WITH t AS (SELECT workflow_type, count(*) n FROM workflows GROUP BY 1) "
            "SELECT * FROM t WHERE n > 1",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
            "SELECT * FROM r",
            "SELECT w.workflow_id, count(h.event_id) FROM workflows w JOIN history h "
            "USING (workflow_id) GROUP BY ALL",
            "SELECT workflow_id, row_number() OVER (PARTITION BY workflow_type ORDER BY "
            "created_at) FROM workflows QUALIFY row_number() OVER () < 10",
            "SELECT json_extract(payload, '$.result') FROM history LIMIT 3",
            "SELECT * FROM range(3) t(i), unnest([1, 2]) u(j)",
            "SELECT list_transform([1, 2], x -> x + 1), regexp_matches('a', 'a')",
            "DESCRIBE history",
            "SUMMARIZE SELECT * FROM workflows",
            "VALUES (1, 'a'), (2, 'b')",
            "FROM cold_history SELECT count(*)",
            "SELECT * FROM hot_workflows UNION ALL SELECT * FROM warm_workflows",
            "SELECT * FROM history TABLESAMPLE 10%",
            "SELECT EXISTS (SELECT 1 FROM workflows WHERE status = 'failed')",
            "SELECT lag(event_type) OVER (PARTITION BY workflow_id ORDER BY event_id) FROM history",
        ]:
            checker.check(query)
        for query in [*PROBES, *statements_against("/tmp/x")]:
            with pytest.raises(InvalidArgument, match=r"^SQL refused"):
                checker.check(query)
    finally:
        checker.close()


def test_the_sandbox_alone_opens_no_file_but_those_allowed(tmp_path: Path):
    """Without the check: the locked sandbox refuses every file, and writes nothing."""
    victim = tmp_path / "v.parquet"
    duckdb.sql("COPY (SELECT 7 AS a) TO '" + str(victim) + "' (FORMAT parquet)")
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    con = worker.sandbox(256 * 2**20)
    worker.lock(con, [])  # how an unfenced worker locks: no file at all
    for query in [
        f"COPY (SELECT 1 AS a) TO '{victim}' (FORMAT parquet)",
        f"WITH x AS (COPY (SELECT 1 AS a) TO '{victim}' (FORMAT parquet, USE_TMP_FILE false)) "
        "SELECT * FROM x",
        f"SELECT * FROM read_parquet('{victim}')",
        f"COPY (SELECT 1) TO '{tmp_path / 'new.csv'}'",
        "SET enable_external_access = true",
    ]:
        with pytest.raises(duckdb.Error):
            con.execute(query).fetchall()
    con.close()
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.parquet"]


@pytest.mark.skipif(not fence.supported(), reason="the kernel fence is Linux x86-64/arm64 only")
def test_the_fence_alone_stops_every_write(tmp_path: Path):
    """Without the check, with the file allowed by name: the fenced process cannot write it."""
    victim = tmp_path / "v.parquet"
    duckdb.sql("COPY (SELECT 7 AS a) TO '" + str(victim) + "' (FORMAT parquet)")
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    script = textwrap.dedent(
        f"""
        import errno, os, sys
        import duckdb
        from tierflow.tiering.sql import fence, worker
        victim = {str(victim)!r}
        assert fence.install()
        con = worker.sandbox(256 * 2**20)
        worker.lock(con, [victim])
        assert con.execute("SELECT a FROM read_parquet('" + victim + "')").fetchall() == [(7,)]
        for q in [
            "COPY (SELECT 1 AS a) TO '" + victim + "' (FORMAT parquet, USE_TMP_FILE false)",
            "WITH x AS (COPY (SELECT 1 AS a) TO '" + victim + "' (FORMAT parquet, "
            "USE_TMP_FILE false)) SELECT * FROM x",
        ]:
            try:
                con.execute(q).fetchall()
            except duckdb.Error:
                continue
            sys.exit("wrote: " + q)
        for act in [
            lambda: open(victim, "r+b"),
            lambda: open(victim + ".new", "wb"),
            lambda: os.unlink(victim),
            lambda: os.rename(victim, victim + ".x"),
            lambda: os.truncate(victim, 0),
            lambda: os.mkdir(victim + ".d"),
            lambda: os.chmod(victim, 0o777),
            lambda: os.symlink(victim, victim + ".l"),
        ]:
            try:
                act()
            except PermissionError:
                continue
            sys.exit("not stopped")
        print(open(victim, "rb").read(4).decode())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PAR1"
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.parquet"]


async def test_time_limits_hold_and_the_next_query_works(tmp_path: Path):
    async with Tierflow(tmp_path / "d", ALL) as tf:
        await finished(tf, 0, 4)
        await paused(tf, 2)
        expected = (await tf.sql(LEGIT)).rows
        assert len(NESTED) > 900_000
        for query, limit in [
            (NESTED, "1GB"),
            ("SELECT list_sum(range(400000000))", "1GB"),
            ("SELECT length(repeat('x', 2000000000))", "1GB"),
            # 1.2 GB in one list: DuckDB does not look at interrupts inside it.
            ("SELECT list_sum(range(150000000))", "6GB"),
            ("SELECT count(*) FROM range(10000000000000) t(a) WHERE a % 7 = 3", "1GB"),
        ]:
            t0 = time.monotonic()
            with pytest.raises(InvalidArgument):  # QueryTimeout, or refused for its memory
                await tf.sql(query, timeout=1.5, memory_limit=limit)
            assert time.monotonic() - t0 < 2.5, query[:60]
            assert (await tf.sql(LEGIT)).rows == expected
        t0 = time.monotonic()
        with pytest.raises(QueryTimeout):
            await tf.sql("SELECT list_sum(range(150000000))", timeout=0.5, memory_limit="6GB")
        assert time.monotonic() - t0 < 1.5


MEMORY_APP = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    from tierflow import InvalidArgument, Tierflow
    from tierflow.tiering.sql import template

    async def main():
        async with Tierflow(sys.argv[1], []) as tf:
            query = open(sys.argv[2]).read()
            try:
                r = await tf.sql(query, timeout=60, memory_limit="512MB")
                out = {"rows": len(r.rows), "truncated": r.truncated,
                       "bytes": r.to_arrow().nbytes}
            except InvalidArgument as exc:
                out = {"error": str(exc)[:200]}
        # The worker is the template's child: stopping the template reaps both, so the
        # worker's peak reaches this process's RUSAGE_CHILDREN.
        template.stop()
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out["self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT list_sum(range(400000000))",
        "SELECT length(repeat('x', 3000000000))",
        "SELECT sum(length(s)) FROM (SELECT repeat('x', i % 1000 * 1000) s FROM range(3000000) "
        "t(i) ORDER BY s)",
        "SELECT repeat('x', 1000) AS s FROM range(1200000)",  # a 1.2 GB result
        NESTED,
    ],
    ids=["list", "string", "sort", "result", "nested"],
)
def test_memory_limit_holds_in_a_subprocess(tmp_path: Path, query: str):
    import json

    text = tmp_path / "query.sql"  # a file: one argument may not exceed 128 KB
    text.write_text(query)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_APP, str(tmp_path / "d"), str(text)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # The worker may grow by the limit (512 MB) from its own ~150 MB, plus 64 MB of slack.
    assert out["peak_mb"] < 512 + 320, out
    if "error" in out:
        assert "memory limit" in out["error"] or "too large" in out["error"], out
    elif "range(1200000)" in query:  # the result: cut at the byte limit, never whole here
        assert out["truncated"] and out["bytes"] <= 256 * 2**20, out
        assert out["self_mb"] < 256 + 400, out
    else:
        raise AssertionError(out)


async def test_a_failing_query_runs_once(make_store, tmp_path: Path):
    store = make_store()
    policy = TieringPolicy(min_age=0)
    async with Tierflow(tmp_path / "d", ALL, warm_store=store, tiering=policy) as tf:
        await finished(tf, 0, 6)
        await tf.tier(now=time.time() + 60, to="warm")
        fails = (
            "SELECT CASE WHEN i < 150000 THEN i ELSE error('boom') END AS v FROM range(200000) t(i)"
        )
        # Once: the engine counts every rerun of a query, and none happens. No row limit:
        # with the default (100,000 rows) DuckDB may stop before it reaches the failing row.
        for stream in (False, True):
            with pytest.raises(InvalidArgument, match="boom"):
                result = await tf.sql(fails, stream=stream, timeout=10, limit=None)
                for _ in result.batches():
                    pass
            assert tf.sql_engine.retries == 0
        # A corrupt archive file is not "data moved": one StorageError, no retry.
        key = next(k for k, _ in store.list("") if k.endswith(".parquet") and "history" in k)
        good = store.get(key)
        store.put(key, b"PAR1" + b"\0" * 64 + b"PAR1")
        try:
            for stream in (False, True):
                with pytest.raises((StorageError, InvalidArgument)) as info:
                    result = await tf.sql("SELECT count(*) FROM warm_history", stream=stream)
                    for _ in result.batches():
                        pass
                assert "moved" not in str(info.value)
                assert tf.sql_engine.retries == 0
        finally:
            store.put(key, good)
        assert tf.sql_engine.retries == 0
        assert (await tf.sql("SELECT count(*) FROM warm_workflows")).rows == [(6,)]


async def test_values_python_cannot_hold_come_back_as_text(tmp_path: Path):
    async with Tierflow(tmp_path / "d", ALL) as tf:
        (row,) = (
            await tf.sql(
                "SELECT 'infinity'::TIMESTAMP AS t, "
                "170141183460469231731687303715884105727::HUGEINT AS h, DATE '294247-01-10' AS d"
            )
        ).rows
        assert row[0] == "infinity" or isinstance(row[0], str)
        assert int(row[1]) == 170141183460469231731687303715884105727
        for bad in ["9" * 5000, 2**70, "-1", "not a time"]:
            with pytest.raises(InvalidArgument, match="as_of"):
                await tf.sql("SELECT 1", as_of=bad)
        with pytest.raises(InvalidArgument):
            await tf.sql("SELECT ?", [object()])
        for bad in [
            {"limit": -1},
            {"max_bytes": 0},
            {"timeout": 0},
            {"timeout": float("nan")},
            {"memory_limit": "lots"},
            {"memory_limit": "1KB"},
        ]:
            with pytest.raises(InvalidArgument):
                await tf.sql("SELECT 1", **bad)
        assert (await tf.sql("SELECT 1", limit=None, max_bytes=None, timeout=None)).rows == [(1,)]


@pytest.mark.parametrize("shard", [0, 1])
def test_the_cli_never_aborts(tmp_path: Path, shard: int):
    """100 refused queries in two shards, each its own `tierflow sql` process: exit code 2.

    The abort this guards against (SIGABRT, rc 134, about once in 10-20 runs) came from a
    sandbox thread still opening a connection at interpreter exit, so a quarter of the runs
    open the data directory and are refused by the SQL worker; the rest are refused by their
    statement type before anything is opened. Eight run in a fresh interpreter (how a user's
    shell starts it); the rest are forked from the warm test zygote, whose children exit the
    same way at a fraction of the CPU, so every statement kind runs several times.
    """
    data = tmp_path / "d"
    by_worker = [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        "SELECT current_setting('allowed_paths')",
        f"SELECT * FROM read_parquet('{tmp_path / 'x.parquet'}')",
    ]
    by_kind = [
        "DROP VIEW workflows",
        "DELETE FROM history",
        "UPDATE workflows SET status = 'x'",
        "INSERT INTO history SELECT * FROM history",
        "DETACH memory",
        "LOAD httpfs",
        "PRAGMA version",
        "CALL pragma_version()",
        "CHECKPOINT",
        "EXPLAIN SELECT 1",
        f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'",
        "UPDATE EXTENSIONS",
        "SET threads = 1",
        "ATTACH 'x.db'",
        "INSTALL httpfs",
        "SELECT 1; SELECT 2",
        f"EXPORT DATABASE '{tmp_path}'",
        "CREATE TABLE t (a INT)",
    ]
    fresh = by_worker + by_kind[:4]
    forked = [
        by_worker[(i // 4) % 4] if i % 4 == 0 else by_kind[i % len(by_kind)] for i in range(92)
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def argv(query: str) -> list[str]:
        return ["sql", query, "--data-dir", str(data)]

    def in_fresh(query: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "tierflow.cli", *argv(query)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
        )
        return done.returncode, done.stderr

    def in_fork(query: str) -> tuple[int, str]:
        done = procs.run("tierflow.cli", *argv(query), env=env)
        return done.returncode, done.stderr

    # Two shards of 50 runs, so the suite's workers share the 100 instead of one running all.
    # (Halves of the forked list, not every other run: every fourth one goes to the worker.)
    fresh, forked = fresh[shard::2], forked[46 * shard : 46 * (shard + 1)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(in_fresh, fresh)) + list(pool.map(in_fork, forked))
    assert len(results) == 50
    assert [rc for rc, _ in results] == [2] * 50, [r for r in results if r[0] != 2][:3]
    assert all("refused" in err for _, err in results)
    assert not (tmp_path / "x.csv").exists()


async def test_an_abandoned_stream_frees_its_worker_and_lease(tmp_path: Path):
    from tierflow.tiering.leases import ReadLeases

    data = tmp_path / "d"
    async with Tierflow(data, ALL) as tf:
        await finished(tf, 0, 3)
        expected = (await tf.sql(LEGIT)).rows
        result = await tf.sql("SELECT * FROM range(50000000) t(i)", stream=True, limit=None)
        batches = result.batches()
        assert next(batches).num_rows > 0
        with ReadLeases(data).exclusive() as free:
            assert not free  # the stream still reads its cut
        result.close()  # stops the worker mid-stream
        with ReadLeases(data).exclusive() as free:
            assert free
        assert (await tf.sql(LEGIT)).rows == expected
        assert (await tf.sql("SELECT count(*) FROM range(1000)")).rows == [(1000,)]
