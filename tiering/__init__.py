"""What spans tiers: the tiering job, its ledger and policy, and reads of warm instances."""

from tierflow.tiering.job import TieringJob, TieringReport
from tierflow.tiering.policy import TieringPolicy, TypePolicy

__all__ = ["TieringJob", "TieringPolicy", "TieringReport", "TypePolicy"]
