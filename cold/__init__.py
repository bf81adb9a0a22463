"""Cold tier: the Apache Iceberg tables ``tierflow.workflows`` and ``tierflow.history``.

``cold.tables`` defines them (schema, partitioning, sort order, properties),
``cold.catalog`` finds them through a pyiceberg catalog, ``cold.writer`` and
``cold.compaction`` write warm batches into them idempotently,
``cold.reader`` answers point reads, and ``cold.maintenance`` rewrites small
files, expires snapshots and removes orphan files (none of which pyiceberg
0.12 does itself). Moving instances and the ledger belong to ``tiering``.
"""

from tierflow.cold.catalog import CatalogSettings, ColdTables
from tierflow.cold.reader import ColdReader
from tierflow.cold.tables import ColdLayout
from tierflow.cold.writer import ColdWriter

__all__ = ["CatalogSettings", "ColdLayout", "ColdReader", "ColdTables", "ColdWriter"]
