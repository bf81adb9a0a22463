"""Compliance: retention, legal hold, erasure across every tier, the audit log, exports.

Reached as ``tf.compliance`` (:class:`~tierflow.tiering.compliance.service.Compliance`):

- :mod:`.retention`: policies per workflow type and which workflows expired;
- :mod:`.holds`: legal holds by id or attribute, and what they cover;
- :mod:`.erase`: erasure of workflows from every tier, crash-safe;
- :mod:`.records`: the tables in the instance index, the audit key;
- :mod:`.audit`: the audit log's appends to the Iceberg table ``tierflow.audit``;
- :mod:`.export`: a workflow's verified export (row, events, manifest) and its check.

Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow.hot.lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.tiering.compliance.erase import ErasureReport
    from tierflow.tiering.compliance.export import ExportManifest
    from tierflow.tiering.compliance.holds import Hold
    from tierflow.tiering.compliance.records import AuditRecord, ComplianceRecords
    from tierflow.tiering.compliance.retention import RetentionPolicy, RetentionReport
    from tierflow.tiering.compliance.service import Compliance

__all__ = [
    "AuditRecord",
    "Compliance",
    "ComplianceRecords",
    "ErasureReport",
    "ExportManifest",
    "Hold",
    "RetentionPolicy",
    "RetentionReport",
]

_HOME = {
    "AuditRecord": "records",
    "Compliance": "service",
    "ComplianceRecords": "records",
    "ErasureReport": "erase",
    "ExportManifest": "export",
    "Hold": "holds",
    "RetentionPolicy": "retention",
    "RetentionReport": "retention",
}

__getattr__ = lazy_names(__name__, _HOME)
