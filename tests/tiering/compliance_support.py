"""Checks the compliance tests share: a workflow is gone for every reader and every byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tierflow import Tierflow, TierflowError, WorkflowNotFound
from tierflow.warm.storage import ObjectStore

from tests.tiering.compliance_app import LATER, order
from tests.tiering.test_tiering import _env_for

ROOT = Path(__file__).resolve().parents[2]

env_for = _env_for


def run_app(
    mode: str, data: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``tests.tiering.compliance_app`` to completion (or its death)."""
    return subprocess.run(
        [sys.executable, "-m", "tests.tiering.compliance_app", mode, str(data), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def scan_raw(data_dir: Path, store: ObjectStore, markers: list[str]) -> list[str]:
    """Every file under the data dir and object in the store whose raw bytes hold a marker.

    SQLite files are read whole, free pages and ``-wal`` included.
    """
    found = []
    needles = [m.encode() for m in markers]
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            blob = path.read_bytes()
            found += [f"{path}: {m.decode()}" for m in needles if m in blob]
    for key, _ in store.list("", unfinished=True):
        if key.endswith("/"):
            continue
        blob = store.get(key)
        found += [f"{store.url}/{key}: {m.decode()}" for m in needles if m in blob]
    return found


def scan(data_dir: Path, store: ObjectStore, markers: list[str]) -> list[str]:
    """Every place a marker is found, raw and decoded.

    Uses the forensic scanner (``tests/tiering/forensics.py``: Parquet read back, Avro
    manifests and gzip'd metadata decoded, SQLite free pages and WAL) where it exists,
    plus the raw scan above.
    """
    found = scan_raw(data_dir, store, markers)
    try:
        from tests.tiering.forensics import find_marker  # type: ignore[import-not-found]
    except ImportError:
        return found
    for m in markers:
        found += [f"{where}: {m}" for where in find_marker(data_dir, store, m)]
    return sorted(set(found))


async def start_orders(tf: Tierflow, ids: list[str], customer: str = "c-1") -> dict[str, str]:
    """Run an ``order`` per id to completion; return each id's marker."""
    from tests.tiering.compliance_app import marker

    out = {}
    for wid in ids:
        out[wid] = marker()
        await tf.run(order, {"customer": customer, "marker": out[wid]}, workflow_id=wid)
    return out


async def tier_all(tf: Tierflow, *, to: str | None = None) -> None:
    """Move every finished workflow as far as ``to`` (default: cold)."""
    import time

    await tf.tier(now=time.time() + LATER, to="warm")
    if to != "warm":
        await tf.tier(now=time.time() + LATER, to="cold")


async def assert_gone(tf: Tierflow, workflow_id: str, marker: str) -> None:
    """No read, list, SQL view (now or ``as_of``), replay, query or export finds it."""
    for read in (tf.describe, tf.history, tf.status, tf.replay):
        with pytest.raises(WorkflowNotFound):
            await read(workflow_id)
    with pytest.raises(WorkflowNotFound):
        await tf.result(workflow_id, timeout=1)
    with pytest.raises(WorkflowNotFound):
        await tf.query(workflow_id, "anything")
    listed = [i.workflow_id for i in (await tf.list(limit=10_000)).items]
    assert workflow_id not in listed
    counts = " UNION ALL ".join(
        f"SELECT '{view}', count(*) FROM {view} WHERE workflow_id = $id"
        for view in ("workflows", "history", "hot_workflows", "warm_workflows", "cold_workflows")
    )
    result = await tf.sql(
        f"{counts} UNION ALL SELECT 'marker', count(*) FROM history "
        "WHERE payload LIKE $m OR workflow_id LIKE $w",
        {"id": workflow_id, "m": f"%{marker}%", "w": f"%{workflow_id}%"},
    )
    assert {name: n for name, n in result.rows if n} == {}
    # Time travel to every cold snapshot left: none holds it.
    cold_used = tf.index.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'cold_commits'", ()
    ) and tf.index.execute("SELECT 1 FROM cold_commits LIMIT 1", ())
    if cold_used:
        for snap in tf.cold.table("history", refresh=True).metadata.snapshots:
            back = await tf.sql(
                "SELECT count(*) FROM history WHERE workflow_id = ?",
                [workflow_id],
                as_of=snap.snapshot_id,
            )
            assert back.rows == [(0,)]
    try:
        await tf.compliance.export(workflow_id, "/nonexistent/never-written")
    except TierflowError as exc:
        assert isinstance(exc, WorkflowNotFound), exc
    except ModuleNotFoundError:
        pass  # no exports in this build
    else:
        raise AssertionError("export found an erased workflow")
