"""Hot-tier crash promises (issue 10 §2.5): real subprocesses killed with SIGKILL.

Each test runs ``tests/hot/crash_app.py`` in a child process that kills itself
(``die_now``) at the exact point under test, or blocks inside a step until the
test sees it there, then finishes the work in a fresh process over the same
data directory. Steps append to a marks file, so every run of a step body is
counted.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.hot.test_crash_recovery import finish, index_status, spawn


def crashed(proc_mode: str, data: Path, *args: str, env: dict[str, str]) -> str:
    """Run a crash_app mode that ends by SIGKILLing itself (fail if it ended otherwise).

    Returns:
        What it printed.
    """
    proc = spawn(proc_mode, data, *args, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: {err}"
    return out


def finished(data: Path, wid: str, env: dict[str, str], timeout: float = 60) -> object:
    """Open a new process over ``data`` and return ``wid``'s result."""
    out = finish(spawn("finish", data, wid, str(timeout), env=env), timeout=timeout + 60)
    return json.loads(out.splitlines()[-1])["result"]


def runs(marks: Path) -> list[str]:
    return marks.read_text().split() if marks.exists() else []


@pytest.mark.timeout(180)
def test_sigkill_right_after_start_returns_runs_the_queued_instance_after_restart(
    tmp_path: Path,
):
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    env = {"CRASH_MARKS": str(marks)}
    crashed("start-kill", data, "three_marks", "queued-1", env=env)
    # Killed before the scheduler could take it: durable, queued, never run.
    assert index_status(data, "queued-1") == {"queued"}
    assert runs(marks) == []

    assert finished(data, "queued-1", env) == ["s1", "two", "s3"]
    assert runs(marks) == ["s1", "s2", "s3"]


@pytest.mark.timeout(180)
def test_signal_accepted_while_mid_step_is_delivered_once_after_sigkill(tmp_path: Path):
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    env = {"CRASH_MARKS": str(marks)}
    # The run is inside step "busy" when signal() returns; the process dies at once.
    crashed("signal-kill", data, "sig-1", env={**env, "CRASH_BLOCK_AT": "busy"})
    assert runs(marks) == ["busy"]

    # The wait after "busy" takes the signal exactly once; a second wait finds none.
    assert finished(data, "sig-1", env) == {"got": "first", "extra": None}
    assert runs(marks) == ["busy", "busy", "took-first"]


@pytest.mark.timeout(180)
def test_signal_accepted_while_paused_is_delivered_once_after_sigkill(tmp_path: Path):
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    env = {"CRASH_MARKS": str(marks)}
    # The run is paused in wait_for_signal (unloaded) when signal() returns and
    # the process dies before the resume it asked for can run.
    crashed("signal-kill", data, "sig-2", env=env)
    assert index_status(data, "sig-2") == {"paused"}
    assert runs(marks) == ["busy"]

    assert finished(data, "sig-2", env, timeout=5) == {"got": "first", "extra": None}
    assert runs(marks) == ["busy", "took-first"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("workflow", "names"),
    [("async_marks", ["a1", "a2", "a3"]), ("timed_marks", ["t1", "t2", "t3"])],
    ids=["async-step", "timeout-step"],
)
def test_sigkill_mid_step_does_not_rerun_completed_steps(
    tmp_path: Path, workflow: str, names: list[str]
):
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    env = {"CRASH_MARKS": str(marks)}
    first, second, third = names
    # The process kills itself once the second step's body is running.
    crashed("run-kill", data, workflow, "mid-1", env={**env, "CRASH_BLOCK_AT": second})
    assert runs(marks) == [first, second]

    assert finished(data, "mid-1", env) == names
    # The first step completed before the crash and does not run again; the
    # interrupted one runs again; the last runs once.
    assert runs(marks) == [first, second, second, third]
