"""Owner liveness and start-up reconciliation.

Every engine process is an *owner* with a lock file under ``hot/owners/``,
held with ``flock`` for the life of the process. An instance is leased to the
owner that runs it. The kernel drops a dead process's ``flock`` at once, so a
restarted engine knows immediately which leases are orphaned — no waiting for
a lease timeout — and recovers those instances from their history.

The lock file records the kernel boot id. A dead owner from an earlier boot
means the machine itself went down, so index commits made with
``synchronous=NORMAL`` may be lost; only then is the hot directory scanned to
rebuild missing index rows from the instance files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OwnerLock", "boot_id", "find_dead_owners", "other_owners"]

log = logging.getLogger("tierflow.recovery")


def boot_id() -> str:
    """Return the kernel's boot id, or "" where the platform has none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass
class OwnerLock:
    """This process's owner identity and the lock that proves it is alive."""

    owner_id: str
    path: Path
    fd: int

    @classmethod
    def acquire(cls, owners_dir: Path) -> OwnerLock:
        """Create and lock a fresh owner file."""
        owners_dir.mkdir(parents=True, exist_ok=True)
        owner_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path = owners_dir / f"{owner_id}.lock"
        # Locked before it appears under its name: another process checking
        # owners must never see it unlocked (it would take this live owner for
        # dead, and recover its instances and delete its spare files).
        tmp = owners_dir / f".{owner_id}.new"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, boot_id().encode())
        os.fsync(fd)
        os.rename(tmp, path)
        return cls(owner_id, path, fd)

    def release(self) -> None:
        """Delete and unlock the owner file (clean shutdown)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def other_owners(owners_dir: Path, me: str) -> int:
    """How many other owners have a lock file (alive, or dead and not yet noticed)."""
    if not owners_dir.exists():
        return 0
    return sum(1 for p in owners_dir.glob("*.lock") if p.stem != me)


def find_dead_owners(owners_dir: Path, candidates: set[str], me: str) -> tuple[set[str], bool]:
    """Return which ``candidates`` are dead, and whether any died in an earlier boot.

    An owner is alive only while some process holds the lock on its file. Dead
    owners' files are removed.
    """
    dead: set[str] = set()
    other_boot = False
    current_boot: str | None = None  # read only once an owner is found dead (a /proc read)
    names = set(candidates)
    if owners_dir.exists():
        names |= {p.stem for p in owners_dir.glob("*.lock")}
    for owner in names:
        if owner == me:
            continue
        path = owners_dir / f"{owner}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            if owner in candidates:
                dead.add(owner)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            recorded = os.read(fd, 64).decode(errors="replace").strip()
            if current_boot is None:
                current_boot = boot_id()
            if recorded and current_boot and recorded != current_boot:
                other_boot = True
            dead.add(owner)
            log.info("owner %s is gone%s", owner, " (earlier boot)" if other_boot else "")
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            os.close(fd)
    return dead, other_boot
