"""What each snapshot of a cold table mentions: manifest lists, manifests, data files.

Erasure must find every snapshot that still names a file holding an erased
workflow, whatever the entry's status (a ``deleted`` entry keeps the file's
column bounds), and the files only those snapshots name. :class:`Lineage`
reads every snapshot's manifest list and manifests once per call (through a
:class:`ManifestCache`: they never change once written) and answers those
questions; it tolerates files an interrupted erasure already deleted. Only
:mod:`tierflow.cold.erase` uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.manifest import DataFile, DataFileContent, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from tierflow.hot.errors import StorageError

__all__ = ["Entries", "Lineage", "ManifestCache", "workflow_id_bounds"]

Entries = list[tuple[ManifestEntryStatus, DataFile]]
"""A manifest's entries: ``(status, data file)``."""

# Manifests read at once (object-store reads are mostly waiting).
_THREADS = 8


@dataclass
class ManifestCache:
    """Manifest lists and manifests of one table, each read once (they never change).

    Attributes:
        lists: Manifest-list path to its manifests (None: the file is gone).
        entries: Manifest path to its entries (None: the file is gone).
    """

    lists: dict[str, list[Any] | None] = field(default_factory=dict)
    entries: dict[str, Entries | None] = field(default_factory=dict)


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    if len(items) < 2:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


