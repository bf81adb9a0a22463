"""Reading the cold tables without tierflow, from a new process, with a wrong catalog or store,
and the per-type ``cold_after`` policy; on file:// and on a moto S3 server."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from tierflow import StorageError, Tierflow
from tierflow.cold.reader import fs_path
from tierflow.tiering.policy import TieringPolicy, TypePolicy
from tierflow.warm.storage import ObjectStore, StorageSettings

from tests.tiering import cold_app
from tests.tiering.cold_app import POLICY
from tests.tiering.test_cold_crash import (
    assert_each_row_once,
    assert_summaries_name_the_batches,
    last_json,
    prepare,
    run_app,
    warm_batches_in_store,
)
from tests.tiering.test_tiering import _env_for, assert_readable_exactly_once
from tests.tiering.tier_app import LATER, WORKFLOWS

pytestmark = pytest.mark.timeout(120)

JSON_COLUMNS = {"input", "result", "error", "attributes", "payload"}
DAY = 86400.0


async def all_cold(store: ObjectStore, data: Path, n: int, **kw: Any) -> tuple[list[str], Any]:
    """``n`` workflows, tiered to warm, then moved into cold in one pass."""
    ids, before, batches = await prepare(store, data, n)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY, **kw) as tf:
        report = await tf.tier(now=time.time() + LATER, to="cold")
        assert report.cold is not None and sorted(report.cold.batches) == sorted(batches)
        assert tf.index.count_by_tier() == {"cold": n}
    return ids, before


def plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raw cold rows the way tierflow's models hold them: JSON decoded, no storage columns."""
    out = []
    for row in rows:
        r = {k: v for k, v in row.items() if k not in ("finished_date", "batch_id", "tier")}
        for k in JSON_COLUMNS & r.keys():
            r[k] = None if r[k] is None else json.loads(r[k])
        if "attributes" in r and r["attributes"] is None:
            r["attributes"] = {}
        for k, v in r.items():
            assert not isinstance(v, datetime) or v.tzinfo is not None, (k, v)
        out.append(r)
    return out


def by_workflow(workflows: pa.Table, history: pa.Table) -> dict[str, Any]:
    """What a reader returned, per workflow id: its row and its events in order."""
    out: dict[str, Any] = {}
    for row in plain(workflows.to_pylist()):
        assert row["workflow_id"] not in out, row["workflow_id"]
        out[row["workflow_id"]] = {"info": row, "history": []}
    events = defaultdict(list)
    for ev in plain(history.to_pylist()):
        events[ev["workflow_id"]].append(ev)
    for wid, evs in events.items():
        out[wid]["history"] = sorted(evs, key=lambda e: e["event_id"])
    return out


