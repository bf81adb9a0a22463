"""Benchmark of the peer engine DBOS (PyPI ``dbos`` 3.x) on a SQLite system database.

Our own benchmark runs this module as a subprocess, from the repository root, once per SQLite
configuration, and compares its figures with tierflow's::

    .venv/bin/python -m tests.bench.peer_dbos --workdir DIR [--quick] [--journal-mode wal] --json

The last stdout line is one JSON object; one human-readable line per metric goes to stderr.

The workload and its sizes come from workload.py, shared with tierflow's side (hot_engine.py):
the same 3-step workflow, warm-ups, numbers of workflows, callers and pacing. After each phase
the child lists the workflows of its system database (``DBOS.list_workflows``) and fails unless
every one of them ended in ``SUCCESS`` and their number is the number the phase started; the
checks are part of the JSON output (``checks``).

What is measured (every phase runs in its own child process on a fresh SQLite file under
``--workdir``, because DBOS keeps process-global state):

* ``seq_wps``: a 3-step workflow (each step returns ``x.upper()``) called synchronously, one
  after another from one thread, after a warm-up (``Sizes.seq`` workflows).
* ``conc8_wps``: 8 threads calling that workflow concurrently (``Sizes.conc8`` workflows in
  all); total completed workflows divided by the wall time from releasing the threads until the
  last one finishes.
* ``start_p50_ms``/``start_p99_ms``: latency of ``DBOS.start_workflow(wf, ...)`` (returns once
  the workflow is recorded and handed to DBOS's executor) from a 9th thread, while the 8 threads
  keep calling workflows. The 9th thread is open-loop: it starts one 3-step workflow every
  ``Sizes.start_pacing_s`` and does not wait for it (``Sizes.start_samples`` samples); the
  started workflows are awaited, untimed, at the end. The p99 is the nearest-rank percentile.
* ``sleep10_ms``: wall time of a workflow whose only body is a durable ``DBOS.sleep(0.01)``;
  median of ``Sizes.sleep_runs`` runs.
* ``recovery_s``: child A launches DBOS and starts a 3-step workflow whose step 2 creates a
  marker file and then blocks; the parent waits for the marker and SIGKILLs A. Child B then
  records ``time.perf_counter()`` at the top of its main (after imports, so interpreter start-up
  and imports are excluded), configures and launches DBOS (whose launch recovers the pending
  workflow), and polls the workflow's result every 5 ms until it has completed. The figure is
  that elapsed time. DBOS 3.4's launch does not run a recovered workflow itself: it re-enqueues
  it on DBOS's internal queue, whose poller (default interval 1 s) then starts it, so about 1 s
  of the figure is that poll; launch proper takes a few tens of ms (logged to stderr).
* The 9th thread's started workflows add load, so the 8 threads run slower during the
  ``start`` phase than in ``conc8``; their rate then is logged to stderr, not reported.
* ``sqlite_synchronous``: the ``PRAGMA synchronous`` value (0=OFF, 1=NORMAL, 2=FULL, 3=EXTRA)
  read from a connection of DBOS's own system-database engine. ``sqlite_wal`` (1.0 or 0.0)
  says whether that database is in WAL journal mode.

Durability: DBOS 3.4 sets no ``synchronous`` or ``journal_mode`` pragma on SQLite, so it runs in
SQLite's defaults: rollback journal (``delete``) with ``synchronous=FULL``, i.e. at least one
fsync per commit. ``--synchronous`` (default ``full``) forces a level on every connection via a
SQLAlchemy pool ``connect`` listener (``default`` leaves DBOS alone); ``--journal-mode wal``
switches the file to WAL before DBOS opens it, for a WAL-to-WAL comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SetWorkflowID

from tests.bench.workload import CALLERS, CHECKS, STEPS, Sizes, check, sizes

ROOT = Path(__file__).resolve().parents[2]
SYNC_LEVELS: dict[str, int] = {"off": 0, "normal": 1, "full": 2, "extra": 3}
# A hang guard per child (phase), not a figure: conc8 runs 1,200 workflows at ~100 wf/s.
CHILD_TIMEOUT_S = 300.0
POLL_S = 0.005

# Set only in the "crash" child: makes step 2 of the recovery workflow block after its marker.
_BLOCK_IN_STEP2 = False
# Path of the marker file the crash child's step 2 creates to signal readiness.
_MARKER_PATH: Path | None = None


# --------------------------------------------------------------------------------------------
# Workflows (registered at import time, identically in every child, so that the application
# version DBOS derives from the workflow code is the same in the crash and recovery children).
# --------------------------------------------------------------------------------------------


@DBOS.step()
def upper_step(x: str) -> str:
    """Trivial step.

    Args:
        x: Input text.

    Returns:
        ``x`` in upper case.
    """
    return x.upper()


@DBOS.workflow()
def three_step_wf(x: str) -> str:
    """Workflow of three trivial steps.

    Args:
        x: Input text.

    Returns:
        The result of the third step.
    """
    a = upper_step(x)
    b = upper_step(a + "b")
    return upper_step(b + "c")


@DBOS.workflow()
def sleep_wf() -> None:
    """Workflow whose only body is a 10 ms durable sleep."""
    DBOS.sleep(0.01)


@DBOS.step()
def block_step(x: str) -> str:
    """Step 2 of the recovery workflow: in the crash child, signal readiness and block.

    Args:
        x: Input text.

    Returns:
        ``x`` in upper case (only reached when not blocking, i.e. after recovery).
    """
    if _BLOCK_IN_STEP2:
        assert _MARKER_PATH is not None
        _MARKER_PATH.write_text(str(os.getpid()))
        while True:
            time.sleep(1.0)
    return x.upper()


@DBOS.workflow()
def recovery_wf(x: str) -> str:
    """Three-step workflow whose step 2 blocks in the crash child.

    Args:
        x: Input text.

    Returns:
        The result of the third step.
    """
    a = upper_step(x)
    b = block_step(a + "b")
    return upper_step(b + "c")


# --------------------------------------------------------------------------------------------
# Child-side helpers.
# --------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    """Print one human-readable line to stderr.

    Args:
        msg: The line.
    """
    print(msg, file=sys.stderr, flush=True)


def _exit_with_parent() -> None:
    """End this child if its parent dies, so no DBOS child outlives the benchmark."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _install_pragmas(synchronous: str) -> None:
    """Force ``PRAGMA synchronous`` on every new SQLAlchemy pool connection in this process.

    The listener is class-level, so it also applies to the engine DBOS creates later.

    Args:
        synchronous: ``default`` (install nothing) or a key of ``SYNC_LEVELS``.
    """
    if synchronous == "default":
        return
    level = SYNC_LEVELS[synchronous]

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA synchronous={level}")

    sa.event.listen(sa.pool.Pool, "connect", on_connect)


