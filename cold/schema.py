"""The Arrow schema of the cold tables: the warm schema plus ``batch_id``.

Kept apart from :mod:`tierflow.cold.tables` (which needs pyiceberg) so that
readers of the schema alone, such as the SQL engine, import no pyiceberg.
"""

from __future__ import annotations

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument
from tierflow.hot.rows import AUDIT
from tierflow.warm.schema import ARROW_TYPES, DATASETS

__all__ = ["AUDIT_SCHEMA", "BATCH_ID", "arrow_schema"]

BATCH_ID = pa.field(
    "batch_id",
    pa.string(),
    nullable=False,
    metadata={b"doc": b"Warm batch that carried the row; the index's batch_id of the instance."},
)
"""The column cold rows have beyond the warm ones."""


def arrow_schema(dataset: str) -> pa.Schema:
    """The Arrow schema of one cold table: the warm schema plus ``batch_id``.

    Raises:
        InvalidArgument: ``dataset`` is not ``workflows`` or ``history``.
    """
    warm = DATASETS.get(dataset)
    if warm is None:
        raise InvalidArgument(f"unknown cold table {dataset!r} (workflows or history)")
    return pa.schema([*warm, BATCH_ID], metadata=warm.metadata)


AUDIT_SCHEMA = pa.schema(
    [
        pa.field(
            c.name, ARROW_TYPES[c.type], nullable=c.nullable, metadata={b"doc": c.doc.encode()}
        )
        for c in AUDIT
    ]
)
"""The audit log's rows (``rows.AUDIT``): the Iceberg ``tierflow.audit`` table and the SQL view."""
