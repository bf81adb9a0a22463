"""The body of ``GET /v1/workflows/{id}/history``, written as the history is read.

Both forms take the first chunk of events (read before the answer started, so
that errors could still be answered with their status) and the iterator of the
rest, and write each chunk as it comes: neither holds the whole history. A
failure after the answer started cuts the body short, and the client sees an
incomplete response, never a well-formed partial history.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from pydantic import TypeAdapter
from tierflow.hot.models import HistoryEvent
from tierflow.hot.rows import HISTORY, names

from .models import Event

__all__ = ["event_row", "json_body", "ndjson_body"]

_EVENT_FIELDS = names(HISTORY)
_STR = TypeAdapter(str)
_EVENTS = TypeAdapter(list[Event])  # type: ignore[valid-type]


def event_row(event: HistoryEvent) -> dict[str, Any]:
    """The response body of one event: its ``history`` row."""
    return {name: getattr(event, name) for name in _EVENT_FIELDS}


async def ndjson_body(
    first: list[HistoryEvent], rest: AsyncGenerator[list[HistoryEvent], None]
) -> AsyncIterator[bytes]:
    """The events as NDJSON, one object a line.

    One write per chunk, not per line: each write is a send through the
    server, and 50,000 of them cost more than the reads.
    """
    async with contextlib.aclosing(rest):
        events = first
        while events:
            yield b"".join(
                json.dumps(e.to_dict(), separators=(",", ":")).encode() + b"\n" for e in events
            )
            events = await anext(rest, [])


async def json_body(
    workflow_id: str,
    tier: str,
    first: list[HistoryEvent],
    rest: AsyncGenerator[list[HistoryEvent], None],
) -> AsyncIterator[bytes]:
    """The ``History`` document, byte for byte what returning it whole would send.

    FastAPI serialises a response model with pydantic's JSON serialiser; here
    the envelope is written first, then each chunk validated and serialised
    by the same ``Event`` model, then the closing brackets.
    """
    async with contextlib.aclosing(rest):
        head = _STR.dump_json(workflow_id) + b',"tier":' + _STR.dump_json(tier)
        yield b'{"workflow_id":' + head + b',"events":['
        events, sep = first, b""
        while events:
            items = _EVENTS.dump_json(_EVENTS.validate_python([event_row(e) for e in events]))
            yield sep + items[1:-1]  # the list's items, without its brackets
            sep = b","
            events = await anext(rest, [])
        yield b"]}"
