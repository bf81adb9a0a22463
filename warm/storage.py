"""Object-store access for the warm and cold tiers: the one module that talks to storage SDKs.

Everything tierflow keeps outside the hot tier lives under one location, given as a URL:

* ``file:///abs/path``: a local directory (the embedded default).
* ``s3://bucket/optional/prefix``: AWS S3 or any S3-compatible store (MinIO, moto, Ceph, ...)
  reached through ``endpoint`` with path-style addressing.

:class:`ObjectStore` maps *keys* (``"warm/history/batch-1.parquet"``, always relative to that
root, ``/``-separated) onto that location, and turns every failure into
:class:`hot.errors.StorageError` naming the store URL, the key and the cause. Credentials never
appear in its ``repr``, its messages or its logs.

Every object tierflow writes goes through the store's write methods (:meth:`ObjectStore.put`,
:meth:`ObjectStore.put_many`, :meth:`ObjectStore.batch`, :meth:`ObjectStore.open_output`):

* ``file://``: written under a temporary name, fsync'd, renamed into place, and the directories
  that gained an entry (including ones made on the way) fsync'd before the call returns
  (:class:`hot.durable_fs.DurableFiles`). The tiering job deletes hot data once the warm copy is
  committed, so the copy must survive a power cut.
* ``s3://``: boto3, with the storage class and a SHA-256 checksum on every upload, and batch
  deletes of up to 1,000 keys per request.

Reads stream through pyarrow: other modules use :attr:`ObjectStore.fs` with
:meth:`ObjectStore.path` for datasets and Parquet files. Nothing else in tierflow imports boto3,
botocore or pyarrow's S3 classes; :class:`StorageSettings` builds every client in one place, and
:meth:`StorageSettings.iceberg_io_properties` hands the same settings to pyiceberg.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import secrets
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import boto3  # type: ignore[import-untyped, unused-ignore]  # no type hints shipped
import botocore.config  # type: ignore[import-untyped, unused-ignore]
import botocore.exceptions  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow 26 ships no type hints
import pyarrow.fs as pafs  # type: ignore[import-untyped]
from tierflow.hot.durable_fs import DurableFile, DurableFiles, fsync_dirs, make_dirs
from tierflow.hot.errors import InvalidArgument, StorageError

__all__ = ["ObjectNotFound", "ObjectStore", "StorageSettings", "WriteBatch"]

log = logging.getLogger(__name__)

_PROBE_DIR = "_tierflow_probe"
# Temporary names used by file:// writes before their atomic rename; list() never shows them.
_TMP_MARK = ".tierflow-tmp-"
_CHECKSUM_ENV = "AWS_REQUEST_CHECKSUM_CALCULATION"

# Normal operations: generous timeouts (a busy store can take seconds to complete a multipart
# upload) and the SDK's retries on, because some S3-compatible stores answer with transient 500s.
# Three attempts of the SDKs' standard strategy retry a transient error yet give up on a dead
# endpoint within about 2 s per operation (measured with pyarrow: 5 attempts took about 5 s).
_OP_CONNECT_TIMEOUT = 10.0
_OP_REQUEST_TIMEOUT = 60.0
_OP_MAX_ATTEMPTS = 3
# check(): must fail within seconds for an unreachable or hanging endpoint: a server that accepts
# and never answers fails after the request timeout per attempt. Two attempts so that one
# transient 500 does not fail the check.
_CHECK_CONNECT_TIMEOUT = 2.0
_CHECK_REQUEST_TIMEOUT = 2.0
_CHECK_MAX_ATTEMPTS = 2

# Classes whose objects cannot be read back without a restore: the tiering job verifies every
# file it writes, so these would make every move fail.
_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_STORAGE_CLASS_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
_AWS_ERROR_RE = re.compile(r"AWS Error ([A-Z_]+)")
# S3's limit on keys in one DeleteObjects request.
_DELETE_BATCH = 1000
# Multipart part size for open_output on S3: one part is buffered in memory. S3 allows 10,000
# parts, so a streamed object can reach 160 GB.
_PART_SIZE = 16 * 1024 * 1024
# Loggers of the SDKs whose debug records may quote request headers (session tokens, key ids).
_SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")

_T = TypeVar("_T")


class ObjectNotFound(StorageError, LookupError):
    """The key names no object in the store (raised by ``get``, ``size`` and ``open_input``)."""


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class StorageSettings:
    """Where the warm/cold data lives and how to reach it.

    Attributes:
        url: ``file:///abs/path`` or ``s3://bucket/optional/prefix``. Never holds credentials.
        endpoint: S3 endpoint URL such as ``http://127.0.0.1:9000`` (MinIO, moto, any
            S3-compatible store); ``None`` means AWS S3.
        region: Region sent with every request; always set because pyarrow and pyiceberg
            otherwise try to resolve it at AWS and stall.
        access_key: Access key id; ``None`` lets the SDK find credentials (environment,
            ``~/.aws``, instance metadata).
        secret_key: Secret access key; hidden from ``repr``.
        session_token: Session token for temporary credentials; hidden from ``repr``.
        storage_class: S3 storage class for written objects (``"STANDARD_IA"``, ...); ignored for
            ``file://``.
    """

    url: str
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    storage_class: str | None = None

    def __post_init__(self) -> None:
        _parse_url(self.url)
        if self.endpoint is not None:
            _parse_endpoint(self.endpoint)
        if not self.region:
            raise InvalidArgument("region must not be empty (use 'us-east-1' if unsure)")
        if (self.access_key is None) != (self.secret_key is None):
            raise InvalidArgument("access_key and secret_key must be given together")
        if self.session_token is not None and self.access_key is None:
            raise InvalidArgument("session_token needs access_key and secret_key")
        if self.storage_class is not None:
            if not _STORAGE_CLASS_RE.match(self.storage_class):
                raise InvalidArgument(
                    f"storage_class {self.storage_class!r} is not an S3 storage class "
                    "(e.g. 'STANDARD_IA', 'INTELLIGENT_TIERING')"
                )
            if self.storage_class in _ARCHIVE_CLASSES:
                raise InvalidArgument(
                    f"storage_class {self.storage_class!r} makes objects unreadable without a "
                    "restore; tierflow reads back what it writes. Use GLACIER_IR or a lifecycle "
                    "rule instead"
                )

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        storage_class: str | None = None,
    ) -> StorageSettings:
        """Build settings from arguments, falling back to the environment.

        Explicit arguments win; ``None`` counts as "not given". Variables read:
        ``TIERFLOW_STORAGE_URL``, ``TIERFLOW_S3_ENDPOINT``, ``TIERFLOW_S3_REGION`` (then
        ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then ``us-east-1``),
        ``TIERFLOW_S3_STORAGE_CLASS``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
        ``AWS_SESSION_TOKEN``. A session token from the environment is used only with the
        access key from the environment, never with an explicit one.

        Args:
            url: Storage URL; default ``TIERFLOW_STORAGE_URL``.
            endpoint: S3 endpoint URL; default ``TIERFLOW_S3_ENDPOINT``.
            region: Region; default as above.
            access_key: Access key id; default ``AWS_ACCESS_KEY_ID``.
            secret_key: Secret key; default ``AWS_SECRET_ACCESS_KEY``.
            session_token: Session token; default ``AWS_SESSION_TOKEN``.
            storage_class: S3 storage class; default ``TIERFLOW_S3_STORAGE_CLASS``.

        Returns:
            The validated settings.

        Raises:
            InvalidArgument: No URL was given or set, or a value is malformed.
        """
        env = os.environ

        def pick(value: str | None, *names: str) -> str | None:
            if value is not None:
                return value
            for name in names:
                if env.get(name):
                    return env[name]
            return None

        resolved_url = pick(url, "TIERFLOW_STORAGE_URL")
        if resolved_url is None:
            raise InvalidArgument(
                "no storage URL: pass url= or set TIERFLOW_STORAGE_URL "
                "(file:///abs/path or s3://bucket/prefix)"
            )
        if access_key is None and secret_key is None:
            access_key = pick(None, "AWS_ACCESS_KEY_ID")
            secret_key = pick(None, "AWS_SECRET_ACCESS_KEY")
            if access_key is not None and secret_key is not None:
                session_token = pick(session_token, "AWS_SESSION_TOKEN")
            else:
                # Half a key pair in the environment: let the SDK's own chain decide.
                access_key = secret_key = None
        return cls(
            url=resolved_url,
            endpoint=pick(endpoint, "TIERFLOW_S3_ENDPOINT"),
            region=pick(region, "TIERFLOW_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
            or "us-east-1",
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            storage_class=pick(storage_class, "TIERFLOW_S3_STORAGE_CLASS"),
        )

    # ------------------------------------------------------------ clients, built in one place

    @property
    def is_s3(self) -> bool:
        """True for ``s3://`` locations, False for ``file://``."""
        return _parse_url(self.url).scheme == "s3"

    def s3_client(
        self,
        *,
        connect_timeout: float = _OP_CONNECT_TIMEOUT,
        read_timeout: float = _OP_REQUEST_TIMEOUT,
        max_attempts: int = _OP_MAX_ATTEMPTS,
    ) -> Any:
        """Build a boto3 S3 client for these settings (a new session, so thread-safe to use).

        The region is always set. With an ``endpoint`` buckets are addressed path-style (what
        MinIO and moto need); for endpoints that are not AWS, checksums are calculated and
        validated only when an operation requires them (see "S3-compatible stores that are not
        AWS" in STACK.md) and DeleteObjects also carries ``Content-MD5``, which such stores
        require. Retries use the SDK's standard mode. Explicit credentials are used if set,
        else the SDK's own chain (environment, ``~/.aws``, instance metadata); debug logs of
        the SDK have the credentials replaced by ``***``.

        Args:
            connect_timeout: Seconds to wait for a connection.
            read_timeout: Seconds to wait for data on an open connection.
            max_attempts: Attempts per request, the first included.

        Returns:
            A ``botocore`` S3 client.

        Raises:
            InvalidArgument: The location is not ``s3://``.
        """
        if not self.is_s3:
            raise InvalidArgument(f"{_parse_url(self.url).url} is not an s3:// location")
        options: dict[str, Any] = {
            "region_name": self.region,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            # botocore's "max_attempts" counts retries only; this is the first try included.
            "retries": {"mode": "standard", "total_max_attempts": max_attempts},
        }
        foreign = False
        if self.endpoint is not None:
            options["s3"] = {"addressing_style": "path"}
            foreign = not _is_aws_host(_parse_endpoint(self.endpoint)[1])
            if foreign:
                options["request_checksum_calculation"] = "when_required"
                options["response_checksum_validation"] = "when_required"
        session = boto3.session.Session()
        client = session.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            config=botocore.config.Config(**options),
        )
        if foreign:
            client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
        if self.access_key is not None:
            _hide_in_sdk_logs(self.access_key, self.secret_key, self.session_token)
        else:
            # Creating the client resolved the SDK's credential chain; reading them costs no I/O.
            found = session.get_credentials()
            if found is not None:
                frozen = found.get_frozen_credentials()
                _hide_in_sdk_logs(frozen.access_key, frozen.secret_key, frozen.token)
        return client

    def arrow_filesystem(
        self,
        *,
        connect_timeout: float = _OP_CONNECT_TIMEOUT,
        request_timeout: float = _OP_REQUEST_TIMEOUT,
        max_attempts: int = _OP_MAX_ATTEMPTS,
    ) -> pafs.FileSystem:
        """Build the pyarrow filesystem for these settings, for streaming reads and datasets.

        ``file://`` gives a ``LocalFileSystem``. ``s3://`` gives an ``S3FileSystem`` with the
        region always set and, with an ``endpoint``, path-style addressing; for endpoints that
        are not AWS it also sets ``AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED`` when unset,
        process-wide, because pyarrow has no option for it: its uploads (pyiceberg's too) are
        then plain bodies that S3-compatible stores decode.

        Args:
            connect_timeout: Seconds to wait for a connection (S3 only).
            request_timeout: Seconds to wait for a response (S3 only).
            max_attempts: Attempts per request, the first included (S3 only).

        Returns:
            The filesystem; paths on it are :meth:`ObjectStore.path` values.
        """
        if not self.is_s3:
            return pafs.LocalFileSystem()
        kwargs: dict[str, Any] = {
            "region": self.region,
            "connect_timeout": connect_timeout,
            "request_timeout": request_timeout,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
        }
        if self.access_key is not None:
            kwargs.update(
                access_key=self.access_key,
                secret_key=self.secret_key,
                session_token=self.session_token,
            )
        if self.endpoint is not None:
            scheme, host = _parse_endpoint(self.endpoint)
            _prefer_checksum_when_required(host)
            # With endpoint_override pyarrow addresses buckets path-style
            # (http://host:port/bucket/key; force_virtual_addressing defaults to False), which
            # MinIO and moto need. Verified from the request line pyarrow sends.
            kwargs.update(endpoint_override=host, scheme=scheme)
        return pafs.S3FileSystem(**kwargs)

    def iceberg_io_properties(self) -> dict[str, str]:
        """Return pyiceberg FileIO properties reaching the same location with the same settings.

        For ``s3://``: ``s3.region`` (always: pyiceberg otherwise asks AWS for the bucket's
        region, seconds per operation), ``s3.endpoint`` and ``s3.force-virtual-addressing``
        when an endpoint is set, ``s3.access-key-id``, ``s3.secret-access-key`` and
        ``s3.session-token`` when credentials are set (else pyiceberg's own chain finds them),
        and the timeouts. For ``file://``: no properties. pyiceberg's default S3 FileIO is
        pyarrow's: call :meth:`arrow_filesystem` (or build an :class:`ObjectStore`) first, so
        that uploads to a non-AWS endpoint are plain bodies.

        The result holds secrets: pass it to pyiceberg, never print or log it.

        Returns:
            Property names to string values.
        """
        if not self.is_s3:
            return {}
        props = {
            "s3.region": self.region,
            "s3.connect-timeout": str(_OP_CONNECT_TIMEOUT),
            "s3.request-timeout": str(_OP_REQUEST_TIMEOUT),
        }
        if self.endpoint is not None:
            props["s3.endpoint"] = self.endpoint
            props["s3.force-virtual-addressing"] = "false"
        if self.access_key is not None and self.secret_key is not None:
            props["s3.access-key-id"] = self.access_key
            props["s3.secret-access-key"] = self.secret_key
            if self.session_token is not None:
                props["s3.session-token"] = self.session_token
        return props


