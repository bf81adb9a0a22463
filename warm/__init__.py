"""Warm tier (Parquet on object storage): not built yet (see the open issues)."""

__all__: list[str] = []
