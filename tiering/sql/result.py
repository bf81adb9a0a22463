"""The bounds of one SQL query and its result."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
from tierflow.hot.errors import InvalidArgument

__all__ = ["SqlLimits", "SqlResult", "pylist", "replace_limits"]


@dataclass(frozen=True)
class SqlLimits:
    """Bounds on one query; ``None`` switches a bound off.

    Attributes:
        max_rows: Rows returned at most; a longer result is cut
            (``SqlResult.truncated``).
        max_bytes: Bytes of result returned at most (Arrow IPC size); a
            larger result is cut the same way.
        timeout: Seconds the whole query may take, from the statement check
            to the last row (for a streamed result: until the last batch is
            read); past it the query's worker process is killed
            (:class:`QueryTimeout`).
        memory_limit: Memory the query may use, e.g. ``"1GB"``: DuckDB's
            limit, and the operating system's limit on the worker process
            (plus its own ~400 MB); nothing spills to disk.
        batch_rows: Rows per record batch when streaming.
    """

    max_rows: int | None = 100_000
    max_bytes: int | None = 256 * 2**20
    timeout: float | None = 60.0
    memory_limit: str = "1GB"
    batch_rows: int = 65_536

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_bytes", "batch_rows"):
            value = getattr(self, name)
            if value is None and name != "batch_rows":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"SQL {name} must be a positive integer, not {value!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not 0 < self.timeout < float("inf")
        ):
            raise InvalidArgument(f"SQL timeout must be positive seconds, not {self.timeout!r}")
        memory_bytes(self.memory_limit)  # raises for a malformed limit


def replace_limits(limits: SqlLimits, **changes: Any) -> SqlLimits:
    """``limits`` with some bounds changed (``...`` keeps a bound)."""
    return replace(limits, **{k: v for k, v in changes.items() if v is not ...})


_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def memory_bytes(text: str) -> int:
    """``"1GB"``, ``"512MiB"``, ``"1.5 GB"`` in bytes.

    Raises:
        InvalidArgument: Not a size, or under 16 MB.
    """
    raw = str(text).strip().upper().replace(" ", "")
    number = raw.rstrip("KMGTIB")
    unit = raw[len(number) :] or "B"
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not 0 < value < 2**50:
        raise InvalidArgument(f"bad memory limit {text!r} (e.g. '1GB')")
    size = int(value * _UNITS[unit])
    if size < 16 * 2**20:
        raise InvalidArgument(f"memory limit {text!r} is under 16 MB")
    return size


def pylist(column: Any) -> list[Any]:
    """A column's values as Python objects; text where Python has no such value.

    DuckDB types reach beyond Python's (``infinity`` timestamps, dates past
    year 9999, 128-bit integers): those values come back as their text.
    """
    try:
        return list(column.to_pylist())
    except (OverflowError, ValueError, pa.ArrowException):
        pass
    try:
        return list(pc.cast(column, pa.string()).to_pylist())
    except (OverflowError, ValueError, pa.ArrowException):
        pass
    storage = pa.int64() if pa.types.is_temporal(column.type) else pa.string()
    try:
        values = pc.cast(column, storage, safe=False).to_pylist()
    except (OverflowError, ValueError, pa.ArrowException) as exc:
        raise InvalidArgument(
            f"a {column.type} value has no Python form; read the result with to_arrow()"
        ) from exc
    return [None if v is None else str(v) for v in values]


class SqlResult:
    """The answer of one query.

    Attributes:
        columns: Column names, in order.
        types: DuckDB type names, in order.
        truncated: True when the row or byte limit cut the result.
        elapsed: Seconds the whole call took, from the statement check to the
            last row (0 for a streamed result).
    """

    def __init__(
        self,
        columns: list[str],
        types: list[str],
        batches: Iterator[pa.RecordBatch],
        schema: pa.Schema,
        close: Callable[[], None],
    ) -> None:
        self.columns = columns
        self.types = types
        self.truncated = False
        self.elapsed = 0.0
        self._schema = schema
        self._batches = batches
        self._close = close
        self._table: pa.Table | None = None

    def _materialise(self) -> pa.Table:
        if self._table is None:
            try:
                self._table = pa.Table.from_batches(list(self._batches), schema=self._schema)
            finally:
                self.close()
        return self._table

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow record batches, streamed while the query runs.

        Read them once (a materialised result yields its batches again).
        """
        if self._table is not None:
            yield from self._table.to_batches()
            return
        try:
            yield from self._batches
        finally:
            self.close()

    def to_arrow(self) -> pa.Table:
        """All rows as an Arrow table."""
        return self._materialise()

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """All rows as tuples (timestamps as aware ``datetime``)."""
        table = self._materialise()
        cols = [pylist(table.column(i)) for i in range(table.num_columns)]
        return list(zip(*cols, strict=True)) if cols else []

    def close(self) -> None:
        """Release the query's worker and read lease (idempotent); an unfinished stream stops.

        A streamed result holds both until it is read to the end or closed: close
        one you stop reading early (a result that is garbage-collected is closed too).
        """
        self._close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
