"""Shared fixtures: a Tierflow on a fresh data directory, with an injectable clock."""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tierflow import ManualClock, Tierflow

# The longest tests, with their wall seconds in a full `make test` (2 cores, 3 workers). Each
# xdist worker runs them first (see pytest_collection_modifyitems): left where collection puts
# them, one of them often started late and ran alone for the last 20-45 s of the suite while
# the other workers sat idle. A test missing from the collection (renamed) is simply not moved;
# a new long test belongs here.
SLOW_FIRST: tuple[tuple[str, float], ...] = (
    ("tests/tiering/test_sql_confinement.py::test_the_cli_never_aborts[0]", 36),
    ("tests/tiering/test_sql_confinement.py::test_the_cli_never_aborts[1]", 30),
    ("tests/tiering/test_cold.py::test_maintenance_after_many_small_cold_commits[s3]", 28),
    (
        "tests/tiering/test_cold.py::"
        "test_commit_size_bounds_each_commit_but_a_pass_takes_every_batch[s3]",
        24,
    ),
    ("tests/hot/test_processes.py::test_three_workers_share_500_and_survive_a_sigkill", 23),
    ("tests/hot/test_crash_recovery.py::test_thousand_sleepers_wake_after_process_restart", 19),
    ("tests/tiering/test_cold.py::test_cli_tier_to_warm_then_cold_and_cold_status[s3]", 18),
    ("tests/tiering/test_cold_crash.py::test_two_cold_move_processes_at_once[s3]", 18),
    ("tests/warm/test_format.py::test_histories_round_trip_unchanged", 17),
    (
        "tests/tiering/test_sql.py::"
        "test_each_workflow_once_while_another_process_moves_them_to_warm_and_cold[s3]",
        16,
    ),
    ("tests/tiering/test_sql_confinement.py::test_memory_limit_holds_in_a_subprocess[nested]", 15),
    (
        "tests/hot/test_roundtrip_property.py::"
        "test_property_every_kind_of_record_reads_back_unchanged",
        14,
    ),
    ("tests/tiering/test_sql.py::test_cli_sql_formats_and_refusals", 13),
)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker the schedule (xdist sets a worker's own ``--dist`` to "no")."""
    node.workerinput["dist"] = node.config.getoption("dist")


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the chunks are of what runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist worksteal``, put the :data:`SLOW_FIRST` tests first in each worker's queue.

    Where a test must sit to start early follows from xdist's worksteal scheduler (3.8): it
    deals the collection out once, as contiguous chunks (worker *i* gets ``remaining // (n -
    i)`` of what is left), each worker runs its chunk in order, and an idle worker steals the
    *tail* half of the longest queue. A slow test moved to the front of the whole collection
    would therefore land in the first worker's chunk with every other slow test, one after
    the other; instead the slow tests are shared out longest first to the chunk with the least
    slow time so far (longest processing time first), and each chunk starts with its share.
    They then all run in the first third of the suite, and stealing evens out the short tests
    that follow.

    Each moved test runs exactly as before, only earlier (none of them uses a fixture scoped
    wider than the test, apart from the session's S3 server).
    """
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or workerinput.get("dist") != "worksteal":
        return  # not an xdist worker, or another schedule: collection order is kept
    workers = int(workerinput["workercount"])
    seconds = dict(SLOW_FIRST)
    slow = sorted((i for i in items if i.nodeid in seconds), key=lambda i: -seconds[i.nodeid])
    if workers < 2 or not slow:
        return
    rest = collections.deque(i for i in items if i.nodeid not in seconds)
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in slow:
        k = loads.index(min(loads))
        shares[k].append(item)
        loads[k] += seconds[item.nodeid]
    ordered: list[pytest.Item] = []
    left = len(items)
    for k in range(workers):
        size = left // (workers - k)  # the chunk xdist will send worker k
        left -= size
        head, overflow = shares[k][:size], shares[k][size:]  # overflow: only in tiny runs
        rest.extendleft(reversed(overflow))
        ordered += head + [rest.popleft() for _ in range(size - len(head))]
    assert not rest and sorted(map(id, ordered)) == sorted(map(id, items))
    items[:] = ordered


def pytest_collection_finish(session: pytest.Session) -> None:
    """Exempt what collection imported (tierflow, pyarrow, pyiceberg, moto...) from the GC.

    Those objects live as long as the worker; left in the collected generations, every full
    collection walks them all again (measured: ~7 % of the CPU of the storage tests).
    """
    gc.collect()
    gc.freeze()


_ids = itertools.count()


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Return a maker of workflow ids unique to this test."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]

    def make(prefix: str = "wf") -> str:
        return f"{prefix}-{base}-{next(_ids)}"

    return make


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def make_tf(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Tierflow]]]:
    """Open Tierflow engines on the test's data dir; all are closed at teardown."""
    opened: list[Tierflow] = []

    async def make(workflows: list[Any], *, scheduler: bool = True, **kw: Any) -> Tierflow:
        kw.setdefault("data_dir", tmp_path / "data")
        tf = Tierflow(workflows=workflows, **kw)
        if scheduler:
            await tf.__aenter__()
        else:
            tf.open()
        opened.append(tf)
        return tf

    yield make
    for tf in reversed(opened):
        await tf.aclose()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def wait_status(tf: Tierflow, workflow_id: str, *statuses: str, timeout: float = 10.0) -> str:
    """Wait until the instance has one of ``statuses``; return it."""

    async def ok() -> bool:
        return await tf.status(workflow_id) in statuses

    await wait_for(ok, timeout)
    return await tf.status(workflow_id)


def _open_in_this_process(path: Path) -> bool:
    target = os.path.realpath(path)
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


async def wait_closed(path: Path, timeout: float = 10.0) -> None:
    """Wait until the engine has closed an instance file (no descriptor of it is open)."""

    async def closed() -> bool:
        return not _open_in_this_process(path)

    await wait_for(closed, timeout)
