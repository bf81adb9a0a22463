"""Compliance: retention, legal hold, erasure across every tier, audit log and verified export."""
