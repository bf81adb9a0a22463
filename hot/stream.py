"""The event stream: every history event, published to subscribers (CDC).

Delivery uses the instance files as a transactional outbox: an event is
committed with the state change it describes, in the instance's SQLite file,
and published later in the background, so publishing never blocks ``start``,
``run`` or a step, and a crash loses nothing.

Each subscriber has a name and, per instance, a durable cursor in the index
(``stream_cursors``): the last event id it has acknowledged. A subscriber's
loop reads events past its cursors from the instance files, delivers them in
batches, and then moves the cursors. Delivery is at-least-once: after a crash
or a failed delivery, events since the last saved cursor are sent again. Each
event carries a stable ``id`` (``<workflow_id>/<run_id>/<event_id>``) to
de-duplicate on.

A subscriber seen for the first time receives the history of every instance
still in the hot tier, from the start.

Subscribers:

* :class:`CallbackSubscriber`: an in-process function, sync or async.
* :class:`HttpSink`: ``POST {"events": [...]}`` to a URL, batched by count
  and time, with custom headers (their values are never logged) and
  exponential backoff while the endpoint fails.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from hot import serde
from hot.errors import InvalidArgument, TierflowError
from hot.models import from_micros

if TYPE_CHECKING:
    from hot.engine import Engine

__all__ = ["CallbackSubscriber", "EventStream", "HttpSink", "Subscriber", "event_id"]

log = logging.getLogger("tierflow.stream")


def event_id(workflow_id: str, run_id: str, event_no: int) -> str:
    """Return the stable id of one event (``/`` never occurs in workflow ids)."""
    return f"{workflow_id}/{run_id}/{event_no}"


class Subscriber:
    """Base of event subscribers.

    Args:
        name: Stable name; cursors are kept under it across restarts.
        batch_size: Most events per delivery.
        batch_ms: How long to gather events before delivering a partial batch.
        max_backoff: Cap, in seconds, of the wait between failed deliveries.
    """

    def __init__(
        self, name: str, *, batch_size: int = 100, batch_ms: float = 50, max_backoff: float = 30.0
    ) -> None:
        if not name or not isinstance(name, str):
            raise InvalidArgument("a subscriber needs a non-empty name")
        if batch_size < 1 or batch_ms < 0 or max_backoff <= 0:
            raise InvalidArgument("batch_size >= 1, batch_ms >= 0 and max_backoff > 0")
        self.name = name
        self.batch_size = batch_size
        self.batch_ms = batch_ms
        self.max_backoff = max_backoff

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """Deliver one batch; raise to have it retried later."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release resources (HTTP connections)."""


class CallbackSubscriber(Subscriber):
    """Delivers batches to an in-process function ``fn(events)`` (sync or async)."""

    def __init__(self, name: str, fn: Callable[[list[dict[str, Any]]], Any], **kw: Any) -> None:
        super().__init__(name, **kw)
        self.fn = fn

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """Call the function; an exception means "retry this batch"."""
        out = self.fn(events)
        if inspect.isawaitable(out):
            await out


class HttpSink(Subscriber):
    """POSTs ``{"events": [...]}`` batches to ``url``.

    Args:
        url: The endpoint.
        name: Subscriber name (cursors are kept under it); default ``"http"``.
        headers: Extra request headers, e.g. an ``Authorization`` token.
        timeout: Seconds per request.
        **kw: ``batch_size``, ``batch_ms``, ``max_backoff``.

    Any non-2xx answer or connection error is retried with exponential
    backoff; nothing is dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "http",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        if not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"HttpSink needs an http(s) URL, got {url[:40]!r}")
        self.url = url
        self._headers = dict(headers or {})
        self.timeout = timeout
        self._client: Any = None

    def __repr__(self) -> str:  # never show header values: they hold secrets
        return f"HttpSink(name={self.name!r}, url={self.url!r}, headers={sorted(self._headers)})"

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """POST one batch; raise on any failure."""
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is a dependency
            raise TierflowError("HttpSink needs httpx: pip install httpx") from exc
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers)
        resp = await self._client.post(self.url, json={"events": events})
        if resp.status_code // 100 != 2:
            raise TierflowError(f"event sink {self.url} answered HTTP {resp.status_code}")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _Feed:
    """One subscriber's delivery loop and its in-memory view of pending work."""

    def __init__(self, stream: EventStream, sub: Subscriber) -> None:
        self.stream = stream
        self.sub = sub
        self.dirty: dict[str, None] = {}  # insertion-ordered set
        self.wake = asyncio.Event()
        self.cursors: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None
        self.delivered = 0

    def mark(self, workflow_id: str) -> None:
        self.dirty[workflow_id] = None
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.sub.batch_ms:
                await asyncio.sleep(self.sub.batch_ms / 1000)
            while self.dirty:
                await self._drain_some()

    def _cursor(self, wid: str) -> int:
        if wid not in self.cursors:
            self.cursors[wid] = self.stream.load_cursor(self.sub.name, wid)
        return self.cursors[wid]

    async def _drain_some(self) -> None:
        batch: list[dict[str, Any]] = []
        upto: dict[str, int] = {}
        for wid in list(self.dirty):
            if len(batch) >= self.sub.batch_size:
                break
            self.dirty.pop(wid, None)
            after = self._cursor(wid)
            room = self.sub.batch_size - len(batch)
            events, more = await self.stream.engine.stream_read(wid, after, room)
            if more:
                self.dirty[wid] = None  # come back for the rest
            if events:
                batch.extend(events)
                upto[wid] = events[-1]["event_id"]
        if not batch:
            return
        backoff = 0.05
        while True:
            try:
                await self.sub.deliver(batch)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "subscriber %s: delivery of %d events failed (%s); retrying in %.2fs",
                    self.sub.name,
                    len(batch),
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.sub.max_backoff)
        self.delivered += len(batch)
        for wid, last in upto.items():
            self.cursors[wid] = last
        self.stream.save_cursors(self.sub.name, upto)


