"""``GET /metrics``: Prometheus metrics of one app, in a registry of its own.

What is measured, and where it comes from:

* ``tierflow_workflows{workflow_type, status}`` and ``tierflow_workflows_by_tier{tier}``:
  counted in the instance index when scraped (one grouped read each; nothing is
  counted on the hot path).
* ``tierflow_tiering_lag_seconds``: age of the oldest finished workflow still hot
  (how far tiering is behind), from the index when scraped.
* ``tierflow_tiered_batches_total``, ``tierflow_tiered_workflows_total``,
  ``tierflow_tiered_events_total``: counters of what every committed hot → warm
  batch moved, from the tiering ledger when scraped (their rate is the tiering
  throughput).
* ``tierflow_step_duration_seconds{workflow_type, step, outcome}``: a histogram of
  the steps this process runs, from the engine's event stream (``step.started``
  paired with its ``step.completed`` / ``step.failed``), subscribed live
  (``durable=False``): delivered in the background, in batches, after the
  commits, so steps do not wait for it; it writes no cursors and tiering never
  waits for it.
* ``tierflow_storage_errors_total{code}``: requests that failed with a storage
  error (disk, SQLite, object store).
* ``tierflow_http_request_duration_seconds{method, route, status}``: a histogram
  of every request by route *template* (``/v1/workflows/{workflow_id}``), so ids
  never become label values.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope
from tierflow.facade import Tierflow
from tierflow.hot.errors import StorageError, TierflowError

from .auth import Scope
from .deps import require

__all__ = ["METRICS_SUBSCRIBER", "Metrics", "install_metrics"]

METRICS_SUBSCRIBER = "tierflow.metrics"
"""The event-stream subscriber name under which step latencies are observed."""

# Steps range from a local call (well under a millisecond) to minutes of remote work.
_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Step starts waiting for their outcome in a later batch; bounded (a lost pair costs a sample).
_MAX_OPEN_STEPS = 10_000


class Metrics:
    """The series of one app and the registry that holds them.

    Args:
        tf: The tierflow the app serves (its index is read when scraped).

    Attributes:
        registry: This app's registry (never the process-global one: two apps in
            one process, as in tests, keep separate counts).
    """

    def __init__(self, tf: Tierflow) -> None:
        self.tf = tf
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.workflows = Gauge(
            "tierflow_workflows",
            "Workflows in the index, by type and status (all tiers)",
            ["workflow_type", "status"],
            registry=r,
        )
        self.by_tier = Gauge(
            "tierflow_workflows_by_tier", "Workflows each tier holds", ["tier"], registry=r
        )
        self.lag = Gauge(
            "tierflow_tiering_lag_seconds",
            "Age of the oldest finished workflow still in the hot tier (0: none)",
            registry=r,
        )
        r.register(_LedgerTotals(tf))
        self.steps = Histogram(
            "tierflow_step_duration_seconds",
            "Duration of step attempts this process ran",
            ["workflow_type", "step", "outcome"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            "tierflow_storage_errors",
            "Requests that failed with a storage error (disk, SQLite, object store)",
            ["code"],
            registry=r,
        )
        self.http = Histogram(
            "tierflow_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self._open_steps: dict[tuple[str, str, int | None], float] = {}

    def refresh(self) -> None:
        """Read the index into the gauges (at scrape time)."""
        index = self.tf.index
        self.workflows.clear()
        for (wtype, status), n in index.count_by_type_and_status().items():
            self.workflows.labels(wtype, status).set(n)
        self.by_tier.clear()
        for tier, n in index.count_by_tier().items():
            self.by_tier.labels(tier).set(n)
        oldest = index.oldest_finish("hot")
        self.lag.set(0.0 if oldest is None else max(0.0, time.time() - oldest / 1e6))

    def observe_events(self, events: list[dict[str, Any]]) -> None:
        """Pair step starts with their outcomes and observe each attempt's duration."""
        for e in events:
            etype = e["event_type"]
            if not etype.startswith("step."):
                continue
            key = (e["id"].rsplit("/", 1)[0], e["step_name"], e["attempt"])
            at = datetime.fromisoformat(e["event_time"]).timestamp()
            if etype == "step.started":
                if len(self._open_steps) >= _MAX_OPEN_STEPS:
                    self._open_steps.clear()
                self._open_steps[key] = at
                continue
            started = self._open_steps.pop(key, None)
            if started is not None:
                outcome = etype.removeprefix("step.")
                self.steps.labels(e["workflow_type"], e["step_name"], outcome).observe(
                    max(0.0, at - started)
                )

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _LedgerTotals(Collector):
    """The tiering ledger's totals as counters, read when scraped."""

    def __init__(self, tf: Tierflow) -> None:
        self.tf = tf

    def describe(self) -> list[Metric]:
        return []  # read the ledger only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        from tierflow.tiering.warm_ledger import WarmLedger

        batches, workflows, events = WarmLedger(self.tf.index).moved_totals()
        for name, doc, value in (
            ("tierflow_tiered_batches", "Committed hot-to-warm batches", batches),
            ("tierflow_tiered_workflows", "Workflows moved hot to warm", workflows),
            ("tierflow_tiered_events", "History events moved hot to warm", events),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class _HttpLatency:
    """Pure ASGI middleware (no per-request task, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router put the matched route in the scope; unmatched paths share one label.
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - began
            )


def install_metrics(app: FastAPI, tf: Tierflow) -> Metrics:
    """Add ``GET /metrics``, the latency middleware and the step-latency subscriber.

    Args:
        app: The app ``create_app`` builds (its error handlers already installed).
        tf: The tierflow it serves, not started yet (the subscriber must be registered
            before the engine starts to see every step).

    Returns:
        The app's metrics.
    """
    metrics = Metrics(tf)
    app.state.metrics = metrics
    app.add_middleware(_HttpLatency, metrics=metrics)
    if METRICS_SUBSCRIBER not in tf.engine.stream.subscriber_names():
        # Live (durable=False): no cursor writes, no backlog, and tiering never waits for it.
        tf.subscribe(
            METRICS_SUBSCRIBER, metrics.observe_events, batch_size=1000, batch_ms=200, durable=False
        )

    answer = app.exception_handlers.get(TierflowError)
    if answer is not None:

        async def on_storage_error(request: Request, exc: Exception) -> Response:
            assert answer is not None
            response: Response = await answer(request, exc)  # type: ignore[misc]
            metrics.storage_errors.labels(type(exc).__name__).inc()
            return response

        app.add_exception_handler(StorageError, on_storage_error)

    # With API keys configured, scraping needs a key with the read scope (the series name
    # workflow types and counts); without keys the server listens on loopback only.
    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        dependencies=[Depends(require(Scope.READ))],
    )
    async def metrics_route() -> Response:
        """Prometheus metrics (text format)."""
        metrics.refresh()
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics
