"""What spans tiers: the moves between tiers and their ledgers, reads across tiers, SQL.

- hot → warm: :mod:`~tierflow.tiering.job` (``TieringJob``), its ledger and policy;
- warm → cold: :mod:`~tierflow.tiering.compaction_job` and its ledger;
- :mod:`~tierflow.tiering.source`: reads of archived instances for the router;
- :mod:`~tierflow.tiering.sql`: SQL across all tiers (DuckDB, confined).

Names are imported on first use, so a process that needs one module (the SQL
worker) does not import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow.hot.lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.tiering.job import TieringJob, TieringReport
    from tierflow.tiering.policy import TieringPolicy, TypePolicy

__all__ = ["TieringJob", "TieringPolicy", "TieringReport", "TypePolicy"]

_HOME = {
    "TieringJob": "job",
    "TieringReport": "job",
    "TieringPolicy": "policy",
    "TypePolicy": "policy",
}


__getattr__ = lazy_names(__name__, _HOME)
