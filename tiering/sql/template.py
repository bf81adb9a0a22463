"""The SQL worker template: one warm process per engine process that forks the SQL workers.

A worker started as a fresh interpreter spends about half a second of CPU
importing DuckDB, Arrow and tierflow before it can answer. The template
(``python -m tierflow.tiering.sql.template FD``, started on the first
worker request of the process and shared by every engine in it) imports
all of that once (what a worker imports only for its first Arrow-dataset
read: before its second fork), then forks a worker per request. The child
is the same worker (:func:`tierflow.tiering.sql.worker.main` on its own
socket) in the same state as a fresh one: the engine's environment, working
directory, standard error and ``RLIMIT_DATA`` of the moment it asked, and
everything a fresh worker does at start — the DuckDB probe, the kernel
fence, the statement checker — happens in the child after the fork. Those
remain its start's cost (about 0.2 s of CPU, against 0.5 s fresh).

Fork safety: the template only imports and forks. It never opens a DuckDB
database nor allocates through Arrow, and it checks before each fork that it
is still one thread (``/proc/self/task``); DuckDB's and Arrow's thread pools
would not survive a fork. Arrow's bundled jemalloc starts a background
thread at import even when the system allocator is in use
(``ARROW_DEFAULT_MEMORY_POOL=system``, set for the template as it was for
each worker), so the template turns that thread off. A template that finds
itself with a second thread refuses to fork, and the process goes back to
fresh interpreters.

Liveness, exit status and kill, without pid-reuse races. The child sends the
engine, over its own socket and before anything else, a pidfd of itself
(``os.pidfd_open``; ``SCM_RIGHTS``). The engine tests liveness by polling the
pidfd and kills with ``signal.pidfd_send_signal``: both act on that very
process, whoever its parent is and whenever it is reaped, so no reused pid
is ever signalled. Only a parent can collect an exit status, so the template
keeps each child unreaped (a zombie keeps its pid, so the template's own
``waitpid`` is exact) until the engine either asks for the status
(``status``: the pool's "ended by signal KILL" / "exited with code N") or
gives it up (``release``). Chosen over the template reporting exits on its
own (``waitid``/``SIGCHLD``) because the engine's kill then needs neither the
template nor the pid, and keeps working if the template dies: only the exit
status of a worker whose template died is lost.

Lifetimes: the template exits when its socket to the engine closes (the
engine process ended, or :func:`stop`, registered with ``atexit``) and
kills the workers it still has; a worker exits when the engine's end of its
socket closes, as before. An engine's close leaves the template running for
the process's other engines. A template that died is replaced on the next
request. Where the template cannot be used (not Linux, no pidfds,
``TIERFLOW_SQL_TEMPLATE=off``, or it refused or failed to start) workers
start as fresh interpreters.

Why one module of ~600 lines: both ends of one small protocol (the template's
loop and the engine's client) and the fork-safety checks are read together;
split, each half would only make sense beside the other.

Not ``multiprocessing``'s forkserver: it is process-global with a
first-caller-wins preload list (the application's, or a test suite's, may
differ), and its children are known by pid only.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ENV_SWITCH",
    "PRELOAD",
    "PRELOAD_LATER",
    "Forked",
    "Template",
    "disable",
    "fork",
    "main",
    "read_hello",
    "shared",
    "stop",
]

PRELOAD = ("pyarrow", "pyarrow.dataset", "duckdb", "tierflow.tiering.sql.worker")
"""What the template imports before its first fork: all a worker imports to start."""

PRELOAD_LATER = ("tierflow.warm.reader",)
"""Imported before the second fork: what a worker imports on its first Arrow-dataset read.

