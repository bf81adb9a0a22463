"""What a backend is: the small Protocol :class:`ObjectStore` writes, deletes and checks through.

The store picks one backend, by URL scheme, when it is built (pyiceberg's FileIO-by-scheme is
the model): the local one for ``file://`` (:mod:`tierflow.warm.storage.local`), the S3 one for
``s3://`` (:mod:`tierflow.warm.storage.s3`). No public method of the store asks the scheme
again. Reads need no backend: they stream through the pyarrow filesystem
(:meth:`StorageSettings.arrow_filesystem`), which speaks both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tierflow.hot.errors import StorageError
from tierflow.warm.storage.errors import _Errors
from tierflow.warm.storage.settings import _CHECKSUM_ENV

if TYPE_CHECKING:
    from tierflow.warm.storage.store import ObjectStore

_PROBE_DIR = "_tierflow_probe"


class Sink(Protocol):
    """Where one :class:`WriteBatch` stores its objects."""

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        """Store ``data`` as ``key`` now, replacing any object there.

        Raises:
            StorageError: The write failed.
        """

    def sync(self) -> None:
        """Make every object put so far durable.

        Raises:
            StorageError: The objects could not be made durable.
        """


class Backend(Protocol):
    """The writes, deletes and checks of one kind of location (``file://`` or ``s3://``).

    Attributes:
        errors: Turns this location's failures into :class:`StorageError`.
    """

    errors: _Errors

    @property
    def client(self) -> Any:
        """The boto3 S3 client writes and deletes go through (built on first use).

        Raises:
            InvalidArgument: The location is not ``s3://``.
        """

    def describe(self) -> str:
        """Return the store's ``repr``: its URL, and where requests go if not to the local disk."""

    def check(self, store: ObjectStore) -> None:
        """Verify the location is usable (see :meth:`ObjectStore.check`).

        Args:
            store: The store being checked; a backend may probe through its public methods.

        Raises:
            StorageError: The location is not usable.
        """

    def read_all(self, path: str) -> bytes:
        """Read the whole file at ``path`` (``ObjectStore.path``): one GET on S3, no HEAD.

        Raises:
            FileNotFoundError: No such file or object.
            OSError: The read failed.
        """

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` of the file at ``path`` (``ObjectStore.path``).

        One request on S3 (a ranged GET, no HEAD). Fewer bytes come back only at the end.

        Raises:
            FileNotFoundError: No such file or object.
            OSError: The read failed.
        """

    def batch(self) -> Sink:
        """Start the sink of one :class:`WriteBatch`."""

    def open_output(self, key: str) -> Any:
        """Create ``key`` as a file-like stream whose ``close`` makes the object appear.

        Raises:
            OSError: The object cannot be created.
        """

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (distinct, validated), durably; missing keys are not errors.

        Raises:
            StorageError: A delete failed.
        """


def _check_probe(
    url: str, back: bytes, payload: bytes, listed: list[tuple[str, int]], key: str
) -> None:
    if back != payload:
        raise StorageError(
            f"storage check failed for {url}: a probe object read back differs "
            f"from what was written ({len(back)} bytes instead of {len(payload)}); "
            "if this is an S3-compatible store, it may not support the upload "
            f"encoding (try {_CHECKSUM_ENV}=WHEN_REQUIRED)",
            url=url,
        )
    if key not in {k for k, _ in listed}:
        raise StorageError(
            f"storage check failed for {url}: a probe object just written is "
            "missing from the listing",
            url=url,
        )