async def tierflow_view(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    """What tierflow returns for every id (``describe`` says cold)."""
    out = {}
    for wid in ids:
        info = await tf.describe(wid)
        assert info.tier == "cold"
        row = dataclasses.asdict(info)
        row.pop("tier")
        history = [dataclasses.asdict(e) for e in await tf.history(wid)]
        out[wid] = {"info": row, "history": history}
    return out


def raw_filesystem(store: ObjectStore, s3: Any) -> pafs.FileSystem:
    """A pyarrow filesystem for the store built here, not by tierflow."""
    if store.url.startswith("file:"):
        return pafs.LocalFileSystem()
    host = s3.endpoint.removeprefix("http://")
    return pafs.S3FileSystem(
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region=s3.region,
        endpoint_override=host,
        scheme="http",
    )


def planned(table: Any) -> list[str]:
    return [task.file.file_path for task in table.scan().plan_files()]


# -- 4. Independent readers return what tierflow returns --------------------------------


async def test_pyiceberg_and_pyarrow_read_what_tierflow_reads(
    make_store, tmp_path: Path, request, backend: str
):
    store = make_store()
    data = tmp_path / "data"
    ids, _ = await all_cold(store, data, 24)
    s3 = request.getfixturevalue("s3_server") if backend == "s3" else None
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        expected = await tierflow_view(tf, ids)
        wf_table, hist_table = tf.cold.table("workflows"), tf.cold.table("history")
        # pyiceberg's own scan.
        scanned = by_workflow(wf_table.scan().to_arrow(), hist_table.scan().to_arrow())
        assert scanned == expected
        # Plain pyarrow over exactly the files the current snapshot lists.
        fs = raw_filesystem(store, s3)
        files = {d: planned(t) for d, t in (("workflows", wf_table), ("history", hist_table))}
        read = {
            d: pa.concat_tables(pq.read_table(fs_path(f), filesystem=fs) for f in fs_list)
            for d, fs_list in files.items()
        }
        assert by_workflow(read["workflows"], read["history"]) == expected
        assert_each_row_once(tf, {"snapshot": {w: expected[w] for w in ids}})
        raw = read["workflows"].to_pylist()
        index = {r.workflow_id: r.batch_id for r in map(tf.index.get, ids) if r is not None}
        assert {r["workflow_id"]: r["batch_id"] for r in raw} == index
        assert {r["tier"] for r in raw} == {"cold"}


async def test_duckdb_reads_what_tierflow_reads(tmp_path: Path, monkeypatch):
    duckdb = pytest.importorskip(
        "duckdb",
        reason="duckdb is not installed in this environment (not a tierflow dependency); "
        "install duckdb (2.x, with pytz for TIMESTAMPTZ) to run this reader check",
    )
    pytest.importorskip("pytz", reason="DuckDB returns TIMESTAMPTZ to Python only with pytz")
    from tests.warm.conftest import isolate_aws_env

    isolate_aws_env(monkeypatch)
    store = ObjectStore(StorageSettings(url=(tmp_path / "store").as_uri()))
    data = tmp_path / "data"
    ids, _ = await all_cold(store, data, 24)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        expected = await tierflow_view(tf, ids)
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        got = {}
        for dataset in ("workflows", "history"):
            files = [fs_path(f) for f in planned(tf.cold.table(dataset))]
            got[dataset] = con.sql("SELECT * FROM read_parquet(?)", params=[files]).to_arrow_table()
        con.close()
    assert by_workflow(got["workflows"], got["history"]) == expected


# -- 5. A new process, a wrong catalog, an unusable store ------------------------------


async def test_new_process_finds_the_tables_through_the_catalog(
    make_store, tmp_path: Path, monkeypatch
):
    store = make_store()
    data = tmp_path / "data"
    catalog = tmp_path / "catalogs" / "archive.sqlite"
    catalog.parent.mkdir()
    monkeypatch.setenv("TIERFLOW_CATALOG_URL", f"sqlite:///{catalog}")
    ids, before = await all_cold(store, data, 12)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        here = json.loads(json.dumps(await cold_app.read(tf, ids)))
    assert {w: r["info"]["tier"] for w, r in here.items()} == dict.fromkeys(ids, "cold")
    env = {**_env_for(store), "TIERFLOW_CATALOG_URL": f"sqlite:///{catalog}"}
    got = last_json(run_app("read", data, env, *ids))
    assert got == here
    snapshot = {w: {"info": r["info"], "history": r["history"]} for w, r in got.items()}
    for w in snapshot.values():
        w["info"].pop("tier")
    assert snapshot == json.loads(json.dumps(before["snapshot"]))


def unmoved(data: Path, store: ObjectStore, warm_keys: list[tuple[str, int]], n: int) -> None:
    """Nothing moved: the index says warm, no commit is recorded, the warm files are intact."""
    import sqlite3

    conn = sqlite3.connect(data / "hot" / "index.sqlite")
    try:
        tiers = dict(conn.execute("SELECT tier, count(*) FROM instances GROUP BY tier"))
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        commits = (
            conn.execute("SELECT count(*) FROM cold_commits").fetchone()[0]
            if "cold_commits" in tables
            else 0
        )
    finally:
        conn.close()
    assert tiers == {"warm": n}
    assert commits == 0
    assert store.list("warm", unfinished=True) == warm_keys


async def test_missing_catalog_directory_fails_before_anything_moves(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    ids, before, _ = await prepare(store, data, 9)
    warm_keys = store.list("warm", unfinished=True)
    missing = tmp_path / "no-such-dir" / "catalog.sqlite"
    url = f"sqlite:///{missing}"
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY, catalog_url=url) as tf:
        with pytest.raises(StorageError) as err:
            await tf.tier(now=time.time() + LATER, to="cold")
        assert str(missing.parent) in str(err.value)
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": 9}
    unmoved(data, store, warm_keys, 9)
    assert store.list("cold", unfinished=True) == []
    assert not missing.parent.exists()


async def test_empty_new_catalog_fails_before_anything_moves(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    first, _ = await all_cold(store, data, 6)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        for i in range(6):
            await tf.run(WORKFLOWS[i % 3], i, workflow_id=f"later-{i}")
        await tf.tier(now=time.time() + LATER, to="warm")
    warm_keys = store.list("warm", unfinished=True)
    cold_keys = store.list("cold", unfinished=True)
    empty = tmp_path / "other" / "catalog.sqlite"
    empty.parent.mkdir()
    url = f"sqlite:///{empty}"
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY, catalog_url=url) as tf:
        # Cold reads say where the archive is not.
        with pytest.raises(StorageError, match="not in the Iceberg catalog"):
            await tf.describe(first[0])
        with pytest.raises(StorageError, match="cold commits already wrote"):
            await tf.tier(now=time.time() + LATER, to="cold")
        assert tf.index.count_by_tier() == {"cold": 6, "warm": 6}
    assert store.list("warm", unfinished=True) == warm_keys
    assert store.list("cold", unfinished=True) == cold_keys
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        assert (await tf.describe(first[0])).tier == "cold"


async def test_cold_reads_with_an_empty_catalog_fail_clearly(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    ids, _ = await all_cold(store, data, 3)
    empty = tmp_path / "other" / "catalog.sqlite"
    empty.parent.mkdir()
    async with Tierflow(
        data, WORKFLOWS, warm_store=store, tiering=POLICY, catalog_url=f"sqlite:///{empty}"
    ) as tf:
        for wid in ids:
            with pytest.raises(StorageError, match="TIERFLOW_CATALOG_URL"):
                await tf.history(wid)


async def test_unusable_store_fails_before_anything_moves(
    make_store, tmp_path: Path, backend: str, request
):
    store = make_store()
    data = tmp_path / "data"
    ids, before, _ = await prepare(store, data, 6)
    warm_keys = store.list("warm", unfinished=True)
    if backend == "file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        bad = {"not-a-directory": ObjectStore.from_url((blocker / "lake").as_uri())}
    else:
        s3 = request.getfixturevalue("s3_server")
        keys = {"access_key": s3.access_key, "secret_key": s3.secret_key, "region": s3.region}
        bad = {
            "closed-port": ObjectStore.from_url(store.url, endpoint="http://127.0.0.1:9", **keys),
            "missing-bucket": ObjectStore.from_url(
                "s3://no-such-bucket-cold/p", endpoint=s3.endpoint, **keys
            ),
        }
    for case, wrong in bad.items():
        async with Tierflow(data, WORKFLOWS, warm_store=wrong, tiering=POLICY) as tf:
            with pytest.raises(StorageError) as err:
                await tf.tier(now=time.time() + LATER, to="cold")
            assert wrong.url.split("/")[2] in str(err.value) or "127.0.0.1:9" in str(err.value), (
                case,
                str(err.value),
            )
        unmoved(data, store, warm_keys, 6)
    assert store.list("cold", unfinished=True) == []
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": 6}


# -- 6. Per-type cold_after ------------------------------------------------------------


async def test_per_type_cold_after_keeps_batches_holding_beta_warm(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    alpha, beta, gamma = WORKFLOWS
    policy = TieringPolicy(
        min_age=0, cold_after="1h", per_type={"beta": TypePolicy(cold_after="30d")}
    )

    async def warm_batch(tf: Tierflow, runs: list[tuple[Any, str]]) -> str:
        for i, (wf, wid) in enumerate(runs):
            await tf.run(wf, i, workflow_id=wid)
        report = await tf.tier(now=time.time() + LATER, to="warm")
        [batch] = report.batches
        return batch

    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=policy) as tf:
        no_beta = await warm_batch(tf, [(alpha, "a-1"), (gamma, "g-1"), (alpha, "a-2")])
        only_beta = await warm_batch(tf, [(beta, "b-1"), (beta, "b-2")])
        mixed = await warm_batch(tf, [(alpha, "a-3"), (beta, "b-3"), (gamma, "g-3")])
        ids = ["a-1", "g-1", "a-2", "b-1", "b-2", "a-3", "b-3", "g-3"]
        histories = {w: await tf.history(w) for w in ids}

        async def tiers() -> dict[str, str]:
            return {w: (await tf.describe(w)).tier for w in ids}

        first = await tf.tier(now=time.time() + LATER, to="cold")
        assert first.cold is not None and first.cold.batches == [no_beta]
        assert await tiers() == {w: "cold" if w in ("a-1", "g-1", "a-2") else "warm" for w in ids}
        assert warm_batches_in_store(store) == {only_beta, mixed}
        almost = await tf.tier(now=time.time() + 29 * DAY, to="cold")
        assert almost.cold is not None and almost.cold.batches == []
        later = await tf.tier(now=time.time() + 31 * DAY, to="cold")
        assert later.cold is not None and sorted(later.cold.batches) == sorted([only_beta, mixed])
        assert await tiers() == dict.fromkeys(ids, "cold")
        assert {w: await tf.history(w) for w in ids} == histories
        assert_summaries_name_the_batches(tf, {no_beta, only_beta, mixed})
    assert store.list("warm") == []
