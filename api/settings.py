"""Configuration from arguments and ``TIERFLOW_*`` environment variables.

An explicit argument wins over the environment, which wins over the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tierflow.hot.errors import InvalidArgument
from tierflow.hot.options import EngineOptions

__all__ = ["Settings", "engine_options_from_env"]


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


def engine_options_from_env() -> EngineOptions:
    """The engine options the environment sets, the defaults for the rest.

    Reads ``TIERFLOW_DURABILITY``, ``TIERFLOW_MAX_CONCURRENCY`` and
    ``TIERFLOW_MAX_RECOVERY_ATTEMPTS``. To change one option and keep the
    environment's others: ``dataclasses.replace(engine_options_from_env(), ...)``.

    Raises:
        InvalidArgument: A variable holds a value the engine cannot take.
    """
    default = EngineOptions()
    raw = os.environ.get("TIERFLOW_DURABILITY") or default.durability
    if raw not in ("full", "normal"):
        raise InvalidArgument(
            f"durability (TIERFLOW_DURABILITY) must be 'full' or 'normal', got {raw!r}"
        )
    return EngineOptions(
        durability="normal" if raw == "normal" else "full",
        max_concurrency=_env_int("TIERFLOW_MAX_CONCURRENCY", default.max_concurrency),
        max_recovery_attempts=_env_int(
            "TIERFLOW_MAX_RECOVERY_ATTEMPTS", default.max_recovery_attempts
        ),
    )


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one ``Tierflow``.

    Attributes:
        data_dir: ``TIERFLOW_DATA_DIR``; default ``./tierflow-data``.
        engine: The engine's options: as given to ``Tierflow(options=...)``, else
            from the environment (:func:`engine_options_from_env`).
        storage_url: ``TIERFLOW_STORAGE_URL``; default ``<data_dir>/lake`` (file://).
        s3_endpoint: ``TIERFLOW_S3_ENDPOINT``; default: AWS.
        sql_native_reads: ``TIERFLOW_SQL_NATIVE_READS`` (``1``/``0``); default on: SQL
            lets DuckDB read local archive files itself (README, "SQL across tiers").
        sql_hot_cache_mb: ``TIERFLOW_SQL_HOT_CACHE_MB``; default 256 (0: off): memory
            SQL may keep finished hot instances' history in.
    """

    data_dir: str = "./tierflow-data"
    engine: EngineOptions = field(default_factory=EngineOptions)
    storage_url: str | None = None
    s3_endpoint: str | None = None
    sql_native_reads: bool = True
    sql_hot_cache_mb: int = 256

    @classmethod
    def resolve(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        options: EngineOptions | None = None,
        storage_url: str | None = None,
        s3_endpoint: str | None = None,
    ) -> Settings:
        """Merge explicit arguments with the environment and the defaults.

        Engine options given are taken whole; without them the environment's
        apply (:func:`engine_options_from_env`).
        """
        return cls(
            data_dir=os.fspath(data_dir)
            if data_dir is not None
            else os.environ.get("TIERFLOW_DATA_DIR") or cls.data_dir,
            engine=options if options is not None else engine_options_from_env(),
            storage_url=storage_url or os.environ.get("TIERFLOW_STORAGE_URL") or None,
            s3_endpoint=s3_endpoint or os.environ.get("TIERFLOW_S3_ENDPOINT") or None,
            sql_native_reads=_env_bool("TIERFLOW_SQL_NATIVE_READS", cls.sql_native_reads),
            sql_hot_cache_mb=_nonnegative(
                "TIERFLOW_SQL_HOT_CACHE_MB", _env_int("TIERFLOW_SQL_HOT_CACHE_MB", 256)
            ),
        )
