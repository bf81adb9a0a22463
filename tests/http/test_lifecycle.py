"""The workflow lifecycle over real HTTP, on file:// and on moto s3://.

start → query → signal → result; run; cancel; terminate; list with filters and
cursor paging across tiers; describe, history (JSON and NDJSON), replay and
fork after tiering to warm and to cold; errors in the envelope.
"""

from __future__ import annotations

import json

from tierflow.hot.rows import WORKFLOWS, names

from tests.http.conftest import Api, run_order, tier_now, wait_status


def test_start_query_signal_result(api: Api, uid):
    c = api.client()
    wid = uid("greet")
    r = c.post("/v1/workflows", json={"workflow_type": "greet", "input": "ada", "workflow_id": wid})
    assert r.status_code == 201, r.text
    assert r.json()["workflow_id"] == wid and r.json()["status"] in ("queued", "running", "paused")
    wait_status(c, wid, "paused")
    assert c.post(f"/v1/workflows/{wid}/queries/who", json={"args": []}).json() == {"result": "ada"}
    echo = c.post(f"/v1/workflows/{wid}/queries/echo", json={"args": [1, "x", {"k": None}]})
    assert echo.json() == {"result": [1, "x", {"k": None}]}
    wrong = c.post(f"/v1/workflows/{wid}/queries/who", json={"args": [1]})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "query_failed"
    r = c.post(f"/v1/workflows/{wid}/signals/go", json={"amount": 9.5})
    assert r.status_code == 202 and r.json() == {"workflow_id": wid, "signal": "go"}
    row = wait_status(c, wid, "completed")
    assert row["result"] == "hello ada: {'amount': 9.5}"
    assert row["input"] == "ada" and row["tier"] == "hot" and row["workflow_type"] == "greet"
    assert tuple(row) == names(WORKFLOWS)  # the row definition, column for column
    # The same id again answers with the existing instance; on_conflict=fail is a 409.
    again = c.post(
        "/v1/workflows", json={"workflow_type": "greet", "input": "x", "workflow_id": wid}
    )
    assert again.status_code == 201 and again.json()["workflow_id"] == wid
    assert wait_status(c, wid, "completed")["result"] == row["result"]
    conflict = c.post(
        "/v1/workflows",
        json={"workflow_type": "greet", "workflow_id": wid, "on_conflict": "fail"},
    )
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "already_exists"
    # A finished workflow takes no more signals; an unknown query is bad input.
    late = c.post(f"/v1/workflows/{wid}/signals/go", json=None)
    assert late.status_code == 409 and late.json()["error"]["code"] == "already_finished"
    unknown = c.post(f"/v1/workflows/{wid}/queries/nope")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_query"


def test_cancel_and_terminate(api: Api, uid):
    c = api.client()
    a, b = uid("cancel"), uid("terminate")
    for wid in (a, b):
        r = c.post("/v1/workflows", json={"workflow_type": "waiter", "workflow_id": wid})
        assert r.status_code == 201, r.text
        wait_status(c, wid, "paused")
    r = c.post(f"/v1/workflows/{a}/cancel", json={"reason": "changed my mind"})
    assert r.status_code == 200 and r.json()["workflow_id"] == a
    assert wait_status(c, a, "cancelled")["status"] == "cancelled"
    r = c.post(f"/v1/workflows/{b}/terminate", json={"reason": "stuck"})
    assert r.status_code == 200 and r.json() == {"workflow_id": b, "status": "terminated"}
    row = c.get(f"/v1/workflows/{b}").json()
    assert row["status"] == "terminated" and "stuck" in json.dumps(row["error"])
    again = c.post(f"/v1/workflows/{b}/terminate")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_finished"


