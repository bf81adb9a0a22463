"""The engine's I/O threads: every result reaches its waiter, once, on the right loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from tierflow.hot.iothreads import IoThreads

pytestmark = pytest.mark.timeout(60)


async def test_results_and_errors_reach_their_waiters() -> None:
    pool = IoThreads(4)
    try:
        assert await pool.call(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ValueError, match="bad"):
            await pool.call(_raise, ValueError("bad"))
        # An asyncio future cannot carry StopIteration; the waiter still learns of it.
        with pytest.raises(RuntimeError, match="StopIteration"):
            await pool.call(_raise, StopIteration())
    finally:
        pool.shutdown()


def _raise(exc: BaseException) -> None:
    raise exc


async def test_many_concurrent_calls_each_settle_once_with_their_own_value() -> None:
    # Results arrive from many threads at once: one wake-up may carry several, and
    # none may be lost or given to another waiter.
    pool = IoThreads(8)
    try:

        def work(i: int) -> int:
            time.sleep(0.0005 * (i % 3))
            return i * i

        got = await asyncio.gather(*(pool.call(work, i) for i in range(2000)))
        assert got == [i * i for i in range(2000)]
        assert len(pool._threads) <= 8
    finally:
        pool.shutdown()


async def test_then_runs_on_the_same_thread_after_the_waiter_has_its_result() -> None:
    pool = IoThreads(2)
    seen: list[str] = []
    released = threading.Event()
    try:

        def job() -> str:
            seen.append(threading.current_thread().name)
            return "done"

        def then() -> None:
            released.wait(10)  # the waiter must not wait for this
            seen.append(threading.current_thread().name)

        assert await asyncio.wait_for(pool.call(job, then=then), 5) == "done"
        released.set()
    finally:
        pool.shutdown()
    assert len(seen) == 2 and seen[0] == seen[1]


async def test_a_cancelled_waiter_does_not_break_later_results() -> None:
    pool = IoThreads(2)
    gate = threading.Event()
    try:
        fut = pool.call(gate.wait, 10)
        fut.cancel()
        gate.set()
        assert await pool.call(lambda: 7) == 7
    finally:
        pool.shutdown()


async def test_a_second_loop_in_another_thread_gets_its_results() -> None:
    pool = IoThreads(4)
    try:
        assert await pool.call(lambda: 1) == 1  # binds this loop
        other = await asyncio.to_thread(lambda: asyncio.run(_call_twice(pool)))
        assert other == (2, 3)
        assert await pool.call(lambda: 4) == 4
    finally:
        pool.shutdown()


async def _call_twice(pool: IoThreads) -> tuple[int, int]:
    return await pool.call(lambda: 2), await pool.call(lambda: 3)


def test_a_new_loop_after_the_first_closed_is_served() -> None:
    pool = IoThreads(2)
    try:
        assert asyncio.run(_call_twice(pool)) == (2, 3)
        assert asyncio.run(_call_twice(pool)) == (2, 3)
    finally:
        pool.shutdown()


def test_shutdown_runs_what_was_queued_then_refuses_more() -> None:
    pool = IoThreads(1)
    ran: list[int] = []
    gate = threading.Event()
    pool.post(gate.wait, 10)
    for i in range(5):
        pool.post(ran.append, i)
    fut = pool.submit(lambda: "submitted")
    gate.set()
    pool.shutdown(wait=True)
    assert ran == [0, 1, 2, 3, 4]
    assert fut.result(timeout=0) == "submitted"
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.post(ran.append, 5)


def test_a_failing_posted_job_is_logged_and_the_thread_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = IoThreads(1)
    pool.post(_raise, OSError("disk gone"))
    fut = pool.submit(lambda: "still here")
    assert fut.result(timeout=10) == "still here"
    pool.shutdown()
    assert "disk gone" in caplog.text


def test_threads_start_only_when_none_is_idle() -> None:
    pool = IoThreads(32)
    try:
        gate = threading.Event()
        futs = [pool.submit(gate.wait, 10) for _ in range(3)]
        # Three jobs blocked at once: each needed a thread of its own.
        assert len(pool._threads) == 3
        gate.set()
        assert all(f.result(timeout=10) for f in futs)
        deadline = time.monotonic() + 10
        while pool._idle < 3 and time.monotonic() < deadline:
            time.sleep(0.001)  # the threads mark themselves idle just after the result
        again = threading.Event()
        futs = [pool.submit(again.wait, 10) for _ in range(3)]
        # The three idle threads took them: no new thread.
        assert len(pool._threads) == 3
        again.set()
        assert all(f.result(timeout=10) for f in futs)
    finally:
        pool.shutdown()


def test_a_job_outliving_its_loop_is_dropped_and_the_next_loop_is_served() -> None:
    pool = IoThreads(2)
    gate = threading.Event()

    async def first() -> int:
        pool.call(gate.wait, 10)  # never awaited: this loop ends before the job does
        return await pool.call(lambda: 1)

    async def second() -> tuple[int, int]:
        fut = pool.call(lambda: 2)
        gate.set()  # the first loop's job finishes now, for a loop that is gone
        return await fut, await pool.call(lambda: 3)

    try:
        assert asyncio.run(first()) == 1
        assert asyncio.run(second()) == (2, 3)
    finally:
        pool.shutdown()
