"""What spans tiers: the tiering job, its ledger and policy, and reads of warm instances."""

from tiering.job import TieringJob, TieringReport
from tiering.policy import TieringPolicy, TypePolicy

__all__ = ["TieringJob", "TieringPolicy", "TieringReport", "TypePolicy"]
