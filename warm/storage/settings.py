"""Settings: where the warm/cold data lives, how to reach it, and every client built from it.

:class:`StorageSettings` builds every client in one place: the boto3 client the store writes
and deletes with (:meth:`StorageSettings.s3_client`), the pyarrow filesystem reads stream
through (:meth:`StorageSettings.arrow_filesystem`), and the pyiceberg FileIO properties that
reach the same location with the same settings (:meth:`StorageSettings.iceberg_io_properties`).
Credentials never appear in its ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]  # no type hints shipped
import botocore.config  # type: ignore[import-untyped, unused-ignore]
import botocore.loaders  # type: ignore[import-untyped, unused-ignore]
import botocore.session  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs as pafs  # type: ignore[import-untyped]
from tierflow.hot.errors import InvalidArgument
from tierflow.warm.storage.errors import _hide_in_sdk_logs
from tierflow.warm.storage.locations import _is_aws_host, _parse_endpoint, _parse_url

# The package's logger, as before the split into modules.
log = logging.getLogger("tierflow.warm.storage")

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
        validated only when an operation requires them (several such stores do not decode
        AWS's chunked encoding with a trailing checksum and store corrupted objects) and
        DeleteObjects also carries ``Content-MD5``, which such stores require. Retries use
        the SDK's standard mode. Explicit credentials are used if set,
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
        session = _new_session()
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

    @classmethod
    def from_iceberg_io_properties(
        cls, url: str, properties: Mapping[str, str]
    ) -> StorageSettings | None:
        """The settings :meth:`iceberg_io_properties` turned into ``properties``, for ``url``.

        For pyiceberg's FileIO, which is made from properties only, to reach the same store
        through an :class:`ObjectStore`. Properties that are not S3 FileIO ones (a catalog's
        ``uri``, ``warehouse``, ...) are ignored, and so are the timeouts (the store has its
        own, the same values).

        Args:
            url: The ``s3://bucket[/prefix]`` location to reach.
            properties: pyiceberg FileIO properties.

        Returns:
            The settings, or None when ``properties`` hold an S3 option the settings cannot
            express (a role to assume, a request signer, a proxy, anonymous access, a retry
            strategy, virtual addressing on an endpoint, ...).
        """
        s3 = {k: v for k, v in properties.items() if k.startswith(("s3.", "client."))}
        region = s3.pop("s3.region", None)
        endpoint = s3.pop("s3.endpoint", None)
        virtual = s3.pop("s3.force-virtual-addressing", None)
        access_key = s3.pop("s3.access-key-id", None)
        secret_key = s3.pop("s3.secret-access-key", None)
        session_token = s3.pop("s3.session-token", None)
        for timeout in ("s3.connect-timeout", "s3.request-timeout"):
            s3.pop(timeout, None)
        if s3 or region is None or virtual not in (None, "false"):
            return None
        if (access_key is None) != (secret_key is None) or (session_token and not access_key):
            return None
        return cls(
            url=url,
            endpoint=endpoint,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
        )


def single_put_uploads(fs: pafs.FileSystem) -> pafs.FileSystem:
    """Return ``fs``; for S3, the same filesystem sending a small file as one PutObject.

    pyarrow's S3 filesystem starts a multipart upload as soon as a file is opened for writing,
    so every file, however small, takes three requests (create, one part, complete). With its
    ``allow_delayed_open`` option the upload starts only once a file outgrows a part, and a
    smaller file is one PutObject at close (measured on the test S3 server: 10 ms of CPU per
    2 kB file down to 4-5 ms, client and server together). What changes for the caller: an
    error such as a missing bucket is raised by a write or by ``close()``, not by the open.

    The filesystem is rebuilt from pyarrow's own pickled form of ``fs``: every option it was
    made with, plus this one, except a custom ``retry_strategy``, which that form leaves out
    (do not pass a filesystem made with one).

    Args:
        fs: A pyarrow filesystem.

    Returns:
        A new ``S3FileSystem`` for an S3 one; ``fs`` itself for any other.
    """
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    rebuild, (options,) = fs.__reduce__()
    return rebuild({**options, "allow_delayed_open": True})


_loader: Any = None
_loader_lock = threading.Lock()


def _new_session() -> Any:
    """A new boto3 session (sessions are not thread-safe) sharing one botocore data loader.

    A session's loader parses the SDK's JSON service models (S3's, the endpoints and
    partitions) on first use: ~0.13 s of CPU per client when each session has its own,
    ~0.02 s when they share one. The models are read-only and the loader's cache is a
    dict (a race at worst parses a model twice), so one loader serves every session.
    """
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = botocore.loaders.create_loader()
        loader = _loader
    core = botocore.session.Session()
    core.register_component("data_loader", loader)
    return boto3.session.Session(botocore_session=core)


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


def _add_content_md5(request: Any, **_: Any) -> None:
    """Give DeleteObjects the ``Content-MD5`` header S3-compatible stores require.

    Current SDKs send a CRC32 checksum instead; stores that predate that answer
    ``MissingContentMD5`` (AWS accepts either).
    """
    body = request.body
    if "Content-MD5" not in request.headers and isinstance(body, bytes | bytearray):
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode()
