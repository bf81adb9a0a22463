"""Tiering promises of the README ("Moving between tiers"), each checked on real components.

* A pass verifies what it wrote before it commits: a file corrupted after its write aborts
  the pass with hot untouched, and the next clean pass moves everything exactly once.
* Tiering never moves events a registered subscriber has not acknowledged.
* A kill in the middle of writing an object leaves something the next pass collects, and
  readers never see it.
* On S3, the data objects are stored before the ledger commit and the manifest after it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from tierflow import StorageError, Tierflow
from tierflow.tiering.warm_ledger import WarmLedger
from tierflow.warm.storage import ObjectStore, StorageSettings, WriteBatch
from tierflow.warm.writer import manifest_key

from tests import procs
from tests.conftest import wait_for
from tests.tiering.test_tiering import (
    _env_for,
    _run,
    assert_manifests_list_the_files,
    assert_readable_exactly_once,
    hot_files,
    readable,
)
from tests.tiering.tier_app import LATER, WORKFLOWS, alpha, populate

pytestmark = pytest.mark.timeout(180)


def warm_rows(store: ObjectStore, dataset: str) -> list[dict[str, Any]]:
    """Every row of every Parquet object of ``dataset`` in the store (committed or not)."""
    rows: list[dict[str, Any]] = []
    for key, _ in store.list(f"warm/{dataset}"):
        with store.open_input(key) as f:
            rows.extend(pq.read_table(f, columns=["workflow_id"]).to_pylist())
    return rows


# -- verify before commit ------------------------------------------------------------------


class CorruptingStore(ObjectStore):
    """A store whose history Parquet files get one byte flipped right after they are written.

    What a bad disk, a buggy S3-compatible gateway or a concurrent writer could do between
    the write and the read-back; the size stays the same, so only the content check sees it.
    """

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__(settings)
        self.armed = True
        self.written: list[str] = []
        self.corrupted: list[str] = []
        self._raw = ObjectStore(settings)

    def batch(self) -> WriteBatch:
        return _CorruptingBatch(self)


class _CorruptingBatch(WriteBatch):
    def __init__(self, owner: CorruptingStore) -> None:
        super().__init__(owner)
        self.owner = owner

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        super().put(key, data, sha256=sha256)
        owner = self.owner
        if not (owner.armed and key.endswith(".parquet")):
            return
        owner.written.append(key)
        if key.startswith("warm/history/"):
            flipped = bytearray(memoryview(data).cast("B"))
            flipped[len(flipped) // 2] ^= 0xFF
            owner._raw.put(key, bytes(flipped))
            owner.corrupted.append(key)


async def test_corrupt_file_aborts_the_pass_before_the_commit(make_store, tmp_path: Path):
    store = CorruptingStore(make_store().settings)
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        ids = await populate(tf, 30)
        before = await readable(tf, ids)
        with pytest.raises(StorageError) as err:
            await tf.tier(now=time.time() + LATER)
        [bad] = store.corrupted
        assert bad in str(err.value) and "sha256" in str(err.value)
        # Hot untouched: every instance hot, its file in place, reads as before.
        assert await assert_readable_exactly_once(tf, ids, before) == {"hot": len(ids)}
        assert all(tf.engine.instance_path(w).exists() for w in ids)
        status = await tf.tiering_status()
        [failed] = status.batches
        assert (failed.state, failed.workflows, failed.events) == ("writing", None, None)
        assert status.instances == {"hot": len(ids)} and status.storage_url == store.url
        assert json.loads(json.dumps(status.to_dict())) == {
            "storage_url": store.url,
            "instances": {"hot": len(ids)},
            "batches": [
                {"batch_id": failed.batch_id, "state": "writing", "workflows": None, "events": None}
            ],
        }
        assert store.list("warm/manifests") == []

        store.armed = False
        report = await tf.tier(now=time.time() + LATER)
        assert report.recovered_batches == [failed.batch_id]
        assert report.garbage_collected == len(store.written) >= 2
        assert report.workflows_moved == len(ids) and report.skipped == []
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": len(ids)}
        assert (await tf.tier(now=time.time() + LATER)).workflows_moved == 0
        states = {b.batch_id: b.state for b in (await tf.tiering_status()).batches}
    assert states == {failed.batch_id: "aborted", report.batches[0]: "done"}
    assert hot_files(data) == []
    # Exactly once in storage too: the aborted batch's objects are gone.
    assert sorted(r["workflow_id"] for r in warm_rows(store, "workflows")) == sorted(ids)
    assert_manifests_list_the_files(store, set(report.batches))
    assert [k for k, _ in store.list("warm", unfinished=True) if "tmp" in k] == []


# -- subscribers -----------------------------------------------------------------------


async def acknowledged(tf: Tierflow, subscriber: str, workflow_id: str) -> bool:
    """True once ``subscriber``'s saved cursor covers every event of the instance."""
    events = len(await tf.history(workflow_id))
    return tf.engine.stream.load_cursor(subscriber, workflow_id) == events


