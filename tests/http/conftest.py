"""A tierflow served over real HTTP: uvicorn on 127.0.0.1, httpx clients, API keys.

``api`` is one server per test module and storage backend ("file", "s3" on moto):
tests in a module share it, each with its own workflow ids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tierflow import Tierflow
from tierflow.http import HttpSettings, create_app, hash_key, new_key
from tierflow.tiering.policy import TieringPolicy

from tests.http.http_app import WORKFLOWS
from tests.http.server import serve
from tests.warm.conftest import (  # noqa: F401 - re-exported fixtures
    S3Server,
    create_bucket,
    drop_bucket,
    isolate_aws_env,
    s3_server,
)

SCOPES = {
    "admin": ["read", "write", "sql", "admin"],
    "reader": ["read"],
    "writer": ["write"],
    "analyst": ["sql"],
}


@dataclass
class Api:
    """A running server, its ``Tierflow``, and a client per API key name."""

    base_url: str
    tf: Tierflow
    backend: str
    keys: dict[str, str]
    app: Any
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, who: str = "admin") -> httpx.Client:
        """A client that sends ``who``'s key (``"nobody"``: no key at all)."""
        if who not in self._clients:
            headers = {} if who == "nobody" else {"Authorization": f"Bearer {self.keys[who]}"}
            self._clients[who] = httpx.Client(base_url=self.base_url, headers=headers, timeout=60)
        return self._clients[who]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()


def write_keys(path: Path) -> dict[str, str]:
    """A keys file with one key per entry of ``SCOPES``; returns name -> key."""
    keys = {name: new_key() for name in SCOPES}
    lines = ["# name, scopes and the sha256 of each key"]
    lines += [
        json.dumps({"name": n, "scopes": SCOPES[n], "sha256": hash_key(k)}) for n, k in keys.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return keys


@contextmanager
def running_api(
    root: Path, backend: str, server: S3Server | None, **settings: Any
) -> Iterator[Api]:
    """Serve a fresh tierflow on ``backend`` with the keys of ``SCOPES`` until the block ends."""
    keys = write_keys(root / "keys.jsonl")
    with pytest.MonkeyPatch.context() as mp:
        isolate_aws_env(mp)
        bucket = None
        if server is None:
            url, endpoint = (root / "lake").as_uri(), None
        else:
            bucket = create_bucket(server)
            url, endpoint = f"s3://{bucket}/lake", server.endpoint
        tf = Tierflow(
            root / "data",
            WORKFLOWS,
            storage_url=url,
            s3_endpoint=endpoint,
            tiering=TieringPolicy(min_age=0, cold_after=0),
        )
        app = create_app(
            tf, settings=HttpSettings(api_keys_file=str(root / "keys.jsonl"), **settings)
        )
        try:
            with serve(app) as base_url:
                api = Api(base_url, tf, backend, keys, app)
                try:
                    yield api
                finally:
                    api.close()
        finally:
            if server is not None and bucket is not None:
                drop_bucket(server, bucket)


@pytest.fixture(scope="module", params=["file", "s3"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One server per test module and backend."""
    backend = str(request.param)
    server = request.getfixturevalue("s3_server") if backend == "s3" else None
    with running_api(tmp_path_factory.mktemp(f"http-{backend}"), backend, server) as api:
        yield api


def wait_status(c: httpx.Client, workflow_id: str, *statuses: str, timeout: float = 20) -> dict:
    """Poll ``GET /v1/workflows/{id}`` until its status is one of ``statuses``; return the row."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/v1/workflows/{workflow_id}")
        assert r.status_code == 200, r.text
        row: dict = r.json()
        if row["status"] in statuses:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"{workflow_id} is {row['status']}, not in {statuses}")
        time.sleep(0.01)


def tier_now(api: Api, to: str) -> dict:
    r = api.client().post("/v1/tiering/run", json={"to": to})
    assert r.status_code == 200, r.text
    return r.json()


def run_order(api: Api, wid: str, customer: str, n: int = 1) -> dict:
    r = api.client().post(
        "/v1/workflows",
        json={
            "workflow_type": "order",
            "input": {"customer": customer, "n": n},
            "workflow_id": wid,
            "mode": "run",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "completed" and body["workflow"]["result"] == n + 2
    return body
