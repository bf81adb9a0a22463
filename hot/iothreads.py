"""The engine's I/O threads, and one cheap road from them back to the event loop.

Blocking work (fsyncs, closes, sync step bodies, reads of instance files) runs
on these threads. ``ThreadPoolExecutor`` with ``loop.run_in_executor`` did the
same job, but every round trip paid for a ``concurrent.futures.Future`` (a
condition variable and its locks), an asyncio future chained to it by two
callbacks, and one write to the loop's self-pipe plus one read per result. A
three-step workflow makes four round trips, and those costs were about a sixth
of the event loop's CPU per workflow (cProfile, issue 21's profiles in
``tests/bench/profiles/``).

Here a round trip is a job ``(fn, args, future)`` on a ``SimpleQueue``; the
thread that ran it appends ``(future, outcome)`` to a deque and wakes the loop
through an ``eventfd`` only if no wake-up is already pending, so under load
one wake-up delivers several results. The loop drains the deque in one
callback. A future of another loop (the engine used from two loops) falls back
to ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["IoThreads"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# A job: the function, its arguments, the asyncio future its outcome goes to
# (None: nobody waits), and what the same thread runs once the outcome is delivered.
_Job = tuple[
    Callable[..., Any], tuple[Any, ...], asyncio.Future[Any] | None, Callable[[], Any] | None
]

_LIVE: weakref.WeakSet[IoThreads] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    # The threads are daemons (a process that never closed its engine must still
    # exit), so finish what was queued before the interpreter goes, as
    # ThreadPoolExecutor does at exit.
    for pool in list(_LIVE):
        pool.shutdown(wait=True)


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the waiter was cancelled
        return
    if ok:
        fut.set_result(value)
    elif isinstance(value, StopIteration):
        # An asyncio future refuses StopIteration (it would end the awaiting coroutine).
        fut.set_exception(RuntimeError(f"I/O job raised {value!r}"))
    else:
        fut.set_exception(value)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class IoThreads(Executor):
    """Up to ``max_threads`` threads for blocking work, started as needed.

    :meth:`call` is the engine's own round trip (awaitable, cheap);
    :meth:`submit` is the ``concurrent.futures`` interface, for code that
    wants an ``Executor``; :meth:`post` runs a job nobody waits for.

    Args:
        max_threads: Most threads running at once; more jobs queue.
        name: Prefix of the threads' names.
    """

    def __init__(self, max_threads: int, name: str = "tierflow-io") -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._max = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Threads waiting for a job, each promised to at most one new job (so a
        # job never waits for a thread that is busy while another could start).
        self._idle = 0
        self._lock = threading.Lock()
        self._shut = False
        # Results for the bound loop, and whether a wake-up for them is pending.
        self._done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._woken = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._efd = -1
        _LIVE.add(self)

    # -- submitting --------------------------------------------------------------------

    def call(
        self, fn: Callable[..., _T], *args: Any, then: Callable[[], Any] | None = None
    ) -> asyncio.Future[_T]:
        """Run ``fn(*args)`` on a thread; return a future of the running loop for its outcome.

        Args:
            fn: The blocking function.
            *args: Its arguments.
            then: Run by the same thread right after the outcome is handed to the
                loop (e.g. closing a file once its last commit is durable), so the
                waiter does not wait for it and it costs no round trip of its own.
                Its errors are logged.

        Raises:
            RuntimeError: No running event loop, or the threads were shut down.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop and (self._loop is None or self._loop.is_closed()):
            self._bind(loop)
        fut: asyncio.Future[_T] = loop.create_future()
        self._put((fn, args, fut, then))
        return fut

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a thread; nobody waits for it and its errors are logged."""
        self._put((fn, args, None, None))

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)``; the ``concurrent.futures.Executor`` interface."""
        f: Future[_T] = Future()

        def run() -> None:
            if not f.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                f.set_exception(exc)
            else:
                f.set_result(result)

        self._put((run, (), None, None))
        return f

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new I/O work after shutdown")
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max:
                t = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                t.start()
                self._threads.append(t)
            self._jobs.put(job)

    # -- the threads ---------------------------------------------------------------------

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, args, fut, then = job
            del job
            try:
                value = fn(*args)
                ok = True
            except BaseException as exc:
                value, ok = exc, False
                if fut is None:
                    log.error("I/O job %r failed", fn, exc_info=exc)
            if fut is not None:
                self._deliver(fut, ok, value)
            del fn, args, fut, value  # hold nothing of a finished job while idle
            if then is not None:
                try:
                    then()
                except BaseException:
                    log.exception("I/O follow-up %r failed", then)
                then = None
            with lock:
                self._idle += 1

    def _deliver(self, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        loop = fut.get_loop()
        if loop is self._loop:
            self._done.append((fut, ok, value))
            # Append first, then look: the loop clears the flag before it drains,
            # so a result appended while a wake-up is pending is drained by it.
            if not self._woken:
                self._woken = True
                # Closed at shutdown: the shutdown drains what is left.
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._efd, 1)
            return
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, fut, ok, value)

    # -- the loop side -------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver results for ``loop`` through the deque (called on that loop).

        The eventfd is made once and closed only once the threads have exited:
        a thread may be about to write to it, and a closed descriptor's number
        can be reused by a file, which the write would then corrupt.
        """
        self._unbind()
        if self._efd < 0:
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        loop.add_reader(self._efd, self._drain)
        self._loop = loop

    def _unbind(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_reader(self._efd)
        self._settle_all()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        self._woken = False
        self._settle_all()

    def _settle_all(self) -> None:
        done = self._done
        while done:
            fut, ok, value = done.popleft()
            if fut.get_loop().is_closed():
                continue  # its loop ended (the pool moved to a new one): nobody waits
            _settle(fut, ok, value)

    # -- shutting down -------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; the threads finish what is queued, then exit.

        Args:
            wait: Return only once every thread has exited.
            cancel_futures: Accepted for the ``Executor`` interface; queued
                jobs always run (each may be a close or fsync someone relies on).
        """
        with self._lock:
            if not self._shut:
                self._shut = True
                for _ in self._threads:
                    self._jobs.put(None)
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()
            if self._loop is not None and _running_loop() is self._loop:
                self._unbind()  # on the bound loop: unregister, deliver what is left
            if self._loop is None and self._efd >= 0:
                os.close(self._efd)  # no thread is left to write to it
                self._efd = -1
        _LIVE.discard(self)
