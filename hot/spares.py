"""Spare instance files: empty, durable and open, made ahead of need.

Creating a file, opening SQLite on it and starting its WAL is most of the cost
of a new instance; a background thread does it ahead of time, in batches made
durable with one filesystem sync each (``hot/durable_fs.py``). Spares a dead
process left are removed at the next start (:func:`remove_orphan_spares`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from tierflow.hot.durable_fs import sync_batch, syncfs_covers
from tierflow.hot.errors import StorageError
from tierflow.hot.store import InstanceFile, delete_instance_file, template_image

__all__ = ["SparePool", "remove_orphan_spares", "write_template"]


def write_template(path: Path, *, sync: bool = False) -> None:
    """Write an empty instance database at ``path``; fail if it exists.

    ``sync`` fsyncs its data now, through this descriptor: once SQLite has the
    file open, this process must never open and close it again (that would
    drop SQLite's locks; see ``durable_fs.sync_batch``).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, template_image())
        if sync:
            os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise StorageError(f"cannot create {path}: {exc}", url=str(path)) from exc
    os.close(fd)


class SparePool:
    """Empty instance files, opened and ready, made ahead of need by a background thread.

    Creating a file, opening SQLite on it and setting up its WAL and shared
    memory is most of the cost of a new instance; doing it ahead of time takes
    it off the start path. A spare is created at its final location with a
    random name (``<owner>-<random>.sqlite``): workflow ids never become paths,
    and the index records which file holds which instance. Spares left by a
    process that died are removed at the next start (see :func:`remove_orphan_spares`).

    Args:
        instances_dir: Root of the instance files.
        owner_id: Prefix of the file names, so orphans can be found by owner.
        durability: ``"full"`` or ``"normal"`` for the connections.
        size: How many spares to keep ready.
    """

    def __init__(self, instances_dir: Path, owner_id: str, durability: str, size: int = 32) -> None:
        self.instances_dir = instances_dir
        self.owner_id = owner_id
        self.durability = durability
        self.size = size
        self._ready: list[InstanceFile] = []
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stop = False
        self._wanted.set()
        self._thread = threading.Thread(target=self._fill, name="tierflow-spares", daemon=True)
        self._thread.start()

    def make(self) -> InstanceFile:
        """Create one durable spare now (on the calling thread)."""
        return self.make_batch(1)[0]

    def make_batch(self, n: int) -> list[InstanceFile]:
        """Create ``n`` spares and make them durable together (one filesystem sync)."""
        made: list[InstanceFile] = []
        full = self.durability == "full"
        # One syncfs covers the batch, or else each template is synced as it is
        # written, before SQLite opens it (never after: see sync_batch's ``held``).
        batched = full and syncfs_covers(2 * n)
        try:
            for _ in range(n):
                token = os.urandom(8).hex()
                path = self.instances_dir / token[:2] / f"{self.owner_id}-{token}.sqlite"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_template(path, sync=full and not batched)
                inst = InstanceFile(path, InstanceFile.connect(path, "off"))
                made.append(inst)
                # A first write starts the WAL (its header), so the instance's first
                # real commit only appends frames. Starting a WAL inside a commit
                # costs a WAL fdatasync and a directory fsync even at NORMAL, and
                # that commit runs on the event loop: ~0.4 ms of every workflow.
                # The write must dirty a page: SQLite writes nothing for an UPDATE
                # that leaves a row as it was (``version = version`` did that, and
                # every spare's WAL stayed empty). Setting the header's
                # user_version, even to its own value, always writes page 1: one
                # statement where two UPDATEs in a transaction took four.
                # (Preallocating WAL space so commits overwrite rather than append
                # was tried: the extra bytes each batch sync must flush cost more
                # than the cheaper commits saved.)
                inst.conn.execute("PRAGMA user_version=0")
            if self.durability == "full":
                # Template, WAL and directory entries of the whole batch in one journal
                # commit, instead of three fsyncs per file.
                sync_batch(
                    self.instances_dir,
                    [q for i in made for q in (i.path, Path(f"{i.path}-wal"))],
                    held=[i.path for i in made],
                )
            for inst in made:
                inst.made_durable(self.durability)
        except BaseException as exc:
            for inst in made:
                inst.close()
                delete_instance_file(inst.path)
            if isinstance(exc, OSError):
                raise StorageError(
                    f"cannot make instance files in {self.instances_dir}: {exc}",
                    url=str(self.instances_dir),
                ) from exc
            raise
        return made

    def take_ready(self) -> InstanceFile | None:
        """Return a ready spare (now the caller's) without blocking, or None."""
        with self._lock:
            inst = self._ready.pop() if self._ready else None
            low = len(self._ready) <= self.size // 2
        if low:  # waking the filler on every take cost two context switches per start
            self._wanted.set()
        return inst

    def take(self) -> InstanceFile:
        """Return a spare (now the caller's), making one if none is ready."""
        inst = self.take_ready()
        return inst if inst is not None else self.make()

    def give_back(self, inst: InstanceFile) -> None:
        """Return an unused spare to the pool."""
        with self._lock:
            self._ready.append(inst)

    def _fill(self) -> None:
        while not self._stop:
            self._wanted.wait()
            self._wanted.clear()
            while not self._stop:
                with self._lock:
                    ready = len(self._ready)
                # Refill at half full, in one batch: one filesystem sync per
                # size/2 spares rather than one per spare taken.
                if ready > self.size // 2:
                    break
                missing = self.size - ready
                try:
                    batch = self.make_batch(missing)
                except (OSError, sqlite3.Error, StorageError):
                    time.sleep(0.5)
                    break
                with self._lock:
                    self._ready.extend(batch)

    def close(self) -> None:
        """Stop the filler and delete unused spares."""
        self._stop = True
        self._wanted.set()
        self._thread.join()
        with self._lock:
            for inst in self._ready:
                inst.close()
                delete_instance_file(inst.path)
            self._ready.clear()


def remove_orphan_spares(instances_dir: Path, owner_id: str, referenced: set[str]) -> int:
    """Delete spares of a dead owner that no instance ever used; return how many."""
    removed = 0
    for path in instances_dir.glob(f"*/{owner_id}-*.sqlite"):
        rel = str(path.relative_to(instances_dir))
        if rel in referenced:
            continue
        try:
            conn = sqlite3.connect(path)
            try:
                used = conn.execute("SELECT count(*) FROM instance").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            # A spare cut short while its template was being written (the owner was
            # killed mid-write) is shorter than the template: garbage. Anything else
            # unreadable is left for an operator to look at.
            try:
                partial = path.stat().st_size < len(template_image())
            except OSError:
                continue
            if not partial:
                continue
            used = 0
        if used == 0:
            delete_instance_file(path)
            removed += 1
    return removed
