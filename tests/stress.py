"""Run the suite's most timing-sensitive tests again and again while another process keeps
one core busy: a test that fails once in 20 runs under load is a bug, not bad luck.

Usage: ``python -m tests.stress [RUNS]`` (``make stress``; default 20 runs). Stops at the first
failing run and exits with its code. The busy process is started here and killed here.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tests that start, kill or race processes, wait on clocks, or poll for another process.
SELECTION = (
    "tests/hot/test_processes.py",
    "tests/hot/test_crash_recovery.py",
    "tests/hot/test_event_stream.py",
    "tests/hot/test_signals_queries.py",
    "tests/hot/test_cancel_terminate.py",
    "tests/hot/test_timers_and_retries.py",
    "tests/tiering/test_leases.py",
    "tests/tiering/test_sql_cut.py",
    "tests/tiering/test_sql.py::test_each_workflow_once_while_another_process_moves_them_to_warm_and_cold",
    "tests/tiering/test_sql_confinement.py::test_time_limits_hold_and_the_next_query_works",
    "tests/tiering/test_sql_confinement.py::test_a_failing_query_runs_once",
    "tests/tiering/test_tiering_promises.py::test_two_tiering_processes_at_once_write_each_workflow_once",
    "tests/http/test_serve_workers.py",
    "tests/http/test_observability.py",
    "tests/http/test_limits.py",
)


def main(runs: int) -> int:
    """Run :data:`SELECTION` ``runs`` times beside a busy core; return the first failure's code."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for run in range(1, runs + 1):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SELECTION],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            took = time.monotonic() - started
            verdict = "FAILED" if done.returncode else "passed"
            print(f"run {run}/{runs}: {verdict} in {took:.0f} s", flush=True)
            if done.returncode:
                print(done.stdout[-20_000:], done.stderr[-5_000:], sep="\n")
                return done.returncode
        return 0
    finally:
        busy.kill()
        busy.wait()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
