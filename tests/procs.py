"""Python subprocesses for tests, forked from a process that has already imported tierflow.

Crash and cross-process tests start hundreds of Python processes (an app killed at a crash
point, its rerun, a second tiering process, ...). A fresh interpreter spends 0.5 to 1.5 s of CPU
importing tierflow, pyarrow, duckdb, boto3 and pyiceberg before it does anything, which was
the largest single cost of the suite. Here each test process (each xdist worker) starts one
*zygote* the first time it needs a subprocess: a Python process that imports those modules
once and then forks a child per request. A child is a real, separate process (its own pid,
file descriptors, locks and memory; SIGKILL and exit codes behave as for any process) that
runs ``python -m MODULE ARGS`` with the given environment and working directory; only the
imported modules are shared, copy-on-write. Its interpreter shuts down normally at the end
(atexit handlers run), as a fresh one would.

Tests that are about how a fresh interpreter starts or exits (the CLI's exit, the SQL
worker's start) keep using :mod:`subprocess`.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Child", "popen", "run"]

ROOT = Path(__file__).resolve().parents[1]
_PRELOAD = (
    "tierflow",
    "tierflow.cli",
    "tierflow.tiering.to_warm",
    "tierflow.tiering.to_cold",
    "tierflow.tiering.sql.engine",
    "tierflow.tiering.compliance.service",
    "tierflow.http",
    # pyiceberg imports its SQL catalog (and SQLAlchemy's SQLite dialect) when a catalog is
    # first made: ~0.3 s in every child that touches the cold tier, unless done here.
    "pyiceberg.catalog.sql",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "duckdb",
    "boto3",
    "botocore.session",
)


# -- the zygote (``python -m tests.procs SOCKET``) -------------------------------------------


def _serve(path: str) -> None:
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    # Move every object imported so far out of the collector's reach: a child's collections
    # and its exit would otherwise touch each of them and copy every shared page (0.28 s of
    # CPU per child just to exit; 0.08 s frozen). The child still shuts down normally.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    parent = os.getppid()
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    while True:
        for key, _ in sel.select(timeout=0.01 if children else 1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                pid = _fork_child(conn, [listener, *children.values()])
                if pid is None:
                    conn.close()
                else:
                    children[pid] = conn
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()
        if os.getppid() != parent:  # the test process is gone (we were re-parented)
            return


def _fork_child(conn: socket.socket, others: list[socket.socket]) -> int | None:
    fds = array.array("i")
    msg, anc, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not msg or len(fds) != 3:
        return None
    request = json.loads(msg)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        return pid
    # The child: become ``python -m module args`` and never return into the zygote's loop.
    # It keeps no socket of the zygote's (another child's exit must reach the test alone).
    for sock in (conn, *others):
        sock.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]
    sys.argv = [request["module"], *request["args"]]
    code: Any = 0
    try:
        import runpy

        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    raise SystemExit(code)


# -- the test side ---------------------------------------------------------------------------

_lock = threading.Lock()
_zygote: tuple[subprocess.Popen[str], str] | None = None


def _socket_path() -> str:
    global _zygote
    with _lock:
        if _zygote is None or _zygote[0].poll() is not None:
            path = tempfile.mktemp(prefix="tf-zygote-", suffix=".sock")
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.procs", path],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the test process zygote did not start")
            _zygote = (proc, path)
            atexit.register(_stop, proc, path)
        return _zygote[1]


def _stop(proc: subprocess.Popen[str], path: str) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    with_path = Path(path)
    if with_path.exists():
        with_path.unlink()


class Child:
    """A forked ``python -m`` process: the parts of :class:`subprocess.Popen` tests use."""

    def __init__(
        self, conn: socket.socket, pid: int, stdout: int, stderr: int, stdin: int | None
    ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = None if stdin is None else os.fdopen(stdin, "w", buffering=1)
        """The child's standard input (text, line-buffered) when asked for, else None."""
        self._conn = conn
        self._status = b""
        self._out: list[bytes] = []
        self._line_at = 0  # where readline() goes on in the joined output
        self._err: list[bytes] = []
        self._readers = [
            threading.Thread(target=_drain, args=(fd, sink), daemon=True)
            for fd, sink in ((stdout, self._out), (stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    def poll(self) -> int | None:
        """The exit code if the child has ended (negative: killed by that signal), else None."""
        if self.returncode is None:
            self._conn.setblocking(False)
            try:
                self._read_status()
            except BlockingIOError:
                self._conn.setblocking(True)
        return self.returncode

    def _read_status(self) -> None:
        while not self._status.endswith(b"\n"):
            chunk = self._conn.recv(64)
            if not chunk:
                raise RuntimeError("the zygote died before reporting the child's exit")
            self._status += chunk
        self.returncode = int(self._status)
        self._conn.close()
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end; return its exit code."""
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                self._read_status()
            except TimeoutError:
                raise subprocess.TimeoutExpired(f"python -m (pid {self.pid})", timeout) from None
        assert self.returncode is not None
        return self.returncode

    def readline(self, timeout: float = 60) -> str:
        """The child's next stdout line (with its newline), waiting up to ``timeout`` seconds.

        Returns what there is (possibly "") if the child ends first, as a pipe's readline does.
        """
        deadline = time.monotonic() + timeout
        while True:
            out = b"".join(list(self._out))
            end = out.find(b"\n", self._line_at)
            if end >= 0 or self.poll() is not None:
                if end < 0:
                    for reader in self._readers:
                        reader.join(1)
                    out = b"".join(list(self._out))
                    end = out.find(b"\n", self._line_at)
                stop = len(out) if end < 0 else end + 1
                line, self._line_at = out[self._line_at : stop], stop
                return line.decode(errors="replace")
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"python -m (pid {self.pid})", timeout)
            time.sleep(0.005)

    def errors_so_far(self) -> str:
        """What the child has written to stderr until now."""
        return b"".join(list(self._err)).decode(errors="replace")

    def output_so_far(self) -> str:
        """What the child has written to stdout until now (it may be mid-line)."""
        return b"".join(list(self._out)).decode(errors="replace")

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end; return (stdout, stderr) as text."""
        self.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return b"".join(self._out).decode(), b"".join(self._err).decode()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child (nothing if it has already been reaped)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the child."""
        self.send_signal(signal.SIGKILL)


def _drain(fd: int, sink: list[bytes]) -> None:
    with os.fdopen(fd, "rb", buffering=0) as f:
        while chunk := f.read(65536):
            sink.append(chunk)


def popen(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str = ROOT,
    stdin: bool = False,
) -> Child:
    """Start ``python -m module args`` as a forked child (stdout and stderr captured).

    With ``stdin=True`` the child reads a pipe the test writes through ``Child.stdin``;
    otherwise it reads /dev/null.
    """
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(_socket_path())
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if stdin:
        null, in_w = os.pipe()
    else:
        null, in_w = os.open(os.devnull, os.O_RDONLY), None
    request = {
        "module": module,
        "args": list(args),
        "env": dict(os.environ if env is None else env),
        "cwd": str(cwd),
    }
    try:
        conn.sendmsg(
            [json.dumps(request).encode()],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [null, out_w, err_w]))],
        )
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            raise RuntimeError("the zygote did not start the child")
        data += chunk
    return Child(conn, int(data), out_r, err_r, in_w)


def run(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str = ROOT,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` in a forked child to its end (or death)."""
    child = popen(module, *args, env=env, cwd=cwd)
    try:
        out, err = child.communicate(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate(10)
        raise
    assert child.returncode is not None
    return subprocess.CompletedProcess([module, *args], child.returncode, out, err)


if __name__ == "__main__":
    _serve(sys.argv[1])
