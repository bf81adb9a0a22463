"""Fixtures for the cold tier: the warm-store fixtures on both backends."""

from tests.warm.conftest import (  # noqa: F401 - re-exported fixtures
    backend,
    make_store,
    s3_bucket,
    s3_server,
)
