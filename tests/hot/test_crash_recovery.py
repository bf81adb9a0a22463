"""Crash safety: real subprocesses killed with SIGKILL at chosen points."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests import procs

ROOT = Path(__file__).resolve().parents[2]


def spawn(mode: str, data: Path, *args: str, env: dict[str, str] | None = None) -> procs.Child:
    """Run ``tests.hot.crash_app MODE DATA ARGS`` in a child forked from the test zygote."""
    return procs.popen(
        "tests.hot.crash_app", mode, str(data), *args, env={**os.environ, **(env or {})}
    )


def finish(proc: procs.Child, timeout: float = 120) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err
    return out


def wait_path(path: Path, proc: procs.Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.errors_so_far()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.01)


def index_status(data: Path, *ids: str) -> set[str]:
    """Read statuses straight from the instance index, as another process would."""
    conn = sqlite3.connect(data / "hot" / "index.sqlite", timeout=10)
    try:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT status FROM instances WHERE workflow_id IN ({marks})", ids
        ).fetchall()
    finally:
        conn.close()
    return {r[0] for r in rows} if len(rows) == len(ids) else set()


def kill(proc: procs.Child) -> None:
    proc.kill()
    proc.wait(timeout=10)


@pytest.mark.timeout(180)
def test_sigkill_mid_step_resumes_without_rerunning_done_steps(tmp_path: Path):
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    proc = spawn("run", data, env={"CRASH_MARKS": str(marks), "CRASH_BLOCK": "1"})
    wait_path(Path(str(marks) + ".ready"), proc)
    kill(proc)
    assert marks.read_text().split() == ["s1", "s2"]

    out = finish(spawn("resume", data, env={"CRASH_MARKS": str(marks)}))
    assert json.loads(out.splitlines()[-1])["result"] == ["s1", "two", "s3"]
    # s1 ran once; s2 was interrupted and ran again; s3 ran once.
    assert marks.read_text().split() == ["s1", "s2", "s2", "s3"]


@pytest.mark.timeout(300)
def test_thousand_sleepers_wake_after_process_restart(tmp_path: Path):
    data = tmp_path / "data"
    n = 1000
    proc = spawn("sleepers", data, str(n))
    line = proc.readline(timeout=240)
    assert line.strip() == "ready", proc.errors_so_far()
    kill(proc)
    # The restarted process's clock is 2 h ahead, so every 1 h timer is due.
    out = finish(spawn("wake", data, str(n), "7200"), timeout=240)
    assert json.loads(out.splitlines()[-1]) == {"sum": sum(i * 2 for i in range(n)), "n": n}


@pytest.mark.timeout(180)
def test_runner_dying_repeatedly_fails_after_max_recovery_attempts(tmp_path: Path):
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    env = {"CRASH_MARKS": str(marks)}
    for _ in range(3):  # the first run and two recoveries each die in the step
        proc = spawn("doomed", data, env=env)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    out = finish(spawn("doomed", data, env=env))
    failed = json.loads(out.splitlines()[-1])["failed"]
    assert "max_recovery_attempts=2" in failed
    assert marks.read_text().split() == ["die", "die", "die"]


@pytest.mark.timeout(180)
def test_fan_out_parent_killed_mid_way_completes_after_restart(tmp_path: Path):
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    proc = spawn("fanout", data, env={"CRASH_MARKS": str(marks), "CRASH_BLOCK": "1"})
    wait_path(Path(str(marks) + ".ready"), proc)
    # Kill only once a and c have finished, so the one interrupted step is b's.
    deadline = time.monotonic() + 60
    while index_status(data, "fan-1:child-0.1-1", "fan-1:child-0.3-1") != {"completed"}:
        assert time.monotonic() < deadline, "children a and c never completed"
        time.sleep(0.01)
    kill(proc)
    out = finish(spawn("fanout-resume", data, env={"CRASH_MARKS": str(marks)}))
    report = json.loads(out.splitlines()[-1])
    assert report["result"] == ["A", "B", "C"]
    assert report["children"] == ["fan-1:child-0.1-1", "fan-1:child-0.2-1", "fan-1:child-0.3-1"]
    runs = marks.read_text().split()
    # a and c completed once; b was interrupted mid-step and ran once more.
    assert runs.count("child-a") == 1 and runs.count("child-c") == 1
    assert runs.count("child-b") == 2


@pytest.mark.timeout(180)
def test_events_committed_before_a_crash_reach_the_sink_after_restart(tmp_path: Path):
    from http.server import ThreadingHTTPServer

    from tests.hot.test_event_stream import _free_port, _Sink

    data, n = tmp_path / "data", 20
    port = _free_port()
    url = f"http://127.0.0.1:{port}/events"
    proc = spawn("stream-run", data, url, str(n))  # the sink is down all along
    assert proc.readline().strip() == "ready", proc.errors_so_far()
    kill(proc)
    _Sink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _Sink)
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proc = spawn("stream-resume", data, url)
    try:
        conn = sqlite3.connect(data / "hot" / "index.sqlite", timeout=10)
        try:
            want = 0
            for (f,) in conn.execute("SELECT file FROM instances"):
                ev = sqlite3.connect(data / "hot" / "instances" / f)
                want += ev.execute("SELECT count(*) FROM events").fetchone()[0]
                ev.close()
        finally:
            conn.close()
        assert want >= n * 9
        deadline = time.monotonic() + 60
        while len({e["id"] for e in _Sink.received}) < want:
            assert time.monotonic() < deadline, "sink did not get every event"
            time.sleep(0.02)
        got = {e["id"] for e in _Sink.received}
        assert len(got) == want
        assert {i.split("/")[0] for i in got} == {f"streamed-{i}" for i in range(n)}
    finally:
        kill(proc)
        server.shutdown()
        server.server_close()
        thread.join()


def test_partial_spare_of_a_killed_owner_is_removed(tmp_path: Path):
    from tierflow.hot.spares import remove_orphan_spares

    shard = tmp_path / "ab"
    shard.mkdir()
    partial = shard / "123-dead-0011223344556677.sqlite"
    partial.write_bytes(b"SQLite format 3\x00")  # killed while writing the template
    other = shard / "123-dead-8899aabbccddeeff.sqlite"
    other.write_bytes(b"x" * 100_000)  # unreadable and large: not ours to judge
    assert remove_orphan_spares(tmp_path, "123-dead", set()) == 1
    assert not partial.exists() and other.exists()


# -- power loss after an acknowledged step ------------------------------------------------
#
# A SIGKILL keeps every byte the process wrote (the page cache survives it), so a commit that
# was written but never synced still reads back. Power loss keeps only what was synced. The
# crash app logs each fsync/fdatasync (with the file's size when it was called) in one
# sequence with the step marks; after killing it inside the second step, the test cuts the
# instance's WAL to the bytes the process had synced, as a power cut would, and restarts.


def _syncs(tokens: list[str], path: str) -> list[int]:
    """Sizes of the syncs of ``path`` among ``tokens`` (``fsync:SIZE:PATH`` marks)."""
    out = []
    for token in tokens:
        kind, _, rest = token.partition(":")
        if kind in ("fsync", "fdatasync"):
            size, _, synced = rest.partition(":")
            if synced == path:
                out.append(int(size))
    return out


def _lose_power(data: Path, wid: str, tokens: list[str]) -> tuple[str, int]:
    """Cut ``wid``'s WAL to what was synced; return its path and the durable size."""
    conn = sqlite3.connect(data / "hot" / "index.sqlite", timeout=10)
    try:
        [(name,)] = conn.execute("SELECT file FROM instances WHERE workflow_id = ?", (wid,))
    finally:
        conn.close()
    wal = os.path.realpath(data / "hot" / "instances" / name) + "-wal"
    durable = max(_syncs(tokens, wal), default=0)
    assert os.path.getsize(wal) >= durable
    os.truncate(wal, durable)
    Path(wal[: -len("-wal")] + "-shm").unlink(missing_ok=True)  # rebuilt from the WAL
    return wal, durable


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("workflow", "names"),
    [
        ("plain_marks", ["p1", "p2", "p3"]),
        ("async_marks", ["a1", "a2", "a3"]),
        ("timed_marks", ["t1", "t2", "t3"]),
    ],
    ids=["sync-step", "async-step", "timeout-step"],
)
def test_a_step_acknowledged_before_a_power_cut_does_not_run_again(
    tmp_path: Path, workflow: str, names: list[str]
):
    from tests.hot.test_promises_crash import crashed, finished, runs

    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    wid = f"power-{workflow}-{tmp_path.name}"
    first, second, third = names
    env = {"CRASH_MARKS": str(marks), "CRASH_SPY_SYNCS": "1"}
    # The process kills itself once the second step's body runs: the first step's result
    # is acknowledged (the workflow went on past it).
    crashed("run-kill", data, workflow, wid, env={**env, "CRASH_BLOCK_AT": second})
    tokens = marks.read_text().split()
    assert [t for t in tokens if ":" not in t] == [first, second]
    wal, durable = _lose_power(data, wid, tokens)
    # The WAL was synced after the first step's body returned and before the second's ran.
    between = tokens[tokens.index(first) + 1 : tokens.index(second)]
    assert _syncs(between, wal), (wal, tokens)
    assert durable > 0

    # What the power cut left holds the first step's result: it is not run again.
    assert finished(data, wid, {"CRASH_MARKS": str(marks)}) == names
    assert [t for t in runs(marks) if ":" not in t] == [first, second, second, third]


