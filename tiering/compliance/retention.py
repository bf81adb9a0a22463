"""Retention: how long finished workflows are kept, per workflow type, and which have expired.

A policy names a workflow type or a glob (``"debug_*"``, ``"*"``), how long to
keep (``"90d"``, ``"7y"``, seconds or a ``timedelta``), whether that is
measured from the start or the finish of the workflow, and optionally one
terminal status it applies to (keep failed ones longer). For each workflow
the most specific policy wins: an exact type over a glob over ``"*"`` (among
globs, the one with more literal characters), then a status-specific policy
over one without. Years are 365 days.

Retention judges *families*: a top-level workflow and its descendants go
together when the top-level one expires under its policy (a child's id is in
its parent's history, and the parent's in the child's row), and a family with
a held member, or one not yet finished, is kept whole. Expired families are
deleted from every tier by the erasure machinery (:mod:`.erase`).

The selection is pure functions over policies plus one index query per
``(workflow type, status)`` pair that some policy covers.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tierflow.hot.errors import InvalidArgument
from tierflow.hot.models import TERMINAL_STATUSES, from_micros
from tierflow.tiering.compliance.erase import ErasureReport
from tierflow.tiering.compliance.holds import Run

__all__ = [
    "RetentionPolicy",
    "RetentionReport",
    "Selection",
    "check_policy",
    "parse_keep",
    "pick",
    "select_expired",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_KEEP = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|y)?\s*")
_GLOB = re.compile(r"[*?\[]")
_FROM = ("start", "finish")
_TIERS = ("hot", "warm", "cold")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long finished workflows of a type (or glob) are kept.

    Attributes:
        workflow_type: A type name or a glob (``"debug_*"``, ``"*"``).
        keep: How long they are kept.
        start_or_finish: ``"finish"`` (default) or ``"start"``: what ``keep`` counts from.
        status: The terminal status it applies to; None for any.
        actor: Who set it.
        reason: Why.
        created_at: When it was set.
    """

    workflow_type: str
    keep: timedelta
    start_or_finish: str = "finish"
    status: str | None = None
    actor: str = ""
    reason: str | None = None
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``keep`` in seconds, ``created_at`` as ISO 8601 text."""
        out = asdict(self)
        out["keep"] = self.keep.total_seconds()
        out["created_at"] = None if self.created_at is None else self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class RetentionReport:
    """What ``apply_retention`` deleted (or, for a dry run, would delete).

    Attributes:
        dry_run: Nothing was changed.
        now: The time expiry was judged at.
        expired: Workflows deleted (or to be), per tier (``hot``, ``warm``, ``cold``).
        held_back: Expired workflows kept because a legal hold covers their family,
            per tier.
        erasure: The erasure that deleted them (None for a dry run or when
            nothing expired).
    """

    dry_run: bool
    now: datetime
    expired: dict[str, int] = field(default_factory=dict)
    held_back: dict[str, int] = field(default_factory=dict)
    erasure: ErasureReport | None = None

    @property
    def total(self) -> int:
        """Workflows deleted (or to be), over all tiers."""
        return sum(self.expired.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "expired": dict(self.expired),
            "held_back": dict(self.held_back),
            "total": self.total,
            "erasure": None if self.erasure is None else self.erasure.to_dict(),
        }


def parse_keep(keep: str | int | float | timedelta) -> tuple[float, str]:
    """``keep`` as seconds, and as the text that is recorded.

    Raises:
        InvalidArgument: Not a positive duration (``"90d"``, ``"7y"``, seconds, timedelta).
    """
    if isinstance(keep, bool):
        raise InvalidArgument(f"keep: not a duration: {keep!r}")
    if isinstance(keep, timedelta):
        seconds, text = keep.total_seconds(), f"{keep.total_seconds():g}s"
    elif isinstance(keep, int | float):
        seconds, text = float(keep), f"{float(keep):g}s"
    elif isinstance(keep, str):
        m = _KEEP.fullmatch(keep)
        if m is None:
            raise InvalidArgument(
                f"keep: not a duration: {keep!r} (use e.g. '90d', '7y', '12w', '36h', or seconds)"
            )
        seconds, text = float(m.group(1)) * _UNITS[m.group(2) or "s"], keep.strip()
    else:
        raise InvalidArgument(f"keep: not a duration: {keep!r}")
    if not seconds > 0 or seconds == float("inf"):
        raise InvalidArgument(f"keep must be a positive, finite duration, got {keep!r}")
    return seconds, text


def check_policy(workflow_type: str, status: str | None, start_or_finish: str) -> None:
    """Validate the key of a policy.

    Raises:
        InvalidArgument: An empty type, an unknown or non-terminal status, or
            ``start_or_finish`` not ``"start"``/``"finish"``.
    """
    if not isinstance(workflow_type, str) or not workflow_type.strip():
        raise InvalidArgument("workflow_type must be a type name or a glob such as 'debug_*'")
    if status is not None and status not in TERMINAL_STATUSES:
        raise InvalidArgument(
            f"status {status!r}: retention applies to finished workflows; use one of "
            f"{', '.join(sorted(TERMINAL_STATUSES))}"
        )
    if start_or_finish not in _FROM:
        raise InvalidArgument(
            f"start_or_finish must be 'start' or 'finish', got {start_or_finish!r}"
        )


def _rank(policy: RetentionPolicy) -> tuple[int, int, int, str]:
    pattern = policy.workflow_type
    if pattern == "*":
        kind = 0
    elif _GLOB.search(pattern):
        kind = 1
    else:
        kind = 2
    literal = len(_GLOB.sub("", pattern))
    return (kind, literal, int(policy.status is not None), pattern)


def pick(
    policies: Iterable[RetentionPolicy], workflow_type: str, status: str
) -> RetentionPolicy | None:
    """The most specific policy for a workflow of this type and status (None: kept forever)."""
    found = [
        p
        for p in policies
        if fnmatch.fnmatchcase(workflow_type, p.workflow_type) and p.status in (None, status)
    ]
    return max(found, key=_rank) if found else None


@dataclass
class Selection:
    """Expired families, found by :func:`select_expired`.

    Attributes:
        erase: The workflows to delete (expired top-level ones and their descendants).
        tiers: Each of them to the tier that holds it.
        held: Workflows of expired families that a hold keeps, to their tier.
    """

    erase: list[str] = field(default_factory=list)
    tiers: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)

    def per_tier(self, which: dict[str, str]) -> dict[str, int]:
        """Counts per tier (every tier present, zeros included)."""
        out = dict.fromkeys(_TIERS, 0)
        for tier in which.values():
            out[tier] = out.get(tier, 0) + 1
        return out


def select_expired(
    run: Run,
    policies: Sequence[RetentionPolicy],
    now_us: int,
    held: set[str],
) -> Selection:
    """Find the expired families.

    Args:
        run: Reads the index.
        policies: Every retention policy.
        now_us: The time expiry is judged at (µs since the epoch).
        held: Every workflow a hold covers now.

    Returns:
        What to delete and what holds keep.
    """
    out = Selection()
    if not policies:
        return out
    finished = sorted(TERMINAL_STATUSES)
    marks = ",".join("?" * len(finished))
    not_erasing = "workflow_id NOT IN (SELECT workflow_id FROM erasing)"
    pairs = run(
        "SELECT workflow_type, status FROM instances WHERE parent_workflow_id IS NULL "
        f"AND status IN ({marks}) GROUP BY 1, 2",
        finished,
    )
    roots: list[str] = []
    for wtype, status in pairs:
        policy = pick(policies, wtype, status)
        if policy is None:
            continue
        cutoff = now_us - round(policy.keep.total_seconds() * 1_000_000)
        since = (
            "coalesce(started_at, created_at)"
            if policy.start_or_finish == "start"
            else "finished_at"
        )
        rows = run(
            "SELECT workflow_id FROM instances WHERE parent_workflow_id IS NULL AND "
            f"workflow_type=? AND status=? AND {since} <= ? AND {not_erasing}",
            (wtype, status, cutoff),
        )
        roots.extend(r[0] for r in rows)
    for i in range(0, len(roots), 500):
        chunk = roots[i : i + 500]
        family = _families(run, chunk)
        for root in chunk:
            members = family.get(root, {})
            if any(status not in TERMINAL_STATUSES for _, status in members.values()):
                continue  # a descendant still runs: the family waits for it
            target = out.held if any(m in held for m in members) else out.tiers
            for wid, (tier, _) in members.items():
                target[wid] = tier
                if target is out.tiers:
                    out.erase.append(wid)
    return out


def _families(run: Run, roots: Sequence[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Per root: every member (itself and descendants) to ``(tier, status)``."""
    marks = ",".join("?" * len(roots))
    rows = run(
        "WITH RECURSIVE fam(root, id) AS ("
        f"SELECT workflow_id, workflow_id FROM instances WHERE workflow_id IN ({marks}) "
        "UNION SELECT fam.root, i.workflow_id FROM instances i "
        "JOIN fam ON i.parent_workflow_id = fam.id"
        ") SELECT fam.root, fam.id, i.tier, i.status FROM fam "
        "JOIN instances i ON i.workflow_id = fam.id",
        list(roots),
    )
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for root, wid, tier, status in rows:
        out.setdefault(root, {})[wid] = (tier, status)
    return out


def policy_from_row(row: Sequence[Any]) -> RetentionPolicy:
    """A policy from a ``retention_policies`` row (see :mod:`.records`)."""
    wtype, status, seconds, _text, start_or_finish, actor, reason, created = row
    return RetentionPolicy(
        workflow_type=wtype,
        keep=timedelta(seconds=seconds),
        start_or_finish=start_or_finish,
        status=status or None,
        actor=actor,
        reason=reason,
        created_at=from_micros(created),
    )
