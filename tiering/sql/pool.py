"""SQL worker processes, seen from the engine: start, talk, lend, kill.

A worker (:mod:`tierflow.tiering.sql.worker`) runs one query at a time.
:class:`Workers` keeps idle ones for the next query (a worker's start costs
a DuckDB probe and its statement checker, a fresh interpreter's also half a
second of imports), starts more while several queries run at once (up to
``max_workers``; beyond that a query waits, within its deadline), and kills
a worker whose query ran past its deadline or was abandoned mid-stream — the
only way to stop a DuckDB call that does not react to an interrupt. A worker
that dies is never reused.

A worker is forked from the process's warm template
(:mod:`tierflow.tiering.sql.template`, which has imported everything once)
where that is available, else started as a fresh ``python -m
tierflow.tiering.sql.worker``; either way it runs the same code from the
same state. Workers hold nothing of the engine's but one end of a socket
pair; the engine's end is closed when the engine closes, so a worker also
exits when its engine's process dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from tierflow.hot.errors import StorageError
from tierflow.tiering.sql import template

__all__ = ["Deadline", "WorkerGone", "WorkerProcess", "Workers"]

_START_LIMIT = 60.0  # seconds a worker may take to start when no deadline is set


class Deadline(Exception):
    """The query's deadline passed while waiting for a worker."""


class WorkerGone(Exception):
    """The worker process ended or broke the protocol."""


class WorkerProcess:
    """One worker process and the engine's end of its socket.

    Attributes:
        fenced: Whether the worker runs under the kernel fence (it then may
            read local Parquet files natively).
        pid: Its process id (a forked worker's is known once it is ready).
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.fenced = False
        self._ready = False
        self._launch(forked=True)

    def _launch(self, forked: bool) -> None:
        """Ask the template for a worker, or start a fresh interpreter where there is none."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._forked: template.Forked | None = None
        ours, theirs = socket.socketpair()
        try:
            self._forked = template.fork(theirs) if forked else None
            if self._forked is None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "tierflow.tiering.sql.worker", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    # Arrow's default allocator (mimalloc) maps a gigabyte up front, which the
                    # worker's RLIMIT_DATA would count; the system allocator maps what it uses.
                    env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"},
                )
                self.pid = self._proc.pid
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())

    def ready(self, deadline: float | None) -> None:
        """Wait for the worker to say it is ready (once; a fresh one imports for a second).

        Raises:
            Deadline: It was not ready by ``deadline`` (it is killed).
            WorkerGone: It failed to start (it is killed).
        """
        if self._ready:
            return
        limit = deadline if deadline is not None else time.monotonic() + _START_LIMIT
        try:
            if self._forked is not None and self._forked.pid is None:
                self._hello(limit, retry=True)
            tag, msg = self.recv(limit)
        except BaseException:
            self.kill()
            raise
        if tag != "J" or msg.get("t") != "ready":
            self.kill()
            raise WorkerGone("the SQL worker did not start")
        self.fenced = bool(msg.get("fenced"))
        self._ready = True

    def _hello(self, limit: float, retry: bool) -> None:
        """Take a forked worker's pid and pidfd; start it another way if the template failed."""
        forked = self._forked
        assert forked is not None
        try:
            hello = template.read_hello(self._conn.fileno(), limit)
        except TimeoutError:
            raise Deadline() from None
        except OSError:
            hello = None
        if hello is not None:
            message, pidfd = hello
            pid = message.get("pid")
            if isinstance(pid, int) and pidfd is not None:
                forked.attach(pid, pidfd)
                self.pid = pid
                return
            if pidfd is not None:
                os.close(pidfd)
            refused = message.get("refused")
            if isinstance(refused, str):
                template.disable(forked.template, refused)
        owner = forked.template
        if hello is None:
            if owner.alive:
                raise WorkerGone("the SQL worker did not start")  # it ended before its hello
            code = owner.close()
            if code >= 0 and owner.hellos == 0:  # it failed by itself, not killed: give up
                template.disable(owner, f"the SQL worker template exited with code {code}")
        # The template refused, or died: its replacement, or a fresh interpreter, once.
        self._conn.close()
        forked.release()
        self._launch(forked=retry)
        if self._forked is not None:
            self._hello(limit, retry=False)

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        if self._forked is not None:
            return self._forked.running()
        assert self._proc is not None
        return self._proc.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        """Send a request."""
        try:
            self._conn.send_bytes(pickle.dumps(message))
        except (OSError, ValueError) as exc:
            raise WorkerGone(f"the SQL worker went away ({exc})") from None

    def recv(self, deadline: float | None) -> tuple[str, Any]:
        """The next message: ``("J", dict)``, ``("S" or "B", bytes)``.

        Raises:
            Deadline: Nothing arrived before ``deadline`` (``time.monotonic()``).
            WorkerGone: The worker ended.
        """
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self._conn.poll(wait if wait is None else min(wait, 1.0)):
                    data = self._conn.recv_bytes()
                    break
                if not self.alive:
                    raise WorkerGone(self._death())
                if deadline is not None and time.monotonic() >= deadline:
                    raise Deadline()
        except EOFError:
            # The worker's end closed: it is ending. Its end of the socket closes a moment
            # before it can be waited for, so _death() waits for it (up to a second).
            raise WorkerGone(self._death()) from None
        except OSError as exc:
            raise WorkerGone(self._death() if not self.alive else str(exc)) from None
        tag = data[:1].decode()
        if tag == "J":
            return tag, json.loads(data[1:])
        return tag, memoryview(data)[1:]

    def _wait(self, timeout: float | None) -> int | None:
        """Wait for the end; the exit code (None: a forked worker whose template is gone)."""
        if self._forked is not None:
            return self._forked.wait(timeout)
        assert self._proc is not None
        return self._proc.wait(timeout)

    def _death(self) -> str:
        try:
            code = self._wait(1.0)
        except subprocess.TimeoutExpired:
            return "the SQL worker stopped answering"
        if code is None:
            return "the SQL worker ended (its exit status was lost with the SQL worker template)"
        if code < 0:
            return f"the SQL worker was ended by signal {signal.Signals(-code).name}"
        return f"the SQL worker exited with code {code}"

    def kill(self) -> None:
        """End the process now (SIGKILL) and reap it."""
        if self._forked is not None:
            self._forked.kill()
        else:
            assert self._proc is not None
            self._proc.kill()
        self._wait(None)
        self._conn.close()  # before the release: an unforked request is then dropped
        if self._forked is not None:
            self._forked.release()

    def stop(self) -> None:
        """Ask the process to exit; kill it if it does not within a second."""
        if self._forked is not None and self._forked.pid is None:
            self.kill()  # a forked worker that has not said hello: the template drops it
            return
        with contextlib.suppress(OSError):
            self._conn.send_bytes(pickle.dumps({"op": "exit"}))
        self._conn.close()
        try:
            self._wait(1.0)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        if self._forked is not None:
            self._forked.release()


