"""Fixtures for tiering tests: the warm-store fixtures on both backends."""

from tests.warm.conftest import (  # noqa: F401 - re-exported fixtures
    backend,
    fs_ops,
    make_store,
    s3_bucket,
    s3_enforce_auth,
    s3_server,
    store_url,
)
