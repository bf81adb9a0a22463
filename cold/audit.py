"""The Iceberg table ``tierflow.audit``: the compliance audit log, for any Iceberg engine.

The audit log lives in the instance index; each tiering pass appends the
records written since the last append to this table, so auditors can read it
with Trino, Spark, DuckDB or pyiceberg without tierflow. Its columns are
:data:`tierflow.hot.rows.AUDIT` (a workflow appears only as the keyed hash of
its id, never in clear), sorted by ``seq``.

Appends only: erasure never rewrites it (it holds no workflow data). Each
append's snapshot records the last ``seq`` it holds (``tierflow.audit.upto``),
so a pass that dies after the append and before noting it in the index does
not append those records again.
"""

from __future__ import annotations

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType
from tierflow.cold.catalog import ColdTables
from tierflow.cold.schema import AUDIT_SCHEMA
from tierflow.cold.tables import NAMESPACE
from tierflow.hot.rows import AUDIT, LogicalType

__all__ = ["IDENTIFIER", "UPTO_PROPERTY", "AuditTable"]

IDENTIFIER = (NAMESPACE, "audit")
"""The table's catalog identifier."""

UPTO_PROPERTY = "tierflow.audit.upto"
"""Snapshot summary property: the last audit ``seq`` the table holds after the snapshot."""

_ICEBERG = {
    LogicalType.STRING: StringType(),
    LogicalType.INT64: LongType(),
    LogicalType.TIMESTAMP_US: TimestamptzType(),
    LogicalType.JSON: StringType(),
}


def _iceberg_schema() -> Schema:
    return Schema(
        *(
            NestedField(
                field_id=i,
                name=c.name,
                field_type=_ICEBERG[c.type],
                required=not c.nullable,
                doc=c.doc,
            )
            for i, c in enumerate(AUDIT, start=1)
        )
    )


class AuditTable:
    """The ``tierflow.audit`` table in the cold tables' catalog.

    Args:
        cold: The cold tables (their catalog and store).
    """

    def __init__(self, cold: ColdTables) -> None:
        self.cold = cold

    def table(self, *, create: bool = False) -> Table | None:
        """The table, freshly loaded (None when it does not exist and ``create`` is False)."""
        catalog = self.cold.catalog
        try:
            return catalog.load_table(IDENTIFIER)
        except NoSuchTableError:
            if not create:
                return None
        catalog.create_namespace_if_not_exists(NAMESPACE)
        schema = _iceberg_schema()
        try:
            return catalog.create_table(
                IDENTIFIER,
                schema=schema,
                sort_order=SortOrder(
                    SortField(
                        source_id=schema.find_field("seq").field_id,
                        transform=IdentityTransform(),
                        direction=SortDirection.ASC,
                        null_order=NullOrder.NULLS_FIRST,
                    )
                ),
                properties={"format-version": "2", "write.parquet.compression-codec": "zstd"},
            )
        except TableAlreadyExistsError:  # another process created it meanwhile
            return catalog.load_table(IDENTIFIER)

    def upto(self) -> int:
        """The last ``seq`` the table holds (0 when it is empty or missing)."""
        table = self.table()
        snap = None if table is None else table.current_snapshot()
        if snap is None or snap.summary is None:
            return 0
        return int(snap.summary.additional_properties.get(UPTO_PROPERTY, 0))

    def append(self, rows: pa.Table, upto: int) -> int | None:
        """Append audit rows (``seq`` ascending, up to ``upto``); the new snapshot id.

        Raises:
            StorageError: The catalog or the store failed.
        """
        table = self.table(create=True)
        assert table is not None
        try:
            table.append(rows.cast(AUDIT_SCHEMA), snapshot_properties={UPTO_PROPERTY: str(upto)})
        except Exception as exc:
            from tierflow.hot.errors import StorageError

            raise StorageError(f"cannot append to the audit table: {exc}") from exc
        snap = table.current_snapshot()
        return None if snap is None else snap.snapshot_id

    def read(self) -> pa.Table:
        """Every row, ordered by ``seq`` (empty when the table does not exist)."""
        table = self.table()
        if table is None:
            return AUDIT_SCHEMA.empty_table()
        rows = table.scan().to_arrow().cast(AUDIT_SCHEMA)
        return rows.sort_by("seq")
