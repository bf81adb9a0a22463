"""Index rebuild after a machine crash (issue 10 §2.6).

The index is a cache of the instance files, except for queue entries: after
a machine crash its last ``synchronous=NORMAL`` commits may be gone. A
restarted engine that finds a dead owner whose lock records an earlier boot
id rebuilds what the index lost from the instance files
(``Scheduler._reconcile_files``).

A real process fills the data directory and is SIGKILLed mid-step. The
"power loss" is then simulated on disk (index rows, or the whole index,
removed; or a row rolled back), and the "reboot" by giving the restarted
engine another kernel boot id than the one the dead owner's lock recorded.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from tierflow import Tierflow, WorkflowFailed
from tierflow.hot import recovery

from tests.conftest import wait_status
from tests.hot.crash_app import WORKFLOWS, OffsetClock, signal_taker
from tests.hot.test_promises_crash import crashed

FINISHED = ("done-1", "done-2", "failed-1")
ALL = (*FINISHED, "sleeping-1", "waiting-1", "crash-1")


@pytest.fixture
def another_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process runs after a reboot: its kernel boot id is not the dead owners'."""
    assert recovery.boot_id(), "this platform has no boot id"
    monkeypatch.setattr(recovery, "boot_id", lambda: "boot-after-the-crash")


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where steps of crash_app's workflows count their runs, in this process too."""
    path = tmp_path / "marks.txt"
    monkeypatch.setenv("CRASH_MARKS", str(path))
    monkeypatch.delenv("CRASH_BLOCK", raising=False)
    monkeypatch.delenv("CRASH_BLOCK_AT", raising=False)
    return path


def lose_rows(data: Path, ids: tuple[str, ...]) -> None:
    """The index lost these instances' rows (and their attributes)."""
    conn = sqlite3.connect(data / "hot" / "index.sqlite")
    try:
        marks = ",".join("?" * len(ids))
        with conn:
            n = conn.execute(f"DELETE FROM instances WHERE workflow_id IN ({marks})", ids).rowcount
            conn.execute(f"DELETE FROM attributes WHERE workflow_id IN ({marks})", ids)
        assert n == len(ids)
    finally:
        conn.close()


def lose_index(data: Path) -> None:
    """The whole index is gone."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data / 'hot' / 'index.sqlite'}{suffix}").unlink(missing_ok=True)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loss", ["rows", "index"])
async def test_rows_lost_in_a_machine_crash_are_rebuilt_from_instance_files(
    tmp_path: Path, marks: Path, another_boot: None, loss: str
):
    data = tmp_path / "data"
    # done-1/2 completed (with attributes), failed-1 failed, sleeping-1 paused on
    # a 1 h timer, waiting-1 paused on a signal, crash-1 killed mid-step.
    out = crashed("populate", data, env={"CRASH_MARKS": str(marks), "CRASH_BLOCK": "1"})
    before = json.loads(out.splitlines()[-1])
    # (waiting-1 and crash-1 run side by side: compare runs as multisets.)
    assert Counter(marks.read_text().split()) == Counter(
        ["double-1", "double-2", "busy", "s1", "s2"]
    )
    if loss == "rows":
        lose_rows(data, ALL)
    else:
        lose_index(data)

    # Two hours later, so the sleeper's timer is due.
    async with Tierflow(data, WORKFLOWS, clock=OffsetClock(7200)) as tf:
        for wid in FINISHED:
            info = (await tf.describe(wid)).to_dict()
            history = [e.to_dict() for e in await tf.history(wid)]
            assert {"info": info, "history": history} == before[wid]
        assert await tf.result("done-1") == 2
        assert await tf.result("done-2") == 4
        with pytest.raises(WorkflowFailed, match="boom"):
            await tf.result("failed-1")
        found = await tf.list(attributes={"customer": "c-2"})
        assert [i.workflow_id for i in found.items] == ["done-2"]
        assert {i.workflow_id for i in (await tf.list(limit=10)).items} == set(ALL)

        # The timer and the interrupted run resume; the waiter takes a signal.
        assert await tf.result("sleeping-1", timeout=30) == 10
        assert await tf.result("crash-1", timeout=30) == ["s1", "two", "s3"]
        assert await wait_status(tf, "waiting-1", "paused") == "paused"
        await tf.signal("waiting-1", "go", "late")
        assert await tf.result("waiting-1", timeout=30) == {"got": "late", "extra": None}
        assert (await tf.describe("waiting-1")).workflow_type == signal_taker.name

    # Nothing that had completed ran again; s2 was interrupted and ran again.
    assert Counter(marks.read_text().split()) == Counter(
        ["double-1", "double-2", "busy", "s1", "s2", "s2", "s3", "took-late"]
    )


@pytest.mark.timeout(180)
async def test_a_claim_lost_in_a_machine_crash_does_not_rerun_completed_steps(
    tmp_path: Path, marks: Path, another_boot: None
):
    data = tmp_path / "data"
    crashed(
        "run-kill",
        data,
        "three_marks",
        "claimed-1",
        env={"CRASH_MARKS": str(marks), "CRASH_BLOCK": "1"},
    )
    assert marks.read_text().split() == ["s1", "s2"]
    # start()'s queue entry was fsync'd; the run's claim of it (status, file) was
    # not, and the power cut took it: the row is back to what start() wrote.
    conn = sqlite3.connect(data / "hot" / "index.sqlite")
    try:
        with conn:
            conn.execute(
                "UPDATE instances SET status=?, file=NULL, started_at=NULL, lease_owner=NULL "
                "WHERE workflow_id=?",
                ("queued", "claimed-1"),
            )
    finally:
        conn.close()

    async with Tierflow(data, WORKFLOWS) as tf:
        assert await tf.result("claimed-1", timeout=30) == ["s1", "two", "s3"]
        # The history is the one the instance file holds, continued.
        steps = [
            e.step_name for e in await tf.history("claimed-1") if e.event_type == "step.completed"
        ]
        assert steps == ["one", "two", "three"]
    assert marks.read_text().split() == ["s1", "s2", "s2", "s3"]