async def test_events_a_subscriber_holds_keep_instances_hot(tmp_path: Path, uid):
    name = uid("audit")
    gate = asyncio.Event()
    delivered: list[dict[str, Any]] = []

    async def deliver(events: list[dict[str, Any]]) -> None:
        delivered.extend(events)
        await gate.wait()  # the subscriber is busy: nothing is acknowledged

    async with Tierflow(tmp_path / "data", WORKFLOWS) as tf:
        tf.subscribe(name, deliver, batch_ms=0)
        ids = await populate(tf, 6)
        before = await readable(tf, ids)

        async def blocked() -> bool:
            return bool(delivered)

        await wait_for(blocked)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == 0
        assert await assert_readable_exactly_once(tf, ids, before) == {"hot": len(ids)}
        assert all(tf.engine.instance_path(w).exists() for w in ids)

        gate.set()

        async def all_acknowledged() -> bool:
            return all([await acknowledged(tf, name, w) for w in ids])

        await wait_for(all_acknowledged)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == len(ids)
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": len(ids)}


async def test_a_partly_acknowledged_instance_stays_hot_alone(tmp_path: Path, uid):
    name = uid("billing")
    held = uid("held")
    upto = 2  # the subscriber takes the held instance's events up to this one
    state = {"released": False, "refused": 0}

    def deliver(events: list[dict[str, Any]]) -> None:
        for e in events:
            if e["workflow_id"] == held and e["event_id"] > upto and not state["released"]:
                state["refused"] += 1
                raise RuntimeError("not yet")  # retried later; the cursor stays put

    async with Tierflow(tmp_path / "data", WORKFLOWS) as tf:
        tf.subscribe(name, deliver, batch_size=1, batch_ms=0, max_backoff=0.1)
        others = await populate(tf, 6)

        async def others_acknowledged() -> bool:
            return all([await acknowledged(tf, name, w) for w in others])

        await wait_for(others_acknowledged)
        handle = await tf.run(alpha, 99, workflow_id=held)
        await handle.result(timeout=10)
        ids = [*others, held]
        before = await readable(tf, ids)
        assert len(await tf.history(held)) > upto

        async def partly_acknowledged() -> bool:
            cursor = tf.engine.stream.load_cursor(name, held)
            return cursor == upto and state["refused"] > 0

        await wait_for(partly_acknowledged)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == len(others)
        assert (await tf.describe(held)).tier == "hot"
        assert tf.engine.instance_path(held).exists()
        assert {(await tf.describe(w)).tier for w in others} == {"warm"}
        assert await assert_readable_exactly_once(tf, ids, before) == {
            "warm": len(others),
            "hot": 1,
        }

        state["released"] = True

        async def held_acknowledged() -> bool:
            return await acknowledged(tf, name, held)

        await wait_for(held_acknowledged)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == 1
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": len(ids)}


# -- kills inside an object write --------------------------------------------------------


async def _populated(data: Path, store: ObjectStore, n: int) -> tuple[list[str], dict[str, Any]]:
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        ids = await populate(tf, n)
        return ids, await readable(tf, ids)


async def test_mid_write_kill_leaves_a_half_written_batch_that_the_next_pass_collects(
    tmp_path: Path,
):
    store = ObjectStore(StorageSettings(url=(tmp_path / "lake").as_uri()))
    data = tmp_path / "data"
    ids, before = await _populated(data, store, 30)
    env = _env_for(store)
    killed = _run("tier", data, {**env, "TIERFLOW_CRASH_AT": "mid-write"})
    assert killed.returncode == -9, killed.stderr
    # The kill came after the batch's first file was stored and before the rest: a data
    # object without a manifest, which no reader sees and the next pass deletes.
    left = [k for k, _ in store.list("warm", unfinished=True)]
    assert len(left) == 1 and left[0].endswith(".parquet"), left
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"hot": len(ids)}
    rerun = _run("tier", data, env)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report["garbage_collected"] == 1 and report["workflows_moved"] == len(ids)
    assert left[0] not in {k for k, _ in store.list("warm", unfinished=True)}
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": len(ids)}


