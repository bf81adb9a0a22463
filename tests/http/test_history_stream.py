"""``GET /v1/workflows/{id}/history`` streams (issue 20), on file:// and moto s3://.

The server here reads and writes ``CHUNK`` events at a time
(``HttpSettings.history_chunk``), so a history of a few dozen events is several
chunks. In hot, warm and cold, both forms must equal what the route answered when
it loaded the whole history (a test-only route that does exactly that is the
reference: the JSON body byte for byte), and the first chunk must be on the wire
while the server has read nothing more (:mod:`tests.history_spy` holds its next read).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tierflow.http.history_body import event_row
from tierflow.http.models import History

from tests.history_spy import spying
from tests.http.conftest import Api, running_api, tier_now

pytestmark = pytest.mark.timeout(180)

CHUNK = 4
N = 22  # recorded values: 27 events, seven chunks, the last one short
NDJSON = "application/x-ndjson"


@pytest.fixture(scope="module", params=["file", "s3"])
def chunked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """A server that streams histories ``CHUNK`` events at a time, with the reference routes."""
    backend = str(request.param)
    server = request.getfixturevalue("s3_server") if backend == "s3" else None
    root = tmp_path_factory.mktemp(f"stream-{backend}")
    with running_api(root, backend, server, history_chunk=CHUNK) as api:
        tf = api.tf

        async def whole(workflow_id: str) -> dict[str, Any]:
            # The route as it was before it streamed: the whole history, then the model.
            row = tf.index.find(workflow_id)
            assert row is not None
            events = await tf.history(workflow_id)
            return {
                "workflow_id": workflow_id,
                "tier": row.tier,
                "events": [event_row(e) for e in events],
            }

        async def dicts(workflow_id: str) -> list[dict[str, Any]]:
            return [e.to_dict() for e in await tf.history(workflow_id)]

        api.app.add_api_route("/test-only/whole/{workflow_id}", whole, response_model=History)
        api.app.add_api_route("/test-only/dicts/{workflow_id}", dicts)
        yield api


def run_chatty(api: Api, wid: str, n: int = N) -> None:
    r = api.client().post(
        "/v1/workflows",
        json={"workflow_type": "chatty", "input": n, "workflow_id": wid, "mode": "run"},
    )
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text


def check_history(api: Api, wid: str, tier: str) -> None:
    """Both forms of the streamed history equal the whole-history reference."""
    c = api.client()
    whole = c.get(f"/test-only/whole/{wid}")
    assert whole.status_code == 200 and whole.json()["tier"] == tier
    assert len(whole.json()["events"]) == N + 5
    r = c.get(f"/v1/workflows/{wid}/history")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-tierflow-tier"] == tier
    assert r.content == whole.content  # byte for byte
    r = c.get(f"/v1/workflows/{wid}/history", headers={"Accept": NDJSON})
    assert r.status_code == 200 and r.headers["content-type"].startswith(NDJSON)
    assert r.headers["x-tierflow-tier"] == tier
    assert [json.loads(line) for line in r.text.splitlines()] == c.get(
        f"/test-only/dicts/{wid}"
    ).json()


def test_a_history_of_several_chunks_reads_the_same_in_every_tier_and_form(chunked: Api, uid):
    wid = uid("chatty")
    run_chatty(chunked, wid)
    check_history(chunked, wid, "hot")
    tier_now(chunked, "warm")
    check_history(chunked, wid, "warm")
    tier_now(chunked, "cold")
    check_history(chunked, wid, "cold")


def first_chunk_then_rest(api: Api, wid: str, accept: str) -> bytes:
    """Read the body while the server may read only its first chunk; then release it.

    Fails (the spy's count, or a read timeout) if the server reads more of the
    history than one chunk before the client has the first one.
    """
    c = api.client()
    with spying(api.tf, wid, held=True) as spy:
        with c.stream(
            "GET",
            f"/v1/workflows/{wid}/history",
            headers={"Accept": accept},
            timeout=httpx.Timeout(60, read=10),
        ) as r:
            assert r.status_code == 200
            parts = r.iter_raw()
            body = next(parts)
            if accept == NDJSON:
                while body.count(b"\n") < CHUNK:
                    body += next(parts)
                assert body.count(b"\n") == CHUNK
            else:
                while body.count(b'"event_id"') < CHUNK:
                    body += next(parts)
                assert body.startswith(b'{"workflow_id":')
            # The client holds a whole chunk; the server has read exactly one.
            assert spy.read == CHUNK
            spy.release()
            body += b"".join(parts)
        assert spy.read == N + 5
        assert [t for t, _ in spy.calls] == [r.headers["x-tierflow-tier"]]
    return body


@pytest.mark.parametrize("accept", [NDJSON, "application/json"])
def test_the_first_chunk_is_sent_before_the_rest_is_read(chunked: Api, uid, accept: str):
    wid = uid("chatty")
    run_chatty(chunked, wid)
    c = chunked.client()
    for tier in ("hot", "warm", "cold"):
        if tier != "hot":
            tier_now(chunked, tier)
        body = first_chunk_then_rest(chunked, wid, accept)
        if accept == NDJSON:
            expected = c.get(f"/test-only/dicts/{wid}").json()
            assert [json.loads(line) for line in body.splitlines()] == expected, tier
        else:
            assert body == c.get(f"/test-only/whole/{wid}").content, tier


def test_unknown_and_malformed_ids_are_errors_before_the_stream(chunked: Api, uid):
    c = chunked.client()
    for accept in (NDJSON, "application/json"):
        r = c.get(f"/v1/workflows/{uid('missing')}/history", headers={"Accept": accept})
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "not_found"
        assert "x-tierflow-tier" not in r.headers
        r = c.get("/v1/workflows/bad id!/history", headers={"Accept": accept})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_workflow_id"
        r = c.get(f"/v1/workflows/{'x' * 256}/history", headers={"Accept": accept})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_the_chunk_setting_is_read_from_the_environment(tmp_path: Path):
    from tierflow.hot.errors import InvalidArgument
    from tierflow.http import HttpSettings

    assert HttpSettings.from_env({}).history_chunk == 1000
    assert HttpSettings.from_env({"TIERFLOW_HTTP_HISTORY_CHUNK": "7"}).history_chunk == 7
    with pytest.raises(InvalidArgument):
        HttpSettings.from_env({"TIERFLOW_HTTP_HISTORY_CHUNK": "0"})