@dataclass(frozen=True)
class _Location:
    scheme: str  # "file" or "s3"
    root: str  # filesystem path of the root: "/abs/path" or "bucket/prefix"
    bucket: str  # "" for file://
    url: str  # normalised, printable


def _parse_url(url: str) -> _Location:
    if not isinstance(url, str) or not url:
        raise InvalidArgument("storage URL must be a non-empty string")
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise InvalidArgument("storage URL must not have a query or fragment")
    if "@" in parts.netloc:
        # Never echo the URL here: the part before '@' may be a secret.
        raise InvalidArgument(
            "storage URL must not contain credentials; use access_key/secret_key or AWS_* "
            "environment variables"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"file URL {url!r} must hold an absolute path: file:///abs/path "
                "(pathlib.Path(p).resolve().as_uri() makes one)"
            )
        path = urllib.parse.unquote(parts.path)
        if not path.startswith("/") or "\x00" in path:
            raise InvalidArgument(f"file URL {url!r} must hold an absolute path")
        root = os.path.normpath(path)
        if root != "/":
            root = root.rstrip("/")
        return _Location("file", root, "", "file://" + urllib.parse.quote(root))
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}", bucket):
            raise InvalidArgument(f"S3 URL {url!r} needs a valid bucket name: s3://bucket/prefix")
        prefix = urllib.parse.unquote(parts.path).strip("/")
        if prefix:
            _validate_key(prefix, what="S3 URL prefix")
        root = f"{bucket}/{prefix}" if prefix else bucket
        return _Location("s3", root, bucket, f"s3://{root}")
    raise InvalidArgument(
        f"unsupported storage URL {url!r}: use file:///abs/path or s3://bucket/prefix"
    )