class EventStream:
    """Publishes committed history events to subscribers.

    Args:
        engine: The engine whose instances are published.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._feeds: dict[str, _Feed] = {}
        self._started = False

    @property
    def active(self) -> bool:
        """True when at least one subscriber is registered."""
        return bool(self._feeds)

    def add(self, sub: Subscriber) -> None:
        """Register a subscriber (its backlog is found when the stream starts)."""
        if sub.name in self._feeds:
            raise InvalidArgument(f"a subscriber named {sub.name!r} is already registered")
        feed = _Feed(self, sub)
        self._feeds[sub.name] = feed
        if self._started:
            self._start_feed(feed)

    def _start_feed(self, feed: _Feed) -> None:
        for wid in self.backlog(feed.sub.name):
            feed.mark(wid)
        feed.task = asyncio.get_running_loop().create_task(feed.run())

    def start(self) -> None:
        """Start every subscriber's loop (inside the engine's event loop)."""
        self._started = True
        for feed in self._feeds.values():
            self._start_feed(feed)

    async def stop(self) -> None:
        """Stop delivery loops and close subscribers; cursors are already saved."""
        tasks = [f.task for f in self._feeds.values() if f.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for f in self._feeds.values():
            await f.sub.aclose()

    def committed(self, workflow_id: str) -> None:
        """New events were committed for ``workflow_id`` (cheap; called on every commit)."""
        for feed in self._feeds.values():
            feed.mark(workflow_id)

    def delivered(self, name: str) -> int:
        """Events delivered to subscriber ``name`` by this process."""
        return self._feeds[name].delivered

    # -- cursors in the index --------------------------------------------------------

    def load_cursor(self, subscriber: str, workflow_id: str) -> int:
        """Return the last acknowledged event id (0 if none)."""
        rows = self.engine.index._read(
            "SELECT upto FROM stream_cursors WHERE subscriber=? AND workflow_id=?",
            (subscriber, workflow_id),
        )
        return int(rows[0][0]) if rows else 0

    def save_cursors(self, subscriber: str, upto: dict[str, int]) -> None:
        """Persist cursors (synchronous=NORMAL: a lost update means a redelivery)."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO stream_cursors VALUES (?,?,?)",
                [(subscriber, wid, n) for wid, n in upto.items()],
            )

        self.engine.index.write_now(fn)

    def backlog(self, subscriber: str) -> list[str]:
        """Instances with events this subscriber may not have acknowledged."""
        rows = self.engine.index._read(
            "SELECT i.workflow_id FROM instances i LEFT JOIN stream_cursors c "
            "ON c.subscriber = ? AND c.workflow_id = i.workflow_id "
            "WHERE i.file IS NOT NULL AND i.tier = 'hot' AND "
            "(i.status NOT IN ('completed','failed','cancelled','terminated') "
            " OR coalesce(c.upto, 0) < coalesce(i.events_upto, 1 << 62)) "
            "ORDER BY i.created_at",
            (subscriber,),
        )
        return [r[0] for r in rows]


def to_wire(
    workflow_id: str, run_id: str, workflow_type: str, row: Sequence[Any]
) -> dict[str, Any]:
    """Shape one ``events`` row as published JSON (the ``history`` columns plus ``id``)."""
    event_no, etype, etime, step, attempt, payload = row
    return {
        "id": event_id(workflow_id, run_id, event_no),
        "workflow_id": workflow_id,
        "run_id": run_id,
        "event_id": event_no,
        "event_type": etype,
        "event_time": from_micros(etime).isoformat(),
        "step_name": step,
        "attempt": attempt,
        "payload": serde.decode(payload),
        "workflow_type": workflow_type,
    }


Reader = Callable[[str, int, int], Awaitable[tuple[list[dict[str, Any]], bool]]]
