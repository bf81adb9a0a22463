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
import json
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from tierflow.hot import serde
from tierflow.hot.errors import InvalidArgument, TierflowError
from tierflow.hot.index import IndexDB
from tierflow.hot.models import TERMINAL_STATUSES, from_micros
from tierflow.hot.records import EventRow
from tierflow.hot.router import Tier

__all__ = ["CallbackSubscriber", "EventStream", "HttpSink", "Subscriber", "event_id"]

log = logging.getLogger("tierflow.stream")

# Most events a subscriber holds in memory; past that it reads from the files.
_MEM_LIMIT = 100_000


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
        durable: True (the default): cursors in the index, the backlog of every hot
            instance on first start, redelivery after a crash, and tiering waits for
            this subscriber's acknowledgement. False: a live view for in-process
            observers such as metrics: only events committed by this process while it
            runs, no cursors written, and tiering never waits for it.
    """

    def __init__(
        self,
        name: str,
        *,
        batch_size: int = 100,
        batch_ms: float = 50,
        max_backoff: float = 30.0,
        durable: bool = True,
    ) -> None:
        if not name or not isinstance(name, str):
            raise InvalidArgument("a subscriber needs a non-empty name")
        if batch_size < 1 or batch_ms < 0 or max_backoff <= 0:
            raise InvalidArgument("batch_size >= 1, batch_ms >= 0 and max_backoff > 0")
        self.name = name
        self.batch_size = batch_size
        self.batch_ms = batch_ms
        self.max_backoff = max_backoff
        self.durable = durable

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """Deliver one batch; raise to have it retried later."""
        raise NotImplementedError

    async def deliver_json(self, events: list[str]) -> None:
        """Deliver one batch given as JSON texts (default: decode and call ``deliver``)."""
        await self.deliver([json.loads(t) for t in events])

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
        **kw: ``batch_size`` (default 1000), ``batch_ms`` (default 500),
            ``max_backoff``.

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
        kw.setdefault("batch_size", 1000)
        kw.setdefault("batch_ms", 500)
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
        await self.deliver_json([json.dumps(e, ensure_ascii=False) for e in events])

    async def deliver_json(self, events: list[str]) -> None:
        """POST events that are already JSON text, without decoding them.

        The request runs on a worker thread with a blocking client: encoding and
        sending a large body then happens off the event loop that runs workflows.
        """
        body = ('{"events":[' + ",".join(events) + "]}").encode()
        await asyncio.get_running_loop().run_in_executor(None, self._post, body)

    def _post(self, body: bytes) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx is a dependency
            raise TierflowError("HttpSink needs httpx: pip install httpx") from exc
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, headers=self._headers)
        resp = self._client.post(
            self.url, content=body, headers={"Content-Type": "application/json"}
        )
        if resp.status_code // 100 != 2:
            raise TierflowError(f"event sink {self.url} answered HTTP {resp.status_code}")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.get_running_loop().run_in_executor(None, client.close)


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
        # Events handed over by the executor right after its commits, as JSON
        # text, so the common case needs no file read and no re-encoding.
        self.mem: dict[str, list[tuple[int, str]]] = {}
        self.mem_count = 0

    def mark(self, workflow_id: str) -> None:
        self.dirty[workflow_id] = None
        self.wake.set()

    def offer(self, workflow_id: str, events: list[tuple[int, str]]) -> None:
        """Keep committed events in memory if they extend what is pending."""
        held = self.mem.get(workflow_id)
        if not held and events and workflow_id not in self.cursors:
            if events[0][0] == 1:
                self.cursors[workflow_id] = 0  # a new instance: nothing to look up
            elif not self.sub.durable:
                self.cursors[workflow_id] = events[0][0] - 1  # live: from what commits now
        nxt = held[-1][0] + 1 if held else self._cursor(workflow_id) + 1
        if events and events[0][0] == nxt and self.mem_count < _MEM_LIMIT:
            self.mem.setdefault(workflow_id, []).extend(events)
            self.mem_count += len(events)
        else:  # a gap (another writer, or memory full): the file is the source
            self.mem_count -= len(self.mem.pop(workflow_id, []))
        self.mark(workflow_id)

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.sub.batch_ms:
                await asyncio.sleep(self.sub.batch_ms / 1000)
            # Send full batches while the backlog lasts; a partial batch means we
            # caught up, so wait batch_ms again instead of posting dribbles.
            while self.dirty and await self._drain_some() >= self.sub.batch_size:
                pass
            if self.dirty:
                self.wake.set()

    def _cursor(self, wid: str) -> int:
        if wid not in self.cursors:
            self.cursors[wid] = self.stream.load_cursor(self.sub.name, wid)
        return self.cursors[wid]

    def _from_memory(self, wid: str, after: int, room: int) -> tuple[list[str], int, bool] | None:
        held = self.mem.get(wid)
        if not held:
            return None
        while held and held[0][0] <= after:  # already acknowledged
            held.pop(0)
            self.mem_count -= 1
        if not held or held[0][0] != after + 1:
            self.mem_count -= len(self.mem.pop(wid, []))
            return None
        take, rest = held[:room], held[room:]
        self.mem_count -= len(take)
        if rest:
            self.mem[wid] = rest
        else:
            del self.mem[wid]
        return [t for _, t in take], take[-1][0], bool(rest)

    async def _drain_some(self) -> int:
        """Deliver one batch; return how many events it held."""
        batch: list[str] = []
        upto: dict[str, int] = {}
        for wid in list(self.dirty):
            if len(batch) >= self.sub.batch_size:
                break
            self.dirty.pop(wid, None)
            after = self._cursor(wid)
            room = self.sub.batch_size - len(batch)
            hit = self._from_memory(wid, after, room)
            if hit is not None:
                texts, last, more = hit
            else:
                events, more = await self.stream.read(wid, after, room)
                texts = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events]
                last = events[-1]["event_id"] if events else after
            if more:
                self.dirty[wid] = None  # come back for the rest
            if texts:
                batch.extend(texts)
                upto[wid] = last
        if not batch:
            return 0
        backoff = 0.05
        while True:
            try:
                await self.sub.deliver_json(batch)
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
        if len(self.cursors) > _MEM_LIMIT:
            self.cursors.clear()  # a cache of the index; reloaded on demand
        for wid, last in upto.items():
            self.cursors[wid] = last
        if self.sub.durable:
            self.stream.save_cursors(self.sub.name, upto)
        else:  # live: the next offer of an instance sets its cursor again
            for wid in upto:
                if wid not in self.dirty:
                    self.cursors.pop(wid, None)
        return len(batch)


# Reads up to ``limit`` stored event rows of an instance after event ``after``
# (``(event_id, type, time, step, attempt, payload)``), or none if unreadable.
EventReader = Callable[[str, int, int], Awaitable[list[tuple[Any, ...]]]]


class EventStream:
    """Publishes committed history events to subscribers.

    Args:
        index: The instance index (cursors live there).
        read_events: Reads an instance's stored events (the engine's files).
    """

    def __init__(self, index: IndexDB, read_events: EventReader) -> None:
        self.index = index
        self._read_events = read_events
        self._feeds: dict[str, _Feed] = {}
        self._started = False

    def subscriber_names(self) -> list[str]:
        """Names of the registered subscribers."""
        return list(self._feeds)

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
        if feed.sub.durable:  # a live subscriber has no backlog
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

    def committed(
        self,
        workflow_id: str,
        written: tuple[str, str, list[tuple[int, EventRow]]] | None = None,
    ) -> None:
        """New events were committed for ``workflow_id`` (cheap; called on every commit)."""
        if written is None:
            for feed in self._feeds.values():
                # A live feed that holds no cursor for it cannot tell the new events from
                # the old: it takes events the executor hands over (steps among them) only.
                if feed.sub.durable or workflow_id in feed.cursors:
                    feed.mark(workflow_id)
            return
        run_id, wtype, rows = written
        fmt = _WireFormatter(workflow_id, run_id, wtype).format
        texts = [
            (n, fmt(n, ev.event_type, ev.event_time, ev.step_name, ev.attempt, ev.payload))
            for n, ev in rows
        ]
        for feed in self._feeds.values():
            feed.offer(workflow_id, texts)

    def forget(self, workflow_ids: Iterable[str]) -> None:
        """Drop pending events and cached cursors of these instances (they were erased)."""
        for wid in workflow_ids:
            for feed in self._feeds.values():
                feed.dirty.pop(wid, None)
                feed.cursors.pop(wid, None)
                feed.mem_count -= len(feed.mem.pop(wid, []))

    async def read(
        self, workflow_id: str, after: int, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` events after ``after`` as published JSON; and whether more remain."""
        row = self.index.get(workflow_id)
        if row is None or row.file is None:
            return [], False
        rows = await self._read_events(workflow_id, after, limit + 1)
        more = len(rows) > limit
        return [to_wire(workflow_id, row.run_id, row.workflow_type, r) for r in rows[:limit]], more

    def delivered(self, name: str) -> int:
        """Events delivered to subscriber ``name`` by this process."""
        return self._feeds[name].delivered

    # -- cursors in the index --------------------------------------------------------

    def load_cursor(self, subscriber: str, workflow_id: str) -> int:
        """Return the last acknowledged event id (0 if none)."""
        rows = self.index.execute(
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

        self.index.write_now(fn)

    def acknowledged_condition(self) -> tuple[str, list[str]]:
        """SQL over ``instances`` true where every subscriber acknowledged every event.

        Returns:
            ``(sql, params)`` to AND into a query on the ``instances`` table
            (``"1"`` when no durable subscriber is registered). Tiering uses it never
            to move events a subscriber has not seen.
        """
        names = [n for n, f in self._feeds.items() if f.sub.durable]
        sql = " AND ".join(
            "coalesce((SELECT upto FROM stream_cursors WHERE subscriber=? AND "
            "workflow_id=instances.workflow_id), 0) >= coalesce(instances.events_upto, 0)"
            for _ in names
        )
        return (sql or "1"), names

    def backlog(self, subscriber: str) -> list[str]:
        """Instances with events this subscriber may not have acknowledged."""
        finished = sorted(TERMINAL_STATUSES)
        rows = self.index.execute(
            "SELECT i.workflow_id FROM instances i LEFT JOIN stream_cursors c "
            "ON c.subscriber = ? AND c.workflow_id = i.workflow_id "
            "WHERE i.file IS NOT NULL AND i.tier = ? AND "
            f"(i.status NOT IN ({','.join('?' * len(finished))}) "
            " OR coalesce(c.upto, 0) < coalesce(i.events_upto, 1 << 62)) "
            "ORDER BY i.created_at",
            (subscriber, Tier.HOT.value, *finished),
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


def wire_json(
    workflow_id: str,
    run_id: str,
    workflow_type: str,
    event_no: int,
    etype: str,
    etime: int,
    step: str | None,
    attempt: int | None,
    payload: str | None,
) -> str:
    """The published JSON of one event, built around its stored payload text."""
    return _WireFormatter(workflow_id, run_id, workflow_type).format(
        event_no, etype, etime, step, attempt, payload
    )


class _WireFormatter:
    """Formats one instance's events as JSON text; the constant parts are encoded once."""

    def __init__(self, workflow_id: str, run_id: str, workflow_type: str) -> None:
        dumps = json.dumps
        # Workflow ids and run ids are plain ASCII (validated); names go through dumps.
        self.id_prefix = f"{workflow_id}/{run_id}/"
        self.tail = (
            f',"workflow_id":{dumps(workflow_id)},"run_id":{dumps(run_id)},'
            f'"workflow_type":{dumps(workflow_type, ensure_ascii=False)}'
        )

    def format(
        self,
        event_no: int,
        etype: str,
        etime: int,
        step: str | None,
        attempt: int | None,
        payload: str | None,
    ) -> str:
        step_json = "null" if step is None else json.dumps(step, ensure_ascii=False)
        return (
            f'{{"id":"{self.id_prefix}{event_no}","event_id":{event_no},'
            f'"event_type":"{etype}","event_time":"{from_micros(etime).isoformat()}",'
            f'"step_name":{step_json},"attempt":{"null" if attempt is None else attempt}'
            f'{self.tail},"payload":{"null" if payload is None else payload}}}'
        )
