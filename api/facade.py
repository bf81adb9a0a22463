"""The ``Tierflow`` facade: the one object applications use.

Today it is the hot engine configured from arguments and the environment;
the warm and cold tiers will extend it (``tier``, ``sql``, reads from any tier).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from api.settings import Settings
from hot.authoring import WorkflowDefinition, WorkflowFn
from hot.clock import Clock
from hot.engine import Engine

__all__ = ["Tierflow"]


class Tierflow(Engine):
    """Durable workflows with storage tiers.

    Use as ``async with Tierflow(workflows=[...]) as tf:``; entering starts the
    background scheduler (timers, queued work, crash recovery).

    Args:
        data_dir: Where everything is stored (``TIERFLOW_DATA_DIR``,
            default ``./tierflow-data``).
        workflows: The workflow definitions this process runs.
        durability: ``"full"`` (fsync per commit, default) or ``"normal"``
            (``TIERFLOW_DURABILITY``).
        clock: Inject a ``ManualClock`` to drive timers in tests.
        **options: Further ``Engine`` options (``max_concurrency``,
            ``max_recovery_attempts``, ``inline_sleep_threshold``, ``max_payload_bytes``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        workflows: Sequence[WorkflowDefinition | WorkflowFn] = (),
        *,
        durability: Literal["full", "normal"] | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        settings = Settings.resolve(
            data_dir=data_dir,
            durability=durability,
            max_concurrency=options.pop("max_concurrency", None),
            max_recovery_attempts=options.pop("max_recovery_attempts", None),
        )
        self.settings = settings
        super().__init__(
            settings.data_dir,
            workflows,
            durability=settings.durability,  # type: ignore[arg-type]
            clock=clock,
            max_concurrency=settings.max_concurrency,
            max_recovery_attempts=settings.max_recovery_attempts,
            **options,
        )

    async def __aenter__(self) -> Tierflow:
        await super().__aenter__()
        return self
