"""``GET /metrics`` after real workflows: the named series carry the right values."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tierflow import Tierflow
from tierflow.http import HttpSettings, create_app
from tierflow.tiering.policy import TieringPolicy

from tests.http.http_app import WORKFLOWS
from tests.http.server import serve

pytestmark = pytest.mark.timeout(60)


def samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: ``(name, sorted labels) -> value``."""
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def until(client: httpx.Client, key: tuple[str, tuple[tuple[str, str], ...]], want: float) -> None:
    """Poll ``/metrics`` until the sample has the value (the stream delivers in batches)."""
    deadline = time.monotonic() + 20
    while samples(client).get(key) != want:
        assert time.monotonic() < deadline, (key, samples(client).get(key))
        time.sleep(0.05)


def test_metrics_count_workflows_steps_tiering_and_requests(tmp_path: Path, uid):
    tf = Tierflow(tmp_path / "data", WORKFLOWS, tiering=TieringPolicy(min_age=0))
    app = create_app(tf, settings=HttpSettings())
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        ids = [uid("order") for _ in range(3)]
        for n, wid in enumerate(ids):
            body = {"workflow_type": "order", "input": {"customer": "c", "n": n}}
            resp = client.post("/v1/workflows", json={**body, "workflow_id": wid, "mode": "run"})
            assert resp.status_code == 201, resp.text
        waiting = uid("waiter")
        resp = client.post(
            "/v1/workflows", json={"workflow_type": "waiter", "workflow_id": waiting}
        )
        assert resp.status_code == 201, resp.text
        assert client.get(f"/v1/workflows/{ids[0]}").status_code == 200
        assert client.get(f"/v1/workflows/{uid('nobody')}").status_code == 404

        # Three runs of "order", two steps each: six completed step attempts.
        for step in ("one", "two"):
            labels = (("outcome", "completed"), ("step", step), ("workflow_type", "order"))
            until(client, ("tierflow_step_duration_seconds_count", labels), 3.0)
        until(
            client, ("tierflow_workflows", (("status", "paused"), ("workflow_type", "waiter"))), 1
        )
        got = samples(client)
        assert (
            got[("tierflow_workflows", (("status", "completed"), ("workflow_type", "order")))] == 3
        )
        assert got[("tierflow_workflows_by_tier", (("tier", "hot"),))] == 4
        assert got[("tierflow_tiering_lag_seconds", ())] > 0  # three finished, still hot
        assert got[("tierflow_tiered_workflows_total", ())] == 0
        # Requests by route template: ids never become label values.
        route = "/v1/workflows/{workflow_id}"
        describe = (("method", "GET"), ("route", route), ("status", "200"))
        assert got[("tierflow_http_request_duration_seconds_count", describe)] == 1
        missing = (("method", "GET"), ("route", route), ("status", "404"))
        assert got[("tierflow_http_request_duration_seconds_count", missing)] == 1
        assert not any(wid in str(key) for key in got for wid in ids)
        started = (("method", "POST"), ("route", "/v1/workflows"), ("status", "201"))
        assert got[("tierflow_http_request_duration_seconds_count", started)] == 4

        # Tiering moves the three finished ones: throughput counters up, lag back to 0.
        resp = client.post("/v1/tiering/run", json={})
        assert resp.status_code == 200, resp.text
        got = samples(client)
        assert got[("tierflow_tiered_workflows_total", ())] == 3
        assert got[("tierflow_tiered_batches_total", ())] >= 1
        assert got[("tierflow_workflows_by_tier", (("tier", "warm"),))] == 3
        assert got[("tierflow_tiering_lag_seconds", ())] == 0
