"""The audit log (issue 19, test 5): every operation is recorded with its actor and reason; an
erased workflow's id never appears in it in clear, yet ``audit_log(workflow_id=...)`` finds its
records by the keyed hash; the ``audit`` SQL view and the Iceberg table ``tierflow.audit``
agree, and appending to the table twice (or after a crash between the append and its note in the
index) adds nothing twice. On file:// and moto.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
from pathlib import Path

import pyarrow as pa
import pytest
from tierflow import InvalidArgument, Tierflow
from tierflow.cold.audit import AuditTable
from tierflow.cold.schema import AUDIT_SCHEMA
from tierflow.tiering.compliance.records import KEY_ENV

from tests.tiering.compliance_app import LATER, POLICY, WORKFLOWS
from tests.tiering.compliance_support import scan, start_orders

pytestmark = pytest.mark.timeout(120)


async def _sql_audit(tf: Tierflow) -> pa.Table:
    result = await tf.sql("SELECT * FROM audit ORDER BY seq")
    return result.to_arrow().cast(AUDIT_SCHEMA)


async def test_every_operation_is_recorded_and_erased_ids_only_hashed(
    make_store, tmp_path: Path, uid, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(KEY_ENV, raising=False)
    store = make_store()
    data = tmp_path / "data"
    victim, kept = uid("victim"), uid("kept")
    async with Tierflow(data, WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        markers = await start_orders(tf, [victim, kept])
        await tf.tier(now=time.time() + LATER, to="warm")
        c = tf.compliance
        await c.set_retention("order", "3650d", actor="ops", reason="policy 7")
        hold = await c.hold(workflow_id=victim, reason="review", actor="legal")
        await c.release(hold.hold_id, actor="legal", reason="review done")
        await c.hold(workflow_id=kept, reason="litigation", actor="legal")
        report = await c.erase(workflow_id=victim, reason="art. 17 request", actor="dpo")
        await c.apply_retention(actor="nightly")
        await c.remove_retention("order", actor="ops", reason="superseded")

        records = await c.audit_log()
        assert [r.operation for r in records] == [
            "retention.set",
            "hold",
            "release",
            "hold",
            "erase",
            "retention.apply",
            "retention.remove",
        ]
        assert [r.seq for r in records] == list(range(1, 8))
        assert [r.actor for r in records] == [
            "ops",
            "legal",
            "legal",
            "legal",
            "dpo",
            "nightly",
            "ops",
        ]
        assert [r.reason for r in records][:5] == [
            "policy 7",
            "review",
            "review done",
            "litigation",
            "art. 17 request",
        ]
        erase = records[4]
        assert erase.counts == {"hot": 0, "warm": 1, "cold": 0}
        assert erase.detail["erasure_id"] == report.erasure_id and erase.detail["requested"]
        assert erase.detail["files_rewritten"]["warm"] >= 1

        # The erased id is nowhere in clear: not in a record, the view or the Iceberg table.
        key = (data / "audit.key").read_bytes()
        assert len(key) == 32
        assert stat.S_IMODE(os.stat(data / "audit.key").st_mode) == 0o600
        digest = hmac.new(key, victim.encode(), hashlib.sha256).hexdigest()
        assert erase.subject_hash == digest
        assert victim not in repr(records)
        mine = await c.audit_log(workflow_id=victim)
        assert [r.operation for r in mine] == ["hold", "release", "erase"]
        assert all(r.subject_hash == digest and r.workflow_id is None for r in mine)
        # A live workflow's hold may name it.
        assert [r.workflow_id for r in await c.audit_log(workflow_id=kept)] == [kept]
        assert [r.operation for r in await c.audit_log(operation="hold")] == ["hold", "hold"]
        assert await c.audit_log(since=time.time() + 60) == []
        assert len(await c.audit_log(limit=2)) == 2

        # The view and the Iceberg table (appended by the tiering pass) agree.
        await tf.tier(now=time.time() + LATER)
        view = await _sql_audit(tf)
        iceberg = await tf.engine.io(AuditTable(tf.cold).read)
        assert view.num_rows == len(records) == iceberg.num_rows
        assert view.to_pylist() == iceberg.to_pylist()
        assert victim not in str(view.to_pylist())
    assert scan(data, store, [victim, markers[victim]]) == []


async def test_the_iceberg_table_never_gets_a_record_twice(make_store, tmp_path: Path, uid):
    store = make_store()
    async with Tierflow(tmp_path / "data", WORKFLOWS, warm_store=store, tiering=POLICY) as tf:
        c = tf.compliance
        await c.set_retention("a", "1d", actor="ops")
        assert await c.publish_audit() == 1
        assert await c.publish_audit() == 0  # nothing new: no catalog access needed
        await c.set_retention("b", "1d", actor="ops")
        # A pass killed after its append, before noting it in the index: the note is behind.
        assert await c.publish_audit() == 1
        tf.index.write_now(lambda conn: conn.execute("DELETE FROM audit_published"))
        assert await c.publish_audit() == 0
        await c.set_retention("c", "1d", actor="ops")
        assert await c.publish_audit() == 1
        rows = await tf.engine.io(AuditTable(tf.cold).read)
        assert rows.column("seq").to_pylist() == [1, 2, 3]
        assert rows.to_pylist() == (await _sql_audit(tf)).to_pylist()


async def test_the_audit_key(tmp_path: Path, uid, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    data = tmp_path / "data"
    async with Tierflow(data, WORKFLOWS) as tf:
        made = tf.compliance.records.subject_hash("some-id")
    async with Tierflow(data, WORKFLOWS) as tf:  # created once, then reused
        assert tf.compliance.records.subject_hash("some-id") == made
    monkeypatch.setenv(KEY_ENV, "k" * 32)
    async with Tierflow(data, WORKFLOWS) as tf:
        expected = hmac.new(b"k" * 32, b"some-id", hashlib.sha256).hexdigest()
        assert tf.compliance.records.subject_hash("some-id") == expected != made
    monkeypatch.setenv(KEY_ENV, "short")
    async with Tierflow(data, WORKFLOWS) as tf:
        with pytest.raises(InvalidArgument):
            tf.compliance.records.subject_hash("some-id")
