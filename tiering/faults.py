"""Crash points for fault-injection tests.

The crash tests run the tiering job in a real subprocess with
``TIERFLOW_CRASH_AT=<point>`` set; when the job reaches that point the
process kills itself with SIGKILL, exactly like a power cut or an OOM kill
at that instruction. Unset (always, in production) this is a dictionary
lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "crash_point"]

POINTS = ("after-read", "mid-write", "after-write", "after-verify", "after-commit")


def crash_point(name: str) -> None:
    """SIGKILL this process if ``TIERFLOW_CRASH_AT`` names this point."""
    if os.environ.get("TIERFLOW_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