def _prepare_db(db: Path, journal_mode: str) -> None:
    """Create the SQLite file and set its (persistent) journal mode before DBOS opens it.

    Args:
        db: Path of the SQLite file.
        journal_mode: ``default`` (leave SQLite's rollback journal) or ``wal``.
    """
    if journal_mode != "wal":
        return

    conn = sqlite3.connect(db)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not switch {db} to WAL (got {mode!r})")
    finally:
        conn.close()


def _launch(db: Path) -> None:
    """Configure and launch DBOS on the SQLite file ``db``.

    Args:
        db: Path of the SQLite system database.
    """
    config: DBOSConfig = {
        "name": "peer-bench",
        "system_database_url": f"sqlite:///{db}",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()


def _read_pragmas(db: Path) -> tuple[int, str]:
    """Read ``synchronous`` and ``journal_mode`` from a connection of DBOS's own engine.

    Falls back to an engine created as DBOS creates it (``sa.create_engine(url)``, with this
    process's pool listeners) if DBOS's private attributes are not where they were in 3.4.

    Args:
        db: Path of the SQLite system database.

    Returns:
        The ``PRAGMA synchronous`` number and the journal mode name.
    """
    try:
        from dbos._dbos import _get_dbos_instance

        engine: sa.Engine = _get_dbos_instance()._sys_db.engine
        owned = False
    except (ImportError, AttributeError):
        engine = sa.create_engine(f"sqlite:///{db}")
        owned = True
    try:
        with engine.connect() as conn:
            sync = int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
            journal = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()).lower()
    finally:
        if owned:
            engine.dispose()
    return sync, journal


