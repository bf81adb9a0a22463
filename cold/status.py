"""What the cold tables hold now, as the catalog sees them: snapshot, files, rows, bytes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tierflow.cold import tables
from tierflow.cold.catalog import ColdTables, warehouse
from tierflow.cold.reader import ColdReader

__all__ = ["ColdStatus", "ColdTableStatus", "cold_status"]


@dataclass(frozen=True)
class ColdTableStatus:
    """One cold table now.

    Attributes:
        snapshot_id: Its current snapshot (None: empty table).
        snapshots: Snapshots its metadata keeps.
        data_files: Live data files.
        rows: Rows in them.
        bytes: Their size on storage.
        metadata_location: Its current metadata file.
    """

    snapshot_id: int | None
    snapshots: int
    data_files: int
    rows: int
    bytes: int
    metadata_location: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class ColdStatus:
    """The cold tier now.

    Attributes:
        catalog: The catalog URL (credentials redacted).
        warehouse: Where the tables' files live (``<storage URL>/cold``).
        tables: ``workflows`` and ``history`` by name; empty before the first
            warm → cold move created them.
    """

    catalog: str
    warehouse: str
    tables: dict[str, ColdTableStatus]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"catalog", "warehouse", "tables": {name: {...}}}``."""
        return {
            "catalog": self.catalog,
            "warehouse": self.warehouse,
            "tables": {name: t.to_dict() for name, t in self.tables.items()},
        }


def cold_status(cold: ColdTables) -> ColdStatus:
    """Read the current metadata of both tables (blocking: run it on an I/O thread).

    Raises:
        StorageError: The catalog or the store cannot be reached.
    """
    found: dict[str, ColdTableStatus] = {}
    if cold.exists():
        reader = ColdReader(cold)
        reader.refresh()
        for name in tables.DATASETS:
            table = cold.table(name)
            snap = table.current_snapshot()
            files = reader.files(name)
            found[name] = ColdTableStatus(
                snapshot_id=None if snap is None else snap.snapshot_id,
                snapshots=len(table.metadata.snapshots),
                data_files=len(files),
                rows=sum(f.rows for f in files),
                bytes=sum(f.bytes for f in files),
                metadata_location=table.metadata_location,
            )
    return ColdStatus(catalog=cold.where, warehouse=warehouse(cold.store), tables=found)
