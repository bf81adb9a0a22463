"""Retry policies and durations: pure arithmetic, no I/O."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tierflow.hot.errors import InvalidArgument

__all__ = ["RetryPolicy", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")


def parse_duration(value: float | int | str) -> float:
    """Return a duration in seconds from a number or a string like "5s", "10m", "2h", "1d".

    Raises:
        InvalidArgument: Negative, not finite, or not a duration.
    """
    if isinstance(value, bool):
        raise InvalidArgument(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m is None:
            raise InvalidArgument(
                f"not a duration: {value!r} (use seconds, or e.g. '500ms', '5s', '10m', '2h', '1d')"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise InvalidArgument(f"not a duration: {value!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise InvalidArgument(f"duration must be finite and >= 0, got {value!r}")
    return seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried.

    Attributes:
        max_attempts: All attempts, the first included; 1 means no retry.
        initial_interval: Seconds before the second attempt.
        backoff_coefficient: Each wait is the previous one times this.
        max_interval: Cap on any single wait, in seconds; None for no cap.
        non_retryable: Exception types (or their qualified names) that fail
            the step at once.
        jitter: Fraction of each wait randomised, 0 to 1 (0.1 = +/-10 %).
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval: float | None = 100.0
    non_retryable: Sequence[type[BaseException] | str] = field(default_factory=tuple)
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgument("RetryPolicy.max_attempts must be >= 1")
        if self.initial_interval < 0 or self.backoff_coefficient < 1:
            raise InvalidArgument(
                "RetryPolicy needs initial_interval >= 0 and backoff_coefficient >= 1"
            )
        if self.max_interval is not None and self.max_interval < 0:
            raise InvalidArgument("RetryPolicy.max_interval must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument("RetryPolicy.jitter must be between 0 and 1")

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait in seconds after failed attempt number ``attempt`` (1-based)."""
        delay = self.initial_interval * self.backoff_coefficient ** (attempt - 1)
        if self.max_interval is not None:
            delay = min(delay, self.max_interval)
        if self.jitter:
            r = (rng or random).uniform(-self.jitter, self.jitter)
            delay = max(0.0, delay * (1 + r))
        return delay

    def is_retryable(self, exc: BaseException) -> bool:
        """Return False if ``exc`` is of a type listed in ``non_retryable``."""
        for t in self.non_retryable:
            if isinstance(t, str):
                names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
                names |= {c.__qualname__ for c in type(exc).__mro__}
                if t in names:
                    return False
            elif isinstance(exc, t):
                return False
        return True
