"""Request limits: body size (413) and concurrent SQL queries per API key (429)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

__all__ = ["BodyLimit", "SqlSlots"]


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused before a byte of
    the body is read; a body without one (chunked) is counted while it is read
    and refused as soon as it passes the limit. Under the limit, the body is
    handed on as it came.

    Args:
        app: The application it wraps.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, 400, "invalid_argument", "malformed Content-Length")
                    return
                if declared > self.max_bytes:
                    await _refuse(send, 413, "body_too_large", self._message())
                    return
        # Read the body now (it is at most max_bytes), so that an oversized one is
        # answered here and not as a parse error deep inside a route.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _refuse(send, 413, "body_too_large", self._message())
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body over the limit of {self.max_bytes} bytes"


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read: the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SqlSlots:
    """How many SQL queries each API key has running; over ``per_key`` → 429.

    Args:
        per_key: Queries one key may run at once.
    """

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._running: dict[str, int] = {}

    def running(self, key_name: str) -> int:
        """How many queries ``key_name`` has running now."""
        return self._running.get(key_name, 0)

    @contextmanager
    def slot(self, key_name: str) -> Iterator[None]:
        """Hold one of ``key_name``'s slots for the duration of the block.

        Raises:
            ApiError: 429, the key already runs ``per_key`` queries.
        """
        # One event loop serves every request, so check-then-increment cannot race.
        running = self._running.get(key_name, 0)
        if running >= self.per_key:
            raise ApiError(
                429,
                "too_many_queries",
                f"this key already runs {running} SQL queries (the limit is {self.per_key}); "
                "retry when one finishes",
            )
        self._running[key_name] = running + 1
        try:
            yield
        finally:
            left = self._running[key_name] - 1
            if left:
                self._running[key_name] = left
            else:
                del self._running[key_name]
