"""Locations and keys: what a storage URL, an S3 endpoint and a key may be.

A location is given as a URL:

* ``file:///abs/path``: a local directory (the embedded default).
* ``s3://bucket/optional/prefix``: AWS S3 or any S3-compatible store (MinIO, moto, Ceph, ...)
  reached through ``endpoint`` with path-style addressing.

*Keys* (``"warm/history/batch-1.parquet"``) are always relative to that root and
``/``-separated; nothing with ``..``, ``.`` or empty components, or a leading ``/``, is a key,
so no key can escape the root. URLs never hold credentials, and are never echoed when they
might.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

from tierflow.hot.errors import InvalidArgument

# Temporary names used by file:// writes before their atomic rename; list() never shows them.
_TMP_MARK = ".tierflow-tmp-"


@dataclass(frozen=True)
class _Location:
    scheme: str  # "file" or "s3"
    root: str  # filesystem path of the root: "/abs/path" or "bucket/prefix"
    bucket: str  # "" for file://
    url: str  # normalised, printable

    def path(self, key: str) -> str:
        """The path of ``key`` under the root (the key validated first)."""
        _validate_key(key)
        return f"{self.root.rstrip('/')}/{key}"


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
