"""Streams handed to callers: guarded pyarrow files over local and S3 objects.

:meth:`ObjectStore.open_input` and :meth:`ObjectStore.open_output` return a
:class:`pyarrow.PythonFile` over a :class:`_GuardedStream`, which turns every SDK error raised
while reading, writing or closing into :class:`hot.errors.StorageError`. Beneath it, a
streamed ``file://`` object is one :class:`hot.durable_fs.DurableFile` (a temporary name,
fsync'd and renamed into place, its directories fsync'd on close) and a streamed ``s3://``
object is one PutObject, or a multipart upload once it outgrows a part.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from tierflow.hot.durable_fs import DurableFile, DurableFiles
from tierflow.hot.errors import StorageError
from tierflow.warm.storage.errors import _SDK_ERRORS

if TYPE_CHECKING:
    from tierflow.warm.storage.s3 import _S3Backend

# Multipart part size for open_output on S3: one part is buffered in memory. S3 allows 10,000
# parts, so a streamed object can reach 160 GB.
_PART_SIZE = 16 * 1024 * 1024

_T = TypeVar("_T")


class _GuardedStream:
    """File-like wrapper that turns storage errors into StorageError.

    Wrapped in :class:`pyarrow.PythonFile`, so callers get a ``NativeFile`` that pyarrow's
    Parquet reader and writer accept; the per-call cost was measured as negligible (pyarrow
    reads and writes whole pages, not rows).
    """

    def __init__(self, raw: Any, fail: Callable[[BaseException], NoReturn]) -> None:
        self._raw = raw
        self._fail = fail
        self._closed = False

    def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return fn(*args)
        except StorageError:
            raise
        except _SDK_ERRORS as exc:
            self._fail(exc)

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, nbytes: int | None = None) -> bytes:
        if nbytes is None or nbytes < 0:
            return bytes(self._run(self._raw.read))
        return bytes(self._run(self._raw.read, nbytes))

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._run(self._raw.seek, offset, whence))

    def tell(self) -> int:
        return int(self._run(self._raw.tell))

    def size(self) -> int:
        return int(self._run(self._raw.size))

    def write(self, data: bytes) -> int:
        written = self._run(self._raw.write, data)
        return int(written) if written is not None else len(data)

    def flush(self) -> None:
        self._run(self._raw.flush)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run(self._raw.close)


class _LocalOutput:
    """A streamed ``file://`` object: one :class:`DurableFile`, its directories synced on close."""

    def __init__(self, files: DurableFiles, out: DurableFile) -> None:
        self._files = files
        self._out = out

    def write(self, data: bytes) -> int:
        return self._out.write(data)

    def tell(self) -> int:
        return self._out.tell()

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if self._out.closed:
            return
        self._out.close()
        self._files.sync()


class _S3Output:
    """A streamed ``s3://`` object: one PutObject, or a multipart upload once it outgrows a part.

    Every request carries the storage class; a failed upload is aborted, so no incomplete
    parts are left to be billed.
    """

    def __init__(self, backend: _S3Backend, key: str) -> None:
        self._backend = backend
        self._key = key
        self._buffer = bytearray()
        self._written = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._closed = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._written += len(data)
        while len(self._buffer) >= _PART_SIZE:
            part = bytes(self._buffer[:_PART_SIZE])
            del self._buffer[:_PART_SIZE]
            self._upload_part(part)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def _upload_part(self, part: bytes) -> None:
        backend = self._backend
        try:
            if self._upload_id is None:
                started = backend.client.create_multipart_upload(**backend.put_options(self._key))
                self._upload_id = str(started["UploadId"])
            number = len(self._parts) + 1
            # Content-MD5, which every S3-compatible store verifies; part-level SHA-256 needs
            # checksum support in all three multipart calls, which older stores lack.
            md5 = hashlib.md5(part, usedforsecurity=False).digest()
            done = backend.client.upload_part(
                Bucket=backend.bucket,
                Key=backend.object_key(self._key),
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
                ContentMD5=base64.b64encode(md5).decode(),
            )
            self._parts.append({"PartNumber": number, "ETag": done["ETag"]})
        except BaseException:
            self._abort()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        backend = self._backend
        if self._upload_id is None:
            backend.put(self._key, memoryview(self._buffer))
            return
        if self._buffer:
            self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        try:
            backend.client.complete_multipart_upload(
                Bucket=backend.bucket,
                Key=backend.object_key(self._key),
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        self._closed = True
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        with contextlib.suppress(*_SDK_ERRORS):
            self._backend.client.abort_multipart_upload(
                Bucket=self._backend.bucket,
                Key=self._backend.object_key(self._key),
                UploadId=upload_id,
            )
