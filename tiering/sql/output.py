"""Writing a SQL result for ``tierflow sql``: a rich table, JSON, CSV or Parquet.

JSON has the HTTP API's shape, ``{"columns": [...], "rows": [[...], ...]}``
(timestamps in ISO 8601). JSON, CSV and Parquet are written batch by batch
as the query streams, so an export never holds the whole result in memory.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from tierflow.tiering.sql.result import SqlResult, pylist

__all__ = ["write_result"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def write_result(result: SqlResult, fmt: str, output: str | None, console: Console) -> None:
    """Write ``result`` as ``fmt`` ("table", "json", "csv", "parquet") to ``output`` or stdout."""
    if fmt == "table":
        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)
        if result.truncated:
            console.print("[yellow]result cut at the row or byte limit (--limit)[/yellow]")
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

        assert output is not None
        writer = None
        try:
            for batch in result.batches():
                if writer is None:
                    writer = pq.ParquetWriter(output, batch.schema)
                writer.write_batch(batch)
            if writer is None:
                pq.write_table(result.to_arrow(), output)
        finally:
            if writer is not None:
                writer.close()
        return
    with contextlib.ExitStack() as stack:
        out: IO[str] = (
            stack.enter_context(open(output, "w", encoding="utf-8", newline=""))
            if output
            else sys.stdout
        )
        if fmt == "json":
            _write_json(result, out)
        else:
            _write_csv(result, out)


def _write_json(result: SqlResult, out: IO[str]) -> None:
    out.write('{"columns": ' + json.dumps(result.columns) + ', "rows": [')
    first = True
    for batch in result.batches():
        cols = [pylist(batch.column(i)) for i in range(batch.num_columns)]
        for row in zip(*cols, strict=True):
            out.write(("" if first else ",\n") + json.dumps(list(row), default=_jsonable))
            first = False
    out.write("]" + (', "truncated": true' if result.truncated else "") + "}\n")


def _write_csv(result: SqlResult, out: IO[str]) -> None:
    import csv

    writer = csv.writer(out)
    writer.writerow(result.columns)
    for batch in result.batches():
        cols = [pylist(batch.column(i)) for i in range(batch.num_columns)]
        for row in zip(*cols, strict=True):
            writer.writerow(
                ["" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row]
            )