def _warm_up(n: int) -> None:
    """Run ``n`` untimed workflows.

    Args:
        n: Number of workflows.
    """
    for i in range(n):
        three_step_wf(f"warm{i}")


def _statuses() -> Counter[str]:
    """Every workflow in this process's system database, counted by status.

    Returns:
        Status name (``SUCCESS``, ``ERROR``, ``PENDING``, ...) to count.
    """
    found: Counter[str] = Counter()
    offset, page = 0, 5_000
    while True:
        rows = DBOS.list_workflows(load_input=False, load_output=False, limit=page, offset=offset)
        found.update(str(w.status) for w in rows)
        if len(rows) < page:
            return found
        offset += page


def _check_completed(phase: str, expected: int) -> None:
    """Fail unless the phase's ``expected`` workflows all ended in ``SUCCESS``.

    Args:
        phase: Name of the phase.
        expected: Workflows the phase started, warm-ups included.
    """
    check("dbos", phase, expected, _statuses(), want="SUCCESS")


def _check_steps() -> None:
    """The most recent workflow recorded STEPS steps (the same count as tierflow's).

    Raises:
        AssertionError: It recorded another number of steps.
    """
    (last,) = DBOS.list_workflows(limit=1, sort_desc=True, load_input=False, load_output=False)
    steps = DBOS.list_workflow_steps(last.workflow_id, load_output=False)
    if len(steps) != STEPS:
        raise AssertionError(f"{last.workflow_id} ({last.name}): {len(steps)} steps")