def test_errors_are_in_the_envelope(api: Api, uid):
    c = api.client()
    cases = [
        (c.get("/v1/workflows/bad id!"), 400, "invalid_workflow_id"),
        (c.get(f"/v1/workflows/{uid('missing')}"), 404, "not_found"),
        (c.get(f"/v1/workflows/{uid('missing')}/history"), 404, "not_found"),
        (c.post("/v1/workflows", json={"workflow_type": "nope"}), 400, "invalid_argument"),
        (c.post("/v1/workflows", json={"workflow_typ": "greet"}), 422, "validation_error"),
        (
            c.post(
                "/v1/workflows", content=b"{not json", headers={"content-type": "application/json"}
            ),
            422,
            "validation_error",
        ),
        (
            c.post("/v1/workflows", json={"workflow_type": "greet", "workflow_id": "-x"}),
            400,
            "invalid_workflow_id",
        ),
        (c.get("/v1/workflows", params={"limit": 0}), 422, "validation_error"),
        (c.get("/v1/workflows", params={"cursor": "garbage"}), 400, "invalid_argument"),
        (c.get("/v1/nothing-here"), 404, "not_found"),
        (c.delete("/v1/workflows"), 405, "method_not_allowed"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert set(body) == {"error"} and body["error"]["code"] == code, body
        assert body["error"]["message"]


def test_list_filters_and_cursor_paging_across_tiers(api: Api, uid):
    c = api.client()
    customer = uid("cust")
    warm_ids = [run_order(api, uid("o"), customer, n)["workflow_id"] for n in range(3)]
    tier_now(api, "warm")
    hot_ids = [run_order(api, uid("o"), customer, n)["workflow_id"] for n in range(2)]
    seen: list[dict] = []
    cursor = None
    pages = 0
    while True:
        params: dict = {"attr.customer": customer, "limit": 2, "workflow_type": "order"}
        if cursor:
            params["cursor"] = cursor
        r = c.get("/v1/workflows", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(w["workflow_id"] for w in seen) == sorted(warm_ids + hot_ids)
    assert {w["workflow_id"]: w["tier"] for w in seen} == {
        **dict.fromkeys(warm_ids, "warm"),
        **dict.fromkeys(hot_ids, "hot"),
    }
    warm = c.get("/v1/workflows", params={"attr.customer": customer, "tier": "warm"}).json()
    assert sorted(w["workflow_id"] for w in warm["items"]) == sorted(warm_ids)
    # Attribute values are read as JSON when they parse: n=2 is the number 2.
    two = c.get("/v1/workflows", params={"attr.customer": customer, "attr.n": "2"}).json()
    assert [w["workflow_id"] for w in two["items"]] == [warm_ids[2]]
    # Time ranges: every one of them finished after the first one was created.
    first = next(w for w in seen if w["workflow_id"] == warm_ids[0])
    ranged = c.get(
        "/v1/workflows",
        params={
            "attr.customer": customer,
            "finished_after": first["created_at"],
            "started_before": "2999-01-01T00:00:00Z",
        },
    ).json()
    assert len(ranged["items"]) == 5
    later = c.get(
        "/v1/workflows", params={"attr.customer": customer, "created_after": first["finished_at"]}
    ).json()
    assert warm_ids[0] not in [w["workflow_id"] for w in later["items"]]
    assert len(later["items"]) == 4
    none = c.get("/v1/workflows", params={"attr.customer": customer, "status": "failed"}).json()
    assert none == {"items": [], "next_cursor": None}


def _reads(api: Api, order_id: str, greet_id: str, tier: str, events: list[dict]) -> None:
    """Every read of both workflows answers from ``tier`` with the same events."""
    c = api.client()
    row = c.get(f"/v1/workflows/{order_id}").json()
    assert row["tier"] == tier and row["status"] == "completed" and row["result"] == 3
    assert row["attributes"]["n"] == 1
    history = c.get(f"/v1/workflows/{order_id}/history").json()
    assert history["workflow_id"] == order_id and history["tier"] == tier
    assert history["events"] == events
    r = c.get(f"/v1/workflows/{order_id}/history", headers={"Accept": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [e["event_id"] for e in lines] == [e["event_id"] for e in events]
    assert [e["payload"] for e in lines] == [e["payload"] for e in events]
    replay = c.post(f"/v1/workflows/{order_id}/replay").json()
    assert replay == {
        "workflow_id": order_id,
        "tier": tier,
        "status": "completed",
        "result": 3,
        "error": None,
        "events": len(events),
    }
    assert c.post(f"/v1/workflows/{greet_id}/queries/who").json() == {"result": "bo"}
    # A fork from this tier: the history up to the first step, then live, in hot.
    step = next(e["event_id"] for e in events if e["event_type"] == "step.completed")
    fork_id = f"{order_id}-fork-{tier}"
    r = c.post(f"/v1/workflows/{order_id}/fork", json={"at_event": step, "workflow_id": fork_id})
    assert r.status_code == 201, r.text
    forked = wait_status(c, fork_id, "completed")
    assert forked["result"] == 3 and forked["tier"] == "hot"
    fork_events = c.get(f"/v1/workflows/{fork_id}/history").json()["events"]
    assert [e["event_type"] for e in fork_events[:step]] == [e["event_type"] for e in events[:step]]


def test_reads_replay_and_fork_after_tiering_to_warm_and_cold(api: Api, uid):
    c = api.client()
    order_id = run_order(api, uid("order"), uid("cust"))["workflow_id"]
    greet_id = uid("greet")
    c.post("/v1/workflows", json={"workflow_type": "greet", "input": "bo", "workflow_id": greet_id})
    wait_status(c, greet_id, "paused")
    c.post(f"/v1/workflows/{greet_id}/signals/go", json=1)
    wait_status(c, greet_id, "completed")
    events = c.get(f"/v1/workflows/{order_id}/history").json()["events"]
    assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
    report = tier_now(api, "warm")
    assert report["workflows_moved"] >= 2
    _reads(api, order_id, greet_id, "warm", events)
    report = tier_now(api, "cold")
    assert report["cold"]["workflows_moved"] >= 2
    _reads(api, order_id, greet_id, "cold", events)
    status = c.get("/v1/tiering/status").json()
    assert status["instances"]["cold"] >= 2 and status["storage_url"]


def test_sql_across_tiers(api: Api, uid):
    c = api.client("analyst")
    customer = uid("cust")
    ids = [run_order(api, uid("s"), customer, n)["workflow_id"] for n in range(3)]
    tier_now(api, "warm")
    r = c.post(
        "/v1/sql",
        json={
            "sql": "SELECT workflow_id, tier, created_at, result FROM workflows "
            "WHERE json_extract_string(attributes, '$.customer') = ? ORDER BY workflow_id",
            "params": [customer],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["workflow_id", "tier", "created_at", "result"]
    assert [row[0] for row in body["rows"]] == sorted(ids)
    assert {row[1] for row in body["rows"]} == {"warm"}
    assert body["truncated"] is False
    odd = c.post(
        "/v1/sql",
        json={"sql": "SELECT 'nan'::DOUBLE AS x, 'ab'::BLOB AS b, 1.5::DECIMAL(4,2) AS d"},
    )
    assert odd.status_code == 200 and odd.json()["rows"] == [["NaN", "YWI=", "1.50"]]
    bad = c.post("/v1/sql", json={"sql": "SELEC nothing"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_argument"
    missing = c.post("/v1/sql", json={"sql": "SELECT * FROM no_such_table"})
    assert missing.status_code == 400
