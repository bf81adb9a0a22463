"""SQL workers forked from the process's template (tierflow.tiering.sql.template).

Real processes throughout: the template is found by its pid, its workers as its children in
/proc, and the kernel says whether a worker is fenced (``Seccomp: 2``) and whether the
template is one thread. The existing worker tests (deadline kill, memory limit in a
subprocess, fence, abandoned stream) run on forked workers as well.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tierflow import StorageError, Tierflow
from tierflow.tiering.sql import QueryTimeout, template

from tests.tiering.test_sql import ALL, finished
from tests.tiering.test_tiering import ROOT

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="the template forks with pidfds (Linux)"),
]

LEGIT = "SELECT count(*) FROM workflows"


def children(pid: int) -> set[int]:
    """The live (not yet exited) children of ``pid``."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        found |= {int(p) for p in text.split() if state(int(p)) not in ("Z", "X", None)}
    return found


def state(pid: int) -> str | None:
    """The process's state letter (R, S, Z ...), or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def status(pid: int, task: str | None = None) -> dict[str, str]:
    """The fields of ``/proc/PID/status`` (of one of its threads with ``task``)."""
    text = Path(f"/proc/{pid}" + (f"/task/{task}" if task else "") + "/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def running(pid: int) -> bool:
    return state(pid) not in ("Z", "X", None)


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def workers_of(tf: Tierflow) -> list[int]:
    """The pids of the engine's idle workers (all of them are, between queries)."""
    return [w.pid for w in tf.sql_engine.workers._idle if w.pid is not None]


async def test_two_engines_share_one_template_and_their_workers_are_its_children(
    tmp_path: Path,
):
    async with (
        Tierflow(tmp_path / "a", ALL) as one,
        Tierflow(tmp_path / "b", ALL) as two,
    ):
        await finished(one, 0, 2)
        await finished(two, 0, 3)
        assert (await one.sql(LEGIT)).rows == [(2,)]
        assert (await two.sql(LEGIT)).rows == [(3,)]
        shared = template.shared()
        assert shared is not None
        ours = set(workers_of(one)) | set(workers_of(two))
        assert len(ours) == 2
        assert ours <= children(shared.pid)
        assert not ours & children(os.getpid())  # none is the engine's own child
        # The template is one thread: DuckDB and Arrow started no pool in it (it checks
        # threading.active_count() and /proc/self/task itself before each fork, and would
        # have refused). It is not fenced; every thread of each worker is.
        assert os.listdir(f"/proc/{shared.pid}/task") == [str(shared.pid)]
        assert status(shared.pid)["Seccomp"] == "0"
        for pid in ours:
            for task in os.listdir(f"/proc/{pid}/task"):
                fields = status(pid, task)
                assert (fields["Seccomp"], fields["NoNewPrivs"]) == ("2", "1"), (pid, task)
    # Closing both engines stopped their workers, not the template.
    assert shared.alive and template.shared() is shared
    await until(lambda: not ours & children(shared.pid))
    assert os.listdir(f"/proc/{shared.pid}/task") == [str(shared.pid)]


ENDLESS = "SELECT count(*) FROM range(10000000000000) t(a) WHERE a % 7 = 3"


async def test_the_next_query_works_after_the_template_is_killed(tmp_path: Path):
    async with Tierflow(tmp_path / "a", ALL) as one:
        await finished(one, 0, 2)
        assert (await one.sql(LEGIT)).rows == [(2,)]
        first = template.shared()
        assert first is not None
        (orphan,) = workers_of(one)
        os.kill(first.pid, signal.SIGKILL)
        await until(lambda: not running(first.pid))
        # The idle worker outlives its template and still answers ...
        assert (await one.sql(LEGIT)).rows == [(2,)]
        # ... and a new worker comes from a new template.
        async with Tierflow(tmp_path / "b", ALL) as two:
            await finished(two, 0, 3)
            assert (await two.sql(LEGIT)).rows == [(3,)]
            second = template.shared()
            assert second is not None and second.pid != first.pid
            assert set(workers_of(two)) <= children(second.pid)
            # Killed with no wait at all: the next request may reach the dying template.
            os.kill(second.pid, signal.SIGKILL)
            async with Tierflow(tmp_path / "c", ALL) as three:
                await finished(three, 0, 1)
                assert (await three.sql(LEGIT)).rows == [(1,)]
            assert (await two.sql(LEGIT)).rows == [(3,)]
        # Only the exit status of a worker whose template died is lost.
        message = await _kill_during_query(one)
        assert message.endswith(
            "the SQL worker ended (its exit status was lost with the SQL worker template)"
        ), message
        assert (await one.sql(LEGIT)).rows == [(2,)]
    await until(lambda: not running(orphan))


async def _kill_during_query(tf: Tierflow) -> str:
    """SIGKILL the worker running an endless query; the error the query raises."""
    (pid,) = workers_of(tf)  # the one idle worker takes the query
    task = asyncio.ensure_future(tf.sql(ENDLESS, timeout=60))
    await until(lambda: pid not in workers_of(tf) or task.done())
    await asyncio.sleep(0.3)  # it runs
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StorageError) as info:
        await task
    return str(info.value)


async def test_a_worker_killed_at_its_deadline_or_by_a_signal_reports_as_before(
    tmp_path: Path,
):
    async with Tierflow(tmp_path / "d", ALL) as tf:
        await finished(tf, 0, 2)
        assert (await tf.sql(LEGIT)).rows == [(2,)]
        shared = template.shared()
        assert shared is not None
        t0 = time.monotonic()
        with pytest.raises(QueryTimeout) as info:
            await tf.sql(ENDLESS, timeout=0.5)
        assert time.monotonic() - t0 < 1.5
        assert str(info.value) == "SQL query stopped: it ran past the 0.5s timeout"
        assert (await tf.sql(LEGIT)).rows == [(2,)]
        assert set(workers_of(tf)) <= children(shared.pid)
        message = await _kill_during_query(tf)
        assert message == (
            "SQL across tiers: the query stopped its worker: "
            "the SQL worker was ended by signal SIGKILL"
        )
        assert (await tf.sql(LEGIT)).rows == [(2,)]


async def test_without_the_template_workers_start_as_fresh_interpreters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(template.ENV_SWITCH, "off")
    async with Tierflow(tmp_path / "d", ALL) as tf:
        await finished(tf, 0, 2)
        assert (await tf.sql(LEGIT)).rows == [(2,)]
        (pid,) = workers_of(tf)
        assert pid in children(os.getpid())
        assert "tierflow.tiering.sql.worker" in Path(f"/proc/{pid}/cmdline").read_text()
        assert (status(pid)["Seccomp"], status(pid)["NoNewPrivs"]) == ("2", "1")


ENGINE_APP = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from tierflow import Tierflow
    from tierflow.tiering.sql import template

    async def main():
        tf = Tierflow(sys.argv[1], [])
        await tf.__aenter__()
        await tf.sql("SELECT 1")
        shared = template.shared()
        workers = [w.pid for w in tf.sql_engine.workers._idle]
        print(json.dumps({"template": shared.pid, "workers": workers}), flush=True)
        os._exit(0)  # no close, no atexit: the process just ends

    asyncio.run(main())
    """
)


async def test_the_template_and_its_workers_end_with_the_engine_process(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", ENGINE_APP, str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert pids["workers"]
    for pid in [pids["template"], *pids["workers"]]:
        await until(lambda pid=pid: not running(pid))