def _percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile.

    Args:
        samples: Non-empty samples.
        pct: Percentile in (0, 100].

    Returns:
        The smallest sample with at least ``pct`` percent of samples at or below it.
    """
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _phase_seq(z: Sizes) -> dict[str, float]:
    """Sequential throughput.

    Args:
        z: The run's sizes.

    Returns:
        ``{"seq_wps": ...}``.
    """
    _warm_up(z.warmup)
    n = z.seq
    t0 = time.perf_counter()
    for i in range(n):
        out = three_step_wf(f"s{i}")
    elapsed = time.perf_counter() - t0
    assert out == f"S{n - 1}BC".upper()
    _check_completed("seq", z.warmup + n)
    _check_steps()
    return {"seq_wps": n / elapsed}


def _run_threads(targets: Sequence[Callable[[], None]]) -> float:
    """Start one thread per target, release them together and join them all.

    Args:
        targets: Thread bodies.

    Returns:
        Wall seconds from the release until every thread has ended.

    Raises:
        RuntimeError: If any thread raised.
    """
    barrier = threading.Barrier(len(targets) + 1)
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            barrier.wait()
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return body

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} thread(s) failed; first: {errors[0]!r}")
    return elapsed


def _phase_conc8(z: Sizes) -> dict[str, float]:
    """Throughput of 8 threads calling workflows concurrently.

    Args:
        z: The run's sizes (``conc8`` workflows in all, a multiple of 8).

    Returns:
        ``{"conc8_wps": ..., "conc8_cpu_ms": CPU ms of this process per workflow}``.
    """
    _warm_up(z.warmup)
    per_thread = z.conc8 // CALLERS

    def worker(k: int) -> Callable[[], None]:
        def body() -> None:
            for i in range(per_thread):
                three_step_wf(f"t{k}-{i}")

        return body

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = _run_threads([worker(k) for k in range(CALLERS)])
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    done = CALLERS * per_thread
    _check_completed("conc8", z.warmup + done)
    return {"conc8_wps": done / elapsed, "conc8_cpu_ms": cpu / done * 1000}


def _phase_start(z: Sizes) -> dict[str, float]:
    """``DBOS.start_workflow`` latency from a 9th thread while 8 threads run workflows.

    Args:
        z: The run's sizes (``start_samples`` calls, ``start_pacing_s`` apart).

    Returns:
        ``start_p50_ms``, ``start_p99_ms`` and the background throughput reached meanwhile.
    """
    _warm_up(z.warmup)
    stop = threading.Event()
    done = [0] * CALLERS
    latencies: list[float] = []
    handles: list[Any] = []

    def worker(k: int) -> Callable[[], None]:
        def body() -> None:
            i = 0
            while not stop.is_set():
                three_step_wf(f"b{k}-{i}")
                i += 1
            done[k] = i

        return body

    def sampler() -> None:
        try:
            time.sleep(0.2)  # let the 8 workers reach a steady state
            for i in range(z.start_samples):
                t0 = time.perf_counter()
                handle: Any = DBOS.start_workflow(three_step_wf, f"st{i}")
                latencies.append(time.perf_counter() - t0)
                handles.append(handle)
                time.sleep(z.start_pacing_s)
        finally:
            stop.set()

    elapsed = _run_threads([*(worker(k) for k in range(CALLERS)), sampler])
    for i, handle in enumerate(handles):
        assert handle.get_result() == f"ST{i}BC"
    _check_completed("start", z.warmup + sum(done) + z.start_samples)
    _check_steps()
    return {
        "start_p50_ms": statistics.median(latencies) * 1000.0,
        "start_p99_ms": _percentile(latencies, 99.0) * 1000.0,
        "start_bg_wps": sum(done) / elapsed,
    }


def _phase_sleep(z: Sizes) -> dict[str, float]:
    """Wall time of a workflow doing one 10 ms durable sleep.

    Args:
        z: The run's sizes (``sleep_warmup`` untimed runs, then ``sleep_runs``).

    Returns:
        ``{"sleep10_ms": median}``.
    """
    for _ in range(z.sleep_warmup):
        sleep_wf()
    times: list[float] = []
    for _ in range(z.sleep_runs):
        t0 = time.perf_counter()
        sleep_wf()
        times.append(time.perf_counter() - t0)
    _check_completed("sleep", z.sleep_warmup + z.sleep_runs)
    return {"sleep10_ms": statistics.median(times) * 1000.0}


def _run_child_phase(args: argparse.Namespace) -> int:
    """Body of a child process: run one phase and print its JSON result on stdout.

    Args:
        args: Parsed command line.

    Returns:
        Process exit code.
    """
    # The recovery figure starts here: after imports, before DBOS configuration and launch.
    t_main = time.perf_counter()
    global _BLOCK_IN_STEP2, _MARKER_PATH
    _exit_with_parent()
    db = Path(args.db)
    z = sizes(args.quick)
    _install_pragmas(args.synchronous)
    if args.phase != "recover":
        _prepare_db(db, args.journal_mode)
    if args.phase == "crash":
        _BLOCK_IN_STEP2 = True
        _MARKER_PATH = Path(args.marker)
        _launch(db)
        with SetWorkflowID(args.workflow_id):
            DBOS.start_workflow(recovery_wf, "r")
        while True:  # wait to be SIGKILLed by the parent
            time.sleep(1.0)

    out: dict[str, Any]
    if args.phase == "recover":
        _launch(db)
        launched = time.perf_counter() - t_main
        handle: Any = DBOS.retrieve_workflow(args.workflow_id)
        result = handle.get_result(polling_interval_sec=POLL_S)
        elapsed = time.perf_counter() - t_main
        if result != "RBC":
            raise RuntimeError(f"recovered workflow returned {result!r}")
        _check_completed("recovery", 1)
        _check_steps()
        out = {"recovery_s": elapsed, "recovery_launch_s": launched}
    else:
        _launch(db)
        if args.phase == "seq":
            out = _phase_seq(z)
        elif args.phase == "conc8":
            out = _phase_conc8(z)
        elif args.phase == "start":
            out = _phase_start(z)
        elif args.phase == "sleep":
            out = _phase_sleep(z)
        else:
            raise ValueError(f"unknown phase {args.phase!r}")
    sync, journal = _read_pragmas(db)
    out["sqlite_synchronous"] = float(sync)
    out["sqlite_wal"] = 1.0 if journal == "wal" else 0.0
    out["checks"] = CHECKS
    print(json.dumps(out), flush=True)
    DBOS.destroy()
    return 0


# --------------------------------------------------------------------------------------------
# Parent (orchestrator).
# --------------------------------------------------------------------------------------------


class _Children:
    """Tracks the child processes this run started, so each can be ended by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, argv: list[str], *, log: Path | None = None) -> subprocess.Popen[str]:
        """Start a child running this module (``python -m``, from the repository root).

        Args:
            argv: Arguments after the module name.
            log: If given, the child's stdout and stderr go to this file; otherwise they are
                captured through pipes.

        Returns:
            The started process.
        """
        cmd = [sys.executable, "-m", "tests.bench.peer_dbos", *argv]
        if log is None:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        else:
            with log.open("w") as out:
                proc = subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        """SIGKILL and reap every started child that is still running."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _result_of(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """Wait for a child and parse the JSON object on its last stdout line.

    Args:
        proc: The child, started with captured output.
        what: Name of the phase, for error messages.

    Returns:
        The child's result.

    Raises:
        RuntimeError: If the child failed, timed out or printed no JSON.
    """
    try:
        stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise RuntimeError(f"phase {what} timed out after {CHILD_TIMEOUT_S} s") from exc
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"phase {what} failed (exit {proc.returncode}):\n{stderr[-4000:]}\n{stdout[-2000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _common_args(args: argparse.Namespace, db: Path) -> list[str]:
    """Arguments every child gets.

    Args:
        args: Parsed command line of the parent.
        db: Fresh SQLite file for the child's phase.

    Returns:
        The argument list.
    """
    return [
        "--db",
        str(db),
        "--synchronous",
        args.synchronous,
        "--journal-mode",
        args.journal_mode,
        *(["--quick"] if args.quick else []),
    ]


def _measure_recovery(args: argparse.Namespace, workdir: Path, kids: _Children) -> dict[str, Any]:
    """Crash a child mid-workflow with SIGKILL, then time recovery in a second child.

    Args:
        args: Parsed command line of the parent.
        workdir: Directory for the SQLite file and the marker.
        kids: Child registry.

    Returns:
        The recovery child's result (``recovery_s`` and the pragmas).

    Raises:
        RuntimeError: If the crash child does not reach step 2 in time.
    """
    db = workdir / "recovery.sqlite"
    marker = workdir / "recovery.marker"
    wf_id = f"peer-recovery-{uuid.uuid4()}"
    common = _common_args(args, db)
    crash = kids.spawn(
        ["--phase", "crash", *common, "--marker", str(marker), "--workflow-id", wf_id],
        log=workdir / "crash-child.log",
    )
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not marker.exists():
        if crash.poll() is not None:
            raise RuntimeError(
                f"crash child exited early with {crash.returncode}; see {workdir}/crash-child.log"
            )
        if time.monotonic() > deadline:
            raise RuntimeError("crash child never reached step 2")
        time.sleep(0.01)
    os.kill(crash.pid, signal.SIGKILL)
    crash.wait()
    recover = kids.spawn(["--phase", "recover", *common, "--workflow-id", wf_id])
    return _result_of(recover, "recover")


def _run_parent(args: argparse.Namespace) -> int:
    """Run every phase in its own child process and report the figures.

    Args:
        args: Parsed command line.

    Returns:
        Process exit code.
    """
    from importlib.metadata import version

    z = sizes(args.quick)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="peer-dbos-")).resolve()
    workdir = workdir / f"run-{os.getpid()}-{int(time.time())}"
    workdir.mkdir(parents=True, exist_ok=True)
    kids = _Children()
    results: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []
    pragmas: set[tuple[float, float]] = set()
    t_start = time.perf_counter()
    try:
        for name in ("seq", "conc8", "start", "sleep"):
            db = workdir / f"{name}.sqlite"
            proc = kids.spawn(["--phase", name, *_common_args(args, db)])
            res = _result_of(proc, name)
            pragmas.add((res.pop("sqlite_synchronous"), res.pop("sqlite_wal")))
            checks.extend(res.pop("checks"))
            results.update(res)
        bg_wps = results.pop("start_bg_wps")
        res = _measure_recovery(args, workdir, kids)
        pragmas.add((res.pop("sqlite_synchronous"), res.pop("sqlite_wal")))
        checks.extend(res.pop("checks"))
        launch_s = res.pop("recovery_launch_s")
        results.update(res)
    finally:
        kids.kill_all()
    if len(pragmas) != 1:
        raise RuntimeError(f"phases ran with different SQLite settings: {sorted(pragmas)}")
    sync, wal = pragmas.pop()
    results["sqlite_synchronous"] = sync
    results["sqlite_wal"] = wal
    results["checks"] = checks
    results["meta"] = {
        "dbos": version("dbos"),
        "sqlite": sqlite3.sqlite_version,
        "synchronous_arg": args.synchronous,
        "journal_mode_arg": args.journal_mode,
        "recovery_launch_s": launch_s,
        "start_bg_wps": bg_wps,
    }

    sync_name = {v: k.upper() for k, v in SYNC_LEVELS.items()}.get(int(sync), "?")
    journal = "WAL" if wal else "rollback journal (delete)"
    _log(f"peer: DBOS {version('dbos')} on SQLite {sqlite3.sqlite_version}, workdir {workdir}")
    _log(
        f"peer: sqlite synchronous = {int(sync)} ({sync_name}, --synchronous {args.synchronous})"
        f", journal = {journal}"
    )
    _log(
        f"peer: seq_wps       = {results['seq_wps']:.1f} workflows/s (3 steps, 1 thread, N={z.seq})"
    )
    _log(f"peer: conc8_wps     = {results['conc8_wps']:.1f} workflows/s (8 threads, N={z.conc8})")
    _log(
        f"peer: start_p50_ms  = {results['start_p50_ms']:.2f} ms (start_workflow, 9th thread, "
        f"{z.start_samples} samples)"
    )
    _log(
        f"peer: start_p99_ms  = {results['start_p99_ms']:.2f} ms (8 threads meanwhile ran "
        f"{bg_wps:.1f} wf/s)"
    )
    _log(
        f"peer: sleep10_ms    = {results['sleep10_ms']:.2f} ms (workflow with DBOS.sleep(0.01), "
        f"median of {z.sleep_runs})"
    )
    _log(
        f"peer: recovery_s    = {results['recovery_s']:.3f} s (config+launch to completion of "
        f"the SIGKILLed workflow; launch itself took {launch_s:.3f} s, the rest is DBOS "
        "re-enqueueing it on its internal queue and that queue's poll picking it up)"
    )
    completed = sum(c["expected"] for c in checks)
    _log(f"peer: {completed} workflows started, all completed (SUCCESS), in {len(checks)} checks")
    _log(f"peer: total bench wall time {time.perf_counter() - t_start:.1f} s")
    if args.json:
        print(json.dumps(results), flush=True)
    else:
        for key, value in results.items():
            if isinstance(value, float):
                print(f"{key}: {value:.4g}")
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments, or None for ``sys.argv[1:]``.

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--workdir", help="directory for the SQLite files (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (workload.QUICK): a smoke run")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--synchronous",
        choices=["default", *SYNC_LEVELS],
        default="full",
        help="PRAGMA synchronous forced on DBOS's connections (default: full; "
        "'default' leaves DBOS/SQLite defaults, which are FULL)",
    )
    p.add_argument(
        "--journal-mode",
        choices=["default", "wal"],
        default="default",
        help="SQLite journal mode: DBOS's default (rollback journal) or WAL",
    )
    # Internal: used when this module runs one phase as a child process.
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--marker", help=argparse.SUPPRESS)
    p.add_argument("--workflow-id", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point.

    Args:
        argv: Arguments, or None for ``sys.argv[1:]``.

    Returns:
        Process exit code.
    """
    args = _parse(argv)
    if args.phase:
        return _run_child_phase(args)
    return _run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
