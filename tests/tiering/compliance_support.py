"""Checks the compliance tests share: a workflow is gone for every reader and every byte."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tierflow import InvalidArgument, Tierflow, TierflowError, WorkflowNotFound
from tierflow.warm.storage import ObjectStore

from tests import procs
from tests.tiering.compliance_app import LATER, order
from tests.tiering.test_tiering import _env_for

ROOT = Path(__file__).resolve().parents[2]

env_for = _env_for


def run_app(
    mode: str, data: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``tests.tiering.compliance_app`` to completion (or its death)."""
    return procs.run("tests.tiering.compliance_app", mode, str(data), *args, env=env)


@dataclass(frozen=True)
class Killed:
    """How a forked run of the app ended: its exit code (-9: SIGKILL) and what it printed."""

    returncode: int
    stdout: str


def run_forked(mode: str, data: Path, env: dict[str, str], *args: str) -> Killed:
    """Run the app like :func:`run_app` and return how it ended (``TIERFLOW_CRASH_AT`` kills).

    The child is forked from the suite's zygote (:mod:`tests.procs`), which has imported
    tierflow, pyarrow and pyiceberg once, so each run (each kill) does not pay seconds of
    imports; it is still a process of its own that SIGKILL ends.
    """
    done = run_app(mode, data, env, *args)
    return Killed(done.returncode, done.stdout)


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

    await tf.tier(now=time.time() + LATER, to="warm")
    if to != "warm":
        await tf.tier(now=time.time() + LATER, to="cold")


async def assert_gone(tf: Tierflow, workflow_id: str, marker: str) -> None:
    """No read, list, SQL view (now or ``as_of``), replay, query or export finds it."""
    await assert_all_gone(tf, {workflow_id: marker})


async def assert_all_gone(
    tf: Tierflow, markers: dict[str, str], *, time_travel: bool = True
) -> None:
    """None of these workflows (id to a marker of its input) is found by any reader.

    Reads by id, ``list``, every SQL view now and (``time_travel``) as of every cold
    snapshot left (the ids, or the markers in any payload), replay, query and export.
    """
    ids = sorted(markers)
    for wid in ids:
        for read in (tf.describe, tf.history, tf.status, tf.replay):
            with pytest.raises(WorkflowNotFound):
                await read(wid)
        with pytest.raises(WorkflowNotFound):
            await tf.result(wid, timeout=1)
        with pytest.raises(WorkflowNotFound):
            await tf.query(wid, "anything")
        try:
            await tf.compliance.export(wid, "/nonexistent/never-written")
        except TierflowError as exc:
            assert isinstance(exc, WorkflowNotFound), exc
        else:
            raise AssertionError(f"export found erased {wid}")
    listed = {i.workflow_id for i in (await tf.list(limit=10_000)).items}
    assert listed.isdisjoint(ids)
    params = {"ids": ids, "pats": [f"%{m}%" for m in markers.values()]}
    views = ("workflows", "history", "hot_workflows", "warm_workflows", "cold_workflows")
    found = " UNION ALL ".join(
        f"SELECT '{v}', count(*) FROM {v} WHERE list_contains($ids, workflow_id)" for v in views
    )
    query = (
        f"{found} UNION ALL SELECT 'payload', count(*) FROM history "
        "WHERE len(list_filter($pats, lambda p: payload LIKE p)) > 0"
    )
    result = await tf.sql(query, params)
    assert {name: n for name, n in result.rows if n} == {}
    cold_used = tf.index.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'cold_commits'", ()
    ) and tf.index.execute("SELECT 1 FROM cold_commits LIMIT 1", ())
    if cold_used and time_travel:  # time travel to every cold snapshot left: none holds them
        answered = 0
        for dataset in ("history", "workflows"):
            for snap in tf.cold.table(dataset, refresh=True).metadata.snapshots:
                try:
                    back = await tf.sql(query, params, as_of=snap.snapshot_id)
                except InvalidArgument as exc:
                    # Before the other table's oldest snapshot left: refused, not answered.
                    assert "keeps no history" in str(exc), exc
                    continue
                answered += 1
                assert {name: n for name, n in back.rows if n} == {}, snap.snapshot_id
        assert answered