def _parse_endpoint(endpoint: str) -> tuple[str, str]:
    """Split an endpoint URL into pyarrow's ``scheme`` and ``endpoint_override``."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"S3 endpoint {endpoint!r} must be a URL such as http://127.0.0.1:9000 "
            "or https://s3.example.com"
        )
    if "@" in parts.netloc:
        raise InvalidArgument("S3 endpoint must not contain credentials")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise InvalidArgument(f"S3 endpoint {endpoint!r} must not have a path or query")
    return parts.scheme, parts.netloc


def _is_aws_host(host: str) -> bool:
    host = host.split(":")[0].lower()
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _validate_key(key: str, *, what: str = "key") -> None:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"{what} must be a non-empty string")
    shown = key if len(key) <= 200 else key[:200] + "..."
    if key.startswith("/"):
        raise InvalidArgument(f"{what} {shown!r} must be relative to the store root")
    if "\x00" in key:
        raise InvalidArgument(f"{what} {shown!r} contains a NUL character")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidArgument(
            f"{what} {shown!r} must not contain '..', '.' or empty path components"
        )


def _prefer_checksum_when_required(endpoint_host: str) -> None:
    """Make uploads to a non-AWS endpoint plain (not aws-chunked) bodies.

    What was measured with pyarrow 26.0.1 (headers captured by a local HTTP server):

    * By default every PutObject and UploadPart is sent as ``Content-Encoding: aws-chunked``
      with ``x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER`` and a
      ``x-amz-checksum-crc64nvme`` trailer, even over plain HTTP. Stores that do not decode it
      keep the chunk framing as object data.
    * pyarrow has no S3FileSystem option for this, but its bundled AWS SDK honours
      ``AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED``: bodies are then sent with
      ``Content-Length`` and a signed SHA-256 payload hash, for single PUTs and multipart
      parts alike.
    * The SDK reads the variable each time an S3 client is configured (every S3FileSystem
      construction), not only when the SDK is initialised, so setting it here, just before
      building the filesystem, is enough.

    The variable is process-wide (it also affects boto3), so it is set only when the user has not
    set it, and only for endpoints that are not AWS. AWS itself accepts either form.
    """
    if _is_aws_host(endpoint_host) or os.environ.get(_CHECKSUM_ENV):
        return
    os.environ[_CHECKSUM_ENV] = "WHEN_REQUIRED"
    log.info("set %s=WHEN_REQUIRED for S3-compatible endpoint %s", _CHECKSUM_ENV, endpoint_host)


# --------------------------------------------------------------------------------------------
# Error translation

# Exceptions of the SDKs that mean "the operation failed", translated into StorageError.
_SDK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    pa.ArrowException,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
)
_NETWORK_ERRORS = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


def _aws_code(exc: BaseException) -> str | None:
    """The store's error code in pyarrow's spelling (``NO_SUCH_BUCKET``), if there is one."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        # HEAD answers carry no body: only the status tells what happened.
        if code in ("403", "404"):
            return {"403": "ACCESS_DENIED", "404": "NOT_FOUND"}[code]
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", code).upper() or None
    if isinstance(exc, _NETWORK_ERRORS):
        return "NETWORK_CONNECTION"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "NO_CREDENTIALS"
    match = _AWS_ERROR_RE.search(str(exc))
    return match.group(1) if match else None