def _bound(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:  # a truncated multi-byte bound proves nothing
        return None


def workflow_id_bounds(f: DataFile, field_id: int) -> tuple[str | None, str | None]:
    """A data file's ``workflow_id`` lower and upper bound (None: unknown)."""
    return _bound((f.lower_bounds or {}).get(field_id)), _bound(
        (f.upper_bounds or {}).get(field_id)
    )


class Lineage:
    """Every file each snapshot of one table mentions (manifests read once, via ``cache``).

    Attributes:
        table: The table, as loaded.
        current: Its current snapshot id (None: empty).
        snapshots: Every snapshot its metadata lists, by id.
        lists: The manifest paths of each snapshot; None when its manifest list is gone.
        entries: ``(status, data file)`` of each manifest; None when the manifest is
            gone (an earlier, interrupted erasure deleted it).
        field_id: The ``workflow_id`` column's field id (for its bounds).
    """

    def __init__(self, table: Table, cache: ManifestCache) -> None:
        self.table = table
        meta = table.metadata
        self.current = meta.current_snapshot_id
        self.snapshots: dict[int, Snapshot] = {s.snapshot_id: s for s in meta.snapshots}
        self.lists: dict[int, list[str] | None] = {}
        self.entries = cache.entries
        self.field_id = table.schema().find_field("workflow_id").field_id
        io = table.io

        def manifests(snap: Snapshot) -> list[Any] | None:
            try:
                return list(snap.manifests(io))
            except (FileNotFoundError, OSError):
                return None

        unread = [s for s in self.snapshots.values() if s.manifest_list not in cache.lists]
        for snap, got in zip(unread, _parallel(manifests, unread), strict=True):
            cache.lists[snap.manifest_list] = got
        to_read: dict[str, Any] = {}
        for sid, snap in self.snapshots.items():
            found = cache.lists[snap.manifest_list]
            self.lists[sid] = None if found is None else [m.manifest_path for m in found]
            for m in found or ():
                if m.manifest_path not in cache.entries:
                    to_read.setdefault(m.manifest_path, m)

        def fetch(m: Any) -> Entries | None:
            try:
                found = m.fetch_manifest_entry(io, discard_deleted=False)
            except (FileNotFoundError, OSError):
                return None
            return [(e.status, e.data_file) for e in found]

        paths = sorted(to_read)
        for path, got in zip(paths, _parallel(fetch, [to_read[p] for p in paths]), strict=True):
            cache.entries[path] = got

    def live_files(self, dataset: str) -> list[DataFile]:
        """The data files the current snapshot reads.

        Raises:
            StorageError: A manifest of the current snapshot is missing, or the table
                has row-level delete files.
        """
        if self.current is None:
            return []
        manifests = self.lists.get(self.current)
        if manifests is None:
            raise StorageError(f"cold {dataset}: the current snapshot's manifest list is gone")
        out: list[DataFile] = []
        for m in manifests:
            entries = self.entries.get(m)
            if entries is None:
                raise StorageError(f"cold {dataset}: manifest {m} of the current snapshot is gone")
            for status, f in entries:
                if status == ManifestEntryStatus.DELETED:
                    continue
                if f.content != DataFileContent.DATA:
                    raise StorageError(
                        f"cold {dataset} has row-level delete files; erasure rewrites only "
                        "plain data files (tierflow never writes delete files)"
                    )
                out.append(f)
        return out

    def data_files(self) -> dict[str, DataFile]:
        """Every data file a manifest of a snapshot mentions (any status), by path."""
        out: dict[str, DataFile] = {}
        manifests = {m for ms in self.lists.values() for m in ms or ()}
        for m in sorted(manifests):
            for _, f in self.entries.get(m) or ():
                if f.content == DataFileContent.DATA:
                    out.setdefault(f.file_path, f)
        return out

    def live(self) -> set[str]:
        """Paths the current snapshot reads."""
        if self.current is None:
            return set()
        return {
            f.file_path
            for m in self.lists.get(self.current) or ()
            for status, f in self.entries.get(m) or ()
            if status != ManifestEntryStatus.DELETED
        }

    def mentions(self, sid: int, paths: Collection[str]) -> bool:
        """Whether snapshot ``sid`` mentions one of ``paths``, or cannot be read any more."""
        manifests = self.lists.get(sid)
        if manifests is None:
            return True  # its manifest list is gone: an interrupted erasure expired it
        for m in manifests:
            entries = self.entries.get(m)
            if entries is None or any(f.file_path in paths for _, f in entries):
                return True
        return False

    def current_mentions(self, paths: Collection[str]) -> bool:
        """Whether the current snapshot mentions one of ``paths`` (then seal before expiry)."""
        return self.current is not None and self.mentions(self.current, paths)

    def to_expire(self, held: Collection[str], dataset: str) -> list[int]:
        """The snapshots that mention a file that held an id (never the current one).

        Raises:
            StorageError: The current snapshot, or the head of a branch or tag other
                than ``main``, would have to go.
        """
        doomed = [sid for sid in sorted(self.snapshots) if self.mentions(sid, held)]
        if self.current in doomed:
            raise StorageError(
                f"cold {dataset}: the current snapshot {self.current} still mentions files "
                "that held erased rows after the seal; nothing was expired"
            )
        for name, ref in self.table.metadata.refs.items():
            if ref.snapshot_id in doomed:
                raise StorageError(
                    f"cold {dataset}: {name!r} points at snapshot {ref.snapshot_id}, which "
                    "holds erased rows; remove that branch or tag, then erase again"
                )
        return doomed

    def garbage(self, doomed: Collection[int]) -> list[set[str]]:
        """Files only ``doomed`` snapshots mention: data files, manifests, manifest lists.

        In the order they must be deleted, children before the files naming them.
        """
        doomed_set = set(doomed)

        def mentioned(sids: Collection[int]) -> tuple[set[str], set[str], set[str]]:
            data: set[str] = set()
            manifests: set[str] = set()
            lists: set[str] = set()
            for sid in sids:
                lists.add(self.snapshots[sid].manifest_list)
                for m in self.lists.get(sid) or ():
                    manifests.add(m)
                    data |= {f.file_path for _, f in self.entries.get(m) or ()}
            return data, manifests, lists

        gone = mentioned(doomed_set)
        kept = mentioned([s for s in self.snapshots if s not in doomed_set])
        return [g - k for g, k in zip(gone, kept, strict=True)]
