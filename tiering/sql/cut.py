"""What one SQL query reads: the tier map, warm batches and cold commits, as of one instant.

The consistency rule (README, "Consistent reads and read leases"): a query sees each
workflow exactly once, even while tiering (hot → warm, warm → cold) runs in another
process. Every move between tiers is one index transaction, so one read
transaction of the index (:meth:`IndexDB.read_consistent`) yields a
consistent cut:

- **hot**: instances whose index row says ``tier = hot``;
- **warm**: batches in state ``committed`` or ``done`` (their manifests list
  the exact files); ``cold`` batches are in the cold tables, ``writing``/``aborted``
  ones were never visible;
- **cold**: cold commits in state ``committed`` or ``done``. The
  Iceberg tables may be ahead of that read (a cold move commits to Iceberg
  *before* it flips the index), so the snapshot read is chosen by
  :func:`pick_snapshot`: the newest snapshot in the table's ancestry that
  holds no cold commit the index read did not know, which keeps
  maintenance rewrites (same rows, fewer files) but never a commit whose
  batches the same read still counts as warm.

Time travel (``as_of``) uses the same walk with a time bound (pure functions
over data here; the catalog I/O is in :mod:`tierflow.tiering.sql`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tierflow.hot.index import IndexDB
from tierflow.hot.router import Tier
from tierflow.hot.rows import WORKFLOWS, names, without
from tierflow.tiering.cold_ledger import ColdLedger, CommitState
from tierflow.tiering.compliance.records import AUDIT_COLUMNS
from tierflow.tiering.compliance.records import DDL as AUDIT_DDL
from tierflow.tiering.warm_ledger import BatchState, WarmLedger

if TYPE_CHECKING:  # pyiceberg is imported only where cold data is read
    from pyiceberg.table.snapshots import Snapshot

__all__ = ["HOT_INDEX_COLUMNS", "TierSnapshot", "pick_snapshot", "read_snapshot"]

# The workflows columns the index keeps (``result`` lives in the instance file,
# ``duration_ms`` and ``tier`` are derived), then the instance file.
HOT_INDEX_COLUMNS: tuple[str, ...] = (
    *names(without(WORKFLOWS, "result", "duration_ms", "tier")),
    "file",
)
"""Columns of each ``TierSnapshot.hot`` row, in order."""


@dataclass
class TierSnapshot:
    """One consistent cut of the index: what each tier holds for one query.

    Attributes:
        hot: One tuple per hot instance, values of :data:`HOT_INDEX_COLUMNS`.
        warm: ``(batch_id, manifest JSON)`` of every batch in warm.
        commits: Cold commit id (one warm → cold commit) to ``committed_at`` (µs), for every
            commit the index counts as cold.
        data_version: The index's ``data_version`` right after the read.
        audit: The audit log's rows (values of ``rows.AUDIT``), when asked for.
        erasing: Workflows being erased: no view shows them, in any tier.
    """

    hot: list[tuple[Any, ...]] = field(default_factory=list)
    warm: list[tuple[str, bytes]] = field(default_factory=list)
    commits: dict[str, int] = field(default_factory=dict)
    data_version: int = 0
    audit: list[tuple[Any, ...]] | None = None
    erasing: list[str] = field(default_factory=list)


def read_snapshot(index: IndexDB, *, audit: bool = False) -> TierSnapshot:
    """Read the hot instances, warm batches and cold commits in one index transaction.

    Call on the thread that owns the index connection (the event loop's).
    Instances being erased are not in the hot tier's rows (their files may
    already be gone) and are listed in ``erasing``, so the warm and cold views
    leave them out too: from its intent on, an erasure's workflows are in no
    view, even if a crash interrupts it between two of its commits.

    Args:
        index: The instance index.
        audit: Read the audit log too (for a query that names the ``audit`` view).

    Raises:
        StorageError: The index cannot be read.
    """
    # The ledgers' tables exist once their constructors ran (idempotent DDL).
    WarmLedger(index)
    ColdLedger(index)
    warm_states = (BatchState.COMMITTED.value, BatchState.DONE.value)
    cold_states = (CommitState.COMMITTED.value, CommitState.DONE.value)
    queries: list[tuple[str, Sequence[Any]]] = [
        (
            f"SELECT {','.join(HOT_INDEX_COLUMNS)} FROM instances WHERE tier=? "
            "AND workflow_id NOT IN (SELECT workflow_id FROM erasing)",
            (Tier.HOT,),
        ),
        (
            "SELECT batch_id, manifest FROM tier_batches WHERE state IN (?,?) ORDER BY created_at",
            warm_states,
        ),
        (
            "SELECT commit_id, committed_at FROM cold_commits WHERE state IN (?,?)",
            cold_states,
        ),
    ]
    queries.append(("SELECT workflow_id FROM erasing ORDER BY workflow_id", ()))
    if audit:
        index.ensure_schema(AUDIT_DDL)
        queries.append((f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log ORDER BY seq", ()))
    hot, warm, commits, erasing, *log = index.read_consistent(queries)
    return TierSnapshot(
        hot=hot,
        warm=[(r[0], r[1]) for r in warm if r[1] is not None],
        commits={r[0]: int(r[1] or 0) for r in commits},
        data_version=index.data_version(),
        audit=log[0] if log else None,
        erasing=[r[0] for r in erasing],
    )


def commit_of(snapshot: Snapshot) -> str | None:
    """The cold commit id of a snapshot that added warm batches; None for others."""
    from tierflow.cold.writer import COMMIT_ID_PROPERTY, batches_of

    if not batches_of(snapshot) or snapshot.summary is None:
        return None
    return snapshot.summary.additional_properties.get(COMMIT_ID_PROPERTY)


def ancestry(current: Snapshot | None, by_id: Callable[[int], Snapshot | None]) -> list[Snapshot]:
    """``current`` and its ancestors still in the metadata, oldest first."""
    chain: list[Snapshot] = []
    snap = current
    while snap is not None:
        chain.append(snap)
        parent = snap.parent_snapshot_id
        snap = None if parent is None else by_id(parent)
    chain.reverse()
    return chain


def pick_snapshot(
    chain: Sequence[Snapshot],
    included: Callable[[str], bool],
    not_after_ms: int | None = None,
) -> Snapshot | None:
    """The snapshot a query reads, out of a table's ancestry (oldest first).

    Walks forward and stops at the first snapshot that is newer than
    ``not_after_ms`` or that is a cold commit ``included`` rejects; the
    last snapshot before that is the answer (None: the table was empty then).

    Args:
        chain: The table's ancestry, oldest first (:func:`ancestry`).
        included: Whether the query may see a cold commit (by id).
        not_after_ms: Time-travel bound (epoch ms); None for no bound.
    """
    chosen = None
    for snap in chain:
        if not_after_ms is not None and snap.timestamp_ms > not_after_ms:
            break
        commit = commit_of(snap)
        if commit is not None and not included(commit):
            break
        chosen = snap
    return chosen


def commit_times(chains: Iterable[Sequence[Snapshot]]) -> dict[str, int]:
    """Per cold commit, the latest ``timestamp_ms`` of its snapshots in any table.

    A commit writes the history table, then the workflows table; as of a time
    between the two it is not in the archive yet (so both tables agree).
    """
    out: dict[str, int] = {}
    for chain in chains:
        for snap in chain:
            commit = commit_of(snap)
            if commit is not None:
                out[commit] = max(out.get(commit, 0), snap.timestamp_ms)
    return out
