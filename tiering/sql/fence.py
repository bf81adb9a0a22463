"""The kernel fence of the SQL worker: once installed, the process cannot change any file.

A seccomp filter (Linux on x86-64 and arm64) makes every system call that
creates, writes, renames, deletes or re-permissions a file fail with
``EPERM``: ``open``/``openat`` with a write, create, truncate or append
flag, ``creat``, ``rename*``, ``unlink*``, ``mkdir*``, ``rmdir``,
``truncate``, ``link``/``symlink``, ``chmod``/``chown``, ``mknod``,
``utime*``, extended attributes, ``fallocate``; also ``execve``,
``io_uring`` (which would bypass the checks), ``ptrace`` and
``process_vm_writev``, handle-based opens and mounts. Reading files, the
already open socket to the parent and network sockets (for object stores)
keep working. The filter holds for every thread of the process, also those
started later, and cannot be removed.

Why a kernel fence as well as the statement check: DuckDB's parser accepts
statements inside ``SELECT`` (a ``COPY`` in a CTE runs), and the cut's own
Parquet files must be readable by name for native reads, which DuckDB does
not tell from writable. With the fence, what slips past the check still
cannot write: the worker gets native reads only where :func:`install`
succeeded; elsewhere it reads through Arrow datasets with no file
allowed at all.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from collections.abc import Sequence

__all__ = ["install", "supported"]

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
_NR, _ARCH, _ARGS = 0, 4, 16
_LD_W_ABS = 0x20
_JEQ_K, _JGE_K, _JSET_K = 0x15, 0x35, 0x45
_RET_K = 0x06
_ALLOW = 0x7FFF0000
_EPERM = 0x00050000 | 1
# O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND (the same on x86-64 and arm64); O_TMPFILE
# needs O_WRONLY or O_RDWR, so it is covered.
_WRITE_FLAGS = 0x1 | 0x2 | 0x40 | 0x200 | 0x400


class _Arch:
    def __init__(
        self,
        audit: int,
        seccomp_nr: int,
        open_flags: dict[int, int],
        denied: Sequence[int],
        x32_bit: bool,
    ) -> None:
        self.audit = audit
        self.seccomp_nr = seccomp_nr
        self.open_flags = open_flags  # syscall -> index of its flags argument
        self.denied = denied
        self.x32_bit = x32_bit


_X86_64 = _Arch(
    audit=0xC000003E,
    seccomp_nr=317,
    open_flags={2: 1, 257: 2},  # open(path, flags), openat(dir, path, flags)
    denied=(
        *(85, 76, 77, 82, 83, 84, 86, 87, 88, 90, 91, 92, 93, 94, 132, 133),  # creat ... mknod
        *(188, 189, 190, 197, 198, 199, 235, 258, 259, 260, 261, 263, 264, 265),  # xattrs ...
        *(266, 268, 280, 285, 316, 437, 452),  # symlinkat ... openat2, fchmodat2
        *(59, 322, 101, 311, 303, 304, 425, 426, 427),  # exec, ptrace, handles, io_uring
        *(155, 161, 165, 166, 175, 176, 313),  # mounts, chroot, modules
    ),
    x32_bit=True,
)
_AARCH64 = _Arch(
    audit=0xC00000B7,
    seccomp_nr=277,
    open_flags={56: 2},  # openat(dir, path, flags)
    denied=(
        *(33, 34, 35, 36, 37, 38, 45, 46, 47, 52, 53, 54, 55, 88, 276, 437, 452),
        *(5, 6, 7, 14, 15, 16),  # extended attributes
        *(221, 281, 117, 271, 264, 265, 425, 426, 427),  # exec, ptrace, handles, io_uring
        *(39, 40, 41, 51, 105, 106, 273),  # mounts, chroot, modules
    ),
    x32_bit=False,
)


def _arch() -> _Arch | None:
    if sys.platform != "linux":
        return None
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return _X86_64
    if machine in ("aarch64", "arm64"):
        return _AARCH64
    return None


def supported() -> bool:
    """Whether this platform has the fence (Linux on x86-64 or arm64)."""
    return _arch() is not None


def _program(arch: _Arch) -> list[tuple[int, int, int, int]]:
    """The BPF program: (code, jump-if-true, jump-if-false, k), jumps resolved."""
    code: list[tuple[int, str | int, str | int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 0, "deny", arch.audit),
        (_LD_W_ABS, 0, 0, _NR),
    ]
    if arch.x32_bit:  # x32 system calls (bit 30) have numbers of their own: refuse them all
        code.append((_JGE_K, "deny", 0, 0x40000000))
    for nr, index in arch.open_flags.items():
        code.append((_JEQ_K, f"flags{index}", 0, nr))
    for nr in arch.denied:
        code.append((_JEQ_K, "deny", 0, nr))
    code.append((_RET_K, 0, 0, _ALLOW))
    labels: dict[str, int] = {}
    for index in sorted(set(arch.open_flags.values())):
        labels[f"flags{index}"] = len(code)
        code.append((_LD_W_ABS, 0, 0, _ARGS + 8 * index))  # low 32 bits (little-endian)
        code.append((_JSET_K, "deny", 0, _WRITE_FLAGS))
        code.append((_RET_K, 0, 0, _ALLOW))
    labels["deny"] = len(code)
    code.append((_RET_K, 0, 0, _EPERM))
    out = []
    for at, (op, jt, jf, k) in enumerate(code):
        out.append((op, _offset(jt, at, labels), _offset(jf, at, labels), k))
    return out


def _offset(target: str | int, at: int, labels: dict[str, int]) -> int:
    if isinstance(target, int):
        return target
    delta = labels[target] - at - 1
    if not 0 <= delta <= 255:
        raise AssertionError("BPF jump out of range")
    return delta


class _Filter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter)))


def install() -> bool:
    """Install the fence on this process (all threads); False where it is not available.

    Irreversible: call it only in the SQL worker, after everything that
    writes a file at start-up (imports included) is done.
    """
    arch = _arch()
    if arch is None:
        return False
    program = _program(arch)
    filters = (_Filter * len(program))(*(_Filter(*ins) for ins in program))
    prog = _Prog(len(program), ctypes.cast(filters, ctypes.POINTER(_Filter)))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: required without CAP_SYS_ADMIN
        return False
    # seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC): every thread, also running ones.
    if libc.syscall(arch.seccomp_nr, 1, 1, ctypes.byref(prog)) == 0:
        return True
    # Older kernels: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) fences this thread and
    # the threads it starts later (the worker calls this before it starts any).
    return bool(libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0)
