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
    """

    data_dir: str = "./tierflow-data"
    durability: str = "full"
    max_concurrency: int = 100
    max_recovery_attempts: int = 5
    storage_url: str | None = None
    s3_endpoint: str | None = None

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
        )
