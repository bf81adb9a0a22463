"""How instance files are made and written: batched spares, split sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from tierflow import WorkflowContext, workflow
from tierflow.hot import store
from tierflow.hot.durable_fs import sync_batch
from tierflow.hot.errors import StorageError
from tierflow.hot.records import EventRow
from tierflow.hot.spares import SparePool
from tierflow.hot.store import InstanceFile, read_for_archive

from tests.conftest import wait_closed


def upper(x: str) -> str:
    return x.upper()


@workflow
async def two_steps(ctx: WorkflowContext, x: str) -> list[str]:
    return [await ctx.step("a", upper, x), await ctx.step("b", upper, x + x)]


def _new_file(tmp_path: Path, name: str = "i.sqlite", durability: str = "full") -> InstanceFile:
    path = tmp_path / name
    path.write_bytes(store.template_image())
    return InstanceFile(path, InstanceFile.connect(path, durability), full=durability == "full")


def _row() -> tuple[dict[str, object], list[EventRow]]:
    row = {
        "workflow_id": "wf-1",
        "run_id": "r",
        "workflow_type": "t",
        "status": "running",
        "input": "null",
        "attributes": "{}",
        "created_at": 1,
    }
    return row, [EventRow("workflow.queued", 1), EventRow("workflow.started", 2)]


def test_closed_instance_reads_back_whole(tmp_path: Path) -> None:
    inst = _new_file(tmp_path)
    inst.use_split_sync()
    inst.deferred = _row()
    inst.commit(events=[EventRow("step.completed", 3, "a", 1, '"A"')], sync=False)
    inst.sync()
    inst.close()
    assert not Path(f"{inst.path}-wal").exists()  # checkpointed at close
    row, events = read_for_archive(inst.path)
    assert row["workflow_id"] == "wf-1"
    assert [e[1] for e in events] == ["workflow.queued", "workflow.started", "step.completed"]


def test_events_get_consecutive_ids_across_commits_of_any_size(tmp_path: Path) -> None:
    inst = _new_file(tmp_path)
    inst.deferred = _row()  # two events ride along with the first commit
    many = [EventRow("step.completed", 10 + i, f"s{i}", 1, f'"{i}"') for i in range(250)]
    assert inst.commit(events=many) == 252
    assert inst.commit(updates={"step_count": 250}) == 252  # no events: the last id stays
    assert inst.commit(events=[EventRow("workflow.completed", 999)]) == 253
    inst.close()
    _, events = read_for_archive(inst.path)
    assert [e[0] for e in events] == list(range(1, 254))
    assert [e[3] for e in events[2:252]] == [f"s{i}" for i in range(250)]  # in the given order
    assert events[-1][1] == "workflow.completed"


def test_split_sync_writes_at_normal_and_syncs_on_demand(tmp_path: Path) -> None:
    inst = _new_file(tmp_path)
    inst.use_split_sync()
    assert inst.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    inst.deferred = _row()
    assert inst.commit(sync=False) == 2
    inst.sync()  # fdatasync of the WAL (and its directory entry, once)
    assert inst.wal_durable
    # Outside writers keep full durability: commit() syncs by default.
    inst.commit(events=[EventRow("signal.received", 3)])
    inst.close()
    inst.sync()  # after close: nothing pending, no error
    assert InstanceFile.open(inst.path).load().last_event_id == 3


def test_normal_durability_never_splits(tmp_path: Path) -> None:
    inst = _new_file(tmp_path, durability="normal")
    inst.use_split_sync()
    assert not inst.split_sync
    inst.sync()  # a no-op
    inst.close()


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_spares_come_in_durable_batches_at_the_right_level(tmp_path: Path, durability: str) -> None:
    pool = SparePool(tmp_path / "instances", "1-abc", durability, size=8)
    try:
        spares = [pool.take() for _ in range(6)]
        for inst in spares:
            # FULL's guarantee comes from split sync: NORMAL writes, then fdatasync.
            assert inst.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
            assert inst.full == inst.split_sync == (durability == "full")
            assert inst.path.name.startswith("1-abc-")
            # Set by sqlite3.connect(timeout=): a writer waits for another's lock.
            assert inst.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
            # The WAL is started (header and a frame) inside the synced batch, so
            # an instance's first commit appends to it instead of starting it
            # (which costs two syncs on the event loop).
            wal = Path(f"{inst.path}-wal")
            assert wal.stat().st_size > 32
            header = wal.read_bytes()[:32]
            inst.use_split_sync()
            inst.deferred = _row()
            assert inst.commit(sync=False) == 2
            assert wal.read_bytes()[:32] == header
            assert inst.conn.execute("SELECT version FROM schema_version").fetchone()[0] == 1
        for inst in spares:
            inst.close()
    finally:
        pool.close()


@pytest.mark.parametrize("per_dir", [1, 8])  # per-file fsyncs, then one syncfs
def test_sync_batch_accepts_nested_new_files(tmp_path: Path, per_dir: int) -> None:
    files = []
    for sub in ("aa", "bb"):
        (tmp_path / sub).mkdir()
        for i in range(per_dir):
            f = tmp_path / sub / f"{i}.sqlite"
            f.write_bytes(b"x")
            files.append(f)
    sync_batch(tmp_path, files)
    sync_batch(tmp_path, [])
    assert all(f.read_bytes() == b"x" for f in files)


def test_sync_batch_file_by_file_also_syncs_new_directories(tmp_path, monkeypatch) -> None:
    # Power loss cannot be staged here, so this checks the order of syncs: every
    # file, then every directory from the deepest up to the root, whose entry
    # for a subdirectory made for this batch must reach the disk too.
    from tierflow.hot import durable_fs

    synced: list[Path] = []
    real = durable_fs._fsync_path
    monkeypatch.setattr(durable_fs, "_fsync_path", lambda p: (synced.append(p), real(p)))
    (tmp_path / "ab" / "cd").mkdir(parents=True)
    f = tmp_path / "ab" / "cd" / "i.sqlite"
    f.write_bytes(b"x")
    sync_batch(tmp_path, [f])
    assert synced == [f, tmp_path / "ab" / "cd", tmp_path / "ab", tmp_path]


def test_sync_batch_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sync_batch(tmp_path, [tmp_path / "gone.sqlite"])


async def test_engine_instances_read_back_after_close(make_tf, uid) -> None:
    tf = await make_tf([two_steps])
    wid = uid()
    h = await tf.run(two_steps, "x", workflow_id=wid)
    assert await h.result(timeout=10) == ["X", "XX"]
    path = tf.engine.instance_path(wid)
    await wait_closed(path)
    assert not Path(f"{path}-wal").exists()
    types = [e.event_type for e in await tf.history(wid)]
    assert types.count("step.completed") == 2 and types[-1] == "workflow.completed"


def test_spares_in_an_unwritable_place_fail_clearly_and_leave_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "instances"
    blocker.write_bytes(b"not a directory")
    pool = SparePool(blocker, "1-abc", "full", size=2)
    try:
        with pytest.raises(StorageError, match="cannot"):
            pool.make()
    finally:
        pool.close()
    assert blocker.read_bytes() == b"not a directory"