Not before the first: a process that needs one worker only (``tierflow sql``) would pay
for it (boto3, about 0.15 s) without a use; its worker imports it if it reads datasets.
"""

ENV_SWITCH = "TIERFLOW_SQL_TEMPLATE"
"""Set to ``off``, workers start as fresh interpreters (as where forking is not available)."""

# The environment of the template: each worker's own environment is the engine's at its
# request, with the same allocator setting (Arrow reads it when it first allocates).
_WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system"}
_TEMPLATE_ENV = {**_WORKER_ENV, "JE_ARROW_MALLOC_CONF": "background_thread:false"}
_HEADER = struct.Struct("!i")  # multiprocessing.Connection's frame header: the same framing
_REPLY_LIMIT = 10.0  # seconds the template may take to answer a status request


# -- framing ---------------------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = _frame(json.dumps(message).encode())
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([data], ancillary, socket.MSG_NOSIGNAL)
    if sent < len(data):
        sock.sendall(data[sent:], socket.MSG_NOSIGNAL)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _recv(sock: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    """One frame and the descriptors that came with it (they arrive with its first byte)."""
    fds = array.array("i")
    head, ancillary, _, _ = sock.recvmsg(
        _HEADER.size, socket.CMSG_SPACE(max_fds * fds.itemsize) if max_fds else 0
    )
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    try:
        if not head:
            raise EOFError
        head += _recv_exact(sock, _HEADER.size - len(head))
        return _recv_exact(sock, _HEADER.unpack(head)[0]), list(fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def read_hello(fd: int, deadline: float) -> tuple[dict[str, Any], int | None] | None:
    """Read a forked worker's first message on its socket ``fd``: who it is, and its pidfd.

    Returns:
        The message (``{"pid": N}``, or ``{"refused": why}`` from the template)
        and the descriptor that came with it; None if the socket closed first.

    Raises:
        TimeoutError: Nothing came before ``deadline`` (``time.monotonic()``).
    """
    # A second handle on the socket: the caller's Connection reads what follows.
    with socket.socket(fileno=os.dup(fd)) as sock:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            if time.monotonic() >= deadline:
                raise TimeoutError
        try:
            payload, fds = _recv(sock, 1)
        except (EOFError, ConnectionError):
            return None
    for extra in fds[1:]:
        os.close(extra)
    if payload[:1] != b"H":
        for got in fds[:1]:
            os.close(got)
        return None
    return json.loads(payload[1:]), (fds[0] if fds else None)


# -- the template process ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Import what a worker needs, then fork workers on the socket given as first argument."""
    args = sys.argv[1:] if argv is None else list(argv)
    control = socket.socket(fileno=int(args[0]))
    # Ctrl-C in a terminal reaches the whole process group; the engine decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload(PRELOAD)
    _serve(control)


def _preload(names: Sequence[str]) -> None:
    for name in names:
        importlib.import_module(name)
    # Out of the collector's reach: a child's collections would otherwise touch (and copy)
    # every page of the imported modules.
    gc.freeze()


def _threads() -> int:
    return max(len(os.listdir("/proc/self/task")), threading.active_count())


def _serve(control: socket.socket) -> None:
    children: dict[int, int] = {}  # token -> pid, not reaped: its status is the engine's
    dying: set[int] = set()  # given up by the engine while running: reaped when they end
    forks = 0
    try:
        while True:
            for pid in list(dying):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                dying.discard(pid)
            if not _readable(control.fileno(), 0.05 if dying else None):
                continue
            try:
                payload, fds = _recv(control, 2)
            except (EOFError, ConnectionError):
                return  # the engine's process closed its end: it is gone or stopping us
            request = json.loads(payload)
            op, token = request.get("op"), int(request.get("token", 0))
            if op == "fork":
                if forks == 1:
                    _preload(PRELOAD_LATER)
                forked = _fork(control, request, fds)
                if forked is not None:
                    forks += 1
                    children[token] = forked
            elif op == "status":
                _send(control, {"token": token, "code": _status(children, token)})
            elif op == "release":
                released = children.pop(token, None)
                if released is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(released, signal.SIGKILL)  # unreaped: still that very child
                    dying.add(released)
    finally:
        for pid in [*children.values(), *dying]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _status(children: dict[int, int], token: int) -> int | None:
    pid = children.get(token)
    if pid is None:
        return None
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        children.pop(token)
        return None
    if done == 0:
        return None  # still running: the engine asks only once it has ended
    children.pop(token)
    return os.waitstatus_to_exitcode(status)


def _fork(control: socket.socket, request: dict[str, Any], fds: list[int]) -> int | None:
    """Fork a worker on the socket ``fds[0]`` (``fds[1]``: the engine's standard error)."""
    try:
        if len(fds) != 2:
            return None
        sock, stderr = fds
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0)):
            return None  # the engine gave up on this worker before it was forked
        threads = _threads()
        if threads != 1:
            with socket.socket(fileno=os.dup(sock)) as conn:
                why = f"the SQL worker template runs {threads} threads; it cannot fork"
                conn.sendall(_frame(b"H" + json.dumps({"refused": why}).encode()))
            return None
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(control, request, sock, stderr)  # never returns
        return pid
    finally:
        for fd in fds:
            os.close(fd)