def _cause(exc: BaseException, *, bucket: str, endpoint: str) -> str:
    """A short, actionable description of why an operation failed."""
    code = _aws_code(exc)
    if code == "NETWORK_CONNECTION":
        return f"cannot reach endpoint {endpoint}"
    if code == "NO_SUCH_BUCKET":
        return f"bucket {bucket!r} does not exist"
    if code == "NO_CREDENTIALS":
        return (
            "no credentials: set access_key/secret_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if code == "INVALID_ACCESS_KEY_ID":
        return "access denied: the access key id is not known to the store; check credentials"
    if code == "SIGNATURE_DOES_NOT_MATCH":
        return "access denied: request signature rejected; check the secret key"
    if code in ("EXPIRED_TOKEN", "INVALID_TOKEN", "INVALID_CLIENT_TOKEN_ID"):
        return "access denied: the session token is expired or invalid; check credentials"
    if code == "ACCESS_DENIED":
        return "access denied: check credentials and their permissions on the bucket"
    if code == "REQUEST_TIME_TOO_SKEWED":
        return "request rejected: this machine's clock is too far off"
    if code == "INVALID_STORAGE_CLASS":
        return "the store does not accept the storage class (TIERFLOW_S3_STORAGE_CLASS)"
    if code in ("BAD_DIGEST", "XAMZ_CONTENT_SHA256_MISMATCH"):
        return "the store received different bytes than were sent (checksum mismatch)"
    if code in ("NO_SUCH_KEY", "NOT_FOUND") or isinstance(exc, FileNotFoundError):
        return "no such object"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, NotADirectoryError):
        return "a parent of the path is a file, not a directory"
    return type(exc).__name__


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) or _aws_code(exc) in ("NO_SUCH_KEY", "NOT_FOUND")


class _Scrubber:
    """Removes credential values from text before it reaches a message or a log."""

    def __init__(self, *values: str | None) -> None:
        # Very short values would garble messages and are not worth hiding (moto accepts any).
        self._values = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text


# botocore's debug logs quote request headers (the access key id in Authorization, the session
# token in X-Amz-Security-Token) and canonical requests. A log-record factory sees every record
# of every logger, including loggers created later, so the SDKs' records are scrubbed as they
# are made; a filter on the "botocore" logger would miss its children.
_hidden = _Scrubber()
_hidden_lock = threading.Lock()
_factory_installed = False


def _hide_in_sdk_logs(*values: str | None) -> None:
    global _hidden, _factory_installed
    with _hidden_lock:
        known = list(_hidden._values)
        _hidden = _Scrubber(*known, *values)
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if record.name.startswith(_SDK_LOGGERS):
                _scrub_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        text = record.getMessage()
    except Exception:  # a malformed record is logging's problem, not ours
        return
    clean = _hidden(text)
    if clean != text:
        record.msg, record.args = clean, None


def _add_content_md5(request: Any, **_: Any) -> None:
    """Give DeleteObjects the ``Content-MD5`` header S3-compatible stores require.

    Current SDKs send a CRC32 checksum instead; stores that predate that answer
    ``MissingContentMD5`` (AWS accepts either).
    """
    body = request.body
    if "Content-MD5" not in request.headers and isinstance(body, bytes | bytearray):
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode()


