"""The audit log as Arrow, and its appends to the Iceberg table ``tierflow.audit``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from tierflow.cold.schema import AUDIT_SCHEMA
from tierflow.tiering.compliance.host import Host
from tierflow.tiering.compliance.records import AUDIT_COLUMNS, ComplianceRecords

__all__ = ["audit_table", "publish"]

# Records per Iceberg append: bounds the memory of a pass after a long pause.
_PER_APPEND = 100_000


def audit_table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Raw audit rows (values of ``AUDIT_COLUMNS``, ``at`` in µs) as an Arrow table."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(AUDIT_COLUMNS)
    arrays = [
        pa.array(list(values), type=AUDIT_SCHEMA.field(i).type) for i, values in enumerate(columns)
    ]
    return pa.Table.from_arrays(arrays, schema=AUDIT_SCHEMA)


async def publish(host: Host, records: ComplianceRecords) -> int:
    """Append the records the Iceberg table does not hold yet; return how many.

    Runs under the cold lock (one writer of the cold catalog at a time).
    The table's snapshot property is the truth about what it holds; the index
    only remembers it, so an unchanged log costs one index read and no catalog
    access.
    """
    from tierflow.cold.audit import AuditTable

    last = records.last_seq()
    if last <= records.published():
        return 0
    appended = 0
    async with host.cold_move.exclusive():
        table = AuditTable(host.cold)
        upto = await host.engine.io(table.upto)
        while upto < last:
            rows = records.rows_after(upto, _PER_APPEND)
            if not rows:
                break
            new_upto = int(rows[-1][0])
            await host.engine.io(table.append, audit_table(rows), new_upto)
            appended += len(rows)
            upto = new_upto
        records.note_published(upto)
    return appended