def _child(control: socket.socket, request: dict[str, Any], sock: int, stderr: int) -> None:
    """Become the worker: the engine's state of the moment, then the worker's own start."""
    code: Any = 0
    try:
        control.close()  # the engine must see the template's end close when it dies
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.dup2(stderr, 2)
        os.close(stderr)
        os.environ.clear()
        os.environ.update(request["env"])
        with contextlib.suppress(OSError):
            os.chdir(request["cwd"])
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_DATA, tuple(request["data_limit"]))
        pidfd = os.pidfd_open(os.getpid())
        try:
            with socket.socket(fileno=os.dup(sock)) as conn:
                hello = _frame(b"H" + json.dumps({"pid": os.getpid()}).encode())
                conn.sendmsg(
                    [hello],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd]))],
                    socket.MSG_NOSIGNAL,
                )
        finally:
            os.close(pidfd)
        from tierflow.tiering.sql import worker

        worker.main([str(sock)])
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)


# -- the engine's side -----------------------------------------------------------------------


class Template:
    """The running template process, as the engine process sees it.

    Attributes:
        pid: The template's process id.
        hellos: Workers of this template that reported to the engine (it works).
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tierflow.tiering.sql.template", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, **_TEMPLATE_ENV},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(_REPLY_LIMIT)
        self.pid = self._proc.pid
        self.hellos = 0
        self._sock = ours
        self._lock = threading.Lock()
        self._tokens = 0
        self._broken = False

    @property
    def alive(self) -> bool:
        """Whether the template runs and answers."""
        if self._broken or self._proc.poll() is not None:
            return False
        # Its end of the socket closes as it dies, a moment before it can be reaped.
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        return not any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))

    def fork(self, worker_end: socket.socket) -> Forked | None:
        """Ask for a worker on ``worker_end`` (a socket); None if the template is gone."""
        request: dict[str, Any] = {
            "op": "fork",
            "env": {**os.environ, **_WORKER_ENV},
            "cwd": _cwd(),
            "data_limit": list(resource.getrlimit(resource.RLIMIT_DATA)),
        }
        stderr = _stderr()
        try:
            with self._lock:
                if self._broken:
                    return None
                self._tokens += 1
                token = request["token"] = self._tokens
                try:
                    _send(self._sock, request, (worker_end.fileno(), stderr))
                except OSError:
                    self._broken = True
                    return None
        finally:
            if stderr != 2:
                os.close(stderr)
        return Forked(self, token)

    def status(self, token: int) -> int | None:
        """The exit code of an ended worker (as ``Popen.returncode``); None if unknown.

        The template reaps it.
        """
        with self._lock:
            if self._broken:
                return None
            try:
                _send(self._sock, {"op": "status", "token": token})
                while True:
                    payload, _ = _recv(self._sock, 0)
                    reply = json.loads(payload)
                    if reply.get("token") == token:
                        code = reply.get("code")
                        return code if isinstance(code, int) else None
            except (OSError, EOFError, ValueError):
                self._broken = True  # a late or lost reply would answer the next question
                return None

    def release(self, token: int) -> None:
        """Let the template kill (if still running) and reap a worker nobody waits for."""
        with self._lock:
            if self._broken:
                return
            try:
                _send(self._sock, {"op": "release", "token": token})
            except OSError:
                self._broken = True

    def close(self) -> int:
        """Stop the template: it kills the workers it still has, reaps them and exits.

        Returns:
            Its exit code (negative: ended by that signal).
        """
        with self._lock:
            self._broken = True
            self._sock.close()
        try:
            return self._proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()


class Forked:
    """A worker forked by a template, as the engine sees it: the parts of ``Popen`` it uses.

    Known by its pidfd once the worker has said hello (:meth:`attach`);
    before that it counts as running and can only be given up.

    Attributes:
        template: The template that forked it (the only one that knows its status).
        pid: Its process id (None until it has said hello).
        returncode: Its exit code once collected (negative: ended by that signal).
    """

    def __init__(self, template: Template, token: int) -> None:
        self.template = template
        self.pid: int | None = None
        self.returncode: int | None = None
        self._token = token
        self._pidfd: int | None = None
        self._collected = False  # status asked for (reaped) or given up

    def attach(self, pid: int, pidfd: int) -> None:
        """Take the worker's hello: its pid and a pidfd of it."""
        self.pid, self._pidfd = pid, pidfd
        self.template.hellos += 1

    def running(self) -> bool:
        """Whether the process has not ended (also before its hello)."""
        if self._collected or self._pidfd is None:
            return not self._collected
        return not _readable(self._pidfd, 0.0)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end and collect the exit code; None if it is lost (or no hello).

        Raises:
            subprocess.TimeoutExpired: Still running after ``timeout`` seconds.
        """
        if self._collected or self._pidfd is None:
            return self.returncode
        if not _readable(self._pidfd, timeout):
            raise subprocess.TimeoutExpired(f"SQL worker {self.pid}", timeout or 0.0)
        self.returncode = self.template.status(self._token)
        self._collected = True
        self._close_pidfd()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the worker (nothing if it has ended, or has not said hello yet)."""
        if self._pidfd is not None and not self._collected:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def release(self) -> None:
        """Give the worker up: the template kills it if need be and reaps it (idempotent)."""
        if not self._collected:
            self._collected = True
            self._close_pidfd()
            self.template.release(self._token)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` is readable within ``timeout`` seconds (a pidfd: the process ended)."""
    poller = select.poll()  # not select(): the engine's process may have 1024 files open
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"


def _stderr() -> int:
    """The engine's standard error for the worker, as a fresh worker inherits it."""
    try:
        os.fstat(2)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)
    return 2


_lock = threading.Lock()
_pidfds: str | None = None  # why there are none here ("" once they were found to work)
_current: Template | None = None
_off: str | None = None  # why this process starts fresh interpreters instead
_inherited: list[Template] = []  # a parent process's template, seen in a forked child


def _platform_off() -> str | None:
    global _pidfds
    if os.environ.get(ENV_SWITCH, "").lower() == "off":
        return f"{ENV_SWITCH}=off"
    if _pidfds is None:
        if sys.platform != "linux" or not hasattr(os, "pidfd_open"):
            _pidfds = "no pidfds on this platform"
        else:
            try:
                os.close(os.pidfd_open(os.getpid()))
                _pidfds = ""
            except OSError as exc:  # an old kernel, or a sandbox that forbids them
                _pidfds = f"no pidfds here ({exc})"
    return _pidfds or None


def shared() -> Template | None:
    """This process's template, started if need be; None where workers start fresh."""
    global _current, _off
    why = _platform_off()
    if why is not None:
        return None
    with _lock:
        if _current is not None and not _current.alive:
            dead, _current = _current, None
            dead.close()  # reap it; the next request gets a new one
        if _current is None and _off is None:
            try:
                _current = Template()
            except OSError as exc:
                _off = f"the SQL worker template could not start ({exc})"
        return _current


def fork(worker_end: socket.socket) -> Forked | None:
    """A worker forked on ``worker_end``; None where it must start as a fresh interpreter."""
    for _ in range(2):  # a template found dead is replaced once
        template = shared()
        if template is None:
            return None
        forked = template.fork(worker_end)
        if forked is not None:
            return forked
    return None


def disable(template: Template, why: str) -> None:
    """Stop ``template`` and start fresh interpreters from now on in this process."""
    global _current, _off
    with _lock:
        _off = why
        if _current is template:
            _current = None
    template.close()


def stop() -> None:
    """Stop this process's template (at exit; tests); the next request starts a new one."""
    global _current
    with _lock:
        template, _current = _current, None
    if template is not None:
        template.close()


def _after_fork_in_child() -> None:
    """A child of the engine's process gets its own template; the parent's stays the parent's."""
    global _lock, _current
    _lock = threading.Lock()
    if _current is not None:
        _inherited.append(_current)  # not closed: that would wait for a process not ours
        with contextlib.suppress(OSError):
            _current._sock.close()  # only this process's copy
        _current = None


atexit.register(stop)
os.register_at_fork(after_in_child=_after_fork_in_child)


if __name__ == "__main__":
    main()
