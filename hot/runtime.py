"""What every part of one engine shares: settings, paths, the index, I/O threads.

The engine is split by what each part owns (``hot/instances.py`` runs
instances, ``hot/control.py`` changes them from outside, ``hot/reads.py``
answers reads, ``hot/scheduler.py`` decides when to run). They all work on
one :class:`Runtime`: the data directory's ``hot/`` part, the instance index,
the owner lock, the spare files and the I/O thread pool. It holds no
workflow logic, so every part can depend on it and none depends on another
through it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tierflow.hot import notify
from tierflow.hot.authoring import Registry
from tierflow.hot.clock import Clock, SystemClock
from tierflow.hot.errors import (
    StorageError,
    TierflowError,
    WorkflowAlreadyFinished,
    WorkflowNotFound,
)
from tierflow.hot.ids import validate_workflow_id
from tierflow.hot.index import IndexDB, IndexRow
from tierflow.hot.iothreads import IoThreads
from tierflow.hot.models import TERMINAL_STATUSES, to_micros
from tierflow.hot.options import Durability, EngineOptions
from tierflow.hot.recovery import OwnerLock, other_owners
from tierflow.hot.spares import SparePool
from tierflow.hot.store import InstanceFile

__all__ = ["Durability", "Runtime"]

_T = TypeVar("_T")

# Threads for SQLite work: fsyncs on different instance files overlap.
_IO_THREADS = 32


class Runtime:
    """Settings and resources of one engine, opened once and shared by its parts.

    Args:
        data_dir: Root of everything tierflow stores; ``hot/`` lives inside.
        registry: The workflow types this process can run.
        options: How the engine runs (validated when made).
        clock: Time source.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        registry: Registry,
        options: EngineOptions,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.hot_dir = self.data_dir / "hot"
        self.instances_dir = self.hot_dir / "instances"
        self._instances_prefix = f"{self.instances_dir}{os.sep}"
        self.quarantine_dir = self.hot_dir / "quarantine"
        self.owners_dir = self.hot_dir / "owners"
        self.registry = registry
        self.options = options
        self.durability: Durability = options.durability
        self.clock: Clock = clock or SystemClock()
        self.io_pool = IoThreads(_IO_THREADS, "tierflow-io")
        self._index: IndexDB | None = None
        self._spares: SparePool | None = None
        self._owner: OwnerLock | None = None
        self.closed = False
        # Whether other processes use this data directory (kept current by the
        # scheduler): only then must a new instance's file be readable by them
        # before its first step runs (see Instances).
        self.others_alive = True

    # -- lifecycle -------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """True once :meth:`open` has run."""
        return self._owner is not None

    def open(self) -> None:
        """Create directories, open the index and take an owner identity (idempotent)."""
        if self.closed:
            raise TierflowError("this engine has been closed")
        if self._owner is not None:
            return
        try:
            self.instances_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create {self.hot_dir}: {exc}", url=str(self.hot_dir)
            ) from exc
        self._index = IndexDB(self.hot_dir / "index.sqlite", self.durability)
        self._index.ensure_schema(notify.DDL)
        self._owner = OwnerLock.acquire(self.owners_dir)
        self.others_alive = other_owners(self.owners_dir, self._owner.owner_id) > 0
        self._spares = SparePool(self.instances_dir, self._owner.owner_id, self.durability)

    def close(self) -> None:
        """Wait for the I/O threads, then close the index, the spares and the owner lock."""
        self.closed = True
        self.io_pool.shutdown(wait=True)
        if self._index is not None:
            self._index.close()
        if self._spares is not None:
            self._spares.close()
        if self._owner is not None:
            self._owner.release()

    @property
    def owner_id(self) -> str:
        """This process's owner id (holder of leases)."""
        if self._owner is None:
            self.open()
        assert self._owner is not None
        return self._owner.owner_id

    @property
    def index(self) -> IndexDB:
        """The instance index (opened on first use)."""
        if self._index is None:
            self.open()
        assert self._index is not None
        return self._index

    # -- shared helpers --------------------------------------------------------------

    async def io(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on an I/O thread and return its result."""
        return await self.io_pool.call(fn, *args)

    def now_us(self) -> int:
        """Current engine time in µs since the epoch."""
        return to_micros(self.clock.now())

    def path(self, workflow_id: str) -> Path:
        """Return the instance file of ``workflow_id`` as the index records it.

        Raises:
            FileNotFoundError: The instance has no file (queued, or unknown).
        """
        row = self.index.get(workflow_id)
        if row is None or row.file is None:
            raise FileNotFoundError(f"no instance file for {workflow_id!r}")
        return self.instances_dir / row.file

    def rel(self, inst: InstanceFile) -> str:
        """The name the index records for an instance file."""
        # A string slice: Path.relative_to cost ~2 % of the loop's CPU per workflow.
        path, prefix = str(inst.path), self._instances_prefix
        if path.startswith(prefix):
            return path[len(prefix) :]
        return str(inst.path.relative_to(self.instances_dir))

    async def take_spare(self) -> InstanceFile:
        """Take a ready-made empty instance file (made on an I/O thread if none waits)."""
        self.open()
        assert self._spares is not None
        spares = self._spares
        ready = spares.take_ready()  # usually one is waiting: no thread hop
        if ready is not None:
            return ready
        return await self.io(spares.make)

    def give_back(self, spare: InstanceFile) -> None:
        """Return an unused spare file to the pool."""
        assert self._spares is not None
        self._spares.give_back(spare)

    def knows(self, workflow_type: str) -> bool:
        """True if this process can run instances of ``workflow_type``."""
        return self.registry.get(workflow_type) is not None

    def announce_fn(
        self,
        workflow_id: str,
        workflow_type: str,
        kind: notify.ChangeKind,
        detail: str | None = None,
    ) -> Callable[[sqlite3.Connection], None]:
        """A write job telling other processes about a change (see ``hot/notify.py``)."""
        origin, at, index = self.owner_id, self.now_us(), self.index

        def fn(conn: sqlite3.Connection) -> None:
            notify.record(
                conn, workflow_id, workflow_type, kind, origin=origin, at_us=at, detail=detail
            )
            index.ring_after_commit()  # wakes the other processes once it is visible

        return fn

    def row_or_raise(self, workflow_id: str) -> IndexRow:
        """Return the index row of ``workflow_id``.

        Raises:
            InvalidWorkflowId: Malformed id.
            WorkflowNotFound: No such instance.
        """
        validate_workflow_id(workflow_id)
        row = self.index.find(workflow_id)  # one being erased is already gone for readers
        if row is None:
            raise WorkflowNotFound(f"no workflow with id {workflow_id!r}", workflow_id=workflow_id)
        return row

    def live_row_or_raise(self, workflow_id: str) -> IndexRow:
        """Like :meth:`row_or_raise`, and raise ``WorkflowAlreadyFinished`` if it has ended."""
        row = self.row_or_raise(workflow_id)
        if row.status in TERMINAL_STATUSES:
            raise WorkflowAlreadyFinished(
                f"workflow {workflow_id!r} has already finished ({row.status})",
                workflow_id=workflow_id,
                status=row.status,
            )
        return row