@pytest.mark.timeout(60)
def test_a_start_acknowledged_before_a_power_cut_survives_it(tmp_path: Path):
    """``start`` returns once its queue entry is on disk, and only the index holds it.

    The process dies right after ``start`` returns, before any instance file exists; the
    index's WAL is then cut to what the process had synced, as a power cut would leave it.
    """
    from tests.hot.test_promises_crash import crashed, finished, runs

    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    wid = f"power-start-{tmp_path.name}"
    env = {"CRASH_MARKS": str(marks), "CRASH_SPY_SYNCS": "1"}
    crashed("start-kill", data, "plain_marks", wid, env=env)
    tokens = marks.read_text().split()
    assert [t for t in tokens if ":" not in t] == []  # never ran
    wal = os.path.realpath(data / "hot" / "index.sqlite-wal")
    durable = max(_syncs(tokens, wal), default=0)
    assert 0 < durable <= os.path.getsize(wal)
    os.truncate(wal, durable)
    Path(wal[: -len("-wal")] + "-shm").unlink(missing_ok=True)  # rebuilt from the WAL

    assert finished(data, wid, {"CRASH_MARKS": str(marks)}) == ["p1", "p2", "p3"]
    assert [t for t in runs(marks) if ":" not in t] == ["p1", "p2", "p3"]
