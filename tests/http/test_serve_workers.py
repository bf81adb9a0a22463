"""``tierflow serve --no-worker`` beside two ``tierflow worker``s on one data directory.

Real processes (forked by tests/procs.py): the server answers the API and runs no
workflow; a start, a signal and a cancel sent through the API reach the worker that
runs the instance, and when that worker is SIGKILLed the other one finishes it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tierflow import Tierflow

from tests import procs

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.hot.proc_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(what: Callable[[], Any], timeout: float = 30) -> Any:
    """``what()`` once it returns something true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, f"not in time: {what}"
        time.sleep(0.02)
    return got


class Site:
    """One data directory, the server, the workers and a log of the steps they ran."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.log = tmp / "steps.log"
        self.log.touch()
        self.env = {
            **os.environ,
            "TIERFLOW_TEST_LOG": str(self.log),
            "TIERFLOW_DATA_DIR": str(self.data),
            "PYTHONPATH": str(ROOT),
        }
        self.children: list[procs.Child] = []

    def start(self, *args: str, ready: Callable[[procs.Child], bool]) -> procs.Child:
        child = procs.popen("tierflow.cli", *args, env=self.env)
        self.children.append(child)
        poll(lambda: child.poll() is not None or ready(child))
        assert child.poll() is None, child.communicate(5)
        return child

    def ran(self, wid: str, step: str) -> bool:
        return f"{wid} {step}" in self.log.read_text().splitlines()

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(15)
            except Exception:
                child.kill()
                child.wait(15)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    try:
        yield s
    finally:
        s.close()


def status(client: httpx.Client, wid: str) -> str:
    resp = client.get(f"/v1/workflows/{wid}")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


def test_api_start_signal_cancel_reach_the_workers_and_a_survivor_finishes_a_killed_run(
    site: Site, uid
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def answers(_: procs.Child) -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    server = site.start("serve", "--app", APP, "--port", str(port), "--no-worker", ready=answers)
    workers = [
        site.start("worker", "--app", APP, ready=lambda c: "worker running" in c.output_so_far())
        for _ in range(2)
    ]
    pids = {w.pid: w for w in workers}
    reader = Tierflow(site.data)
    reader.open()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:

            def lessee(wid: str) -> int | None:
                row = reader.index.get(wid)
                owner = row.lease_owner if row is not None else None
                return int(owner.split("-")[0]) if owner else None

            # A start and a signal through the API: a worker runs both halves.
            a = uid("signalled")
            body = {"workflow_type": "first_then_signal", "workflow_id": a}
            assert client.post("/v1/workflows", json=body).status_code == 201
            poll(lambda: site.ran(a, "first"))
            poll(lambda: status(client, a) == "paused")
            resp = client.post(f"/v1/workflows/{a}/signals/go", json={"n": 7})
            assert resp.status_code == 202, resp.text
            poll(lambda: status(client, a) == "completed")
            assert client.get(f"/v1/workflows/{a}").json()["result"]["got"] == {"n": 7}

            # A cancel through the API: the worker runs the workflow's cleanup step.
            b = uid("cancelled")
            body = {"workflow_type": "guarded", "workflow_id": b}
            assert client.post("/v1/workflows", json=body).status_code == 201
            poll(lambda: status(client, b) == "paused")
            assert client.post(f"/v1/workflows/{b}/cancel", json={}).status_code == 200
            poll(lambda: status(client, b) == "cancelled")
            assert site.ran(b, "cleanup")

            # SIGKILL the worker running a slow step: the other one finishes the run.
            c = uid("killed")
            body = {"workflow_type": "long_then_more", "workflow_id": c, "input": 1.5}
            assert client.post("/v1/workflows", json=body).status_code == 201
            victim = pids[poll(lambda: lessee(c))]  # a worker holds it, never the server
            victim.kill()
            victim.wait(15)
            poll(lambda: status(client, c) == "completed", timeout=60)
            assert site.ran(c, "after")
            survivor = next(w for w in workers if w is not victim)
            assert survivor.poll() is None
            kinds = [
                e["event_type"] for e in client.get(f"/v1/workflows/{c}/history").json()["events"]
            ]
            assert "workflow.recovered" in kinds
    finally:
        asyncio.run(reader.aclose())
    assert server.poll() is None  # it served throughout


def _scrape(url: str) -> str:
    try:
        resp = httpx.get(f"{url}/metrics", timeout=2)
    except httpx.HTTPError:
        return ""
    return resp.text if resp.status_code == 200 else ""


def _step_count(text: str, step: str) -> float:
    """``tierflow_step_duration_seconds_count`` of ``step`` (completed), 0 if absent."""
    for line in text.splitlines():
        labels = line.partition("}")[0]
        if (
            line.startswith("tierflow_step_duration_seconds_count{")
            and f'step="{step}"' in labels
            and 'outcome="completed"' in labels
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_worker_serves_the_metrics_of_the_steps_it_runs(site: Site, uid):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    site.start("worker", "--app", APP, "--metrics-port", str(port), ready=lambda c: _scrape(url))
    assert _step_count(_scrape(url), "first") == 0
    wid = uid("metered")
    # Started from another process: the worker runs the step, its /metrics counts it.
    done = procs.run(
        "tierflow.cli", "start", "first_then_signal", "--app", APP, "--id", wid, env=site.env
    )
    assert done.returncode == 0, done.stderr
    poll(lambda: site.ran(wid, "first"))
    poll(lambda: _step_count(_scrape(url), "first") >= 1)
    # Only the operations routes: the worker serves no API.
    assert httpx.get(f"{url}/v1/workflows", timeout=5).status_code == 404
    assert httpx.get(f"{url}/readyz", timeout=5).json()["status"] == "ok"


def test_a_worker_refuses_metrics_beyond_loopback_without_keys(site: Site):
    env = {k: v for k, v in site.env.items() if not k.startswith("TIERFLOW_API_KEYS")}
    done = procs.run(
        "tierflow.cli", "worker", "--app", APP, "--metrics-port", str(free_port()),
        "--metrics-host", "0.0.0.0", env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "refused" in done.stderr
