"""What compliance keeps in the instance index: policies, holds, erasure intents, the audit log.

Every table lives in the index database, next to the tiering ledgers, and is
written with the index's own connection, so recording an erasure's intent and
marking its workflows as being erased is one transaction, and finishing it
(forgetting the workflows, redacting their ids, appending the audit records)
is one more. Durable writes are fsync'd (``synchronous=FULL``) before the
caller goes on.

Tables:

- ``retention_policies``: per workflow type (or glob) and optional status.
- ``holds``: legal holds, by workflow id or by one attribute value; a
  released hold stays, with who released it and why.
- ``erasures``: erasures in progress (the intent: ids and the results of the
  steps done so far); the row is deleted when the erasure ends.
- ``audit_log``: one row per operation (:data:`tierflow.hot.rows.AUDIT`).
  ``workflow_id`` names a *live* workflow only (a hold, an export); when a
  workflow is erased or expires, every record naming it keeps only its
  ``subject_hash``, an HMAC-SHA256 of the id under the deployment's audit key.

The audit key is ``TIERFLOW_AUDIT_KEY`` (text, at least 16 bytes) or, when
that is unset, 32 random bytes created once in ``<data_dir>/audit.key``
(mode 0600, fsync'd with its directory). Losing the key loses the ability to
find an erased workflow's records by its id, nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tierflow.hot.durable_fs import fsync_dirs
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.index import IndexDB
from tierflow.hot.models import from_micros
from tierflow.hot.rows import AUDIT, names, sqlite_columns
from tierflow.hot.where import Where

__all__ = [
    "AUDIT_COLUMNS",
    "DDL",
    "KEY_ENV",
    "KEY_FILE",
    "AuditRecord",
    "ComplianceRecords",
    "has_pending_erasures",
]

KEY_ENV = "TIERFLOW_AUDIT_KEY"
"""Environment variable holding the audit key (text); else :data:`KEY_FILE` is used."""

KEY_FILE = "audit.key"
"""Name of the generated key file in the data directory."""

AUDIT_COLUMNS: tuple[str, ...] = names(AUDIT)
"""The columns of the ``audit`` SQL view and of the Iceberg ``tierflow.audit`` table."""

_MIN_KEY_BYTES = 16

DDL = f"""
CREATE TABLE IF NOT EXISTS retention_policies (
    workflow_type TEXT NOT NULL,
    status TEXT NOT NULL,
    keep_seconds REAL NOT NULL,
    keep TEXT NOT NULL,
    start_or_finish TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workflow_type, status)
) STRICT;
CREATE TABLE IF NOT EXISTS holds (
    hold_id TEXT PRIMARY KEY,
    workflow_id TEXT,
    subject_hash TEXT,
    attribute_name TEXT,
    attribute_value ANY,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    released_at INTEGER,
    released_by TEXT,
    release_reason TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS holds_active ON holds (released_at, workflow_id);
CREATE TABLE IF NOT EXISTS erasures (
    erasure_id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    created_at INTEGER NOT NULL,
    workflow_ids TEXT NOT NULL,
    requested TEXT NOT NULL,
    progress TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit_log (
{sqlite_columns(AUDIT, primary_key="seq")},
    workflow_id TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS audit_subject ON audit_log (subject_hash)
    WHERE subject_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_operation ON audit_log (operation, seq);
CREATE TABLE IF NOT EXISTS audit_published (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    upto INTEGER NOT NULL
) STRICT;
"""
"""The compliance tables (idempotent DDL, run by every :class:`ComplianceRecords`)."""

_SELECT = f"SELECT {', '.join(AUDIT_COLUMNS)}, workflow_id FROM audit_log"


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the audit log.

    Attributes:
        seq: Its position in the log (1, 2, ...).
        at: When it was recorded (aware, UTC).
        operation: ``retention.set``, ``retention.remove``, ``retention.apply``,
            ``retention.expire``, ``hold``, ``release``, ``erase``, ``export``.
        actor: Who did it.
        reason: Why, as given.
        workflow_id: The live workflow concerned (holds, exports); None once it
            is erased or expired, and for operations on no single workflow.
        subject_hash: The keyed hash of the workflow id concerned.
        counts: Counts, per tier where that applies (``hot``, ``warm``, ``cold``).
        snapshots_before: Cold table to its snapshot id before the operation.
        snapshots_after: Cold table to its snapshot id after it.
        detail: Operation-specific details.
    """

    seq: int
    at: datetime
    operation: str
    actor: str
    reason: str | None
    workflow_id: str | None
    subject_hash: str | None
    counts: dict[str, int]
    snapshots_before: dict[str, int | None]
    snapshots_after: dict[str, int | None]
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``at`` as ISO 8601 text."""
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


def _json(value: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(value or {}), sort_keys=True, separators=(",", ":"))


def _record(row: Sequence[Any]) -> AuditRecord:
    seq, at, op, actor, reason, subject, counts, before, after, detail, wid = row
    return AuditRecord(
        seq=seq,
        at=from_micros(at),
        operation=op,
        actor=actor,
        reason=reason,
        workflow_id=wid,
        subject_hash=subject,
        counts=json.loads(counts),
        snapshots_before=json.loads(before),
        snapshots_after=json.loads(after),
        detail=json.loads(detail),
    )


def has_pending_erasures(index: IndexDB) -> bool:
    """Whether an erasure was recorded and has not ended (cheap; creates nothing)."""
    rows = index.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='erasures'", ())
    return bool(rows) and bool(index.execute("SELECT 1 FROM erasures LIMIT 1", ()))


class ComplianceRecords:
    """The compliance tables of one index, and the audit key of one data directory.

    Args:
        index: The instance index (its connection writes the tables).
        data_dir: The data directory (home of the generated audit key).
    """

    def __init__(self, index: IndexDB, data_dir: Path) -> None:
        self.index = index
        self.data_dir = Path(data_dir)
        index.ensure_schema(DDL)
        self._key: bytes | None = None
        self._key_lock = threading.Lock()

    # -- the audit key -------------------------------------------------------------------

    @property
    def key(self) -> bytes:
        """The audit key (read or created on first use).

        Raises:
            InvalidArgument: ``TIERFLOW_AUDIT_KEY`` is shorter than 16 bytes.
            StorageError: The key file cannot be read or created, or is damaged.
        """
        with self._key_lock:
            if self._key is None:
                self._key = self._load_key()
            return self._key

    def _load_key(self) -> bytes:
        text = os.environ.get(KEY_ENV)
        if text:
            raw = text.encode()
            if len(raw) < _MIN_KEY_BYTES:
                raise InvalidArgument(
                    f"{KEY_ENV} must be at least {_MIN_KEY_BYTES} bytes (use 32 random bytes, "
                    "e.g. the output of `openssl rand -hex 32`)"
                )
            return raw
        path = self.data_dir / KEY_FILE
        try:
            if not path.exists():
                _create_key(path)
            key = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"audit key {path}: {exc}", url=str(path)) from exc
        if len(key) != 32:
            raise StorageError(
                f"audit key {path} is damaged ({len(key)} bytes, expected 32); restore it "
                f"from a backup or set {KEY_ENV}",
                url=str(path),
            )
        return key

    def subject_hash(self, workflow_id: str) -> str:
        """HMAC-SHA256 (hex) of a workflow id under the audit key."""
        return hmac.new(self.key, workflow_id.encode(), hashlib.sha256).hexdigest()

    # -- appending ------------------------------------------------------------------------

    def append(self, values: tuple[Any, ...]) -> AuditRecord:
        """Append one record built by :meth:`values`, durably (fsync'd), and return it.

        Raises:
            StorageError: The index cannot be written.
        """
        seq: int = self.index.write_now(lambda c: self.insert(c, [values])[0], durable=True)
        return self.get(seq)

    def values(
        self,
        operation: str,
        *,
        actor: str,
        reason: str | None,
        at_us: int,
        workflow_id: str | None = None,
        subject_hash: str | None = None,
        counts: Mapping[str, int] | None = None,
        snapshots_before: Mapping[str, int | None] | None = None,
        snapshots_after: Mapping[str, int | None] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        """One record's column values (without ``seq``), for :meth:`append` or :meth:`insert`.

        Args:
            operation: What was done (``"export"``, ...).
            actor: Who did it (non-empty).
            reason: Why.
            at_us: When, µs since the epoch.
            workflow_id: A *live* workflow the record concerns; its hash is
                recorded too, and the id is redacted if it is ever erased.
            subject_hash: The hash alone (for a workflow being forgotten).
            counts: Counts, per tier where that applies.
            snapshots_before: Cold table to snapshot id before the operation.
            snapshots_after: Cold table to snapshot id after it.
            detail: Operation-specific details (never an erased workflow's id).

        Raises:
            InvalidArgument: No actor, or a reason that is not text.
        """
        if not isinstance(actor, str) or not actor.strip():
            raise InvalidArgument("an actor is required: say who does this")
        if reason is not None and not isinstance(reason, str):
            raise InvalidArgument("reason must be text")
        if workflow_id is not None and subject_hash is None:
            subject_hash = self.subject_hash(workflow_id)
        return (
            at_us,
            operation,
            actor,
            reason,
            subject_hash,
            _json(counts),
            _json(snapshots_before),
            _json(snapshots_after),
            _json(detail),
            workflow_id,
        )

    @staticmethod
    def insert(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        """Inside a write transaction: append records (from :meth:`values`); their ``seq``."""
        cols = ", ".join((*AUDIT_COLUMNS[1:], "workflow_id"))
        marks = ",".join("?" * (len(AUDIT_COLUMNS)))
        out = []
        for row in rows:
            cur = conn.execute(f"INSERT INTO audit_log ({cols}) VALUES ({marks})", row)
            assert cur.lastrowid is not None
            out.append(int(cur.lastrowid))
        return out

    @staticmethod
    def redact(conn: sqlite3.Connection, workflow_ids: Sequence[str]) -> None:
        """Inside a write transaction: remove these ids from records and holds (keep hashes).

        The index runs with ``secure_delete``, so the old cells are overwritten.
        """
        for i in range(0, len(workflow_ids), 500):
            chunk = list(workflow_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            conn.execute(
                f"UPDATE audit_log SET workflow_id=NULL WHERE workflow_id IN ({marks})", chunk
            )
            conn.execute(f"UPDATE holds SET workflow_id=NULL WHERE workflow_id IN ({marks})", chunk)

    # -- reading --------------------------------------------------------------------------

    def get(self, seq: int) -> AuditRecord:
        """One record by its ``seq``.

        Raises:
            LookupError: No such record.
        """
        rows = self.index.execute(f"{_SELECT} WHERE seq=?", (seq,))
        if not rows:
            raise LookupError(f"no audit record {seq}")
        return _record(rows[0])

    def query(
        self,
        *,
        subject_hash: str | None = None,
        operation: str | None = None,
        since_us: int | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Records in ``seq`` order, filtered.

        Args:
            subject_hash: Only records about this workflow (its keyed hash).
            operation: Only this operation.
            since_us: Only records at or after this time (µs since the epoch).
            after_seq: Only records after this position.
            limit: At most this many.
        """
        where = Where()
        where.add("seq > ?", after_seq)
        where.equals("subject_hash", subject_hash)
        where.equals("operation", operation)
        where.between("at", since_us, None)
        rows = self.index.execute(
            f"{_SELECT}{where.sql} ORDER BY seq LIMIT ?", (*where.params, limit)
        )
        return [_record(r) for r in rows]

    def last_seq(self) -> int:
        """The newest record's ``seq`` (0 for an empty log)."""
        return int(self.index.execute("SELECT coalesce(max(seq), 0) FROM audit_log", ())[0][0])

    def rows_after(self, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
        """Raw records after ``after_seq`` (values of :data:`AUDIT_COLUMNS`), ``seq`` order."""
        return self.index.execute(
            f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )

    def published(self) -> int:
        """How far the Iceberg audit table is known to hold the log (a hint; 0 if never)."""
        rows = self.index.execute("SELECT upto FROM audit_published WHERE id = 1", ())
        return int(rows[0][0]) if rows else 0

    def note_published(self, upto: int) -> None:
        """Remember that the Iceberg audit table holds the log up to ``upto``."""
        self.index.write_now(
            lambda c: c.execute(
                "INSERT INTO audit_published VALUES (1, ?) ON CONFLICT (id) DO UPDATE "
                "SET upto = max(upto, excluded.upto)",
                (upto,),
            )
        )


def _create_key(path: Path) -> None:
    """Create the key file once: written and fsync'd aside, then linked into place.

    ``link`` fails if another process created the key first; that key wins,
    so every process of the data directory uses the same one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dirs([path.parent])
