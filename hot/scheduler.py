"""The background scheduler: runs queued work, fires timers, recovers orphans.

It never polls instance files. Queued ids arrive from ``start`` in-process
(and from the index at start-up); timers live in a heap keyed by wake-up
time, loaded from the index at start-up and fed by every pause; orphaned
instances are found by checking owner locks (``hot/recovery.py``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import Any, Protocol

from tierflow.hot import serde
from tierflow.hot.index import INDEX_COLUMNS, IndexDB
from tierflow.hot.models import EventType, Status
from tierflow.hot.notify import Change, ChangeFeed
from tierflow.hot.records import EventRow
from tierflow.hot.recovery import find_dead_owners, other_owners
from tierflow.hot.rows import names
from tierflow.hot.runtime import Runtime
from tierflow.hot.spares import remove_orphan_spares
from tierflow.hot.store import INSTANCE_COLUMNS, IncompleteInstance, InstanceFile
from tierflow.hot.wakeup import IndexWatcher

__all__ = ["Runner", "Scheduler"]

log = logging.getLogger("tierflow.scheduler")

# The index columns an instance file restores after a machine crash: all it
# shares with the index except the input (the index keeps it only while
# queued) and the cancel flag (mirrored again by the next cancel).
_RECONCILED = tuple(
    c
    for c in INDEX_COLUMNS
    if c in names(INSTANCE_COLUMNS) and c not in ("input", "cancel_requested")
)

# Without inotify (not Linux), how often to check the index for changes other
# processes made (``hot/notify.py``): a PRAGMA of ~1 µs when nothing changed,
# but each wake-up of the loop costs ~0.15 ms here (~3 % of a core at 5 ms).
FEED_POLL_SECONDS = 0.005
# How often to look for owners that died (their lock files, ~10 µs each), so
# another process's instances are taken over within this long.
OWNER_CHECK_SECONDS = 0.25
# How often to prune old changes.
PRUNE_SECONDS = 30.0

# How often to look for instances leased to owners that died (other processes).
_ORPHAN_CHECK_SECONDS = 5.0


class Runner(Protocol):
    """What the scheduler drives (``hot/instances.py`` implements it)."""

    async def run_queued(self, workflow_id: str) -> None:
        """Claim a queued instance and run it."""
        ...

    async def run_due(self, workflow_id: str, *, recovered: bool = False) -> None:
        """Claim a paused (or orphaned) instance and resume it."""
        ...

    def is_active(self, workflow_id: str) -> bool:
        """True while this process executes ``workflow_id``."""
        ...

    async def mark_failed(self, workflow_id: str, reason: str, kind: str) -> None:
        """Record that ``workflow_id`` failed outside its code."""
        ...

    def apply_change(self, change: Change) -> None:
        """Act on a change another process made."""
        ...


class Scheduler:
    """Runs inside ``async with Engine(...)``; one per rt.

    Args:
        rt: The engine's shared runtime (index, clock, owner, settings).
        runner: Runs what the scheduler decides to run.
    """

    def __init__(self, rt: Runtime, runner: Runner) -> None:
        self.rt = rt
        self.runner = runner
        self._ready: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._timers: list[tuple[int, str]] = []
        self._timer_changed = asyncio.Event()
        self._sem = asyncio.Semaphore(rt.options.max_concurrency)
        self._loops: list[asyncio.Task[Any]] = []
        self._runs: set[asyncio.Task[Any]] = set()
        self._feed: ChangeFeed | None = None

    async def start(self) -> None:
        """Recover orphans, load queued work and timers, start the loops."""
        await self.recover_orphans(startup=True)
        idx = self.rt.index
        self._feed = ChangeFeed(idx, self.rt.owner_id)  # before the loads: nothing is missed
        for row in sorted(idx.by_status([Status.QUEUED.value]), key=lambda r: r.created_at):
            if self.rt.knows(row.workflow_type):  # others stay queued for who knows them
                self.enqueue(row.workflow_id)
        for wid, wake_at in idx.wakeups():
            heapq.heappush(self._timers, (wake_at, wid))
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._dispatch_loop()),
            loop.create_task(self._timer_loop()),
            loop.create_task(self._orphan_loop()),
            loop.create_task(self._feed_loop()),
        ]

    async def stop(self) -> None:
        """Stop the loops; running executions are stopped by the engine."""
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    def enqueue(self, workflow_id: str, kind: str = "queued") -> None:
        """Ask for ``workflow_id`` to be run (``queued``, ``due`` or ``recovered``)."""
        self._ready.put_nowait((workflow_id, kind))

    def add_timer(self, workflow_id: str, wake_at: int) -> None:
        """Wake ``workflow_id`` at ``wake_at`` (µs since the epoch)."""
        heapq.heappush(self._timers, (wake_at, workflow_id))
        self._timer_changed.set()

    @property
    def pending_timers(self) -> int:
        """Timers in the heap (including stale ones not yet popped)."""
        return len(self._timers)

    async def _dispatch_loop(self) -> None:
        while True:
            wid, kind = await self._ready.get()
            await self._sem.acquire()
            task = asyncio.get_running_loop().create_task(self._run(wid, kind))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)

    async def _run(self, wid: str, kind: str) -> None:
        try:
            if kind == "queued":
                await self.runner.run_queued(wid)
            else:
                await self.runner.run_due(wid, recovered=kind == "recovered")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduler failed to run %s", wid)
        finally:
            self._sem.release()

    async def _timer_loop(self) -> None:
        clock = self.rt.clock
        while True:
            self._timer_changed.clear()
            if not self._timers:
                await self._timer_changed.wait()
                continue
            wake_at, wid = self._timers[0]
            if wake_at <= self.rt.now_us():
                heapq.heappop(self._timers)
                self.enqueue(wid, "due")
                continue
            sleeper = asyncio.ensure_future(clock.sleep_until(wake_at / 1_000_000))
            changed = asyncio.ensure_future(self._timer_changed.wait())
            try:
                await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                changed.cancel()

    async def _feed_loop(self) -> None:
        """Act on what other processes change; notice dead owners within a fraction of a second.

        Woken by the index watch (``hot/wakeup.py``) when a process announces a change,
        and at least every :data:`OWNER_CHECK_SECONDS` to look for dead owners;
        without inotify it polls every :data:`FEED_POLL_SECONDS`.
        """
        feed = self._feed
        assert feed is not None
        rt = self.rt
        loop = asyncio.get_running_loop()
        watcher: IndexWatcher | None = None
        try:
            watcher = IndexWatcher(rt.index.bell_path, loop)
        except OSError as exc:
            log.info("no index watch (%s): polling every %.0f ms", exc, FEED_POLL_SECONDS * 1e3)
        next_owner_check = loop.time() + OWNER_CHECK_SECONDS
        next_prune = loop.time() + PRUNE_SECONDS
        try:
            while True:
                if watcher is not None:
                    # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow
                    # a cancellation that lands as the event is set, and stopping the
                    # scheduler then hangs (seen here, 1 run in ~3).
                    waiter = asyncio.ensure_future(watcher.event.wait())
                    try:
                        await asyncio.wait(
                            {waiter}, timeout=max(0.0, next_owner_check - loop.time())
                        )
                    finally:
                        waiter.cancel()
                    watcher.event.clear()
                else:
                    await asyncio.sleep(FEED_POLL_SECONDS)
                try:
                    # The bell rings after the commit: what woke us is visible now.
                    for change in feed.poll():
                        self.runner.apply_change(change)
                    now = loop.time()
                    if now >= next_owner_check:
                        next_owner_check = now + OWNER_CHECK_SECONDS
                        if self._owner_died():
                            await self.recover_orphans(startup=False)
                    if now >= next_prune:
                        next_prune = now + PRUNE_SECONDS
                        feed.prune(rt.now_us())
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("change feed poll failed")
        finally:
            if watcher is not None:
                await asyncio.to_thread(watcher.close)

    def _owner_died(self) -> bool:
        """True if some other owner's lock is free (its process is gone); cheap.

        Also notes whether any other process uses the data directory.
        """
        rt = self.rt
        dead, _ = find_dead_owners(rt.owners_dir, set(), rt.owner_id)
        rt.others_alive = other_owners(rt.owners_dir, rt.owner_id) > 0
        return bool(dead)

    async def _orphan_loop(self) -> None:
        while True:
            await asyncio.sleep(_ORPHAN_CHECK_SECONDS)
            try:
                await self.recover_orphans(startup=False)
            except Exception:
                log.exception("orphan check failed")

    async def recover_orphans(self, *, startup: bool) -> int:
        """Queue recovery of instances leased to dead owners; return how many."""
        rt = self.rt
        idx = rt.index
        running = idx.by_status([Status.RUNNING.value])
        owners = {r.lease_owner for r in running if r.lease_owner}
        dead, other_boot = find_dead_owners(rt.owners_dir, owners, rt.owner_id)
        if other_boot and startup:
            await self._reconcile_files()
            running = idx.by_status([Status.RUNNING.value])
        if dead:
            referenced = idx.all_files()
            for owner in dead:
                removed = await rt.io(remove_orphan_spares, rt.instances_dir, owner, referenced)
                if removed:
                    log.info("removed %d unused spare files of dead owner %s", removed, owner)
        count = 0
        for row in running:
            if row.lease_owner == rt.owner_id and self.runner.is_active(row.workflow_id):
                continue
            if (
                row.lease_owner is not None
                and row.lease_owner not in dead
                and not (startup and row.lease_owner == rt.owner_id)
            ):
                continue
            if not rt.knows(row.workflow_type):
                continue  # a process that knows the type recovers it
            count += 1
            attempts = row.recovery_count + 1
            if attempts > rt.options.max_recovery_attempts:
                await self._fail_unrecoverable(row.workflow_id, attempts - 1)
                continue
            # Durable: if recovering crashes the process again, the count must stick.
            # Conditional on the dead owner's lease: of several processes recovering
            # the same orphan, one takes it.
            taken = await idx.write(
                IndexDB.update_fn(
                    row.workflow_id,
                    {"recovery_count": attempts, "lease_owner": rt.owner_id},
                    only_if_status=[Status.RUNNING.value],
                    only_if_lease=row.lease_owner,
                ),
                durable=True,
            )
            if taken:
                self.enqueue(row.workflow_id, "recovered")
        return count

    async def _fail_unrecoverable(self, wid: str, attempts: int) -> None:
        rt = self.rt
        reason = (
            f"the process running this workflow died {attempts} times; "
            f"giving up after max_recovery_attempts={rt.options.max_recovery_attempts}"
        )
        now = rt.now_us()
        error = serde.encode({"type": "RecoveryExhausted", "message": reason}, what="error")
        path = rt.path(wid)

        def go() -> None:
            f = InstanceFile.open(path, durability=rt.durability)
            try:
                f.commit(
                    events=[
                        EventRow(
                            EventType.WORKFLOW_FAILED.value,
                            now,
                            None,
                            None,
                            serde.encode({"error": serde.decode(error)}, what="error"),
                        )
                    ],
                    updates={
                        "status": Status.FAILED.value,
                        "error": error,
                        "finished_at": now,
                        "wake_at": None,
                    },
                )
            finally:
                f.close()

        try:
            await rt.io(go)
        except Exception as exc:  # corrupt or missing: the index still records the failure
            log.error("could not record recovery failure in %s: %s", wid, exc)
        await self.runner.mark_failed(wid, reason, "RecoveryExhausted")

    async def _reconcile_files(self) -> None:
        """After a machine restart, re-add instance files the index lost.

        Index commits are ``synchronous=NORMAL``: power loss can drop a whole
        row, or roll a claimed instance back to ``queued`` with no file while
        its file holds fsync'd history. Both are rebuilt from the files, so no
        completed step runs again from a fresh file.
        """
        rt = self.rt
        known = rt.index.all_ids()
        found = repaired = 0
        for path in rt.instances_dir.glob("*/*.sqlite"):
            try:
                f = InstanceFile.open(path, durability=rt.durability)
                try:
                    row = f.read_row()
                finally:
                    f.close()
            except IncompleteInstance:
                continue  # a spare, or a first commit that never happened
            except Exception as exc:
                log.error("reconcile: cannot read %s: %s", path, exc)
                continue
            rel = str(path.relative_to(rt.instances_dir))
            wid = row["workflow_id"]
            if wid in known:
                current = rt.index.get(wid)
                if current is not None and current.file is None:
                    repaired += 1
                    changes = {"file": rel} | {k: row[k] for k in _RECONCILED if k != "workflow_id"}
                    await rt.index.write(
                        IndexDB.update_fn(wid, changes, only_if_no_file=True), durable=True
                    )
                continue
            found += 1
            index_row = {"file": rel} | {k: row[k] for k in _RECONCILED}
            await rt.index.write(IndexDB.insert_fn(index_row), durable=True)
        if found or repaired:
            log.warning(
                "reconcile: restored %d index rows and repaired %d from instance files",
                found,
                repaired,
            )
