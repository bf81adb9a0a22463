"""What spans tiers: the moves between tiers and their ledgers, reads across tiers, SQL.

- hot → warm: :mod:`~tierflow.tiering.to_warm` (``WarmMove``), its ledger and policy;
- warm → cold: :mod:`~tierflow.tiering.to_cold` and its ledger;
- :mod:`~tierflow.tiering.source`: reads of archived instances for the router;
- :mod:`~tierflow.tiering.sql`: SQL across all tiers (DuckDB, confined);
- :mod:`~tierflow.tiering.compliance`: retention, legal holds, erasure, the audit log.

Names are imported on first use, so a process that needs one module (the SQL
worker) does not import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow.hot.lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.tiering.policy import TieringPolicy, TypePolicy
    from tierflow.tiering.to_warm import TieringReport, WarmMove

__all__ = ["TieringPolicy", "TieringReport", "TypePolicy", "WarmMove"]

_HOME = {
    "WarmMove": "to_warm",
    "TieringReport": "to_warm",
    "TieringPolicy": "policy",
    "TypePolicy": "policy",
}


__getattr__ = lazy_names(__name__, _HOME)
