"""Request limits: bodies over the limit get 413; a key over its SQL concurrency gets 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.http.conftest import Api, running_api, wait_status

LIMIT = 4096
# Half a second or more of DuckDB work on these machines: long enough to be seen running.
SLOW_SQL = "SELECT count(*) FROM range(50000000) t(a) WHERE a % 7 = 3"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(
        tmp_path_factory.mktemp("http-limits"),
        "file",
        None,
        max_body_bytes=LIMIT,
        sql_concurrency=1,
    ) as api:
        yield api


def test_a_body_over_the_limit_is_413_and_changes_nothing(api: Api, uid):
    c = api.client()
    wid = uid("big")
    big = {"workflow_type": "order", "workflow_id": wid, "input": {"pad": "x" * LIMIT}}
    r = c.post("/v1/workflows", json=big)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "body_too_large"
    # Without a Content-Length (chunked), the body is counted as it arrives.
    chunks = iter([b'{"workflow_type": "order", "input": "', b"x" * LIMIT, b'"}'])
    r = c.post("/v1/workflows", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert c.get(f"/v1/workflows/{wid}").status_code == 404
    # Just under the limit is fine, chunked or not.
    greet = uid("greet")
    c.post("/v1/workflows", json={"workflow_type": "greet", "input": "a", "workflow_id": greet})
    wait_status(c, greet, "paused")
    payload = "y" * (LIMIT - 100)
    r = c.post(f"/v1/workflows/{greet}/signals/go", json=payload)
    assert r.status_code == 202, r.text
    assert payload in wait_status(c, greet, "completed")["result"]


def test_a_key_over_its_sql_concurrency_is_429(api: Api):
    slots = api.app.state.tierflow.sql_slots
    first: list[httpx.Response] = []
    runner = threading.Thread(
        target=lambda: first.append(api.client("analyst").post("/v1/sql", json={"sql": SLOW_SQL}))
    )
    runner.start()
    deadline = time.monotonic() + 30
    while slots.running("analyst") < 1:
        assert runner.is_alive(), "the slow query ended before it was seen running"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    r = httpx.post(
        f"{api.base_url}/v1/sql",
        json={"sql": "SELECT 1"},
        headers={"Authorization": f"Bearer {api.keys['analyst']}"},
    )
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "too_many_queries"
    # The limit is per key: another key runs its query meanwhile.
    other = api.client("admin").post("/v1/sql", json={"sql": "SELECT 41 + 1"})
    assert other.status_code == 200 and other.json()["rows"] == [[42]]
    runner.join(60)
    assert first[0].status_code == 200 and first[0].json()["rows"] == [[7142857]]
    assert slots.running("analyst") == 0
    again = api.client("analyst").post("/v1/sql", json={"sql": "SELECT 1"})
    assert again.status_code == 200


def test_an_unexpected_error_is_a_500_envelope_and_the_connection_goes_on(
    api: Api, caplog: pytest.LogCaptureFixture
):
    def boom() -> None:
        raise RuntimeError("a bug")

    api.app.add_api_route("/test-only/boom", boom)
    c = api.client()
    r = c.get("/test-only/boom")
    assert r.status_code == 500
    assert r.json() == {
        "error": {"code": "internal", "message": "internal error (logged on the server)"}
    }
    # The same keep-alive connection still serves.
    assert c.get("/healthz").json()["status"] == "ok"
    # Answered by the app: nothing reached the server as an unhandled exception.
    assert [r.getMessage() for r in caplog.records if r.name == "tierflow.http"] == [
        "GET /test-only/boom failed"
    ]
    assert not [r for r in caplog.records if r.name.startswith("uvicorn.error")]
