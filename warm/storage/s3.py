"""The S3 backend: ``s3://bucket/prefix`` locations on AWS S3 or any S3-compatible store.

Writes and deletes go through boto3, with the storage class and a SHA-256 checksum on every
upload, and batch deletes of up to 1,000 keys per request. Every object is durable when its
upload completes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import threading
import uuid
from typing import TYPE_CHECKING, Any

import botocore.exceptions  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow 26 ships no type hints
from tierflow.hot.errors import StorageError
from tierflow.warm.storage.backend import _PROBE_DIR, _check_probe
from tierflow.warm.storage.errors import _SDK_ERRORS, _aws_code, _Errors, _Scrubber
from tierflow.warm.storage.locations import _Location, _parse_endpoint
from tierflow.warm.storage.settings import (
    _CHECK_CONNECT_TIMEOUT,
    _CHECK_MAX_ATTEMPTS,
    _CHECK_REQUEST_TIMEOUT,
    StorageSettings,
)
from tierflow.warm.storage.streams import _S3Output

if TYPE_CHECKING:
    from tierflow.warm.storage.store import ObjectStore

# S3's limit on keys in one DeleteObjects request.
_DELETE_BATCH = 1000


def _b64_sha256(data: bytes | memoryview, hex_digest: str | None = None) -> str:
    digest = bytes.fromhex(hex_digest) if hex_digest else hashlib.sha256(data).digest()
    return base64.b64encode(digest).decode()


class _S3Backend:
    """A bucket and prefix, reached with boto3; also the sink of its own write batches."""

    def __init__(self, settings: StorageSettings, loc: _Location, scrub: _Scrubber) -> None:
        self._settings = settings
        self._loc = loc
        self.bucket = loc.bucket
        if settings.endpoint is not None:
            scheme, host = _parse_endpoint(settings.endpoint)
            self.endpoint = f"{scheme}://{host}"
        else:
            self.endpoint = f"AWS S3 ({settings.region})"
        self.errors = _Errors(loc.url, loc.bucket, self.endpoint, scrub)
        self._client: Any = None
        self._check_client: Any = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._settings.s3_client()
        return self._client

    def _checker(self) -> Any:
        if self._check_client is None:
            with self._client_lock:
                if self._check_client is None:
                    self._check_client = self._settings.s3_client(
                        connect_timeout=_CHECK_CONNECT_TIMEOUT,
                        read_timeout=_CHECK_REQUEST_TIMEOUT,
                        max_attempts=_CHECK_MAX_ATTEMPTS,
                    )
        return self._check_client

    def describe(self) -> str:
        return f"ObjectStore({self._loc.url!r}, endpoint={self.endpoint!r})"

    def read_all(self, path: str) -> bytes:
        return self._get(path)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        return self._get(path, f"bytes={offset}-{offset + length - 1}")

    def _get(self, path: str, byte_range: str | None = None) -> bytes:
        bucket, _, key = path.partition("/")
        ranged = {} if byte_range is None else {"Range": byte_range}
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key, **ranged)
            return bytes(answer["Body"].read())
        except botocore.exceptions.ClientError as exc:
            if _aws_code(exc) in ("NOT_FOUND", "NO_SUCH_KEY"):
                raise FileNotFoundError(f"no object {path!r}") from None
            raise OSError(f"reading {path!r}: {exc}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise OSError(f"reading {path!r}: {exc}") from None

    def object_key(self, key: str) -> str:
        """The S3 object key of ``key`` (its path without the bucket)."""
        return self._loc.path(key).split("/", 1)[1]

    # ---------------------------------------------------------------- check

    def check(self, store: ObjectStore) -> None:
        url = self._loc.url
        client = self._checker()
        bucket = self.bucket
        try:
            client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            code = _aws_code(exc)
            if code in ("NOT_FOUND", "NO_SUCH_BUCKET"):
                raise StorageError(
                    f"storage check failed for {url}: bucket {bucket!r} does not exist "
                    f"at {self.endpoint}",
                    url=url,
                ) from exc
            if code == "ACCESS_DENIED":
                # HEAD answers carry no body, so a bad key, a bad secret and a missing
                # permission all look alike here; a probe write tells them apart.
                self._refine_access_denied(client, exc)
            raise self.errors.check_error(exc) from exc
        except _SDK_ERRORS as exc:
            raise self.errors.check_error(exc) from exc
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        okey = self.object_key(key)
        payload = secrets.token_bytes(64)
        step = "writing a probe object"
        try:
            client.put_object(
                **self.put_options(key),
                Body=payload,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64_sha256(payload),
            )
            step = "reading the probe object back"
            back = client.get_object(Bucket=bucket, Key=okey)["Body"].read()
            step = "listing the probe object"
            prefix = self.object_key(_PROBE_DIR) + "/"
            found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
            listed = [(f"{_PROBE_DIR}/{o['Key'][len(prefix) :]}", int(o["Size"])) for o in found]
            step = "deleting the probe object"
            client.delete_object(Bucket=bucket, Key=okey)
        except _SDK_ERRORS as exc:
            raise self.errors.check_error(exc, step) from exc
        _check_probe(url, back, payload, listed, key)

    def _refine_access_denied(self, client: Any, head_exc: BaseException) -> None:
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        try:
            client.put_object(**self.put_options(key), Body=b"probe")
        except _SDK_ERRORS as exc:
            raise self.errors.check_error(exc) from head_exc
        with contextlib.suppress(*_SDK_ERRORS):
            client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        raise StorageError(
            f"storage check failed for {self._loc.url}: access denied listing bucket "
            f"{self.bucket!r}: objects can be written but the credentials lack the list "
            "permission (s3:ListBucket) tierflow needs",
            url=self._loc.url,
        ) from head_exc

    # ---------------------------------------------------------------- writes

    def batch(self) -> _S3Backend:
        # Every object is durable when its put returns: the backend is its own sink.
        return self

    def sync(self) -> None:
        pass

    def put_options(self, key: str) -> dict[str, Any]:
        options: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if self._settings.storage_class is not None:
            options["StorageClass"] = self._settings.storage_class
        return options

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        view = memoryview(data).cast("B")
        try:
            self.client.put_object(
                **self.put_options(key),
                # A zero-copy, seekable view: the SDK rewinds it when it retries.
                Body=pa.BufferReader(pa.py_buffer(view)),
                ContentLength=len(view),
                # A checksum given by value is sent as a header (never as an aws-chunked
                # trailer, which some S3-compatible stores keep as object data); the store
                # rejects the upload if the bytes it received differ.
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64_sha256(view, sha256),
            )
        except _SDK_ERRORS as exc:
            raise self.errors.error("write", key, exc) from exc

    def open_output(self, key: str) -> _S3Output:
        return _S3Output(self, key)

    # ---------------------------------------------------------------- deletes

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            self._delete_batch(keys[start : start + _DELETE_BATCH])

    def _delete_batch(self, keys: list[str]) -> None:
        by_object = {self.object_key(k): k for k in keys}
        try:
            if len(keys) == 1:
                # One key: a plain DELETE, which every S3-compatible store supports.
                self.client.delete_object(Bucket=self.bucket, Key=next(iter(by_object)))
                return
            answer = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in by_object], "Quiet": True},
            )
        except _SDK_ERRORS as exc:
            raise self.errors.error("delete", keys[0] if len(keys) == 1 else None, exc) from exc
        # Quiet mode lists only failures; some stores report a missing key as one.
        failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if failed:
            first = failed[0]
            key = by_object.get(str(first.get("Key")), str(first.get("Key")))
            raise StorageError(
                f"cannot delete {len(failed)} of {len(keys)} objects in {self._loc.url}; first "
                f"{key!r}: {first.get('Code')} {self.errors.scrub(str(first.get('Message', '')))}",
                url=self._loc.url,
            )
