"""Object-store access for the warm and cold tiers: the one module that talks to storage SDKs.

Everything tierflow keeps outside the hot tier lives under one location, given as a URL:

* ``file:///abs/path``: a local directory (the embedded default).
* ``s3://bucket/optional/prefix``: AWS S3 or any S3-compatible store (MinIO, moto, Ceph, ...)
  reached through ``endpoint`` with path-style addressing.

:class:`ObjectStore` maps *keys* (``"warm/history/batch-1.parquet"``, always relative to that
root, ``/``-separated) onto a :mod:`pyarrow.fs` filesystem, and turns every failure into
:class:`hot.errors.StorageError` naming the store URL, the key and the cause. Credentials never
appear in its ``repr``, its messages or its logs.

Nothing else in tierflow imports boto3 or pyarrow's S3 classes; other modules use
:attr:`ObjectStore.fs` with :meth:`ObjectStore.path` when they need a pyarrow filesystem (for
datasets), and the methods here for everything else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import logging
import os
import re
import secrets
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow 26 ships no type hints
import pyarrow.fs as pafs  # type: ignore[import-untyped]
from tierflow.hot.errors import InvalidArgument, StorageError

__all__ = ["ObjectNotFound", "ObjectStore", "StorageSettings"]

log = logging.getLogger(__name__)

_PROBE_DIR = "_tierflow_probe"
# Temporary names used by file:// writes before their atomic rename; list() never shows them.
_TMP_MARK = ".tierflow-tmp-"
_CHECKSUM_ENV = "AWS_REQUEST_CHECKSUM_CALCULATION"

# Normal operations: generous timeouts (a busy store can take seconds to complete a multipart
# upload) and the SDK's retries on, because some S3-compatible stores answer with transient 500s.
# Three attempts of pyarrow's standard strategy (its default) retry a transient error yet give up
# on a dead endpoint within about 2 s per operation (measured: 5 attempts took about 5 s).
_OP_CONNECT_TIMEOUT = 10.0
_OP_REQUEST_TIMEOUT = 60.0
_OP_MAX_ATTEMPTS = 3
# check(): must fail within seconds for an unreachable or hanging endpoint. pyarrow documents
# request_timeout as "ignored on Linux", but measured here (pyarrow 26, curl client) it bounds a
# stalled response: a server that accepts and never answers fails after request_timeout seconds
# per attempt. Two attempts so that one transient 500 does not fail the check.
_CHECK_CONNECT_TIMEOUT = 2.0
_CHECK_REQUEST_TIMEOUT = 2.0
_CHECK_MAX_ATTEMPTS = 2

# Classes whose objects cannot be read back without a restore: the tiering job verifies every
# file it writes, so these would make every move fail.
_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_STORAGE_CLASS_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
_AWS_ERROR_RE = re.compile(r"AWS Error ([A-Z_]+)")
_DELETE_WORKERS = 8

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


def _aws_code(exc: BaseException) -> str | None:
    match = _AWS_ERROR_RE.search(str(exc))
    return match.group(1) if match else None


def _cause(exc: BaseException, *, bucket: str, endpoint: str) -> str:
    """A short, actionable description of why an operation failed."""
    code = _aws_code(exc)
    if code == "NETWORK_CONNECTION":
        return f"cannot reach endpoint {endpoint}"
    if code == "NO_SUCH_BUCKET":
        return f"bucket {bucket!r} does not exist"
    if code == "INVALID_ACCESS_KEY_ID":
        return "access denied: the access key id is not known to the store; check credentials"
    if code == "SIGNATURE_DOES_NOT_MATCH":
        return "access denied: request signature rejected; check the secret key"
    if code in ("EXPIRED_TOKEN", "INVALID_CLIENT_TOKEN_ID"):
        return "access denied: the session token is expired or invalid; check credentials"
    if code == "ACCESS_DENIED":
        return "access denied: check credentials and their permissions on the bucket"
    if code == "REQUEST_TIME_TOO_SKEWED":
        return "request rejected: this machine's clock is too far off"
    if isinstance(exc, FileNotFoundError):
        return "no such object"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, NotADirectoryError):
        return "a parent of the path is a file, not a directory"
    return type(exc).__name__


class _Scrubber:
    """Removes credential values from text before it reaches a message or a log."""

    def __init__(self, *values: str | None) -> None:
        # Very short values would garble messages and are not worth hiding (moto accepts any).
        self._values = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text


# --------------------------------------------------------------------------------------------
# Streams handed to callers


class _GuardedStream:
    """File-like wrapper that turns I/O errors into StorageError.

    Wrapped in :class:`pyarrow.PythonFile`, so callers get a ``NativeFile`` that pyarrow's
    Parquet reader and writer accept; the per-call cost was measured as negligible (pyarrow
    reads and writes whole pages, not rows). ``on_close`` runs after the raw stream is closed
    (the storage class on S3).
    """

    def __init__(
        self,
        raw: Any,
        fail: Callable[[BaseException], NoReturn],
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._raw = raw
        self._fail = fail
        self._on_close = on_close
        self._closed = False

    def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return fn(*args)
        except StorageError:
            raise
        except (OSError, pa.ArrowException) as exc:
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
        if self._on_close is not None:
            self._on_close()


class _LocalAtomicFile:
    """A local file written under a temporary name, fsync'd and renamed into place on close.

    Readers never see a partial object, and a closed object survives power loss (the tiering
    contract deletes hot data once the warm copy is written). A stream that is never closed
    leaves only its temporary file, which :meth:`ObjectStore.list` does not show.
    """

    def __init__(self, path: str) -> None:
        parent, name = os.path.split(path)
        os.makedirs(parent, exist_ok=True)
        self._path = path
        self._tmp = os.path.join(parent, f".{name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")
        self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed by close()/abort())

    def write(self, data: bytes) -> int:
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._path)
        except BaseException:
            self.abort()
            raise
        fd = os.open(os.path.dirname(self._path), os.O_RDONLY)
        try:
            os.fsync(fd)  # makes the rename itself durable
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Storage class: pyarrow cannot send it


class _StorageClassSetter:
    """Applies an S3 storage class to an object already written, with a signed CopyObject.

    pyarrow 26's S3FileSystem sends only ACL, Cache-Control, Content-Type, Content-Language
    and Expires from write metadata and silently drops every other key (checked by capturing
    its requests), so ``x-amz-storage-class`` cannot be sent with the upload itself. Copying an
    object onto itself with a new storage class is the documented S3 way to change it; this
    signs that one request with SigV4 using the store's credentials. Objects over 5 GB cannot
    be copied in one request; warm batches are far smaller.
    """

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        region: str,
        access_key: str,
        secret_key: str,
        session_token: str | None,
        storage_class: str,
    ) -> None:
        self._scheme = scheme
        self._host = host
        self._region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._session_token = session_token
        self.storage_class = storage_class

    def __repr__(self) -> str:
        return f"_StorageClassSetter({self.storage_class!r})"

    def apply(self, bucket: str, key: str) -> None:
        """Copy ``bucket/key`` onto itself with the storage class; retried on transient errors.

        Raises:
            OSError: The store refused the copy or could not be reached.
        """
        path = urllib.parse.quote(f"/{bucket}/{key}")
        extra = {
            "x-amz-copy-source": urllib.parse.quote(f"{bucket}/{key}"),
            "x-amz-metadata-directive": "COPY",
            "x-amz-storage-class": self.storage_class,
        }
        last: OSError | None = None
        for attempt in range(3):
            if attempt:
                time.sleep(0.2 * 4 ** (attempt - 1))
            try:
                status, body = self._send("PUT", path, extra)
            except OSError as exc:  # connection refused, reset, timeout
                last = exc
                continue
            # CopyObject can answer 200 with an error document when it fails mid-copy.
            if status == 200 and b"<Error>" not in body:
                return
            code, message = _xml_error(body)
            last = OSError(f"CopyObject failed: HTTP {status} {code} {message}".rstrip())
            if status < 500 and code not in ("InternalError", "SlowDown"):
                break
        assert last is not None
        raise last

    def _send(self, method: str, path: str, extra: dict[str, str]) -> tuple[int, bytes]:
        headers = self._sign(method, path, extra)
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(self._host, timeout=_OP_REQUEST_TIMEOUT)
        else:
            conn = http.client.HTTPConnection(self._host, timeout=_OP_REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=b"", headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _sign(self, method: str, path: str, extra: dict[str, str]) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload_hash = hashlib.sha256(b"").hexdigest()
        headers = {
            "host": self._host,
            "x-amz-date": amz_date,
            "x-amz-content-sha256": payload_hash,
            **{name.lower(): value.strip() for name, value in extra.items()},
        }
        if self._session_token:
            headers["x-amz-security-token"] = self._session_token
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                "",
                "".join(f"{name}:{headers[name]}\n" for name in names),
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + self._secret_key).encode()
        for part in (day, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers


def _xml_error(body: bytes) -> tuple[str, str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", ""
    return root.findtext("Code") or "", root.findtext("Message") or ""


# --------------------------------------------------------------------------------------------
# The store


class ObjectStore:
    """Keys under one storage location, on the local disk or an S3-compatible store.

    Keys are ``/``-separated paths relative to the root, such as
    ``"warm/history/batch-000001.parquet"``; keys with ``..``, ``.`` or empty components, or a
    leading ``/``, are rejected with :class:`hot.errors.InvalidArgument` so nothing can escape
    the root. Every storage failure raises :class:`hot.errors.StorageError` (or its
    :class:`ObjectNotFound`) naming the URL, the key and the cause.

    On ``file://`` every write lands under a temporary name, is fsync'd and renamed into
    place, so a reader never sees half an object and a written object survives power loss.
    On ``s3://`` an object appears when its upload completes.

    Attributes:
        url: The normalised storage URL; safe to print.
        fs: The pyarrow filesystem; use it with :meth:`path` for datasets.
        root: The root as a path on :attr:`fs`: ``"/abs/path"`` or ``"bucket/prefix"``
            (``path(key)`` is ``root + "/" + key``).
        settings: The settings the store was built from (credentials are hidden from repr).
    """

    url: str
    fs: pafs.FileSystem
    root: str
    settings: StorageSettings

    def __init__(self, settings: StorageSettings) -> None:
        """Build the filesystem for ``settings``; no I/O happens until a method is called.

        Args:
            settings: Where the data lives and how to reach it.

        Raises:
            InvalidArgument: ``storage_class`` is set but no explicit or ``AWS_*`` credentials
                are available to sign the request that applies it.
        """
        self.settings = settings
        self._loc = _parse_url(settings.url)
        self.url = self._loc.url
        self.root = self._loc.root
        # The credentials requests are signed with: explicit ones, else those the SDK would
        # take from the environment first. Kept to scrub them from messages and to sign the
        # storage-class request.
        self._creds: tuple[str | None, str | None, str | None]
        if settings.access_key is not None:
            self._creds = (settings.access_key, settings.secret_key, settings.session_token)
        else:
            env = os.environ
            self._creds = (
                env.get("AWS_ACCESS_KEY_ID"),
                env.get("AWS_SECRET_ACCESS_KEY"),
                env.get("AWS_SESSION_TOKEN"),
            )
        self._scrub = _Scrubber(*self._creds)
        self._storage_class: _StorageClassSetter | None = None
        self._check_fs: pafs.FileSystem | None = None
        if self._loc.scheme == "file":
            self._endpoint = "local disk"
            self.fs = pafs.LocalFileSystem()
            return
        if settings.endpoint is not None:
            self._scheme, self._host = _parse_endpoint(settings.endpoint)
            self._endpoint = f"{self._scheme}://{self._host}"
            _prefer_checksum_when_required(self._host)
        else:
            self._scheme = "https"
            suffix = ".amazonaws.com.cn" if settings.region.startswith("cn-") else ".amazonaws.com"
            self._host = f"s3.{settings.region}{suffix}"
            self._endpoint = f"AWS S3 ({settings.region})"
        self.fs = self._make_s3(
            connect_timeout=_OP_CONNECT_TIMEOUT,
            request_timeout=_OP_REQUEST_TIMEOUT,
            max_attempts=_OP_MAX_ATTEMPTS,
        )
        if settings.storage_class and settings.storage_class != "STANDARD":
            self._storage_class = self._make_storage_class_setter(settings.storage_class)

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

    # ---------------------------------------------------------------- construction helpers

    def _make_s3(
        self, *, connect_timeout: float, request_timeout: float, max_attempts: int
    ) -> pafs.S3FileSystem:
        s = self.settings
        kwargs: dict[str, Any] = {
            "region": s.region,
            "connect_timeout": connect_timeout,
            "request_timeout": request_timeout,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
            # One PutObject for a small object instead of CreateMultipartUpload at open and
            # two more requests at close; failures then surface at write/close, where the
            # returned streams translate them like any other.
            "allow_delayed_open": True,
        }
        if s.access_key is not None:
            kwargs.update(
                access_key=s.access_key, secret_key=s.secret_key, session_token=s.session_token
            )
        if s.endpoint is not None:
            # With endpoint_override pyarrow addresses buckets path-style
            # (http://host:port/bucket/key; force_virtual_addressing defaults to False), which
            # MinIO and moto need. Verified from the request line pyarrow sends.
            kwargs.update(endpoint_override=self._host, scheme=self._scheme)
        return pafs.S3FileSystem(**kwargs)

    def _make_storage_class_setter(self, storage_class: str) -> _StorageClassSetter:
        access_key, secret_key, token = self._creds
        if not access_key or not secret_key:
            raise InvalidArgument(
                f"storage_class={storage_class!r} for {self.url} needs explicit credentials "
                "(access_key/secret_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY): pyarrow "
                "cannot send a storage class, so tierflow applies it with a signed request. "
                "Alternatively leave storage_class unset and use a bucket lifecycle rule"
            )
        return _StorageClassSetter(
            scheme=self._scheme,
            host=self._host,
            region=self.settings.region,
            access_key=access_key,
            secret_key=secret_key,
            session_token=token,
            storage_class=storage_class,
        )

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
        cls = ObjectNotFound if isinstance(exc, FileNotFoundError) else StorageError
        return cls(message, url=self.url)

    def _failer(self, action: str, key: str) -> Callable[[BaseException], NoReturn]:
        def fail(exc: BaseException) -> NoReturn:
            raise self._error(action, key, exc) from exc

        return fail

    # ---------------------------------------------------------------- check

    def check(self) -> None:
        """Verify the location is usable before any data is moved to it.

        ``file://``: creates the root directory if missing and checks a probe file can be
        written, read back and deleted. ``s3://``: checks the endpoint answers, the bucket
        exists, the credentials are accepted, and a probe object under
        ``<root>/_tierflow_probe/`` can be written, read back, listed and deleted. Uses short
        timeouts and at most two attempts per request, so an unreachable endpoint fails within
        a few seconds.

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
        root = self._loc.root
        if os.path.exists(root) and not os.path.isdir(root):
            raise StorageError(
                f"storage check failed for {self.url}: {root} is not a directory", url=self.url
            )
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise self._check_error(exc, "creating the root directory") from exc
        self._probe(self.fs)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(root, _PROBE_DIR))

    def _check_s3(self) -> None:
        if self._check_fs is None:
            self._check_fs = self._make_s3(
                connect_timeout=_CHECK_CONNECT_TIMEOUT,
                request_timeout=_CHECK_REQUEST_TIMEOUT,
                max_attempts=_CHECK_MAX_ATTEMPTS,
            )
        fs = self._check_fs
        bucket = self._loc.bucket
        try:
            info = fs.get_file_info(bucket)
        except OSError as exc:
            if _aws_code(exc) == "ACCESS_DENIED":
                # HEAD answers carry no body, so a bad key, a bad secret and a missing
                # permission all look alike here; a probe write tells them apart.
                self._refine_access_denied(fs, exc)
            raise self._check_error(exc) from exc
        if info.type == pafs.FileType.NotFound:
            raise StorageError(
                f"storage check failed for {self.url}: bucket {bucket!r} does not exist "
                f"at {self._endpoint}",
                url=self.url,
            )
        self._probe(fs)

    def _refine_access_denied(self, fs: pafs.FileSystem, head_exc: OSError) -> None:
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        try:
            with fs.open_output_stream(self.path(key)) as out:
                out.write(b"probe")
        except OSError as exc:
            raise self._check_error(exc) from head_exc
        with contextlib.suppress(OSError):
            fs.delete_file(self.path(key))
        raise StorageError(
            f"storage check failed for {self.url}: access denied listing bucket "
            f"{self._loc.bucket!r}: objects can be written but the credentials lack the list "
            "permission (s3:ListBucket) tierflow needs",
            url=self.url,
        ) from head_exc

    def _check_error(self, exc: BaseException, step: str = "") -> StorageError:
        reason = _cause(exc, bucket=self._loc.bucket, endpoint=self._endpoint)
        detail = self._scrub(str(exc)).strip()
        where = f" ({step})" if step else ""
        message = f"storage check failed for {self.url}{where}: {reason}"
        if detail and detail not in reason:
            message += f" ({detail})"
        return StorageError(message, url=self.url)

    def _probe(self, fs: pafs.FileSystem) -> None:
        key = f"{_PROBE_DIR}/{uuid.uuid4().hex}"
        path = self.path(key)
        payload = secrets.token_bytes(64)
        step = "writing a probe object"
        try:
            if self._loc.scheme == "file":
                fs.create_dir(self._dir_path(_PROBE_DIR), recursive=True)
            with fs.open_output_stream(path) as out:
                out.write(payload)
            step = "reading the probe object back"
            with fs.open_input_stream(path) as src:
                back = src.readall()
            if back != payload:
                raise StorageError(
                    f"storage check failed for {self.url}: a probe object read back differs "
                    f"from what was written ({len(back)} bytes instead of {len(payload)}); "
                    "if this is an S3-compatible store, it may not support the upload "
                    f"encoding (try {_CHECKSUM_ENV}=WHEN_REQUIRED)",
                    url=self.url,
                )
            step = "listing the probe object"
            listed = fs.get_file_info(pafs.FileSelector(self._dir_path(_PROBE_DIR)))
            if path not in {i.path for i in listed}:
                raise StorageError(
                    f"storage check failed for {self.url}: a probe object just written is "
                    "missing from the listing",
                    url=self.url,
                )
            step = "deleting the probe object"
            fs.delete_file(path)
        except OSError as exc:
            raise self._check_error(exc, step) from exc

    # ---------------------------------------------------------------- object operations

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` as ``key``, replacing any object there.

        Args:
            key: Destination key.
            data: The object's bytes.

        Raises:
            StorageError: The write failed.
        """
        path = self.path(key)
        if self._loc.scheme == "file":
            self._put_local(key, path, data)
            return
        try:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        self._apply_storage_class(key)

    def _put_local(self, key: str, path: str, data: bytes) -> None:
        try:
            out = _LocalAtomicFile(path)
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        try:
            out.write(data)
            out.close()
        except OSError as exc:
            out.abort()
            raise self._error("write", key, exc) from exc

    def _apply_storage_class(self, key: str) -> None:
        if self._storage_class is None:
            return
        try:
            self._storage_class.apply(self._loc.bucket, self.path(key).split("/", 1)[1])
        except OSError as exc:
            raise self._error(
                f"set storage class {self._storage_class.storage_class} on", key, exc
            ) from exc

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

    def delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error.

        Raises:
            StorageError: The delete failed.
        """
        path = self.path(key)
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise self._error("delete", key, exc) from exc

    def delete_many(self, keys: list[str]) -> None:
        """Delete every key in ``keys``; missing keys are not errors.

        All keys are validated before anything is deleted. On S3 the deletes run concurrently
        (pyarrow has no batch delete for a list of keys).

        Raises:
            InvalidArgument: A key is malformed (nothing was deleted).
            StorageError: A delete failed (others may have succeeded).
        """
        for key in keys:
            _validate_key(key)
        unique = list(dict.fromkeys(keys))
        if self._loc.scheme == "file" or len(unique) < 2:
            for key in unique:
                self.delete(key)
            return
        with ThreadPoolExecutor(max_workers=min(_DELETE_WORKERS, len(unique))) as pool:
            # list() drains the iterator so the first failure is raised here.
            list(pool.map(self.delete, unique))

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        """List objects under ``prefix``, recursively, sorted by key.

        Args:
            prefix: A directory-like key prefix (``"warm/history"``); ``""`` lists the whole
                store. Objects are matched by whole path components, not by string prefix.

        Returns:
            ``(key relative to the store root, size in bytes)`` pairs; ``[]`` when nothing is
            there.

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
            if _TMP_MARK in info.base_name:
                continue
            out.append((info.path[len(root) + 1 :], int(info.size)))
        out.sort()
        return out

    def open_output(self, key: str) -> pa.NativeFile:
        """Open ``key`` for writing, e.g. as the sink of :class:`pyarrow.parquet.ParquetWriter`.

        The object appears (complete) when the stream is closed: close it even after a failed
        write, then delete the key if the content is not wanted. Parent directories are
        created on ``file://``. Errors while writing or closing raise :class:`StorageError`.

        Args:
            key: Destination key.

        Returns:
            A writable pyarrow stream.

        Raises:
            StorageError: The object cannot be created.
        """
        path = self.path(key)
        fail = self._failer("write", key)
        if self._loc.scheme == "file":
            try:
                local = _LocalAtomicFile(path)
            except OSError as exc:
                fail(exc)
            return pa.PythonFile(_GuardedStream(local, fail), mode="w")
        try:
            stream = self.fs.open_output_stream(path)
        except OSError as exc:
            fail(exc)
        return pa.PythonFile(
            _GuardedStream(stream, fail, on_close=lambda: self._apply_storage_class(key)),
            mode="w",
        )

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
