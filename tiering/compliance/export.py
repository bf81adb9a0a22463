"""Verified export of one workflow: its row, every event, and a manifest of checksums.

An export is a directory holding exactly three files:

- ``workflow.json``: the workflow's row (``WorkflowInfo.to_dict()``, ``tier`` included);
- ``events.jsonl``: every event of its history in order, one JSON object per line
  (``HistoryEvent.to_dict()``);
- ``manifest.json``: the name, SHA-256 and size of the two files above; the workflow
  id, its status, the tier it was read from and, for the cold tier, the snapshot of
  each Iceberg table then current; the tierflow version and the time of the export;
  and ``manifest_sha256``, the SHA-256 of the manifest's own content, so that a
  change to the manifest is found as a change to the manifest (and not blamed on the
  file whose checksum it altered).

:func:`verify_export` re-hashes the files, refuses a missing or an extra one, and,
given the ``Tierflow`` the export came from, compares the exported row and events
with what the archive holds now. Every problem found is named, file first, in one
:class:`~tierflow.hot.errors.ExportVerificationError`.

The manifest is checked, not signed: someone who rewrites a file and recomputes
the checksums passes the file checks, and only the comparison with the archive
finds the change.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from tierflow.hot.durable_fs import DurableFiles
from tierflow.hot.errors import ExportVerificationError, InvalidArgument, WorkflowNotFound
from tierflow.hot.models import TERMINAL_STATUSES, HistoryEvent, WorkflowInfo, from_micros
from tierflow.hot.router import Tier

if TYPE_CHECKING:  # verifying an export's files needs neither pyiceberg nor the engine
    from tierflow.cold.catalog import ColdTables
    from tierflow.hot.engine import Engine
    from tierflow.hot.index import IndexDB

__all__ = [
    "EVENTS_FILE",
    "FORMAT",
    "MANIFEST_FILE",
    "WORKFLOW_FILE",
    "ExportManifest",
    "ExportSource",
    "ExportedFile",
    "export_workflow",
    "tierflow_version",
    "verify_export",
]

WORKFLOW_FILE = "workflow.json"
EVENTS_FILE = "events.jsonl"
MANIFEST_FILE = "manifest.json"
FORMAT = 1
"""Version of the export layout, written into every manifest."""

_COLD_TABLES = ("workflows", "history")
# A workflow that moves to another tier between the reads of its row and its
# events is read again; twice more is plenty, as each move takes a tiering pass.
_READ_ATTEMPTS = 3

_T = TypeVar("_T")


class ExportSource(Protocol):
    """What an export reads through: the ``Tierflow`` facade provides all of it."""

    @property
    def engine(self) -> Engine:
        """The hot engine (its clock dates the export)."""
        ...

    @property
    def index(self) -> IndexDB:
        """The instance index (which tier holds the workflow)."""
        ...

    @property
    def cold(self) -> ColdTables:
        """The cold Iceberg tables (their current snapshots)."""
        ...

    async def describe(self, workflow_id: str) -> WorkflowInfo:
        """The workflow's row, from whichever tier holds it."""
        ...

    async def history(self, workflow_id: str) -> list[HistoryEvent]:
        """Every event of the workflow, in order, from whichever tier holds it."""
        ...


