"""Every compliance route over HTTP: retention, holds, erasure, the audit log, export.

A hold blocks erasure (409); released, the erasure goes through, the workflow is
gone from every read, and the audit log shows who did it (the key's name).
"""

from __future__ import annotations

import hashlib
import json

from tests.http.conftest import Api, run_order, tier_now, wait_status


def test_hold_blocks_erasure_until_released_and_the_audit_shows_it(api: Api, uid):
    c = api.client()
    wid = run_order(api, uid("erase"), uid("cust"))["workflow_id"]
    tier_now(api, "warm")
    r = c.post("/v1/compliance/holds", json={"workflow_id": wid, "reason": "litigation 7"})
    assert r.status_code == 201, r.text
    hold = r.json()
    assert hold["workflow_id"] == wid and hold["actor"] == "admin" and hold["released_at"] is None
    listed = c.get("/v1/compliance/holds", params={"workflow_id": wid}).json()
    assert [h["hold_id"] for h in listed] == [hold["hold_id"]]
    refused = c.post("/v1/compliance/erasures", json={"workflow_id": wid, "reason": "gdpr"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "on_hold"
    assert hold["hold_id"] in refused.json()["error"]["message"]
    assert c.get(f"/v1/workflows/{wid}").status_code == 200
    no_reason = c.delete(f"/v1/compliance/holds/{hold['hold_id']}")
    assert no_reason.status_code == 422
    released = c.delete(f"/v1/compliance/holds/{hold['hold_id']}", params={"reason": "settled"})
    assert released.status_code == 200 and released.json()["released_by"] == "admin"
    again = c.delete(f"/v1/compliance/holds/{hold['hold_id']}", params={"reason": "twice"})
    assert again.status_code == 404 and again.json()["error"]["code"] == "hold_not_found"
    unknown = c.delete(f"/v1/compliance/holds/{uid('no-hold')}", params={"reason": "x"})
    assert unknown.status_code == 404 and "no hold" in unknown.json()["error"]["message"]
    erased = c.post("/v1/compliance/erasures", json={"workflow_id": wid, "reason": "gdpr"})
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["workflows_erased"] == 1 and report["per_tier"].get("warm") == 1
    assert c.get(f"/v1/workflows/{wid}").status_code == 404
    sql = api.client("analyst").post(
        "/v1/sql",
        json={"sql": "SELECT count(*) FROM history WHERE workflow_id = ?", "params": [wid]},
    )
    assert sql.json()["rows"] == [[0]]
    audit = c.get("/v1/compliance/audit", params={"workflow_id": wid}).json()
    assert [a["operation"] for a in audit] == ["hold", "release", "erase"]
    assert {a["actor"] for a in audit} == {"admin"}
    assert audit[-1]["reason"] == "gdpr" and audit[-1]["workflow_id"] is None
    erases = c.get("/v1/compliance/audit", params={"operation": "erase"}).json()
    assert audit[-1]["seq"] in [a["seq"] for a in erases]


def test_erasing_a_running_workflow_is_refused_without_force(api: Api, uid):
    c = api.client()
    wid = uid("running")
    c.post("/v1/workflows", json={"workflow_type": "waiter", "workflow_id": wid})
    wait_status(c, wid, "paused")
    r = c.post("/v1/compliance/erasures", json={"workflow_id": wid, "reason": "r"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "still_running"
    r = c.post("/v1/compliance/erasures", json={"workflow_id": wid, "reason": "r", "force": True})
    assert r.status_code == 200 and r.json()["workflows_erased"] == 1
    assert c.get(f"/v1/workflows/{wid}").status_code == 404
    missing = c.post("/v1/compliance/erasures", json={"workflow_id": wid, "reason": "r"})
    assert missing.status_code == 404


def test_hold_by_attribute_and_retention_policies(api: Api, uid):
    c = api.client()
    customer = uid("cust")
    wid = run_order(api, uid("attr"), customer)["workflow_id"]
    r = c.post(
        "/v1/compliance/holds", json={"attribute": {"customer": customer}, "reason": "audit"}
    )
    assert r.status_code == 201 and r.json()["attribute"] == {"customer": customer}
    held = c.post(
        "/v1/compliance/erasures", json={"attribute": {"customer": customer}, "reason": "x"}
    )
    assert held.status_code == 409
    both = c.post(
        "/v1/compliance/holds",
        json={"workflow_id": wid, "attribute": {"customer": customer}, "reason": "x"},
    )
    assert both.status_code == 400
    kind = uid("kind")
    r = c.put(f"/v1/compliance/retention/{kind}", json={"keep": "90d", "from": "start"})
    assert r.status_code == 200, r.text
    assert r.json()["workflow_type"] == kind and r.json()["start_or_finish"] == "start"
    policies = c.get("/v1/compliance/retention").json()
    assert kind in [p["workflow_type"] for p in policies]
    bad = c.put(f"/v1/compliance/retention/{kind}", json={"keep": "forever"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_argument"
    removed = c.delete(f"/v1/compliance/retention/{kind}")
    assert removed.json() == {"removed": True}
    assert kind not in [p["workflow_type"] for p in c.get("/v1/compliance/retention").json()]
    ops = [a["operation"] for a in c.get("/v1/compliance/audit").json()]
    assert "retention.set" in ops and "retention.remove" in ops


def test_export_is_checksummed_and_audited(api: Api, uid):
    c = api.client()
    wid = run_order(api, uid("export"), uid("cust"))["workflow_id"]
    tier_now(api, "warm")
    r = c.get(f"/v1/archive/workflows/{wid}/export", params={"reason": "subject access"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["workflow_id"] == wid and set(body["files"]) == {
        "workflow.json",
        "events.jsonl",
        "manifest.json",
    }
    manifest = body["manifest"]
    assert manifest["tier"] == "warm" and manifest["workflow_id"] == wid
    for f in manifest["files"]:
        data = body["files"][f["name"]].encode()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
    assert json.loads(body["files"]["workflow.json"])["result"] == 3
    events = c.get(f"/v1/workflows/{wid}/history").json()["events"]
    assert len(body["files"]["events.jsonl"].splitlines()) == len(events)
    audit = c.get("/v1/compliance/audit", params={"workflow_id": wid, "operation": "export"})
    assert [(a["actor"], a["reason"]) for a in audit.json()] == [("admin", "subject access")]
    assert c.get(f"/v1/archive/workflows/{uid('none')}/export").status_code == 404
