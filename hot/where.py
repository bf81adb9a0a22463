"""A SQL ``WHERE`` clause built from optional filters, with its parameters beside it.

List and audit queries take many optional filters; each present one adds a
condition and its parameters. Building the two side by side keeps every value
a bound parameter (nothing a caller passes is pasted into SQL text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Where"]


class Where:
    """Conditions joined by ``AND``, and their parameters in order.

    Column names are the caller's constants, never user input; values are
    always parameters.
    """

    def __init__(self, *conditions: str) -> None:
        self.conditions: list[str] = list(conditions)
        self.params: list[Any] = []

    def add(self, condition: str, *params: Any) -> None:
        """Add a condition with its ``?`` parameters."""
        self.conditions.append(condition)
        self.params.extend(params)

    def equals(self, column: str, value: Any) -> None:
        """``column = value``, unless ``value`` is None."""
        if value is not None:
            self.add(f"{column} = ?", value)

    def one_of(self, column: str, values: Sequence[Any] | None) -> None:
        """``column IN (values)``, unless there are none."""
        if values:
            self.add(f"{column} IN ({','.join('?' * len(values))})", *values)

    def between(self, column: str, low: Any, high: Any) -> None:
        """``low <= column < high``; either bound may be None (open)."""
        if low is not None:
            self.add(f"{column} >= ?", low)
        if high is not None:
            self.add(f"{column} < ?", high)

    @property
    def sql(self) -> str:
        """`` WHERE ...`` (with its leading space), or an empty string if no condition."""
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