@dataclass(frozen=True)
class ExportedFile:
    """One file of an export, as its manifest lists it.

    Attributes:
        name: The file's name in the export directory.
        sha256: SHA-256 of its bytes, hex.
        size: Its size in bytes.
    """

    name: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (the manifest's entry)."""
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class ExportManifest:
    """What an export holds and where it was read from (``manifest.json``).

    Attributes:
        directory: The export's directory.
        workflow_id: The exported workflow.
        status: Its status when exported; the events of an unfinished workflow
            are the first ones of its history.
        tier: The tier its row and events were read from.
        cold_snapshot_id: The current snapshot of the cold ``history`` table
            when the events were read from cold; None for the other tiers.
        cold_snapshots: The current snapshot of each cold table, by table name,
            when read from cold; empty for the other tiers.
        events: How many events ``events.jsonl`` holds.
        tierflow_version: The version of tierflow that wrote the export.
        exported_at: When it was written.
        files: The two data files with their checksums and sizes.
    """

    directory: Path
    workflow_id: str
    status: str
    tier: str
    cold_snapshot_id: int | None
    cold_snapshots: dict[str, int | None]
    events: int
    tierflow_version: str
    exported_at: datetime
    files: tuple[ExportedFile, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy: the manifest's fields plus ``directory``."""
        return {"directory": str(self.directory), **self._content()}

    def _content(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "workflow_id": self.workflow_id,
            "status": self.status,
            "tier": self.tier,
            "cold_snapshot_id": self.cold_snapshot_id,
            "cold_snapshots": dict(self.cold_snapshots),
            "events": self.events,
            "tierflow_version": self.tierflow_version,
            "exported_at": self.exported_at.isoformat(),
            "files": [f.to_dict() for f in self.files],
        }

    def to_json(self) -> bytes:
        """The bytes of ``manifest.json``: the content, sealed with its own SHA-256."""
        content = self._content()
        return _render({**content, "manifest_sha256": _sha256(_canonical(content))})


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(obj: Any) -> bytes:
    """The one byte form of ``obj`` that checksums are taken over."""
    return _ENCODER.encode(obj).encode()


def _render(manifest: dict[str, Any]) -> bytes:
    """The bytes of ``manifest.json`` (readable, and still one form only)."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_FIELDS = {kind: tuple(f.name for f in fields(kind)) for kind in (HistoryEvent, WorkflowInfo)}


def _plain(row: HistoryEvent | WorkflowInfo) -> dict[str, Any]:
    """``row.to_dict()`` without its deep copy (a tenth of an export's time otherwise).

    Shallow is safe here: the dict is serialised at once and never kept.
    """
    out = {}
    for name in _FIELDS[type(row)]:
        value = getattr(row, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _event_line(event: HistoryEvent) -> bytes:
    return _canonical(_plain(event)) + b"\n"


@functools.cache
def tierflow_version() -> str:
    """The installed tierflow's version ("unknown" when it runs from an uninstalled tree)."""
    try:
        return metadata.version("tierflow")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- export ------------------------------------------------------------------------------


async def export_workflow(
    tf: ExportSource,
    workflow_id: str,
    out_dir: str | os.PathLike[str],
    *,
    now: float | datetime | None = None,
) -> ExportManifest:
    """Write ``workflow_id``'s row, every event and a manifest into ``out_dir``.

    The row and the events are read through ``tf`` from whichever tier holds
    the workflow, both from the same tier: a workflow that another process
    moves between the two reads is read again. Each file is fsync'd under a
    temporary name and renamed into place; ``manifest.json`` comes last, after
    the other two are durable, so a directory with a manifest holds a complete
    export.

    Args:
        tf: The ``Tierflow`` to read through.
        workflow_id: The workflow to export.
        out_dir: A directory that does not exist yet or is empty (created with
            its missing parents).
        now: The time to record as ``exported_at`` (seconds since the epoch or
            an aware datetime); default the engine's clock.

    Returns:
        The manifest written.

    Raises:
        WorkflowNotFound: No workflow has that id.
        InvalidArgument: ``out_dir`` is a file or a directory that is not empty.
        StorageError: A tier cannot be read, or the files cannot be written.
    """
    directory = Path(out_dir)
    _check_empty(directory)
    exported_at = _when(now, tf.engine)
    info, events, snapshots = await _read_row_and_events(tf, workflow_id)
    # Serialising 1,000 events takes ~10 ms of CPU: off the event loop, with the writes.
    return await tf.engine.io(_write, directory, info, events, snapshots, exported_at)


def _check_empty(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise InvalidArgument(f"export directory {directory} is a file")
    if directory.is_dir() and any(directory.iterdir()):
        raise InvalidArgument(
            f"export directory {directory} is not empty: export into a new or empty directory"
        )


def _when(now: float | datetime | None, engine: Engine) -> datetime:
    if now is None:
        return from_micros(engine.now_us())
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise InvalidArgument("now must be an aware datetime (or seconds since the epoch)")
        return now.astimezone(UTC)
    return datetime.fromtimestamp(now, UTC)


async def _read_row_and_events(
    tf: ExportSource, workflow_id: str
) -> tuple[WorkflowInfo, list[HistoryEvent], dict[str, int | None]]:
    for _ in range(_READ_ATTEMPTS):
        before = tf.index.get(workflow_id)
        if before is None:
            raise WorkflowNotFound(f"no workflow {workflow_id!r}", workflow_id=workflow_id)
        # Two reads of two tables (two files on S3): at once.
        info, events = await asyncio.gather(tf.describe(workflow_id), tf.history(workflow_id))
        snapshots: dict[str, int | None] = {}
        if info.tier == Tier.COLD:
            snapshots = await tf.engine.io(_cold_snapshots, tf.cold)
        after = tf.index.get(workflow_id)
        moved = after is None or (before.tier, before.batch_id) != (after.tier, after.batch_id)
        if not moved and info.tier == before.tier:
            return info, events, snapshots
    raise InvalidArgument(
        f"workflow {workflow_id!r} kept moving between tiers while it was exported; "
        "export it again once tiering is done",
        workflow_id=workflow_id,
    )


def _cold_snapshots(cold: ColdTables) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name in _COLD_TABLES:
        snap = cold.table(name).current_snapshot()
        out[name] = None if snap is None else snap.snapshot_id
    return out


def _write(
    directory: Path,
    info: WorkflowInfo,
    events: list[HistoryEvent],
    snapshots: dict[str, int | None],
    exported_at: datetime,
) -> ExportManifest:
    row = _canonical(_plain(info)) + b"\n"
    lines = b"".join(_event_line(e) for e in events)
    manifest = ExportManifest(
        directory=directory,
        workflow_id=info.workflow_id,
        status=info.status,
        tier=info.tier,
        cold_snapshot_id=snapshots.get("history"),
        cold_snapshots=snapshots,
        events=len(events),
        tierflow_version=tierflow_version(),
        exported_at=exported_at,
        files=(
            ExportedFile(WORKFLOW_FILE, _sha256(row), len(row)),
            ExportedFile(EVENTS_FILE, _sha256(lines), len(lines)),
        ),
    )
    files = DurableFiles()
    files.put(directory / WORKFLOW_FILE, row)
    files.put(directory / EVENTS_FILE, lines)
    files.sync()  # both data files are durable before the manifest that vouches for them
    files.put(directory / MANIFEST_FILE, manifest.to_json())
    files.sync()
    return manifest


# -- verification ------------------------------------------------------------------------


def verify_export(
    directory: str | os.PathLike[str], tf: ExportSource | None = None
) -> ExportManifest:
    """Check an export: every file as the manifest lists it, none missing, none added.

    Checks, in order: ``manifest.json`` reads, is in the form tierflow writes
    and matches its own ``manifest_sha256``; the directory holds exactly the
    files the manifest lists, plus the manifest; each has the listed size and
    SHA-256; ``workflow.json`` and ``events.jsonl`` are the workflow and the
    number of events the manifest names. Given ``tf``, the row and the events
    are then compared with what the archive holds now (for an export of a
    workflow that had not finished, its events must be the first ones of the
    history, and the row is not compared).

    Blocking (it reads files and, given ``tf``, the archive). Call it from the
    thread that runs ``tf``'s event loop, which it blocks while it reads (the
    reads run on a thread with an event loop of their own), or from code with
    no event loop at all.

    Args:
        directory: The export's directory.
        tf: The ``Tierflow`` to compare the events with; None checks the files only.

    Returns:
        The manifest, read from ``manifest.json``.

    Raises:
        ExportVerificationError: Something differs; the message names every
            file concerned (``.files``) and what is wrong (``.problems``).
        StorageError: The archive cannot be read.
    """
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        _fail(root, [(str(root), f"the export directory {what}")])
    manifest, problems = _check_manifest(root)
    if manifest is None:
        _fail(root, problems)
    problems += _check_listing(root, manifest)
    problems += _check_files(root, manifest)
    if not problems:
        problems += _check_contents(root, manifest)
    if not problems and tf is not None:
        problems += _run_sync(lambda: _check_archive(root, manifest, tf))
    if problems:
        _fail(root, problems, manifest.workflow_id)
    return manifest


Problems = list[tuple[str, str]]


def _fail(root: Path, problems: Problems, workflow_id: str | None = None) -> NoReturn:
    files = tuple(dict.fromkeys(name for name, _ in problems))
    lines = tuple(f"{name}: {what}" for name, what in problems)
    raise ExportVerificationError(
        f"export {root} does not verify: " + "; ".join(lines),
        workflow_id=workflow_id,
        directory=str(root),
        files=files,
        problems=lines,
    )


def _check_manifest(root: Path) -> tuple[ExportManifest | None, Problems]:
    path = root / MANIFEST_FILE
    if path.is_symlink() or not path.is_file():
        return None, [(MANIFEST_FILE, "missing (or not a regular file)")]
    data = path.read_bytes()
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        seal = raw.pop("manifest_sha256")
        if data != _render({**raw, "manifest_sha256": seal}):
            return None, [(MANIFEST_FILE, "changed: not in the form tierflow writes")]
        if seal != _sha256(_canonical(raw)):
            return None, [(MANIFEST_FILE, "changed: its content does not match manifest_sha256")]
        manifest = _manifest_of(root, raw)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        return None, [(MANIFEST_FILE, f"unreadable: {type(exc).__name__}: {exc}")]
    return manifest, []


def _manifest_of(root: Path, raw: dict[str, Any]) -> ExportManifest:
    if raw["format"] != FORMAT:
        raise ValueError(f"format {raw['format']!r}; this tierflow reads format {FORMAT}")
    files = tuple(
        ExportedFile(str(f["name"]), str(f["sha256"]), int(f["size"])) for f in raw["files"]
    )
    names = [f.name for f in files]
    if sorted(names) != sorted([WORKFLOW_FILE, EVENTS_FILE]):
        raise ValueError(f"it lists {names}, not {WORKFLOW_FILE} and {EVENTS_FILE}")
    snapshots = raw["cold_snapshots"]
    return ExportManifest(
        directory=root,
        workflow_id=str(raw["workflow_id"]),
        status=str(raw["status"]),
        tier=str(raw["tier"]),
        cold_snapshot_id=raw["cold_snapshot_id"],
        cold_snapshots={str(k): v for k, v in snapshots.items()},
        events=int(raw["events"]),
        tierflow_version=str(raw["tierflow_version"]),
        exported_at=datetime.fromisoformat(raw["exported_at"]),
        files=files,
    )


def _check_listing(root: Path, manifest: ExportManifest) -> Problems:
    expected = {f.name for f in manifest.files} | {MANIFEST_FILE}
    present = {p.name for p in root.iterdir()}
    return [(name, "missing") for name in sorted(expected - present)] + [
        (name, "extra: not listed in the manifest") for name in sorted(present - expected)
    ]


def _check_files(root: Path, manifest: ExportManifest) -> Problems:
    problems: Problems = []
    for f in manifest.files:
        path = root / f.name
        if not path.exists() and not path.is_symlink():
            continue  # reported as missing
        if path.is_symlink() or not path.is_file():
            problems.append((f.name, "changed: not a regular file"))
            continue
        data = path.read_bytes()
        if len(data) != f.size:
            problems.append((f.name, f"changed: {len(data)} bytes, the manifest says {f.size}"))
        elif _sha256(data) != f.sha256:
            problems.append((f.name, "changed: its SHA-256 differs from the manifest's"))
    return problems


def _read_events(root: Path) -> list[Any]:
    return [json.loads(line) for line in (root / EVENTS_FILE).read_bytes().splitlines()]


def _check_contents(root: Path, manifest: ExportManifest) -> Problems:
    # The checksums matched, so these files are the ones exported; this catches an
    # export whose manifest and files were rewritten together, inconsistently.
    problems: Problems = []
    try:
        row = json.loads((root / WORKFLOW_FILE).read_bytes())
        if row.get("workflow_id") != manifest.workflow_id:
            problems.append((WORKFLOW_FILE, f"is not the row of {manifest.workflow_id!r}"))
    except (ValueError, AttributeError) as exc:
        problems.append((WORKFLOW_FILE, f"unreadable: {exc}"))
    try:
        events = _read_events(root)
        if len(events) != manifest.events:
            problems.append(
                (EVENTS_FILE, f"holds {len(events)} events, the manifest says {manifest.events}")
            )
        if any(e.get("workflow_id") != manifest.workflow_id for e in events):
            problems.append(
                (EVENTS_FILE, f"holds events of another workflow than {manifest.workflow_id!r}")
            )
    except (ValueError, AttributeError) as exc:
        problems.append((EVENTS_FILE, f"unreadable: {exc}"))
    return problems


async def _check_archive(root: Path, manifest: ExportManifest, tf: ExportSource) -> Problems:
    wid = manifest.workflow_id
    try:
        info, archived = await asyncio.gather(tf.describe(wid), tf.history(wid))
    except WorkflowNotFound:
        return [(EVENTS_FILE, f"the archive holds no workflow {wid!r} (erased or expired?)")]
    problems: Problems = []
    # Both sides in the one byte form events.jsonl is written in (its checksum held).
    exported = (root / EVENTS_FILE).read_bytes().splitlines(keepends=True)
    now = [_event_line(e) for e in archived]
    finished = manifest.status in TERMINAL_STATUSES
    if finished and len(now) != len(exported):
        problems.append((EVENTS_FILE, f"holds {len(exported)} events, the archive {len(now)} now"))
    elif len(now) < len(exported):
        problems.append(
            (EVENTS_FILE, f"holds {len(exported)} events, the archive only {len(now)} now")
        )
    first = next((i for i, (a, b) in enumerate(zip(exported, now, strict=False)) if a != b), None)
    if first is not None:
        event_id = json.loads(exported[first]).get("event_id", first + 1)
        problems.append((EVENTS_FILE, f"event {event_id} differs from the archive's"))
    if finished:
        row = json.loads((root / WORKFLOW_FILE).read_bytes())
        current = json.loads(_canonical(_plain(info)))
        row.pop("tier", None)  # the workflow may have moved to another tier since
        current.pop("tier", None)
        if row != current:
            fields = sorted(k for k in row.keys() | current.keys() if row.get(k) != current.get(k))
            problems.append((WORKFLOW_FILE, f"differs from the archive's row in {fields}"))
    return problems


def _run_sync(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, inside a running event loop or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # The caller's loop is blocked while this waits, so the reads run alone.
    with ThreadPoolExecutor(1, thread_name_prefix="tierflow-verify") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
