"""Compliance: retention, legal hold, erasure, the audit log and verified export.

:mod:`~tierflow.tiering.compliance.export` writes a workflow's row and every
event with a manifest of checksums, and verifies such an export later.
"""