class Workers:
    """A pool of SQL worker processes.

    Args:
        max_workers: Workers at most at once (queries beyond wait).
        keep: Idle workers kept for the next queries.
    """

    def __init__(self, max_workers: int = 4, keep: int = 2) -> None:
        self.max_workers = max(1, max_workers)
        self.keep = keep
        self._idle: list[WorkerProcess] = []
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False

    def take(self, deadline: float | None) -> WorkerProcess:
        """An idle worker, or a new one, ready for a query.

        Raises:
            Deadline: None was free (or ready) before ``deadline``.
            StorageError: The pool is closed, or a worker could not start.
        """
        with self._cond:
            while True:
                if self._closed:
                    raise StorageError("SQL across tiers: the engine is closed")
                worker: WorkerProcess | None = None
                while self._idle:
                    candidate = self._idle.pop()
                    if candidate.alive:
                        worker = candidate
                        break
                    candidate.kill()
                if worker is not None or self._busy < self.max_workers:
                    self._busy += 1
                    break
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise Deadline()
                self._cond.wait(wait)
        try:
            if worker is None:
                worker = WorkerProcess()
            worker.ready(deadline)
            return worker
        except BaseException as exc:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            if isinstance(exc, Deadline):
                raise
            if isinstance(exc, WorkerGone | OSError):
                raise StorageError(f"SQL across tiers: cannot start a SQL worker: {exc}") from None
            raise

    def prestart(self) -> None:
        """Start one worker now, without waiting for it, for the first query to take."""
        with self._cond:
            if self._closed or self._idle or self._busy:
                return
            self._idle.append(WorkerProcess())

    def give_back(self, worker: WorkerProcess) -> None:
        """Return a worker whose query ended (it may serve the next one)."""
        with self._cond:
            self._busy -= 1
            self._cond.notify()
            if not self._closed and worker.alive and len(self._idle) < self.keep:
                self._idle.append(worker)
                return
        worker.stop()

    def discard(self, worker: WorkerProcess) -> None:
        """Kill a worker (deadline passed, stream abandoned, protocol broken)."""
        worker.kill()
        with self._cond:
            self._busy -= 1
            self._cond.notify()

    def forget(self) -> None:
        """Make the idle workers drop the data they keep between queries.

        A worker keeps the last hot data it was sent and the sandboxes that
        registered it; after an erasure none may keep a copy. Busy workers drop
        it when their query ends (see ``TierSQL.forget``).
        """
        with self._cond:
            idle = list(self._idle)
        for worker in idle:
            try:
                worker.send({"op": "forget"})
            except WorkerGone:
                worker.kill()

    def close(self) -> None:
        """Stop the idle workers; busy ones are killed when their query lets go of them."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            worker.stop()
