"""The ``Tierflow`` facade: the one object applications use.

It is the hot engine, configured from arguments and the environment, plus
the tiers beyond it: ``tier()`` moves finished instances to warm Parquet,
and ``describe``/``history``/``result``/``query`` read an instance from
whichever tier holds it. The warm/tiering packages (and pyarrow) are
imported only when first needed, so hot-only use stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tierflow.hot.authoring import WorkflowDefinition, WorkflowFn
from tierflow.hot.clock import Clock
from tierflow.hot.engine import Engine
from tierflow.hot.index import IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo
from tierflow.settings import Settings

if TYPE_CHECKING:
    from tierflow.tiering.job import Progress, TieringJob, TieringReport
    from tierflow.tiering.policy import TieringPolicy
    from tierflow.warm.storage import ObjectStore

__all__ = ["Tierflow"]

log = logging.getLogger("tierflow")


class Tierflow(Engine):
    """Durable workflows with storage tiers.

    Use as ``async with Tierflow(workflows=[...]) as tf:``; entering starts the
    background scheduler (timers, queued work, crash recovery, and periodic
    tiering if the policy sets an interval).

    Args:
        data_dir: Where everything is stored (``TIERFLOW_DATA_DIR``,
            default ``./tierflow-data``).
        workflows: The workflow definitions this process runs.
        storage_url: Warm storage (``TIERFLOW_STORAGE_URL``): ``s3://bucket/prefix``
            or ``file:///path``; default ``<data_dir>/lake``.
        s3_endpoint: S3-compatible endpoint (``TIERFLOW_S3_ENDPOINT``), e.g. MinIO.
        durability: ``"full"`` (fsync per commit, default) or ``"normal"``
            (``TIERFLOW_DURABILITY``).
        tiering: When instances move to warm (``TieringPolicy``).
        warm_store: A ready ``warm.storage.ObjectStore`` instead of ``storage_url``.
        clock: Inject a ``ManualClock`` to drive timers in tests.
        **options: Further ``Engine`` options (``max_concurrency``,
            ``max_recovery_attempts``, ``inline_sleep_threshold``,
            ``max_payload_bytes``, ``event_sinks``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        workflows: Sequence[WorkflowDefinition | WorkflowFn] = (),
        *,
        storage_url: str | None = None,
        s3_endpoint: str | None = None,
        durability: Literal["full", "normal"] | None = None,
        tiering: TieringPolicy | None = None,
        warm_store: ObjectStore | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        settings = Settings.resolve(
            data_dir=data_dir,
            durability=durability,
            max_concurrency=options.pop("max_concurrency", None),
            max_recovery_attempts=options.pop("max_recovery_attempts", None),
            storage_url=storage_url,
            s3_endpoint=s3_endpoint,
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
        self._policy = tiering
        self._store: ObjectStore | None = warm_store
        self._job: TieringJob | None = None
        self._periodic: asyncio.Task[None] | None = None
        self.archive = _LazyWarm(self)

    async def __aenter__(self) -> Tierflow:
        await super().__aenter__()
        if self.tiering_policy.interval:
            self._periodic = asyncio.get_running_loop().create_task(self._tier_periodically())
        return self

    async def aclose(self) -> None:
        """Stop periodic tiering, then the engine."""
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        await super().aclose()

    # -- the tiers beyond hot ------------------------------------------------------------

    @property
    def tiering_policy(self) -> TieringPolicy:
        """The policy ``tier()`` applies."""
        if self._policy is None:
            from tierflow.tiering.policy import TieringPolicy

            self._policy = TieringPolicy()
        return self._policy

    @property
    def store(self) -> ObjectStore:
        """The warm object store (built on first use; no I/O until used)."""
        if self._store is None:
            from tierflow.warm.storage import ObjectStore, StorageSettings

            url = (
                self.settings.storage_url
                or (Path(self.settings.data_dir).resolve() / "lake").as_uri()
            )
            self._store = ObjectStore(
                StorageSettings.from_env(url=url, endpoint=self.settings.s3_endpoint)
            )
        return self._store

    @property
    def tiering_job(self) -> TieringJob:
        """The tiering job bound to this engine and store."""
        if self._job is None:
            from tierflow.tiering.job import TieringJob

            self._job = TieringJob(self, self.store, self.tiering_policy)
        return self._job

    async def tier(
        self, now: float | None = None, progress: Progress | None = None
    ) -> TieringReport:
        """Run one tiering pass: move finished instances to warm Parquet.

        Args:
            now: Judge ages as if it were this time (seconds since the epoch).
            progress: ``progress(stage, done, total)`` callback.

        Raises:
            StorageError: The warm store is unusable; nothing in hot was touched.
        """
        job = self.tiering_job
        job.progress = progress or (lambda stage, done, total: None)
        return await job.run(now)

    async def tiering_status(self, limit: int = 20) -> dict[str, Any]:
        """The ledger: recent batches, and how many instances each tier holds."""
        from tierflow.tiering.ledger import Ledger

        ledger = Ledger(self.index)
        counts = dict(self.index._read("SELECT tier, count(*) FROM instances GROUP BY tier"))
        return {
            "storage_url": self.store.url,
            "instances": counts,
            "batches": [
                {
                    "batch_id": b.batch_id,
                    "state": b.state,
                    "workflows": b.workflow_count,
                    "events": b.event_count,
                }
                for b in ledger.all(limit)
            ],
        }

    async def _tier_periodically(self) -> None:
        interval = self.tiering_policy.interval or 0
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.tier()
                if report.workflows_moved:
                    log.info("tiering moved %d workflows", report.workflows_moved)
            except Exception:
                log.exception("periodic tiering pass failed")


class _LazyWarm:
    """The engine's archive reader, importing the warm tier on first use."""

    def __init__(self, tf: Tierflow) -> None:
        self.tf = tf
        self._source: Any = None

    def _get(self) -> Any:
        if self._source is None:
            from tierflow.tiering.ledger import Ledger
            from tierflow.tiering.source import WarmSource

            self._source = WarmSource(self.tf.store, Ledger(self.tf.index), self.tf._io)
        return self._source

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        result: WorkflowInfo = await self._get().describe(row)
        return result

    async def history(self, row: IndexRow) -> list[HistoryEvent]:
        result: list[HistoryEvent] = await self._get().history(row)
        return result
