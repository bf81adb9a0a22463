"""A flaky dependency whose failures are decided by the request, not by luck.

The example workflows call services that fail now and then. Real flakiness
would make the demo print different numbers on every run; here a stable hash
of the request key says how many times a call fails before it succeeds (or
that it always fails), so the same ids always give the same story. The only
state is the count of calls per key in one :class:`FlakyService` object.
"""

from __future__ import annotations

import hashlib
import threading

__all__ = ["FlakyService", "ServiceUnavailableError", "fraction"]


class ServiceUnavailableError(ConnectionError):
    """A transient failure: the call may succeed when retried."""


def fraction(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for ``key``: the same on every run and machine."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class FlakyService:
    """A dependency that fails the first calls for some keys.

    Args:
        name: The service's name (in its errors, and part of the hash).
        flaky_rate: Share of keys whose first calls fail.
        max_failures: Such a key fails 1 to ``max_failures`` times before a call succeeds.
        down_rate: Share of keys for which every call fails (a retry policy gives up).
    """

    def __init__(
        self, name: str, flaky_rate: float, max_failures: int = 2, down_rate: float = 0.0
    ) -> None:
        self.name = name
        self.flaky_rate = flaky_rate
        self.max_failures = max_failures
        self.down_rate = down_rate
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()  # steps run on worker threads

    def failures_for(self, key: str) -> int:
        """How many calls for ``key`` fail before one succeeds (-1: they all fail)."""
        f = fraction(key, self.name)
        if f < self.down_rate:
            return -1
        if f < self.down_rate + self.flaky_rate:
            return 1 + int(fraction(key, self.name + "/n") * self.max_failures)
        return 0

    def call(self, key: str) -> int:
        """Count a call for ``key``; raise :class:`ServiceUnavailableError` if it is one that fails.

        Returns:
            The number of this call for ``key`` (1 for the first).
        """
        with self._lock:
            n = self._calls[key] = self._calls.get(key, 0) + 1
        failures = self.failures_for(key)
        if failures < 0 or n <= failures:
            raise ServiceUnavailableError(f"{self.name} unavailable (call {n} for {key})")
        return n

    def reset(self) -> None:
        """Forget every call counted so far (a new run of the same ids fails the same way)."""
        with self._lock:
            self._calls.clear()