def _b64_sha256(data: bytes | memoryview, hex_digest: str | None = None) -> str:
    digest = bytes.fromhex(hex_digest) if hex_digest else hashlib.sha256(data).digest()
    return base64.b64encode(digest).decode()


# --------------------------------------------------------------------------------------------
# Streams handed to callers


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

    def __init__(self, store: ObjectStore, key: str) -> None:
        self._store = store
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
        store = self._store
        try:
            if self._upload_id is None:
                started = store.client.create_multipart_upload(**store._put_options(self._key))
                self._upload_id = str(started["UploadId"])
            number = len(self._parts) + 1
            # Content-MD5, which every S3-compatible store verifies; part-level SHA-256 needs
            # checksum support in all three multipart calls, which older stores lack.
            md5 = hashlib.md5(part, usedforsecurity=False).digest()
            done = store.client.upload_part(
                Bucket=store._loc.bucket,
                Key=store._object_key(self._key),
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
        store = self._store
        if self._upload_id is None:
            store._put_s3(self._key, memoryview(self._buffer))
            return
        if self._buffer:
            self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        try:
            store.client.complete_multipart_upload(
                Bucket=store._loc.bucket,
                Key=store._object_key(self._key),
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
            self._store.client.abort_multipart_upload(
                Bucket=self._store._loc.bucket,
                Key=self._store._object_key(self._key),
                UploadId=upload_id,
            )


# --------------------------------------------------------------------------------------------
# Batches of writes


class WriteBatch:
    """Objects written together, durable together: get one from :meth:`ObjectStore.batch`.

    Each :meth:`put` stores its object at once (nothing is held back in memory). On ``file://``
    the files are fsync'd one by one and renamed into place, and the directories that gained
    an entry are fsync'd once for the whole batch when it closes; the objects are durable
    only once :meth:`close` (or the ``with`` block) returns without error. A block left by an
    exception skips that sync: what it wrote is garbage to collect, not data to keep. On
    ``s3://`` every object is durable when its :meth:`put` returns.
    """

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._files = DurableFiles(_TMP_MARK) if not store.settings.is_s3 else None
        self._closed = False

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        """Store ``data`` as ``key``, replacing any object there.

        Args:
            key: Destination key.
            data: The whole object (``bytes``, or a ``memoryview`` of e.g. a pyarrow buffer).
            sha256: Hex SHA-256 of ``data`` if the caller already has it; S3 verifies the
                upload against it (computed here otherwise).

        Raises:
            StorageError: The write failed, or the batch is closed.
        """
        path = self._store.path(key)
        if self._closed:
            raise StorageError(f"write batch of {self._store.url} is closed", url=self._store.url)
        if self._files is None:
            self._store._put_s3(key, data, sha256=sha256)
            return
        try:
            self._files.put(Path(path), data)
        except OSError as exc:
            raise self._store._error("write", key, exc) from exc

    def close(self) -> None:
        """Make every object put so far durable (``file://``: fsync their directories).

        Raises:
            StorageError: A directory could not be synced.
        """
        self._closed = True
        if self._files is None:
            return
        try:
            self._files.sync()
        except OSError as exc:
            raise self._store._error("sync", None, exc) from exc

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True


# --------------------------------------------------------------------------------------------
# The store


class ObjectStore:
    """Keys under one storage location, on the local disk or an S3-compatible store.

    Keys are ``/``-separated paths relative to the root, such as
    ``"warm/history/batch-000001.parquet"``; keys with ``..``, ``.`` or empty components, or a
    leading ``/``, are rejected with :class:`hot.errors.InvalidArgument` so nothing can escape
    the root. Every storage failure raises :class:`hot.errors.StorageError` (or its
    :class:`ObjectNotFound`) naming the URL, the key and the cause.

    Writes (:meth:`put`, :meth:`put_many`, :meth:`batch`, :meth:`open_output`) are durable
    when they return. On ``file://`` an object lands under a temporary name, is fsync'd and
    renamed into place, and its directory (and every directory made for it) is fsync'd, so a
    reader never sees half an object and a written object survives power loss. On ``s3://``
    an object appears when its upload completes, with the configured storage class.

    Attributes:
        url: The normalised storage URL; safe to print.
        fs: The pyarrow filesystem, for streaming reads; use it with :meth:`path`.
        root: The root as a path on :attr:`fs`: ``"/abs/path"`` or ``"bucket/prefix"``
            (``path(key)`` is ``root + "/" + key``).
        settings: The settings the store was built from (credentials are hidden from repr).
    """

    url: str
    fs: pafs.FileSystem
    root: str
    settings: StorageSettings

    def __init__(self, settings: StorageSettings) -> None:
        """Build the store for ``settings``; no I/O happens until a method is called.

        Args:
            settings: Where the data lives and how to reach it.
        """
        self.settings = settings
        self._loc = _parse_url(settings.url)
        self.url = self._loc.url
        self.root = self._loc.root
        # The credentials requests are signed with: explicit ones, else those the SDKs would
        # take from the environment first. Kept to scrub them from messages.
        creds: tuple[str | None, ...]
        if settings.access_key is not None:
            creds = (settings.access_key, settings.secret_key, settings.session_token)
        else:
            env = os.environ
            creds = tuple(
                env.get(n)
                for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
            )
        self._scrub = _Scrubber(*creds)
        self._client: Any = None
        self._check_client: Any = None
        self._client_lock = threading.Lock()
        if self._loc.scheme == "file":
            self._endpoint = "local disk"
        elif settings.endpoint is not None:
            scheme, host = _parse_endpoint(settings.endpoint)
            self._endpoint = f"{scheme}://{host}"
        else:
            self._endpoint = f"AWS S3 ({settings.region})"
        self.fs = settings.arrow_filesystem()

    @classmethod
    def from_url(cls, url: str, **overrides: str | None) -> ObjectStore:
        """Open the store at ``url``, taking other settings from arguments or the environment.

        Args:
            url: ``file:///abs/path`` or ``s3://bucket/prefix``.
            **overrides: Any other :class:`StorageSettings` field (``endpoint``, ``region``,
                ``access_key``, ...); missing ones come from the environment as in
                :meth:`StorageSettings.from_env`.

        Returns:
            The store (no I/O done yet; call :meth:`check` to verify it).
        """
        return cls(StorageSettings.from_env(url, **overrides))

    def __repr__(self) -> str:
        if self._loc.scheme == "file":
            return f"ObjectStore({self.url!r})"
        return f"ObjectStore({self.url!r}, endpoint={self._endpoint!r})"

    def __str__(self) -> str:
        return self.url

    @property
    def client(self) -> Any:
        """The boto3 S3 client the store writes and deletes with (built on first use).

        Register botocore event handlers on ``client.meta.events`` to observe its requests.

        Raises:
            InvalidArgument: The store is ``file://``.
        """
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self.settings.s3_client()
        return self._client

    def _checker(self) -> Any:
        if self._check_client is None:
            with self._client_lock:
                if self._check_client is None:
                    self._check_client = self.settings.s3_client(
                        connect_timeout=_CHECK_CONNECT_TIMEOUT,
                        read_timeout=_CHECK_REQUEST_TIMEOUT,
                        max_attempts=_CHECK_MAX_ATTEMPTS,
                    )
        return self._check_client

    # ---------------------------------------------------------------- paths and errors

    def path(self, key: str) -> str:
        """Return the filesystem path of ``key`` for use with :attr:`fs`.

        Args:
            key: A key relative to the store root, e.g. ``"warm/history/x.parquet"``.

        Returns:
            ``"/abs/root/warm/history/x.parquet"`` (file://) or
            ``"bucket/prefix/warm/history/x.parquet"`` (s3://).

        Raises:
            InvalidArgument: The key is empty, absolute, or has ``..``/``.``/empty components.
        """
        _validate_key(key)
        return f"{self._loc.root.rstrip('/')}/{key}"

    def _object_key(self, key: str) -> str:
        """The S3 object key of ``key`` (its path without the bucket)."""
        return self.path(key).split("/", 1)[1]

    def _dir_path(self, prefix: str) -> str:
        prefix = prefix.strip("/") if isinstance(prefix, str) else prefix
        if prefix == "":
            return self._loc.root
        return self.path(prefix)

    def _error(
        self, action: str, key: str | None, exc: BaseException, *, cause: str | None = None
    ) -> StorageError:
        what = f"{key!r} in {self.url}" if key is not None else self.url
        detail = self._scrub(str(exc)).strip()
        reason = cause or _cause(exc, bucket=self._loc.bucket, endpoint=self._endpoint)
        message = f"cannot {action} {what}: {reason}"
        if detail and detail not in reason:
            message += f" ({detail})"
        cls = ObjectNotFound if _is_not_found(exc) else StorageError
        return cls(message, url=self.url)

    def _failer(self, action: str, key: str) -> Callable[[BaseException], NoReturn]:
        def fail(exc: BaseException) -> NoReturn:
            raise self._error(action, key, exc) from exc

        return fail

    # ---------------------------------------------------------------- check

    def check(self) -> None:
        """Verify the location is usable before any data is moved to it.

        ``file://``: creates the root directory if missing (durably) and checks a probe file
        can be written, read back and deleted. ``s3://``: checks the endpoint answers, the
        bucket exists, the credentials are accepted, and a probe object under
        ``<root>/_tierflow_probe/`` can be written (with the storage class), read back, listed
        and deleted. Uses short timeouts and at most two attempts per request, so an
        unreachable endpoint fails within a few seconds.

        Raises:
            StorageError: The location is not usable; the message names the URL and the cause
                (``bucket 'x' does not exist``, ``access denied: ...``,
                ``cannot reach endpoint ...``).
        """
        if self._loc.scheme == "file":
            self._check_local()
        else:
            self._check_s3()

    def _check_local(self) -> None:
        root = Path(self._loc.root)
        if root.exists() and not root.is_dir():
            raise StorageError(
                f"storage check failed for {self.url}: {root} is not a directory", url=self.url
            )
        try:
            made = make_dirs(root)
            fsync_dirs(d.parent for d in made)
        except OSError as exc:
            raise self._check_error(exc, "creating the root directory") from exc
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        payload = secrets.token_bytes(64)
        step = "writing a probe object"
        try:
            self.put(key, payload)
            step = "reading the probe object back"
            back = self.get(key)
            step = "listing the probe object"
            listed = self.list(_PROBE_DIR)
            step = "deleting the probe object"
            self.delete(key)
        except StorageError as exc:
            raise self._check_error(exc, step) from exc
        self._check_probe(back, payload, listed, key)
        with contextlib.suppress(OSError):
            os.rmdir(root / _PROBE_DIR)

    def _check_probe(
        self, back: bytes, payload: bytes, listed: list[tuple[str, int]], key: str
    ) -> None:
        if back != payload:
            raise StorageError(
                f"storage check failed for {self.url}: a probe object read back differs "
                f"from what was written ({len(back)} bytes instead of {len(payload)}); "
                "if this is an S3-compatible store, it may not support the upload "
                f"encoding (try {_CHECKSUM_ENV}=WHEN_REQUIRED)",
                url=self.url,
            )
        if key not in {k for k, _ in listed}:
            raise StorageError(
                f"storage check failed for {self.url}: a probe object just written is "
                "missing from the listing",
                url=self.url,
            )

    def _check_s3(self) -> None:
        client = self._checker()
        bucket = self._loc.bucket
        try:
            client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            code = _aws_code(exc)
            if code in ("NOT_FOUND", "NO_SUCH_BUCKET"):
                raise StorageError(
                    f"storage check failed for {self.url}: bucket {bucket!r} does not exist "
                    f"at {self._endpoint}",
                    url=self.url,
                ) from exc
            if code == "ACCESS_DENIED":
                # HEAD answers carry no body, so a bad key, a bad secret and a missing
                # permission all look alike here; a probe write tells them apart.
                self._refine_access_denied(client, exc)
            raise self._check_error(exc) from exc
        except _SDK_ERRORS as exc:
            raise self._check_error(exc) from exc
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        okey = self._object_key(key)
        payload = secrets.token_bytes(64)
        step = "writing a probe object"
        try:
            client.put_object(
                **self._put_options(key),
                Body=payload,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64_sha256(payload),
            )
            step = "reading the probe object back"
            back = client.get_object(Bucket=bucket, Key=okey)["Body"].read()
            step = "listing the probe object"
            prefix = self._object_key(_PROBE_DIR) + "/"
            found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
            listed = [(f"{_PROBE_DIR}/{o['Key'][len(prefix) :]}", int(o["Size"])) for o in found]
            step = "deleting the probe object"
            client.delete_object(Bucket=bucket, Key=okey)
        except _SDK_ERRORS as exc:
            raise self._check_error(exc, step) from exc
        self._check_probe(back, payload, listed, key)

    def _refine_access_denied(self, client: Any, head_exc: BaseException) -> None:
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        try:
            client.put_object(**self._put_options(key), Body=b"probe")
        except _SDK_ERRORS as exc:
            raise self._check_error(exc) from head_exc
        with contextlib.suppress(*_SDK_ERRORS):
            client.delete_object(Bucket=self._loc.bucket, Key=self._object_key(key))
        raise StorageError(
            f"storage check failed for {self.url}: access denied listing bucket "
            f"{self._loc.bucket!r}: objects can be written but the credentials lack the list "
            "permission (s3:ListBucket) tierflow needs",
            url=self.url,
        ) from head_exc

    def _check_error(self, exc: BaseException, step: str = "") -> StorageError:
        where = f" ({step})" if step else ""
        if isinstance(exc, StorageError):
            return StorageError(f"storage check failed{where}: {exc}", url=self.url)
        reason = _cause(exc, bucket=self._loc.bucket, endpoint=self._endpoint)
        detail = self._scrub(str(exc)).strip()
        message = f"storage check failed for {self.url}{where}: {reason}"
        if detail and detail not in reason:
            message += f" ({detail})"
        return StorageError(message, url=self.url)

    # ---------------------------------------------------------------- writes

    def put(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        """Write ``data`` as ``key``, replacing any object there; durable when it returns.

        Args:
            key: Destination key.
            data: The object's bytes (or a ``memoryview`` of them, e.g. of a pyarrow buffer).
            sha256: Hex SHA-256 of ``data`` if the caller already has it (see
                :meth:`WriteBatch.put`).

        Raises:
            StorageError: The write failed.
        """
        with self.batch() as out:
            out.put(key, data, sha256=sha256)

    def put_many(self, items: Iterable[tuple[str, bytes | memoryview]]) -> None:
        """Write several objects; all are durable when it returns.

        On ``file://`` each directory is fsync'd once for the whole set, not once per object.

        Args:
            items: ``(key, data)`` pairs.

        Raises:
            StorageError: A write failed (earlier ones may be stored, not necessarily durable).
        """
        with self.batch() as out:
            for key, data in items:
                out.put(key, data)

    def batch(self) -> WriteBatch:
        """Start a :class:`WriteBatch`: objects stored one by one, made durable together.

        Use it as a context manager: the objects are durable when the ``with`` block ends
        without an exception.
        """
        return WriteBatch(self)

    def _put_options(self, key: str) -> dict[str, Any]:
        options: dict[str, Any] = {"Bucket": self._loc.bucket, "Key": self._object_key(key)}
        if self.settings.storage_class is not None:
            options["StorageClass"] = self.settings.storage_class
        return options

    def _put_s3(self, key: str, data: bytes | memoryview, *, sha256: str | None = None) -> None:
        view = memoryview(data).cast("B")
        try:
            self.client.put_object(
                **self._put_options(key),
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
            raise self._error("write", key, exc) from exc

    def open_output(self, key: str) -> pa.NativeFile:
        """Open ``key`` for writing, e.g. as the sink of :class:`pyarrow.parquet.ParquetWriter`.

        The object appears (complete, and durable) when the stream is closed: close it even
        after a failed write, then delete the key if the content is not wanted. Parent
        directories are created on ``file://``. On ``s3://`` the stream buffers one 16 MiB
        part at a time (a multipart upload, aborted if a part fails). Errors while writing or
        closing raise :class:`StorageError`.

        Args:
            key: Destination key.

        Returns:
            A writable pyarrow stream.

        Raises:
            StorageError: The object cannot be created.
        """
        path = self.path(key)
        fail = self._failer("write", key)
        if self._loc.scheme == "s3":
            return pa.PythonFile(_GuardedStream(_S3Output(self, key), fail), mode="w")
        files = DurableFiles(_TMP_MARK)
        try:
            out = files.create(Path(path))
        except OSError as exc:
            fail(exc)
        return pa.PythonFile(_GuardedStream(_LocalOutput(files, out), fail), mode="w")

    # ---------------------------------------------------------------- deletes

    def delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error.

        Raises:
            StorageError: The delete failed.
        """
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete every key in ``keys``; missing keys are not errors.

        All keys are validated before anything is deleted. On S3 one DeleteObjects request
        removes up to 1,000 keys.

        Raises:
            InvalidArgument: A key is malformed (nothing was deleted).
            StorageError: A delete failed (others may have succeeded); the message names
                how many failed and the first of them.
        """
        unique = list(dict.fromkeys(keys))
        for key in unique:
            _validate_key(key)
        if self._loc.scheme == "file":
            for key in unique:
                try:
                    os.unlink(self.path(key))
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as exc:
                    raise self._error("delete", key, exc) from exc
            return
        for start in range(0, len(unique), _DELETE_BATCH):
            self._delete_s3(unique[start : start + _DELETE_BATCH])

    def _delete_s3(self, keys: list[str]) -> None:
        by_object = {self._object_key(k): k for k in keys}
        try:
            if len(keys) == 1:
                # One key: a plain DELETE, which every S3-compatible store supports.
                self.client.delete_object(Bucket=self._loc.bucket, Key=next(iter(by_object)))
                return
            answer = self.client.delete_objects(
                Bucket=self._loc.bucket,
                Delete={"Objects": [{"Key": k} for k in by_object], "Quiet": True},
            )
        except _SDK_ERRORS as exc:
            raise self._error("delete", keys[0] if len(keys) == 1 else None, exc) from exc
        # Quiet mode lists only failures; some stores report a missing key as one.
        failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if failed:
            first = failed[0]
            key = by_object.get(str(first.get("Key")), str(first.get("Key")))
            raise StorageError(
                f"cannot delete {len(failed)} of {len(keys)} objects in {self.url}; first "
                f"{key!r}: {first.get('Code')} {self._scrub(str(first.get('Message', '')))}",
                url=self.url,
            )

    # ---------------------------------------------------------------- reads

    def get(self, key: str) -> bytes:
        """Read the whole object ``key``.

        Args:
            key: The key to read.

        Returns:
            The object's bytes.

        Raises:
            ObjectNotFound: No object has this key.
            StorageError: The read failed.
        """
        path = self.path(key)
        try:
            with self.fs.open_input_stream(path) as src:
                return bytes(src.readall())
        except OSError as exc:
            raise self._error("read", key, exc) from exc

    def _info(self, key: str, action: str) -> pafs.FileInfo:
        path = self.path(key)
        try:
            return self.fs.get_file_info(path)
        except NotADirectoryError:
            # file:// only: a parent of the key is a file, so the key cannot exist.
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        except OSError as exc:
            raise self._error(action, key, exc) from exc

    def exists(self, key: str) -> bool:
        """Tell whether an object (not a directory) exists at ``key``.

        Raises:
            StorageError: The store could not be asked.
        """
        return bool(self._info(key, "look up").type == pafs.FileType.File)

    def size(self, key: str) -> int:
        """Return the size in bytes of the object ``key``.

        Raises:
            ObjectNotFound: No object has this key.
            StorageError: The store could not be asked.
        """
        info = self._info(key, "get the size of")
        if info.type != pafs.FileType.File:
            raise self._error("get the size of", key, FileNotFoundError(f"no object at {key}"))
        return int(info.size)

    def list(self, prefix: str = "", *, unfinished: bool = False) -> list[tuple[str, int]]:
        """List objects under ``prefix``, recursively, sorted by key.

        Args:
            prefix: A directory-like key prefix (``"warm/history"``); ``""`` lists the whole
                store. Objects are matched by whole path components, not by string prefix.
            unfinished: Also list what interrupted ``file://`` writes left behind (temporary
                files a crash kept from being renamed into place), for garbage collection;
                :meth:`unfinished_target` tells which key each was to become.

        Returns:
            ``(key relative to the store root, size in bytes)`` pairs; ``[]`` when nothing is
            there. ``prefix/`` directory markers are never listed.

        Raises:
            StorageError: The listing failed.
        """
        base = self._dir_path(prefix)
        root = self._loc.root.rstrip("/")
        try:
            infos = self.fs.get_file_info(
                pafs.FileSelector(base, recursive=True, allow_not_found=True)
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self._error("list", prefix, exc) from exc
        out: list[tuple[str, int]] = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.startswith(root + "/"):
                continue
            if info.path.endswith("/") or (not unfinished and _TMP_MARK in info.base_name):
                continue
            out.append((info.path[len(root) + 1 :], int(info.size)))
        out.sort()
        return out

    @staticmethod
    def unfinished_target(key: str) -> str | None:
        """Return the key an unfinished write (from ``list(unfinished=True)``) was to create.

        Returns:
            The target key, or None if ``key`` is an ordinary object.
        """
        head, _, name = key.rpartition("/")
        if not name.startswith(".") or _TMP_MARK not in name:
            return None
        target = name[1 : name.rindex(_TMP_MARK)]
        return f"{head}/{target}" if head else target

    def open_input(self, key: str) -> pa.NativeFile:
        """Open ``key`` for random-access reading (e.g. :class:`pyarrow.parquet.ParquetFile`).

        Args:
            key: The key to read.

        Returns:
            A seekable pyarrow file. Errors while reading raise :class:`StorageError`.

        Raises:
            ObjectNotFound: No object has this key.
            StorageError: The object cannot be opened.
        """
        path = self.path(key)
        fail = self._failer("read", key)
        try:
            stream = self.fs.open_input_file(path)
        except OSError as exc:
            fail(exc)
        return pa.PythonFile(_GuardedStream(stream, fail), mode="r")
