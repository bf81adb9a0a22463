"""Cold point reads of a workflow whose rows lie in several data files; on file:// and moto S3.

Several small warm → cold commits write files of a few rows each (a test-only layout, as
``cold_app.small_files`` makes), so one workflow's history is split over two or three files
of one commit. ``history()``, ``describe()``, ``result()`` and ``replay()`` must return every
event, before maintenance and after it has rewritten the small files into one.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import pytest
from tierflow import Tierflow
from tierflow.cold import tables
from tierflow.cold.reader import ColdReader
from tierflow.tiering.source import ColdSource

from tests.tiering.cold_app import POLICY
from tests.tiering.tier_app import LATER, WORKFLOWS

pytestmark = pytest.mark.timeout(60)

ROUNDS = 2  # small cold commits before maintenance


async def reads(tf: Tierflow, ids: list[str]) -> dict[str, Any]:
    """What every read path gives for each id (history, result, replay), tier aside."""
    out: dict[str, Any] = {}
    for wid in ids:
        info = (await tf.describe(wid)).to_dict()
        info.pop("tier")
        replayed = await tf.replay(wid)
        out[wid] = {
            "info": info,
            "history": [e.to_dict() for e in await tf.history(wid)],
            "replay": (replayed.status, replayed.result, [e.to_dict() for e in replayed.events]),
        }
    return out


def history_files(tf: Tierflow, ids: list[str]) -> dict[str, int]:
    """Per id, how many cold history files a point read opens (after pruning on bounds)."""
    reader = ColdReader(tf.cold)
    out = {}
    for wid in ids:
        row = tf.index.get(wid)
        assert row is not None and row.tier == "cold", row
        out[wid] = len(reader.candidates("history", wid, ColdSource._day(row)))
    return out


async def test_history_spread_over_several_cold_files_reads_whole(
    make_store, tmp_path: Path, uid: Any, monkeypatch: pytest.MonkeyPatch
):
    store = make_store()
    data = tmp_path / "data"
    real_layout = tables.ColdLayout
    # Files of at most 5 rows: each history (6 events or more) spans two files or more.
    monkeypatch.setattr(
        tables, "ColdLayout", functools.partial(real_layout, target_file_bytes=1, row_group_rows=5)
    )
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        ids: list[str] = []
        before: dict[str, Any] = {}
        for round_ in range(ROUNDS):
            batch = []
            for i, wf in enumerate(WORKFLOWS[:2]):  # alpha, beta
                batch.append((await tf.run(wf, i, workflow_id=uid(f"r{round_}"))).workflow_id)
            ids += batch
            hot = await reads(tf, batch)
            assert all(len(r["history"]) >= 6 for r in hot.values())
            await tf.tier(now=time.time() + LATER, to="warm")
            report = await tf.tier(now=time.time() + LATER, to="cold")
            assert report.cold is not None and len(report.cold.commits) == 1
            before.update(hot)
        assert await reads(tf, ids) == before
        spread = history_files(tf, ids)
        assert min(spread.values()) >= 2, spread  # every workflow's events are in 2+ files
        assert len(tf.cold.table("history", refresh=True).metadata.snapshots) == ROUNDS

    # Maintenance with the default layout rewrites the small files: one file per table.
    monkeypatch.setattr(tables, "ColdLayout", real_layout)
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        assert await reads(tf, ids) == before  # a fresh reader, same spread files
        done = await tf.maintain_cold(now=time.time() + 1)
        assert done.rewrite is not None
        assert done.rewrite.rows == sum(len(r["history"]) + 1 for r in before.values()), done
        assert history_files(tf, ids) == dict.fromkeys(ids, 1)
        assert await reads(tf, ids) == before
