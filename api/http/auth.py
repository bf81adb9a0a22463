"""API keys: scopes, hashed storage, constant-time checks, and the loopback rule.

A key is a random token the client sends as ``Authorization: Bearer <key>``
(or ``X-API-Key: <key>``). The server keeps only its SHA-256: keys are long
random tokens, so a plain hash cannot be reversed by guessing, and a leaked
key file grants nothing. Each key has a name (recorded as the ``actor`` of
compliance changes) and scopes:

- ``read``: describe, list, history, queries, replay, the tiering status;
- ``write``: start, signal, cancel, terminate, fork;
- ``sql``: ``POST /v1/sql``;
- ``admin``: compliance (retention, holds, erasure, audit, export) and tiering runs.

Scopes do not imply one another: a key gets exactly what it lists.

Keys come from a file (``TIERFLOW_API_KEYS_FILE``) or the environment
(``TIERFLOW_API_KEYS``), in one format: JSON Lines (one object per line,
``#`` comments allowed) or a JSON array, each object
``{"name": "ci", "scopes": ["read", "write"], "sha256": "<hex>"}``.
:func:`hash_key` gives the hash of a key, :func:`new_key` makes one.

With no keys configured auth is off, which is only safe where nobody else can
connect: :func:`check_bind` refuses any host but loopback then.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tierflow.hot.errors import InvalidArgument, TierflowError

from .settings import HttpSettings

__all__ = [
    "ANONYMOUS",
    "ApiKey",
    "InsecureBindError",
    "KeyRing",
    "Principal",
    "Scope",
    "check_bind",
    "hash_key",
    "is_loopback",
    "new_key",
    "parse_keys",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")


class Scope(StrEnum):
    """What an API key may do."""

    READ = "read"
    WRITE = "write"
    SQL = "sql"
    ADMIN = "admin"


class InsecureBindError(TierflowError):
    """No API keys are configured and the server was asked to listen beyond loopback."""


def hash_key(key: str) -> str:
    """Return the SHA-256 (hex) of an API key: what a key file stores.

    One-liner for operators::

        python -c 'import sys, tierflow.http as h; print(h.hash_key(sys.argv[1]))' "$KEY"
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """Return a new random API key (256 bits, URL-safe text)."""
    return "tf_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its name, scopes and the SHA-256 of the key itself.

    Attributes:
        name: Who holds it; the ``actor`` of the changes it makes.
        scopes: What it may do.
        sha256: Hex SHA-256 of the key (the key itself is never stored).
    """

    name: str
    scopes: frozenset[Scope]
    sha256: str

    def __repr__(self) -> str:
        # Even the hash stays out of logs and tracebacks.
        return f"ApiKey(name={self.name!r}, scopes={sorted(self.scopes)})"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and scopes (``ANONYMOUS`` when auth is off)."""

    name: str
    scopes: frozenset[Scope]


ANONYMOUS = Principal("anonymous", frozenset(Scope))
"""The caller when no keys are configured (loopback only): every scope."""


def _parse_entry(entry: Any, where: str) -> ApiKey:
    if not isinstance(entry, Mapping):
        raise InvalidArgument(f"{where}: each key must be a JSON object")
    unknown = set(entry) - {"name", "scopes", "sha256"}
    if unknown:
        raise InvalidArgument(f"{where}: unknown fields {sorted(unknown)}")
    name, scopes, digest = entry.get("name"), entry.get("scopes"), entry.get("sha256")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(f"{where}: 'name' must match {_NAME.pattern}")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise InvalidArgument(f"{where}: 'scopes' must be a non-empty list of scope names")
    bad = sorted(set(scopes) - {s.value for s in Scope})
    if bad:
        raise InvalidArgument(f"{where}: unknown scopes {bad} (known: read, write, sql, admin)")
    # The value is not echoed: it may be a raw key pasted by mistake.
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise InvalidArgument(
            f"{where}: 'sha256' must be 64 lowercase hex digits (tierflow.http.hash_key)"
        )
    return ApiKey(name=name, scopes=frozenset(Scope(s) for s in scopes), sha256=digest)


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """Parse keys from JSON Lines or a JSON array (the format of the module docstring).

    Raises:
        InvalidArgument: Malformed JSON, an entry with a bad field, or a name used twice.
    """
    stripped = text.strip()
    entries: list[tuple[Any, str]] = []
    try:
        if stripped.startswith("["):
            entries = [(e, f"{source}[{i}]") for i, e in enumerate(json.loads(stripped))]
        else:
            for n, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    entries.append((json.loads(line), f"{source}:{n}"))
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{source}: not JSON ({exc.msg}, line {exc.lineno})") from None
    keys = [_parse_entry(e, where) for e, where in entries]
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"{source}: a key name is used twice")
    return keys


class KeyRing:
    """The configured keys, checked in constant time.

    Args:
        keys: The keys; empty means auth is off.
    """

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self.keys = tuple(keys)

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> KeyRing:
        """Load the keys the settings name (file first, then inline; both add up).

        Raises:
            InvalidArgument: The file is unreadable or empty, or an entry is malformed.
        """
        keys: list[ApiKey] = []
        if settings.api_keys_file:
            path = Path(settings.api_keys_file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidArgument(
                    f"cannot read the API keys file {str(path)!r}: {exc.strerror}"
                ) from None
            found = parse_keys(text, str(path))
            if not found:
                # A configured but empty file would turn auth off: fail closed instead.
                raise InvalidArgument(f"the API keys file {str(path)!r} holds no keys")
            keys += found
        if settings.api_keys:
            found = parse_keys(settings.api_keys, "TIERFLOW_API_KEYS")
            if not found:
                raise InvalidArgument("TIERFLOW_API_KEYS is set but holds no keys")
            keys += found
        if len({k.name for k in keys}) != len(keys):
            raise InvalidArgument("a key name is used both in the file and in TIERFLOW_API_KEYS")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        """True when keys are configured (every request needs one)."""
        return bool(self.keys)

    def identify(self, presented: str) -> ApiKey | None:
        """The key whose hash matches ``presented``, or None.

        Every configured hash is compared, with ``hmac.compare_digest``, so the
        time taken says nothing about which key, or how much of one, matched.
        """
        digest = hash_key(presented).encode("ascii")
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256.encode("ascii")):
                found = key
        return found


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: HttpSettings | None = None) -> None:
    """Refuse to listen beyond loopback when no API keys are configured.

    Args:
        host: The address the server is about to bind.
        settings: Where keys come from (default: ``HttpSettings.from_env()``).

    Raises:
        InsecureBindError: No keys and ``host`` is not loopback.
        InvalidArgument: The configured keys are malformed.
    """
    settings = HttpSettings.from_env() if settings is None else settings
    if KeyRing.from_settings(settings).enabled or is_loopback(host):
        return
    raise InsecureBindError(
        f"refusing to listen on {host!r} without API keys: anyone who can reach it could "
        "start, read and erase workflows. Configure keys (TIERFLOW_API_KEYS_FILE or "
        "TIERFLOW_API_KEYS) or bind 127.0.0.1."
    )
