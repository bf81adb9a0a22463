"""Several processes on one data directory, as operators run them.

Real processes, forked from the suite's zygote (:mod:`tests.procs`): ``tierflow worker``
processes, ``tierflow start / signal / cancel / terminate`` from other processes, and this
test process reading the index. Work queued, signalled, cancelled or terminated by any
process reaches the process that runs (or should run) the instance without a restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tierflow import Tierflow

from tests import procs as zygote
from tests.conftest import wait_for
from tests.hot.proc_app import first_then_signal

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.hot.proc_app"
OTHER_APP = "tests.hot.proc_app_other"


class Processes:
    """Starts tierflow processes on one data dir; kills what is left at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.log = tmp / "steps.log"
        self.log.touch()
        self.env = {
            **os.environ,
            "TIERFLOW_TEST_LOG": str(self.log),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
        self.workers: list[zygote.Child] = []

    def cli(self, *args: str) -> str:
        """Run one ``tierflow`` command to completion; return its stdout."""
        out = zygote.run(
            "tierflow.cli", *args, "--data-dir", str(self.data), env=self.env, timeout=60
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def worker(self, app: str = APP) -> zygote.Child:
        """Start ``tierflow worker`` and wait until its scheduler runs."""
        proc = zygote.popen(
            "tierflow.cli",
            "worker",
            "--app",
            app,
            env={**self.env, "TIERFLOW_DATA_DIR": str(self.data)},
        )
        self.workers.append(proc)
        deadline = time.monotonic() + 30
        while "worker running" not in proc.output_so_far() + proc.errors_so_far():
            assert proc.poll() is None, proc.output_so_far() + proc.errors_so_far()
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.01)
        return proc

    def steps(self) -> Counter[tuple[str, str]]:
        """How often each ``(workflow_id, step)`` ran, from the shared log."""
        lines = self.log.read_text().splitlines()
        return Counter(tuple(line.split(" ", 1)) for line in lines)  # type: ignore[misc]

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()


async def _reader(procs: Processes, workflows: tuple = ()) -> Tierflow:
    """A Tierflow in this process on the same data dir, with no scheduler."""
    tf = Tierflow(data_dir=procs.data, workflows=list(workflows))
    tf.open()
    return tf


async def wait_status(tf: Tierflow, wid: str, status: str, timeout: float = 20) -> None:
    async def ok() -> bool:
        return await tf.status(wid) == status

    await wait_for(ok, timeout)


@pytest.mark.timeout(120)
async def test_a_running_worker_runs_what_cli_start_queues_and_takes_cli_signals(procs, uid):
    procs.worker()
    wid = uid()
    procs.cli("start", "first_then_signal", "--app", APP, "--id", wid)
    tf = await _reader(procs)
    try:
        # Before: the worker learned of queued work only at start-up (35 s and counting).
        await wait_status(tf, wid, "paused")
        assert procs.steps()[(wid, "first")] == 1
        procs.cli("signal", wid, "go", "--payload", '"from the CLI"')
        await wait_status(tf, wid, "completed")
        assert (await tf.result(wid))["got"] == "from the CLI"
        assert procs.steps() == Counter({(wid, "first"): 1, (wid, "second"): 1})
    finally:
        await tf.aclose()


@pytest.mark.timeout(120)
async def test_a_signal_reaches_the_instance_while_another_process_runs_it(procs, uid):
    procs.worker()
    wid = uid()
    procs.cli("start", "first_then_signal", "--app", APP, "--id", wid, "--input", "1.5")
    tf = await _reader(procs)
    try:
        await wait_for(lambda: _true_if(procs.steps()[(wid, "first")] == 1), 20)
        assert await tf.status(wid) == "running"  # inside its 1.5 s step, in the worker
        procs.cli("signal", wid, "go", "--payload", "7")
        await wait_status(tf, wid, "completed")
        assert (await tf.result(wid))["got"] == 7
    finally:
        await tf.aclose()


async def _true_if(value: bool) -> bool:
    return value


@pytest.mark.timeout(120)
async def test_cli_cancel_without_the_app_reaches_the_worker_that_runs_cleanup(procs, uid):
    procs.worker()
    wid = uid()
    procs.cli("start", "guarded", "--app", APP, "--id", wid)
    tf = await _reader(procs)
    try:
        await wait_status(tf, wid, "paused")
        # This process does not know the type, so it cannot run the cleanup itself.
        procs.cli("cancel", wid, "--reason", "customer left")
        await wait_status(tf, wid, "cancelled")
        assert procs.steps() == Counter({(wid, "cleanup"): 1})
        assert (await tf.describe(wid)).status == "cancelled"
    finally:
        await tf.aclose()


def _holds_open(pid: int, path: Path) -> bool:
    target = os.path.realpath(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


@pytest.mark.timeout(120)
async def test_terminate_from_another_process_stops_the_runner_at_once(procs, uid):
    worker = procs.worker()
    wid = uid()
    # Its first step takes 60 s; the runner must let go long before that.
    procs.cli("start", "long_then_more", "--app", APP, "--id", wid, "--input", "60")
    tf = await _reader(procs)
    try:
        await wait_status(tf, wid, "running")
        path = tf.engine.instance_path(wid)
        await wait_for(lambda: _true_if(_holds_open(worker.pid, path)), 20)
        procs.cli("terminate", wid, "--reason", "stuck")
        assert await tf.status(wid) == "terminated"
        # The worker dropped the execution (and closed its file) while the step sleeps on.
        await wait_for(lambda: _true_if(not _holds_open(worker.pid, path)), 20)
        assert (wid, "after") not in procs.steps()
    finally:
        await tf.aclose()


@pytest.mark.timeout(120)
async def test_a_worker_takes_only_the_types_it_knows(procs, uid):
    procs.worker(APP)
    foreign, known = uid("foreign"), uid("known")
    procs.cli("start", "lonely", "--app", OTHER_APP, "--id", foreign)
    procs.cli("start", "guarded", "--app", APP, "--id", known)
    tf = await _reader(procs)
    try:
        # The worker ran what it knows, queued after the foreign one ...
        await wait_status(tf, known, "paused")
        # ... and left the foreign one queued, unleased, for a process that knows it.
        row = tf.index.get(foreign)
        assert row is not None and row.status == "queued" and row.lease_owner is None
        procs.worker(OTHER_APP)
        await wait_status(tf, foreign, "completed")
        assert await tf.result(foreign) == "ran"
    finally:
        await tf.aclose()


def _leased_to(tf: Tierflow, proc: zygote.Child) -> list[str]:
    """The running instances the index shows leased to ``proc`` (owner ids are
    ``<pid>-<random>``)."""
    rows = tf.index.execute(
        "SELECT workflow_id FROM instances WHERE status = ? AND lease_owner LIKE ?",
        ("running", f"{proc.pid}-%"),
    )
    return [r[0] for r in rows]


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (state T in /proc)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except FileNotFoundError:
            continue  # the thread ended
        if stat.rsplit(")", 1)[1].split()[0] not in ("T", "t"):
            return False
    return True


def _stop(proc: zygote.Child) -> None:
    """SIGSTOP ``proc`` and return once every thread of it is stopped."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not _stopped(proc.pid):
        assert time.monotonic() < deadline, "SIGSTOP did not stop the worker"
        time.sleep(0.001)


async def kill_holding_work(tf: Tierflow, proc: zygote.Child) -> set[str]:
    """SIGKILL ``proc`` at a moment it holds running instances; return their ids.

    Stopped (SIGSTOP), a worker can neither finish nor release what it holds, so what the
    index shows leased to it then is what it dies holding. If it holds nothing at that
    moment, it is resumed and the check repeats. Nothing awaits while it is stopped (it may
    hold the index's write lock).
    """

    async def holds() -> bool:
        return bool(_leased_to(tf, proc))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        assert loop.time() < deadline, "the worker never held an instance"
        await wait_for(holds, max(deadline - loop.time(), 0.1))
        _stop(proc)
        held = set(_leased_to(tf, proc))
        if held:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return held
        proc.send_signal(signal.SIGCONT)


@pytest.mark.timeout(600)
async def test_three_workers_share_500_and_survive_a_sigkill(procs, uid):
    """500 queued from another process, each signalled; one of three workers killed midway."""
    workers = [procs.worker() for _ in range(3)]
    tf = await _reader(procs, (first_then_signal,))
    ids = [uid("w") for _ in range(500)]
    victim = workers[1]

    async def midway() -> bool:
        return sum(1 for (w, s) in procs.steps() if s == "first") >= 150

    async def kill_midway() -> set[str]:
        await wait_for(midway, 120)
        return await kill_holding_work(tf, victim)

    # Watched for while work is queued (the workers may run every first step before the
    # last start returns); nothing is signalled before the kill, so nothing the victim
    # holds can finish without being recovered.
    killer = asyncio.create_task(kill_midway())
    try:
        for wid in ids:  # each holds a thread for 0.3 s: the victim dies with work in hand
            await tf.start(first_then_signal, 0.3, workflow_id=wid)
        held = await killer
        for wid in ids:
            await tf.signal(wid, "go", wid)

        async def all_done() -> bool:
            rows = tf.index.execute(
                "SELECT count(*) FROM instances WHERE status = ?", ("completed",)
            )
            return rows[0][0] == len(ids)

        try:
            await wait_for(all_done, 60)
        except AssertionError:
            counts = tf.index.execute("SELECT status, count(*) FROM instances GROUP BY 1")
            raise AssertionError(f"not all completed: {counts}") from None
        for wid in ids[::50]:
            assert (await tf.result(wid))["got"] == wid  # each got its own signal, once
        runs = procs.steps()
        recovered = set()
        for wid in ids:
            kinds = [e.event_type for e in await tf.history(wid)]
            if "workflow.recovered" in kinds:
                recovered.add(wid)
            assert runs[(wid, "first")] >= 1 and runs[(wid, "second")] >= 1, wid
        again = {w for (w, _), n in runs.items() if n > 1}
        # A step runs again only if its runner was killed inside it, before its
        # result was committed: never for an instance nobody had to recover.
        assert again <= recovered, sorted(again - recovered)[:5]
        assert len(again) <= len(recovered)
        # Each instance the victim died holding was taken over by a survivor.
        assert held and held <= recovered, sorted(held - recovered)
    finally:
        killer.cancel()
        await tf.aclose()
