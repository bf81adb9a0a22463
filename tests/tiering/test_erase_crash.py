"""The erasure primitives under SIGKILL: a real subprocess (``tests.tiering.erase_app``) is
killed after each step of ``erase_from_warm`` and of ``erase_rows`` (every step on file://, two
of each on a moto S3 server); the rerun, in the test's process, finishes the erasure, and
nothing else is lost.

Between the kill and the rerun, every other workflow reads as before (warm: the old batch
or its replacement is in force, never a mix). After the rerun no byte of the victim's id or
secret is left in the store, every other row is there, every batch verifies against its
manifest, and no object is left that no metadata names.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from tierflow import ManualClock, Tierflow
from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.cold.erase import STEPS, erase_rows
from tierflow.tiering.compliance.warm import CRASH_POINTS, erase_from_warm
from tierflow.warm.storage import ObjectStore

from tests import procs
from tests.cold.test_cold_erase import load, table_rows
from tests.tiering.erase_app import LATER, WORKFLOWS, populate, secret_of
from tests.tiering.forensics import find_marker
from tests.tiering.test_cold_crash import referenced
from tests.tiering.test_erase_primitives import POLICY, assert_warm_batches_verify, reads
from tests.tiering.test_tiering import _env_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DAYS = (date(2026, 4, 1), date(2026, 4, 2))


def run_app(
    mode: str, data: Path, env: dict[str, str], *ids: str
) -> subprocess.CompletedProcess[str]:
    return procs.run("tests.tiering.erase_app", mode, str(data), *ids, env=env, timeout=100)


# Every point on file://; on S3, one before the swap (new objects to clean up) and one after.
WARM_CASES = [("file", p) for p in (*CRASH_POINTS, "in-put")] + [
    ("s3", "warm-erase-after-write"),
    ("s3", "warm-erase-after-publish"),
]
"""``in-put``: killed inside the write of the first rewritten file (file:// keeps a torn
temporary file, which the rerun must delete)."""
COLD_CASES = [("file", s) for s in STEPS] + [("s3", "sealed"), ("s3", "manifests-deleted")]


@pytest.mark.parametrize(("backend", "point"), WARM_CASES)
async def test_kill_during_warm_erasure_then_rerun(
    make_store: Callable[..., ObjectStore], tmp_path: Path, clock: ManualClock, point: str
) -> None:
    store = make_store()
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS, warm_store=store, clock=clock, tiering=POLICY) as tf:
        ids = await populate(tf, clock, 6)
        await tf.tier(now=clock.now() + LATER, to="warm")
        before = await reads(tf, ids)
    victim = ids[1]
    others = [w for w in ids if w != victim]
    kill = {"ERASE_APP_KILL_IN_PUT": "1"} if point == "in-put" else {"TIERFLOW_CRASH_AT": point}
    killed = run_app("warm", data, {**_env_for(store), **kill}, victim)
    assert killed.returncode == -9, killed.stderr
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        assert await reads(tf, others) == {w: before[w] for w in others}
        [(state,)] = tf.index.execute("SELECT state FROM warm_erasures", ())
        assert state == ("writing" if point.endswith(("intent", "write", "put")) else "swapped")
        if point == "in-put":
            assert any(
                ObjectStore.unfinished_target(k) for k, _ in store.list("warm", unfinished=True)
            )
        rerun = erase_from_warm(tf.index, store, [victim])
        print(f"after a kill at {point}: {rerun}")
        assert await reads(tf, others) == {w: before[w] for w in others}
        assert_warm_batches_verify(tf, store)
        for marker in (victim, secret_of(victim)):
            assert find_marker(tmp_path / "nothing", store, marker) == []
        assert erase_from_warm(tf.index, store, [victim]).objects_deleted == 0


def make_cold(store: ObjectStore, data: Path) -> tuple[ColdTables, list[str]]:
    """Two days, two commits: each day's partition has two files per table."""
    data.mkdir(parents=True)
    cold = ColdTables(CatalogSettings(url=f"sqlite:///{data}/catalog.sqlite"), store)
    token = uuid.uuid4().hex[:6]
    ids = [f"w-{token}-{i:03d}" for i in range(12)]
    load(cold, [{d: ids[n + k :: 4] for n, d in enumerate(DAYS)} for k in (0, 2)])
    return cold, ids


def assert_referenced_only(cold: ColdTables) -> None:
    """Every object under the tables is named by their metadata (or its log)."""
    root = cold.store.url.rstrip("/") + "/"
    known: set[str] = set()
    for dataset in ("workflows", "history"):
        refs, earlier = referenced(cold.table(dataset, refresh=True))
        known |= refs | earlier
    stored = [k for k, _ in cold.store.list("cold", unfinished=True)]
    assert [k for k in stored if root + k not in known] == []


@pytest.mark.parametrize(("backend", "step"), COLD_CASES)
def test_kill_during_cold_erasure_then_rerun(
    make_store: Callable[..., ObjectStore], tmp_path: Path, step: str
) -> None:
    store = make_store()
    data = tmp_path / "data"
    cold, ids = make_cold(store, data)
    victim = ids[1]  # the lower bound of its file: its manifest entry spells it
    before = {ds: table_rows(cold, ds) for ds in ("history", "workflows")}
    cold.close()
    env = {
        **_env_for(store),
        "ERASE_APP_DAYS": json.dumps({victim: DAYS[1].isoformat()}),
        "TIERFLOW_CRASH_AT": f"cold-erase-{step}",
    }
    killed = run_app("cold", data, env, victim)
    assert killed.returncode == -9, killed.stderr

    cold = ColdTables(CatalogSettings(url=f"sqlite:///{data}/catalog.sqlite"), store)
    try:
        for ds, was in before.items():  # between the kill and the rerun: others all there
            key = (lambda r: r[0]) if ds == "history" else (lambda r: r)
            assert [r for r in table_rows(cold, ds) if key(r) != victim] == [
                r for r in was if key(r) != victim
            ]
        rerun = erase_rows(cold, [victim], finished_dates={victim: DAYS[1]})
        print(f"after a kill at {step}: {rerun}")
        for ds, was in before.items():
            key = (lambda r: r[0]) if ds == "history" else (lambda r: r)
            assert table_rows(cold, ds) == [r for r in was if key(r) != victim]
        assert_referenced_only(cold)
        for marker in (victim, f"s3cr3t-{victim}"):
            assert find_marker(data, store, marker) == []
        again = erase_rows(cold, [victim], finished_dates={victim: DAYS[1]})
        assert (again.files_rewritten, again.files_deleted, again.snapshots_expired) == (0, 0, ())
    finally:
        cold.close()
