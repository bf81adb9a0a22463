"""The engine's options: one frozen value, declared here only.

``Tierflow(options=EngineOptions(...))`` and ``Engine(options=...)`` take it
as it is; :class:`~tierflow.settings.Settings` builds it from the
``TIERFLOW_*`` environment when no options are given. Invalid values are
refused when the value is made, before anything is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tierflow.hot import serde
from tierflow.hot.errors import InvalidArgument

__all__ = ["Durability", "EngineOptions"]

Durability = Literal["full", "normal"]


@dataclass(frozen=True)
class EngineOptions:
    """How one engine runs; every field has a default.

    Attributes:
        durability: ``"full"`` (fsync per commit: a completed step survives power
            loss) or ``"normal"`` (fsync at checkpoints; survives a process crash,
            may lose the last commits on power loss). ``TIERFLOW_DURABILITY``.
        max_concurrency: Instances the scheduler runs at once (1 or more).
            ``TIERFLOW_MAX_CONCURRENCY``.
        max_recovery_attempts: Recoveries after which an instance whose runner
            keeps dying is failed (0: never recover). ``TIERFLOW_MAX_RECOVERY_ATTEMPTS``.
        inline_sleep_threshold: Timers and retry waits up to this many seconds
            are awaited in memory; longer ones suspend the instance.
        max_payload_bytes: Largest JSON input, result, or signal accepted.
    """

    durability: Durability = "full"
    max_concurrency: int = 100
    max_recovery_attempts: int = 5
    inline_sleep_threshold: float = 0.25
    max_payload_bytes: int = serde.DEFAULT_MAX_PAYLOAD_BYTES

    def __post_init__(self) -> None:
        if self.durability not in ("full", "normal"):
            raise InvalidArgument(f"durability must be 'full' or 'normal', got {self.durability!r}")
        if self.max_concurrency < 1:
            raise InvalidArgument(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_recovery_attempts < 0:
            raise InvalidArgument(
                "max_recovery_attempts must be >= 0 (0: never recover), "
                f"got {self.max_recovery_attempts}"
            )
        if self.inline_sleep_threshold < 0:
            raise InvalidArgument(
                f"inline_sleep_threshold must be 0 or more, got {self.inline_sleep_threshold}"
            )
        if self.max_payload_bytes < 1:
            raise InvalidArgument(f"max_payload_bytes must be >= 1, got {self.max_payload_bytes}")
