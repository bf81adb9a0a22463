"""API keys over HTTP: 401 without a known key, 403 without the scope, keys never logged.

Auth does not depend on the storage backend: one file:// server for the module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from tierflow import InvalidArgument, Tierflow
from tierflow.http import (
    ApiError,
    HttpSettings,
    InsecureBindError,
    KeyRing,
    Scope,
    check_bind,
    create_app,
    hash_key,
    new_key,
)
from tierflow.http.deps import require

from tests.http.conftest import Api, running_api, wait_status
from tests.http.http_app import WORKFLOWS
from tests.http.server import serve


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("http-auth"), "file", None) as api:
        yield api


def test_missing_or_unknown_key_is_401(api: Api, uid):
    nobody = api.client("nobody")
    for r in (
        nobody.get("/v1/workflows"),
        nobody.post("/v1/workflows", json={"workflow_type": "order"}),
        nobody.post("/v1/sql", json={"sql": "SELECT 1"}),
        nobody.get("/v1/compliance/audit"),
        httpx.get(f"{api.base_url}/v1/workflows", headers={"Authorization": "Bearer tf_wrong"}),
        httpx.get(f"{api.base_url}/v1/workflows", headers={"X-API-Key": "tf_wrong"}),
        httpx.get(f"{api.base_url}/v1/workflows", headers={"Authorization": "Basic abc"}),
    ):
        assert r.status_code == 401, (r.request.url, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    # The other header works as well as Bearer.
    ok = httpx.get(f"{api.base_url}/v1/workflows", headers={"X-API-Key": api.keys["reader"]})
    assert ok.status_code == 200
    # Health checks need no key.
    assert api.client("nobody").get("/healthz").json()["status"] == "ok"
    assert api.client("nobody").get("/readyz").status_code == 200


def test_a_key_without_the_scope_is_403(api: Api, uid):
    wid = uid("scoped")
    started = api.client("writer").post(
        "/v1/workflows", json={"workflow_type": "waiter", "workflow_id": wid}
    )
    assert started.status_code == 201
    refused = [
        ("reader", "POST", "/v1/workflows", {"workflow_type": "order"}),
        ("reader", "POST", f"/v1/workflows/{wid}/cancel", {}),
        ("reader", "POST", "/v1/sql", {"sql": "SELECT 1"}),
        ("reader", "POST", "/v1/tiering/run", {}),
        ("writer", "GET", f"/v1/workflows/{wid}", None),
        ("writer", "GET", "/v1/compliance/holds", None),
        ("analyst", "GET", "/v1/workflows", None),
        ("analyst", "POST", "/v1/compliance/erasures", {"workflow_id": wid, "reason": "x"}),
        ("reader", "GET", f"/v1/archive/workflows/{wid}/export", None),
    ]
    for who, method, path, body in refused:
        r = api.client(who).request(method, path, json=body)
        assert r.status_code == 403, (who, method, path, r.text)
        error = r.json()["error"]
        assert error["code"] == "forbidden" and who in error["message"]
    # Nothing was changed by the refused requests.
    assert wait_status(api.client("reader"), wid, "paused")["status"] == "paused"
    cancel = api.client("writer").post(f"/v1/workflows/{wid}/cancel")
    assert cancel.status_code == 200


def test_no_key_or_key_hash_appears_in_logs_or_answers(
    api: Api, uid, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    wrong = new_key()
    answers = []
    for who in ("admin", "reader", "writer", "analyst"):
        c = api.client(who)
        answers += [
            c.get("/v1/workflows", params={"limit": 1}),
            c.post(
                "/v1/workflows", json={"workflow_type": "order", "input": {"customer": "k", "n": 1}}
            ),
            c.post("/v1/sql", json={"sql": "SELEC"}),
            c.get(f"/v1/workflows/{uid('missing')}"),
        ]
    for header in ({"Authorization": f"Bearer {wrong}"}, {"X-API-Key": wrong}):
        answers.append(httpx.get(f"{api.base_url}/v1/workflows", headers=header))
    assert any(r.status_code == 401 for r in answers)
    assert any("GET /v1/workflows" in m for m in caplog.messages)  # uvicorn's access log
    secrets = [*api.keys.values(), wrong]
    secrets += [hash_key(k) for k in secrets]
    seen = caplog.text + "".join(r.text for r in answers)
    for secret in secrets:
        assert secret not in seen
        assert secret[:12] not in seen


def test_check_bind_refuses_non_loopback_without_keys(tmp_path: Path):
    none = HttpSettings()
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        check_bind(host, none)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
        with pytest.raises(InsecureBindError, match="without API keys"):
            check_bind(host, none)
    keys = tmp_path / "keys.jsonl"
    keys.write_text(f'{{"name": "ops", "scopes": ["read"], "sha256": "{hash_key("k")}"}}\n')
    check_bind("0.0.0.0", HttpSettings(api_keys_file=str(keys)))
    inline = f'[{{"name": "ci", "scopes": ["sql"], "sha256": "{hash_key("k")}"}}]'
    check_bind("0.0.0.0", HttpSettings(api_keys=inline))
    check_bind("0.0.0.0", HttpSettings.from_env({"TIERFLOW_API_KEYS": inline}))


def test_malformed_key_configuration_is_refused_clearly(tmp_path: Path):
    raw = new_key()
    path = tmp_path / "keys.jsonl"
    cases = {
        "": "holds no keys",
        "# only a comment\n": "holds no keys",
        "{not json": "not JSON",
        f'{{"name": "a", "scopes": ["read"], "sha256": "{raw}"}}': "64 lowercase hex",
        f'{{"name": "a", "scopes": ["root"], "sha256": "{hash_key(raw)}"}}': "unknown scopes",
        f'{{"name": "a b", "scopes": ["read"], "sha256": "{hash_key(raw)}"}}': "'name'",
        f'{{"name": "a", "scopes": [], "sha256": "{hash_key(raw)}"}}': "non-empty",
        f'{{"name": "a", "scopes": ["read"], "sha256": "{hash_key(raw)}", "key": "x"}}': "unknown",
        (f'{{"name": "a", "scopes": ["read"], "sha256": "{hash_key(raw)}"}}\n' * 2): "twice",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(InvalidArgument, match=message) as info:
            KeyRing.from_settings(HttpSettings(api_keys_file=str(path)))
        assert raw not in str(info.value)  # a raw key pasted by mistake is not echoed
    with pytest.raises(InvalidArgument, match="cannot read"):
        KeyRing.from_settings(HttpSettings(api_keys_file=str(tmp_path / "missing")))
    with pytest.raises(InvalidArgument, match="TIERFLOW_HTTP_MAX_BODY_BYTES"):
        HttpSettings.from_env({"TIERFLOW_HTTP_MAX_BODY_BYTES": "lots"})
    with pytest.raises(InvalidArgument):
        create_app(Tierflow(tmp_path / "d", WORKFLOWS), settings=HttpSettings(api_keys="[{}]"))
    with pytest.raises(InvalidArgument, match="engine must be"):
        create_app(Tierflow(tmp_path / "d", WORKFLOWS), settings=HttpSettings(), engine="both")  # type: ignore[arg-type]


def test_without_keys_every_caller_is_anonymous_on_loopback(tmp_path: Path, uid):
    tf = Tierflow(tmp_path / "d", WORKFLOWS)
    with serve(create_app(tf, settings=HttpSettings())) as url, httpx.Client(base_url=url) as c:
        wid = uid("anon")
        r = c.post(
            "/v1/workflows",
            json={
                "workflow_type": "order",
                "input": {"customer": "c", "n": 1},
                "workflow_id": wid,
                "mode": "run",
            },
        )
        assert r.status_code == 201 and r.json()["workflow"]["result"] == 3
        hold = c.post("/v1/compliance/holds", json={"workflow_id": wid, "reason": "r"})
        assert hold.status_code == 201 and hold.json()["actor"] == "anonymous"


async def test_without_keys_a_caller_from_elsewhere_is_refused(tmp_path: Path):
    # Defence in depth for a server bound wide by hand despite check_bind: the request a
    # non-loopback client makes (tests bind only 127.0.0.1, so the request is built here).
    app = create_app(Tierflow(tmp_path / "d", WORKFLOWS), settings=HttpSettings())
    check = require(Scope.READ)
    for host, allowed in (("127.0.0.1", True), ("::1", True), ("192.0.2.9", False)):
        request = Request({"type": "http", "app": app, "client": (host, 5000), "headers": []})
        if allowed:
            assert (await check(request, None, None)).name == "anonymous"
        else:
            with pytest.raises(ApiError) as info:
                await check(request, None, None)
            assert info.value.status == 401
