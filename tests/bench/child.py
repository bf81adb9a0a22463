"""Helpers the benchmark phases share: a measured subprocess, and failing a run loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Failed(RuntimeError):
    """A benchmark's correctness check failed: its figures mean nothing."""


def require(ok: bool, what: str) -> None:
    """Raise :class:`Failed` with ``what`` unless ``ok``."""
    if not ok:
        raise Failed(what)


def run_child(module: str, spec: dict[str, Any], work: Path, what: str) -> dict[str, Any]:
    """Run ``python -m <module> --child <spec file>`` and return its figures and peak RSS.

    The child prints its figures as JSON on its last stdout line. Its peak RSS
    comes from ``wait4`` (``communicate()`` would reap the child itself, losing
    the rusage), so the pipes are drained in threads.

    Returns:
        The child's figures plus ``peak_rss_mb`` and the tail of its ``stderr``.

    Raises:
        Failed: The child exited with an error.
    """
    spec_path = work / f"spec-{uuid.uuid4().hex[:8]}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--child", str(spec_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        out[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=(n, s))
        for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise Failed(f"{what} failed:\n{out['stderr'][-4000:]}")
    figures: dict[str, Any] = json.loads(out["stdout"].strip().splitlines()[-1])
    figures["peak_rss_mb"] = usage.ru_maxrss / 1024
    figures["stderr"] = out["stderr"][-8000:]
    return figures
