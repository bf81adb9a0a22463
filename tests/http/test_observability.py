"""``/healthz`` and ``/readyz``: ready only while the index and the object store answer."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tierflow import Tierflow
from tierflow.http import HttpSettings, create_app

from tests.http.conftest import S3Server
from tests.http.http_app import WORKFLOWS
from tests.http.server import serve
from tests.warm.conftest import isolate_aws_env


def test_ready_on_file_storage(tmp_path: Path):
    tf = Tierflow(tmp_path / "d", WORKFLOWS)
    with serve(create_app(tf, settings=HttpSettings())) as url:
        assert httpx.get(f"{url}/healthz", timeout=60).json() == {"status": "ok", "reason": None}
        assert httpx.get(f"{url}/readyz", timeout=60).json() == {"status": "ok", "reason": None}


def test_not_ready_while_the_bucket_is_missing(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, uid
):
    isolate_aws_env(monkeypatch)
    bucket = uid("no-such-bucket").lower()[:60]
    tf = Tierflow(
        tmp_path / "d", WORKFLOWS, storage_url=f"s3://{bucket}/lake", s3_endpoint=s3_server.endpoint
    )
    with serve(create_app(tf, settings=HttpSettings())) as url:
        r = httpx.get(f"{url}/readyz", timeout=60)
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert "object store" in r.json()["reason"] and bucket in r.json()["reason"]
        # Alive all the same, and ready once the bucket exists.
        assert httpx.get(f"{url}/healthz", timeout=60).status_code == 200
        s3_server.client().create_bucket(Bucket=bucket)
        try:
            assert httpx.get(f"{url}/readyz", timeout=60).json()["status"] == "ok"
        finally:
            s3_server.client().delete_bucket(Bucket=bucket)