@pytest.mark.timeout(300)
async def test_kill_inside_an_object_write_then_rerun(make_store, tmp_path: Path):
    store = make_store()
    data = tmp_path / "data"
    ids, before = await _populated(data, store, 30)
    env = _env_for(store)
    # Killed while storing the batch's second Parquet file: the first is complete.
    killed = _run("tier", data, {**env, "TIER_APP_KILL_IN_PUT": "2"})
    assert killed.returncode == -9, killed.stderr
    left = store.list("warm", unfinished=True)
    complete = [k for k, _ in left if k.endswith(".parquet")]
    partial = [(k, n) for k, n in left if store.unfinished_target(k)]
    assert len(complete) == 1 and [k for k, _ in left if k not in complete] == [
        k for k, _ in partial
    ]
    if not store.settings.is_s3:
        [(tmp, size)] = partial
        target = store.unfinished_target(tmp)
        assert target is not None and target.endswith(".parquet") and target != complete[0]
        assert size > 0
    else:
        assert partial == []  # an interrupted PUT stores nothing
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"hot": len(ids)}
        [batch] = (await tf.tiering_status()).batches
    assert batch.state == "writing"
    assert store.list("warm/manifests") == []

    rerun = _run("tier", data, env)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout.splitlines()[-1])
    assert report["recovered_batches"] == [batch.batch_id]
    assert report["garbage_collected"] == len(left)
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": len(ids)}
    assert hot_files(data) == []
    assert_manifests_list_the_files(store, set(report["batches"]))
    assert [k for k, _ in store.list("warm", unfinished=True) if store.unfinished_target(k)] == []


# -- S3 ordering -------------------------------------------------------------------------


class RecordingStore(ObjectStore):
    """Logs when each S3 upload starts and ends, in one list with the ledger's commit."""

    def __init__(self, settings: StorageSettings, log: list[tuple[str, str]]) -> None:
        super().__init__(settings)
        self.log = log
        backend: Any = self._backend  # every S3 upload goes through its put
        real_put = backend.put

        def put(key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
            self.log.append(("put", key))
            real_put(key, data, sha256=sha256)
            self.log.append(("stored", key))

        backend.put = put


async def test_s3_objects_stored_before_the_commit_and_manifest_after(
    s3_server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    log: list[tuple[str, str]] = []
    real_commit = WarmLedger.commit

    def commit(self: WarmLedger, batch_id: str, *args: Any, **kw: Any) -> int:
        log.append(("commit", batch_id))
        moved = real_commit(self, batch_id, *args, **kw)
        log.append(("committed", batch_id))
        return moved

    monkeypatch.setattr(WarmLedger, "commit", commit)
    store = RecordingStore(
        StorageSettings(
            url=f"s3://{s3_bucket}/lake",
            endpoint=s3_server.endpoint,
            region=s3_server.region,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
        ),
        log,
    )
    async with Tierflow(tmp_path / "data", WORKFLOWS, warm_store=store) as tf:
        ids = await populate(tf, 30)
        report = await tf.tier(now=time.time() + LATER)
        assert report.workflows_moved == len(ids)
        [batch_id] = report.batches
        ledger_manifest = WarmLedger(tf.index).get(batch_id).manifest  # type: ignore[union-attr]
    start, end = log.index(("commit", batch_id)), log.index(("committed", batch_id))
    parquet = [k for k, _ in store.list("warm") if k.endswith(".parquet")]
    assert len(parquet) == report.files_written >= 2
    for key in parquet:
        assert log.index(("stored", key)) < start
    key = manifest_key(batch_id)
    assert log.index(("put", key)) > end
    # The manifest's content was in the committed ledger row; the object repeats it.
    assert ledger_manifest is not None and store.get(key) == ledger_manifest
    assert {f["key"] for f in json.loads(ledger_manifest)["files"]} == set(parquet)


# -- two passes at once ----------------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_two_tiering_processes_at_once_write_each_workflow_once(make_store, tmp_path: Path):
    """Two `tierflow tier` processes on one data directory never archive a workflow twice."""
    store = make_store()
    data = tmp_path / "data"
    ids, before = await _populated(data, store, 120)
    env = _env_for(store)
    children = [procs.popen("tests.tiering.tier_app", "tier", str(data), env=env) for _ in range(2)]
    reports = []
    for p in children:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["workflows_moved"] for r in reports) == len(ids)
    archived = [r["workflow_id"] for r in warm_rows(store, "workflows")]
    assert sorted(archived) == sorted(ids)  # each once, in one batch
    events = warm_rows(store, "history")
    assert len(events) == sum(len(b["history"]) for b in before["snapshot"].values())
    async with Tierflow(data, WORKFLOWS, warm_store=store) as tf:
        assert await assert_readable_exactly_once(tf, ids, before) == {"warm": len(ids)}
