"""Keys of durable operations, ``"<branch>:<n>"``, stable under asyncio concurrency.

Operations are numbered per branch (asyncio task), not globally: in
``asyncio.gather`` the order in which branches resume depends on I/O timing
live and differs again on replay, so a global counter would not be
deterministic. A branch is named after its parent branch and the order in
which the parent's children made their first operation (``0`` is the
workflow itself, ``0.1`` its first concurrent child, ``0.1.2`` that child's
second, ...). Pure bookkeeping over the running tasks: no I/O.
"""

from __future__ import annotations

import asyncio
import weakref
from contextvars import ContextVar
from typing import Any

__all__ = ["Branches"]

# (owner token, branch name) of the running task; inherited by the tasks it creates.
_BRANCH: ContextVar[tuple[object, str] | None] = ContextVar("tierflow_branch", default=None)


class Branches:
    """Names the tasks of one execution and numbers each one's operations."""

    def __init__(self) -> None:
        self._branch_of: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = (
            weakref.WeakKeyDictionary()
        )
        self._counters: dict[str, int] = {}
        # Identity of this execution in the branch context variable (never an id()
        # that a later object could reuse).
        self._token = object()

    def enter_root(self) -> None:
        """Name the current task the workflow's root branch ``0``."""
        task = asyncio.current_task()
        if task is not None:
            self._branch_of[task] = "0"
        _BRANCH.set((self._token, "0"))

    def next_key(self) -> str:
        """The key of the current task's next operation: ``"<branch>:<n>"``."""
        task = asyncio.current_task()
        branch = self._branch_of.get(task) if task is not None else "0"
        if branch is None:
            parent = _BRANCH.get()
            if parent is None or parent[0] is not self._token:
                branch = "0"
            else:
                n = self._counters.get(f"{parent[1]}/", 0) + 1
                self._counters[f"{parent[1]}/"] = n
                branch = f"{parent[1]}.{n}"
            assert task is not None
            self._branch_of[task] = branch
            _BRANCH.set((self._token, branch))
        local = self._counters.get(branch, 0) + 1
        self._counters[branch] = local
        return f"{branch}:{local}"
