"""What the tiering job moves, and when."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tierflow.hot.errors import InvalidArgument
from tierflow.hot.models import TERMINAL_STATUSES
from tierflow.hot.retry import parse_duration

__all__ = ["TieringPolicy", "TypePolicy"]


@dataclass(frozen=True)
class TypePolicy:
    """Overrides for one workflow type.

    Attributes:
        min_age: Age after finish before moving ("1h", seconds); None keeps the default.
        enabled: False keeps this type in the hot tier.
    """

    min_age: float | str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class TieringPolicy:
    """When finished instances move from hot SQLite files to warm Parquet.

    Attributes:
        min_age: Age after finish before an instance moves (default 1 h).
        statuses: Which terminal statuses move (default: all of them).
        per_type: Overrides by workflow type name.
        max_workflows_per_batch: Upper bound of one batch (memory is set by the batch).
        max_events_per_batch: Upper bound of one batch, in events.
        max_rows_per_file: Largest Parquet file, in rows.
        interval: Seconds between passes the scheduler runs; None: only on request.
    """

    min_age: float | str = "1h"
    statuses: Sequence[str] = tuple(sorted(TERMINAL_STATUSES))
    per_type: Mapping[str, TypePolicy] = field(default_factory=dict)
    max_workflows_per_batch: int = 50_000
    max_events_per_batch: int = 1_000_000
    max_rows_per_file: int = 2_000_000
    interval: float | None = None

    def __post_init__(self) -> None:
        for s in self.statuses:
            if s not in TERMINAL_STATUSES:
                raise InvalidArgument(f"only finished instances move; {s!r} is not terminal")
        if self.max_workflows_per_batch < 1 or self.max_events_per_batch < 1:
            raise InvalidArgument("batch limits must be >= 1")
        parse_duration(self.min_age)

    def min_age_seconds(self, workflow_type: str | None = None) -> float:
        """Age after finish before a workflow of this type moves."""
        override = self.per_type.get(workflow_type or "")
        if override is not None and override.min_age is not None:
            return parse_duration(override.min_age)
        return parse_duration(self.min_age)

    def disabled_types(self) -> list[str]:
        """Types that never move."""
        return sorted(t for t, p in self.per_type.items() if not p.enabled)
