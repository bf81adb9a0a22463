"""What the tiering jobs move, and when: hot → warm by ``min_age``, warm → cold by age too."""

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
        cold_after: Age after finish before its warm batch moves to cold;
            None keeps the default. A batch moves when every type in it is old enough.
    """

    min_age: float | str | None = None
    enabled: bool = True
    cold_after: float | str | None = None


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
        cold_after: Age after finish before warm batches move into the cold
            Iceberg tables (default 7 days); None never moves them.
        max_events_per_cold_commit: Most events one cold commit reads and writes
            (memory is set by it, not by the backlog; a pass makes as many commits as
            the eligible batches need). A batch larger than this is committed alone.
        maintain_cold: Periodic passes also maintain the cold tables (rewrite small
            files, expire snapshots, remove orphans).
        snapshot_retention: Cold snapshots younger than this are kept (time travel).
        keep_snapshots: At least this many of the newest cold snapshots are kept.
        orphan_grace: Unreferenced cold files younger than this are never removed
            (a commit in flight may still reference them).
    """

    min_age: float | str = "1h"
    statuses: Sequence[str] = tuple(sorted(TERMINAL_STATUSES))
    per_type: Mapping[str, TypePolicy] = field(default_factory=dict)
    max_workflows_per_batch: int = 50_000
    max_events_per_batch: int = 1_000_000
    max_rows_per_file: int = 2_000_000
    interval: float | None = None
    cold_after: float | str | None = "7d"
    max_events_per_cold_commit: int = 2_000_000
    maintain_cold: bool = True
    snapshot_retention: float | str = "7d"
    keep_snapshots: int = 10
    orphan_grace: float | str = "1d"

    def __post_init__(self) -> None:
        for s in self.statuses:
            if s not in TERMINAL_STATUSES:
                raise InvalidArgument(f"only finished instances move; {s!r} is not terminal")
        if self.max_workflows_per_batch < 1 or self.max_events_per_batch < 1:
            raise InvalidArgument("batch limits must be >= 1")
        parse_duration(self.min_age)
        for value in (self.cold_after, self.snapshot_retention, self.orphan_grace):
            if value is not None:
                parse_duration(value)
        for p in self.per_type.values():
            if p.cold_after is not None:
                parse_duration(p.cold_after)
        if self.max_events_per_cold_commit < 1 or self.keep_snapshots < 1:
            raise InvalidArgument("max_events_per_cold_commit and keep_snapshots must be >= 1")

    def min_age_seconds(self, workflow_type: str | None = None) -> float:
        """Age after finish before a workflow of this type moves."""
        override = self.per_type.get(workflow_type or "")
        if override is not None and override.min_age is not None:
            return parse_duration(override.min_age)
        return parse_duration(self.min_age)

    def cold_after_seconds(self, workflow_type: str | None = None) -> float | None:
        """Age after finish before a workflow of this type may go cold; None: never."""
        override = self.per_type.get(workflow_type or "")
        if override is not None and override.cold_after is not None:
            return parse_duration(override.cold_after)
        return None if self.cold_after is None else parse_duration(self.cold_after)

    def disabled_types(self) -> list[str]:
        """Types that never move."""
        return sorted(t for t, p in self.per_type.items() if not p.enabled)
