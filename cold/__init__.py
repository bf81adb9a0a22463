"""Cold tier: the Apache Iceberg tables ``tierflow.workflows`` and ``tierflow.history``.

``cold.schema`` has their Arrow schema, ``cold.tables`` defines them (schema,
partitioning, sort order, properties),
``cold.catalog`` finds them through a pyiceberg catalog, ``cold.writer`` and
``cold.load`` loads warm batches into them idempotently,
``cold.reader`` answers point reads, ``cold.status`` reports what the tables
hold now, ``cold.maintenance`` rewrites small
files, expires snapshots and removes orphan files (none of which pyiceberg
0.12 does itself), and ``cold.erase`` erases workflows' rows with every
snapshot and file that still holds them. Moving instances and the ledger
belong to ``tiering``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow.hot.lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.cold.catalog import CatalogSettings, ColdTables
    from tierflow.cold.reader import ColdReader
    from tierflow.cold.status import ColdStatus
    from tierflow.cold.tables import ColdLayout
    from tierflow.cold.writer import ColdWriter

__all__ = [
    "CatalogSettings",
    "ColdLayout",
    "ColdReader",
    "ColdStatus",
    "ColdTables",
    "ColdWriter",
]

_HOME = {
    "CatalogSettings": "catalog",
    "ColdTables": "catalog",
    "ColdReader": "reader",
    "ColdStatus": "status",
    "ColdLayout": "tables",
    "ColdWriter": "writer",
}

# Imported on first use: pyiceberg takes a second to import, and a reader of the schema
# alone (cold.schema) needs none of it.
__getattr__ = lazy_names(__name__, _HOME)
