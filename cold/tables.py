"""The cold tables: Iceberg schemas, partition spec, sort order and table properties.

Two tables in the ``tierflow`` namespace hold the archive:

- ``tierflow.workflows``: one row per finished instance;
- ``tierflow.history``: one row per event.

Their columns are the warm files' columns (which derive from
:mod:`tierflow.hot.rows`) plus ``batch_id``, the warm batch that carried the
row (also the instance's ``batch_id`` in the index). ``tier`` reads ``cold``.

Layout, chosen by measurement (README, "The cold tier"):

- **Partition** by ``finished_date`` (identity): the UTC date of the
  workflow's finish, the same column (and directory name) as the warm files.
  A one-day scan reads one partition; a point read knows the partition from
  the index (``finished_at``), so it reads one partition too.
- **Sort** by ``workflow_id`` (then ``event_id``) inside every file, with
  small row groups and full-length ``workflow_id`` bounds in the manifests:
  within the day, manifest bounds prune files and Parquet statistics prune
  row groups, so a point read touches about one row group.

JSON columns carry no min/max metrics (they would only bloat manifests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    DateType,
    DoubleType,
    IcebergType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)
from tierflow.cold.schema import arrow_schema
from tierflow.hot.errors import InvalidArgument
from tierflow.warm.schema import DATASETS, JSON_COLUMNS

__all__ = [
    "DATASETS",
    "NAMESPACE",
    "TABLE_FORMAT",
    "TIER",
    "ColdLayout",
    "arrow_schema",
    "iceberg_schema",
    "identifier",
    "partition_date",
    "partition_spec",
    "sort_keys",
    "sort_order",
    "table_properties",
]

NAMESPACE = "tierflow"
"""The Iceberg namespace of both tables."""

TIER = "cold"
"""Value of the ``tier`` column in cold rows."""

TABLE_FORMAT = "tierflow.cold.v1"
"""Table property ``tierflow.format``: the layout version of the tables."""

_SORT_KEYS: Mapping[str, tuple[str, ...]] = {
    "workflows": ("workflow_id",),
    "history": ("workflow_id", "event_id"),
}

_ICEBERG_TYPES: dict[pa.DataType, IcebergType] = {
    pa.string(): StringType(),
    pa.int64(): LongType(),
    pa.float64(): DoubleType(),
    pa.timestamp("us", tz="UTC"): TimestamptzType(),
    pa.date32(): DateType(),
}


@dataclass(frozen=True)
class ColdLayout:
    """Tunables of the cold files (table properties; the defaults were measured).

    Attributes:
        target_file_bytes: Upper bound of one data file, in in-memory Arrow bytes
            (Parquet with zstd is several times smaller). The load from warm and the
            small-file rewrite split a partition's rows into files of about this size.
        row_group_rows: Rows per Parquet row group: a point read decodes about
            one row group of each file it cannot prune.
        small_file_bytes: Maintenance rewrites a partition that has more than
            one data file smaller than this (bytes on storage).
    """

    target_file_bytes: int = 512 * 1024 * 1024
    row_group_rows: int = 16_384
    small_file_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.target_file_bytes < 1 or self.row_group_rows < 1 or self.small_file_bytes < 0:
            raise InvalidArgument("cold layout sizes must be positive")


def identifier(dataset: str) -> tuple[str, str]:
    """Return the catalog identifier of a cold table, e.g. ``("tierflow", "history")``.

    Raises:
        InvalidArgument: Unknown dataset.
    """
    if dataset not in DATASETS:
        raise InvalidArgument(
            f"unknown cold table {dataset!r} (expected one of {sorted(DATASETS)})"
        )
    return (NAMESPACE, dataset)


def iceberg_schema(dataset: str) -> Schema:
    """The Iceberg schema of one cold table, field ids 1..n in column order."""
    fields = []
    for i, f in enumerate(arrow_schema(dataset), start=1):
        doc = (f.metadata or {}).get(b"doc", b"").decode() or None
        fields.append(
            NestedField(
                field_id=i,
                name=f.name,
                field_type=_ICEBERG_TYPES[f.type],
                required=not f.nullable,
                doc=doc,
            )
        )
    return Schema(*fields)


def _field_id(schema: Schema, name: str) -> int:
    return schema.find_field(name).field_id


def partition_spec(dataset: str) -> PartitionSpec:
    """``identity(finished_date)`` for both tables."""
    schema = iceberg_schema(dataset)
    return PartitionSpec(
        PartitionField(
            source_id=_field_id(schema, "finished_date"),
            field_id=1000,
            transform=IdentityTransform(),
            name="finished_date",
        )
    )


def sort_order(dataset: str) -> SortOrder:
    """``workflow_id`` (then ``event_id`` for history), ascending: how every file is written."""
    schema = iceberg_schema(dataset)
    return SortOrder(
        *(
            SortField(
                source_id=_field_id(schema, name),
                transform=IdentityTransform(),
                direction=SortDirection.ASC,
                null_order=NullOrder.NULLS_FIRST,
            )
            for name in _SORT_KEYS[dataset]
        )
    )


def sort_keys(dataset: str) -> tuple[str, ...]:
    """The columns every cold file of ``dataset`` is sorted by."""
    identifier(dataset)
    return _SORT_KEYS[dataset]


def table_properties(dataset: str, layout: ColdLayout) -> dict[str, str]:
    """Iceberg table properties for one table under ``layout``."""
    props = {
        "format-version": "2",
        "tierflow.format": TABLE_FORMAT,
        "write.parquet.compression-codec": "zstd",
        "write.parquet.row-group-limit": str(layout.row_group_rows),
        "write.target-file-size-bytes": str(layout.target_file_bytes),
        # Full bounds on the sort key: truncated ones would prune less for long ids.
        "write.metadata.metrics.column.workflow_id": "full",
    }
    for name in arrow_schema(dataset).names:
        if name in JSON_COLUMNS:
            props[f"write.metadata.metrics.column.{name}"] = "none"
    return props


def partition_date(partition: Any) -> str:
    """The ``YYYY-MM-DD`` of a data file's partition record (days since 1970-01-01)."""
    return (date(1970, 1, 1) + timedelta(days=int(partition[0]))).isoformat()
