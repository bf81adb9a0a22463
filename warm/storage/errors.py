"""Error translation: every storage failure becomes :class:`hot.errors.StorageError`.

The SDKs' exceptions (``OSError``, pyarrow's, botocore's) are turned into
:class:`hot.errors.StorageError` (or its :class:`ObjectNotFound`) naming the store URL, the key
and the cause, in a short, actionable sentence (``bucket 'x' does not exist``,
``access denied: ...``, ``cannot reach endpoint ...``). Credentials never appear in those
messages, nor in the SDKs' debug logs: both are scrubbed here.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import botocore.exceptions  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow 26 ships no type hints
from tierflow.hot.errors import StorageError

_AWS_ERROR_RE = re.compile(r"AWS Error ([A-Z_]+)")
# Loggers of the SDKs whose debug records may quote request headers (session tokens, key ids).
_SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


class ObjectNotFound(StorageError, LookupError):
    """The key names no object in the store (raised by ``get``, ``size`` and ``open_input``)."""


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


class _Errors:
    """Builds the :class:`StorageError` of one store: its URL, bucket, endpoint and scrubber."""

    def __init__(self, url: str, bucket: str, endpoint: str, scrub: _Scrubber) -> None:
        self.url = url
        self.bucket = bucket
        self.endpoint = endpoint  # where requests go, for messages: "local disk", a URL, ...
        self.scrub = scrub

    def error(
        self, action: str, key: str | None, exc: BaseException, *, cause: str | None = None
    ) -> StorageError:
        what = f"{key!r} in {self.url}" if key is not None else self.url
        detail = self.scrub(str(exc)).strip()
        reason = cause or _cause(exc, bucket=self.bucket, endpoint=self.endpoint)
        message = f"cannot {action} {what}: {reason}"
        if detail and detail not in reason:
            message += f" ({detail})"
        cls = ObjectNotFound if _is_not_found(exc) else StorageError
        return cls(message, url=self.url)

    def failer(self, action: str, key: str) -> Callable[[BaseException], NoReturn]:
        def fail(exc: BaseException) -> NoReturn:
            raise self.error(action, key, exc) from exc

        return fail

    def check_error(self, exc: BaseException, step: str = "") -> StorageError:
        where = f" ({step})" if step else ""
        if isinstance(exc, StorageError):
            return StorageError(f"storage check failed{where}: {exc}", url=self.url)
        reason = _cause(exc, bucket=self.bucket, endpoint=self.endpoint)
        detail = self.scrub(str(exc)).strip()
        message = f"storage check failed for {self.url}{where}: {reason}"
        if detail and detail not in reason:
            message += f" ({detail})"
        return StorageError(message, url=self.url)


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
