"""Verified export (issue 19, test 6): a workflow's row, events and manifest, from every tier.

An export read from hot, warm or cold (file:// and moto S3) holds exactly what ``describe``
and ``history`` return, with the checksums and the cold snapshot in its manifest, and
verifies; a byte changed in any file, a file removed or a file added makes ``verify_export``
fail naming that file; an export whose files and manifest were rewritten together passes
the file checks and fails the comparison with the archive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tierflow import (
    ExportVerificationError,
    InvalidArgument,
    ManualClock,
    Tierflow,
    WorkflowContext,
    WorkflowNotFound,
    workflow,
)
from tierflow.tiering.compliance.export import (
    EVENTS_FILE,
    MANIFEST_FILE,
    WORKFLOW_FILE,
    ExportManifest,
    export_workflow,
    tierflow_version,
    verify_export,
)
from tierflow.tiering.policy import TieringPolicy

from tests.conftest import wait_status

pytestmark = pytest.mark.timeout(120)

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the injected clock's time
HOUR = 3600.0


def charge(order: dict[str, Any]) -> dict[str, Any]:
    return {"charged": order["amount"], "note": order["note"]}


@workflow(name="export_order")
async def order(ctx: WorkflowContext, o: dict[str, Any]) -> dict[str, Any]:
    ctx.set_attributes(customer=o["customer"], amount=o["amount"])
    paid = await ctx.step("charge", charge, o)
    token = ctx.uuid()
    return {"paid": paid, "token": token, "text": "ünïcødé ✓ 𝄞"}


@workflow(name="export_waiting")
async def waiting(ctx: WorkflowContext, o: dict[str, Any]) -> Any:
    await ctx.step("charge", charge, o)
    return await ctx.wait_for_signal("go")


FLOWS = [order, waiting]


def an_order(n: int) -> dict[str, Any]:
    return {"customer": f"c-{n}", "amount": 10 + n, "note": f"marker-{n}"}


def open_tf(tmp_path: Path, store: Any, clock: ManualClock) -> Tierflow:
    policy = TieringPolicy(min_age=0, cold_after="1h")
    return Tierflow(tmp_path / "d", FLOWS, warm_store=store, tiering=policy, clock=clock)


def as_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def check_export(tf: Tierflow, m: ExportManifest, tier: str) -> None:
    """The export holds what the facade reads, with the manifest's checksums."""
    d = m.directory
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [WORKFLOW_FILE, EVENTS_FILE, MANIFEST_FILE]
    )
    info = await tf.describe(m.workflow_id)
    events = await tf.history(m.workflow_id)
    assert info.tier == tier and m.tier == tier and m.status == info.status
    assert json.loads((d / WORKFLOW_FILE).read_text()) == as_json(info.to_dict())
    lines = (d / EVENTS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == as_json([e.to_dict() for e in events])
    assert m.events == len(events) > 2
    assert {f.name: (f.sha256, f.size) for f in m.files} == {
        name: (sha256(d / name), (d / name).stat().st_size) for name in (WORKFLOW_FILE, EVENTS_FILE)
    }
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    assert manifest["workflow_id"] == m.workflow_id and manifest["tier"] == tier
    assert manifest["tierflow_version"] == tierflow_version() != "unknown"
    if tier == "cold":
        current = {
            name: tf.cold.table(name).current_snapshot().snapshot_id  # type: ignore[union-attr]
            for name in ("workflows", "history")
        }
        assert m.cold_snapshots == current and m.cold_snapshot_id == current["history"]
        assert manifest["cold_snapshot_id"] == current["history"]
    else:
        assert m.cold_snapshot_id is None and manifest["cold_snapshot_id"] is None
        assert m.cold_snapshots == {}
    assert verify_export(d) == m
    assert verify_export(d, tf) == m


async def test_export_from_hot_warm_and_cold_holds_the_workflow_and_verifies(
    make_store, tmp_path: Path, uid
):
    clock = ManualClock(START)
    async with open_tf(tmp_path, make_store(), clock) as tf:
        ids = {tier: uid(tier) for tier in ("cold", "warm", "hot")}
        await tf.run(order, an_order(1), workflow_id=ids["cold"])
        hot_view = {
            "info": (await tf.describe(ids["cold"])).to_dict(),
            "events": [e.to_dict() for e in await tf.history(ids["cold"])],
        }
        await tf.tier(now=clock.now() + 2 * HOUR)  # hot -> warm -> cold
        await tf.run(order, an_order(2), workflow_id=ids["warm"])
        await tf.tier(now=clock.now() + 60)  # hot -> warm; too young for cold
        await tf.run(order, an_order(3), workflow_id=ids["hot"])
        assert {t: (await tf.describe(w)).tier for t, w in ids.items()} == {
            "cold": "cold",
            "warm": "warm",
            "hot": "hot",
        }
        for tier, wid in ids.items():
            m = await export_workflow(tf, wid, tmp_path / "exports" / tier)
            assert m.exported_at == datetime.fromtimestamp(START, UTC)  # the engine's clock
            await check_export(tf, m, tier)

        # What the cold export holds is what hot returned before the workflow was archived.
        cold_dir = tmp_path / "exports" / "cold"
        exported = [json.loads(line) for line in (cold_dir / EVENTS_FILE).read_text().splitlines()]
        assert exported == as_json(hot_view["events"])
        row = json.loads((cold_dir / WORKFLOW_FILE).read_text())
        assert row.pop("tier") == "cold" and hot_view["info"].pop("tier") == "hot"
        assert row == as_json(hot_view["info"])

        # A later tiering pass moves the warm one to cold: its export still verifies.
        await tf.tier(now=clock.now() + 2 * HOUR)
        assert (await tf.describe(ids["warm"])).tier == "cold"
        assert verify_export(tmp_path / "exports" / "warm", tf).tier == "warm"


def one_byte_changes(src: Path) -> list[tuple[str, str, bytes, bytes]]:
    """(what, file, old, new): each replaces one byte and leaves the file valid JSON."""
    manifest = json.loads((src / MANIFEST_FILE).read_text())
    digest = next(f["sha256"] for f in manifest["files"] if f["name"] == EVENTS_FILE)
    flipped = ("0" if digest[0] != "0" else "1") + digest[1:]
    return [
        ("a letter of the input", WORKFLOW_FILE, b"marker-", b"markex-"),
        ("a letter of a step's payload", EVENTS_FILE, b"marker-", b"markex-"),
        # Without the manifest's own checksum this would be blamed on events.jsonl.
        ("a digit of a listed checksum", MANIFEST_FILE, digest.encode(), flipped.encode()),
        # Same content, another form: only the byte form check sees it.
        ("a space of the indentation", MANIFEST_FILE, b'\n  "', b'\n \t"'),
    ]


def tamper_cases(src: Path, work: Path) -> list[tuple[str, Path, str]]:
    """Copies of ``src``, each with one change: (what, directory, the file to be named)."""
    cases = []
    for n, (what, name, old, new) in enumerate(one_byte_changes(src)):
        d = work / f"byte-{n}"
        shutil.copytree(src, d)
        data = (d / name).read_bytes()
        assert old in data and len(old) == len(new)
        assert sum(a != b for a, b in zip(old, new, strict=True)) == 1
        (d / name).write_bytes(data.replace(old, new, 1))
        text = (d / name).read_text()  # still JSON: a parse error does not give it away
        for doc in text.splitlines() if name == EVENTS_FILE else [text]:
            json.loads(doc)
        cases.append((f"{what} in {name}", d, name))
    for name in (WORKFLOW_FILE, EVENTS_FILE, MANIFEST_FILE):
        d = work / f"gone-{name}"
        shutil.copytree(src, d)
        (d / name).unlink()
        cases.append((f"{name} removed", d, name))
    d = work / "added"
    shutil.copytree(src, d)
    (d / "notes.txt").write_text("added later\n")
    cases.append(("a file added", d, "notes.txt"))
    return cases


async def test_a_changed_missing_or_added_file_fails_naming_it(make_store, tmp_path: Path, uid):
    clock = ManualClock(START)
    async with open_tf(tmp_path, make_store(), clock) as tf:
        wid = uid("cold")
        await tf.run(order, an_order(4), workflow_id=wid)
        await tf.tier(now=clock.now() + 2 * HOUR)
        src = tmp_path / "export"
        await export_workflow(tf, wid, src)
        verify_export(src, tf)
        for what, d, name in tamper_cases(src, tmp_path / "cases"):
            for archive in (None, tf):
                with pytest.raises(ExportVerificationError) as caught:
                    verify_export(d, archive)
                err = caught.value
                assert err.files == (name,), (what, err.problems)
                assert name in str(err) and err.workflow_id in (wid, None), what
                assert err.directory == str(d)
        verify_export(src, tf)  # the original is untouched


def reseal(d: Path, edit_events: Any) -> None:
    """Rewrite events.jsonl and recompute every checksum, as a forger would."""
    lines = [json.loads(x) for x in (d / EVENTS_FILE).read_text().splitlines()]
    lines = edit_events(lines)
    data = b"".join(
        json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        for e in lines
    )
    (d / EVENTS_FILE).write_bytes(data)
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    del manifest["manifest_sha256"]
    manifest["events"] = len(lines)
    for f in manifest["files"]:
        if f["name"] == EVENTS_FILE:
            f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    manifest["manifest_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    text = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    (d / MANIFEST_FILE).write_text(text)


def changed_payload(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    step = next(e for e in events if e["event_type"] == "step.completed")
    step["payload"] = json.loads(json.dumps(step["payload"]).replace("marker-", "forged-"))
    return events


async def test_a_resealed_export_passes_the_file_checks_and_fails_against_the_archive(
    make_store, tmp_path: Path, uid
):
    clock = ManualClock(START)
    async with open_tf(tmp_path, make_store(), clock) as tf:
        wid = uid("cold")
        await tf.run(order, an_order(5), workflow_id=wid)
        await tf.tier(now=clock.now() + 2 * HOUR)
        src = tmp_path / "export"
        await export_workflow(tf, wid, src)
        for name, edit in (
            ("changed", changed_payload),
            ("dropped", lambda events: events[:-1]),
            ("added", lambda events: [*events, {**events[-1], "event_id": len(events) + 1}]),
        ):
            d = tmp_path / name
            shutil.copytree(src, d)
            reseal(d, edit)
            verify_export(d)  # the checksums agree with the forged files
            with pytest.raises(ExportVerificationError) as caught:
                verify_export(d, tf)
            assert caught.value.files == (EVENTS_FILE,), (name, caught.value.problems)
            assert "archive" in str(caught.value)


async def test_an_unfinished_workflow_exports_its_events_so_far(tmp_path: Path, uid):
    clock = ManualClock(START)
    async with open_tf(tmp_path, None, clock) as tf:
        wid = uid("live")
        await tf.start(waiting, an_order(6), workflow_id=wid)
        await wait_status(tf, wid, "paused")
        m = await export_workflow(tf, wid, tmp_path / "live")
        assert m.status == "paused" and m.tier == "hot"
        await check_export(tf, m, "hot")
        await tf.signal(wid, "go", {"done": True})
        assert await tf.result(wid, timeout=10) == {"done": True}
        # Its history has grown: the exported events are still its first ones.
        assert len(await tf.history(wid)) > m.events
        assert verify_export(tmp_path / "live", tf) == m
        d = tmp_path / "forged"
        shutil.copytree(tmp_path / "live", d)
        reseal(d, changed_payload)
        with pytest.raises(ExportVerificationError, match=r"events\.jsonl: event"):
            verify_export(d, tf)


async def test_bad_targets_and_unknown_ids_write_nothing(tmp_path: Path, uid):
    clock = ManualClock(START)
    async with open_tf(tmp_path, None, clock) as tf:
        wid = uid("done")
        await tf.run(order, an_order(7), workflow_id=wid)
        with pytest.raises(WorkflowNotFound):
            await export_workflow(tf, uid("unknown"), tmp_path / "unknown")
        assert not (tmp_path / "unknown").exists()
        busy = tmp_path / "busy"
        busy.mkdir()
        (busy / "keep.txt").write_text("mine")
        with pytest.raises(InvalidArgument, match="not empty"):
            await export_workflow(tf, wid, busy)
        assert [p.name for p in busy.iterdir()] == ["keep.txt"]
        (tmp_path / "a-file").write_text("x")
        with pytest.raises(InvalidArgument, match="is a file"):
            await export_workflow(tf, wid, tmp_path / "a-file")

        when = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)
        m = await export_workflow(tf, wid, tmp_path / "deep" / "new" / "dir", now=when)
        assert m.exported_at == when and verify_export(m.directory, tf) == m

        with pytest.raises(ExportVerificationError) as caught:
            verify_export(tmp_path / "nowhere")
        assert caught.value.files == (str(tmp_path / "nowhere"),)
        # An export cut short before its manifest was written.
        partial = tmp_path / "partial"
        shutil.copytree(m.directory, partial)
        (partial / MANIFEST_FILE).unlink()
        with pytest.raises(ExportVerificationError, match=r"manifest\.json: missing"):
            verify_export(partial)


def test_verify_runs_from_sync_code_without_an_event_loop(tmp_path: Path, uid):
    wid = uid("done")

    async def setup() -> ExportManifest:
        async with open_tf(tmp_path, None, ManualClock(START)) as tf:
            await tf.run(order, an_order(8), workflow_id=wid)
            return await export_workflow(tf, wid, tmp_path / "x")

    m = asyncio.run(setup())
    # A script with no event loop: the archive reads get one of their own.
    tf = open_tf(tmp_path, None, ManualClock(START))
    tf.open()
    try:
        assert verify_export(m.directory, tf) == m
    finally:
        asyncio.run(tf.aclose())
