"""Configuration from arguments and ``TIERFLOW_*`` environment variables.

An explicit argument wins over the environment, which wins over the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tierflow.hot.errors import InvalidArgument

__all__ = ["Settings"]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {raw!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"{name} must be 1/0 (or true/false), got {raw!r}")


def _nonnegative(name: str, value: int) -> int:
    if value < 0:
        raise InvalidArgument(f"{name} must be 0 or more, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one ``Tierflow``.

    Attributes:
        data_dir: ``TIERFLOW_DATA_DIR``; default ``./tierflow-data``.
        durability: ``TIERFLOW_DURABILITY``: ``full`` (default) or ``normal``.
        max_concurrency: ``TIERFLOW_MAX_CONCURRENCY``; default 100.
        max_recovery_attempts: ``TIERFLOW_MAX_RECOVERY_ATTEMPTS``; default 5.
        storage_url: ``TIERFLOW_STORAGE_URL``; default ``<data_dir>/lake`` (file://).
        s3_endpoint: ``TIERFLOW_S3_ENDPOINT``; default: AWS.
        sql_native_reads: ``TIERFLOW_SQL_NATIVE_READS`` (``1``/``0``); default on: SQL
            lets DuckDB read local archive files itself (README, "SQL across tiers").
        sql_hot_cache_mb: ``TIERFLOW_SQL_HOT_CACHE_MB``; default 256 (0: off): memory
            SQL may keep finished hot instances' history in.
    """

    data_dir: str = "./tierflow-data"
    durability: str = "full"
    max_concurrency: int = 100
    max_recovery_attempts: int = 5
    storage_url: str | None = None
    s3_endpoint: str | None = None
    sql_native_reads: bool = True
    sql_hot_cache_mb: int = 256

    @classmethod
    def resolve(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        durability: str | None = None,
        max_concurrency: int | None = None,
        max_recovery_attempts: int | None = None,
        storage_url: str | None = None,
        s3_endpoint: str | None = None,
    ) -> Settings:
        """Merge explicit arguments with the environment and the defaults."""
        d = durability or os.environ.get("TIERFLOW_DURABILITY") or cls.durability
        if d not in ("full", "normal"):
            raise InvalidArgument(
                f"durability (TIERFLOW_DURABILITY) must be 'full' or 'normal', got {d!r}"
            )
        return cls(
            data_dir=os.fspath(data_dir)
            if data_dir is not None
            else os.environ.get("TIERFLOW_DATA_DIR") or cls.data_dir,
            durability=d,
            max_concurrency=max_concurrency
            if max_concurrency is not None
            else _env_int("TIERFLOW_MAX_CONCURRENCY", cls.max_concurrency),
            max_recovery_attempts=max_recovery_attempts
            if max_recovery_attempts is not None
            else _env_int("TIERFLOW_MAX_RECOVERY_ATTEMPTS", cls.max_recovery_attempts),
            storage_url=storage_url or os.environ.get("TIERFLOW_STORAGE_URL") or None,
            s3_endpoint=s3_endpoint or os.environ.get("TIERFLOW_S3_ENDPOINT") or None,
            sql_native_reads=_env_bool("TIERFLOW_SQL_NATIVE_READS", cls.sql_native_reads),
            sql_hot_cache_mb=_nonnegative(
                "TIERFLOW_SQL_HOT_CACHE_MB", _env_int("TIERFLOW_SQL_HOT_CACHE_MB", 256)
            ),
        )
