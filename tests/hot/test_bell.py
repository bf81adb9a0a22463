"""The index's bell: announcements wake other processes; plain commits wake nobody.

Processes learn of each other's changes (work queued, signals, cancels) from the
change feed; an inotify watch on the index's bell wakes them (``hot/wakeup.py``).
The bell rings once an announcing transaction has committed, and only then, so a
process's own index writes (two per workflow) cost no other process anything.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from tierflow.hot.index import IndexDB
from tierflow.hot.wakeup import IndexWatcher

pytestmark = pytest.mark.timeout(30)


def _plain(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE schema_version SET version = version + 0")


def _announcing(index: IndexDB) -> object:
    def fn(conn: sqlite3.Connection) -> None:
        _plain(conn)
        index.ring_after_commit()

    return fn


def _failing(index: IndexDB) -> object:
    def fn(conn: sqlite3.Connection) -> None:
        index.ring_after_commit()
        raise ValueError("the transaction is rolled back")

    return fn


def test_only_a_committed_announcement_rings_the_bell(tmp_path: Path) -> None:
    index = IndexDB(tmp_path / "index.sqlite")
    try:
        bell = index.bell_path
        before = bell.stat().st_mtime_ns, bell.stat().st_size
        for _ in range(20):
            index.write_now(_plain)
        with pytest.raises(ValueError):
            index.write_now(_failing(index))  # type: ignore[arg-type]
        index.write_now(_plain)  # the rolled-back request does not carry over
        assert (bell.stat().st_mtime_ns, bell.stat().st_size) == before
        index.write_now(_announcing(index))  # type: ignore[arg-type]
        assert bell.stat().st_mtime_ns != before[0]
        assert bell.stat().st_size == 1  # rung in place: it never grows
    finally:
        index.close()


async def test_a_ring_from_another_connection_wakes_the_watcher(tmp_path: Path) -> None:
    ours = IndexDB(tmp_path / "index.sqlite")
    theirs = IndexDB(tmp_path / "index.sqlite")  # another process's connection
    watcher = IndexWatcher(ours.bell_path, asyncio.get_running_loop())
    try:
        theirs.write_now(_announcing(theirs))  # type: ignore[arg-type]
        await asyncio.wait_for(watcher.event.wait(), timeout=10)
    finally:
        await asyncio.to_thread(watcher.close)
        ours.close()
        theirs.close()
