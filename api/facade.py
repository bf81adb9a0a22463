"""The ``Tierflow`` facade: the one object applications use.

It composes a hot :class:`~tierflow.hot.engine.Engine` (configured from
arguments and the environment) with the tiers beyond it: it registers a
reader for each archived tier on the engine's router, so ``describe``,
``history``, ``result`` and ``query`` find an instance in whichever tier holds
it, and ``tier()`` moves finished instances to warm Parquet and old warm
batches into the cold Iceberg tables. The warm, cold and tiering packages
(pyarrow, pyiceberg) are imported only when first needed, so hot-only use
stays light.

Why ~600 lines: the facade is the one object applications use; most of its
length is the docstrings of its public methods, each a few lines delegating to
the engine, the router, the moves, SQL or compliance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from tierflow.hot.authoring import WorkflowDefinition, WorkflowFn
from tierflow.hot.clock import Clock
from tierflow.hot.delegate import forward
from tierflow.hot.engine import Engine
from tierflow.hot.errors import InvalidArgument, StorageError
from tierflow.hot.index import IndexDB, IndexRow
from tierflow.hot.models import HistoryEvent, WorkflowInfo
from tierflow.hot.options import EngineOptions
from tierflow.hot.router import HISTORY_CHUNK, Tier
from tierflow.hot.stream import Subscriber
from tierflow.settings import Settings

if TYPE_CHECKING:
    from tierflow.cold.catalog import ColdTables
    from tierflow.cold.maintenance import MaintenanceReport
    from tierflow.cold.status import ColdStatus
    from tierflow.tiering.compliance import Compliance
    from tierflow.tiering.policy import TieringPolicy
    from tierflow.tiering.sql import AsOf, SqlResult, TierSQL
    from tierflow.tiering.to_cold import ColdMove
    from tierflow.tiering.to_warm import Progress, TieringReport, WarmMove
    from tierflow.tiering.warm_ledger import TieringStatus
    from tierflow.warm.storage import ObjectStore

__all__ = ["TierTarget", "Tierflow"]

TierTarget = Literal["warm", "cold"]
"""Limits ``tier()`` to one move: ``"warm"`` (hot → warm) or ``"cold"`` (warm → cold)."""

log = logging.getLogger("tierflow")


class Tierflow:
    """Durable workflows with storage tiers.

    Use as ``async with Tierflow(workflows=[...]) as tf:``; entering starts the
    background scheduler (timers, queued work, crash recovery, and periodic
    tiering if the policy sets an interval).

    Args:
        data_dir: Where everything is stored (``TIERFLOW_DATA_DIR``,
            default ``./tierflow-data``).
        workflows: The workflow definitions this process runs.
        storage_url: Warm and cold storage (``TIERFLOW_STORAGE_URL``):
            ``s3://bucket/prefix`` or ``file:///path``; default ``<data_dir>/lake``.
        catalog_url: The Iceberg catalog of the cold tables (``TIERFLOW_CATALOG_URL``):
            ``sqlite:///...``, ``postgresql+psycopg://...`` or ``http(s)://...`` (REST);
            default ``<data_dir>/catalog.sqlite``.
        s3_endpoint: S3-compatible endpoint (``TIERFLOW_S3_ENDPOINT``), e.g. MinIO.
        options: How the engine runs (``EngineOptions``: durability, concurrency,
            recovery attempts, inline waits, payload size). Taken whole when given;
            without it ``TIERFLOW_DURABILITY``, ``TIERFLOW_MAX_CONCURRENCY`` and
            ``TIERFLOW_MAX_RECOVERY_ATTEMPTS`` apply (``engine_options_from_env``).
        tiering: When instances move to warm (``TieringPolicy``).
        warm_store: A ready ``warm.storage.ObjectStore`` instead of ``storage_url``.
        clock: Inject a ``ManualClock`` to drive timers in tests.
        event_sinks: Subscribers of the event stream (``HttpSink``, ...).

    Attributes:
        engine: The hot engine this facade drives.
        settings: The resolved settings.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        workflows: Sequence[WorkflowDefinition | WorkflowFn] = (),
        *,
        storage_url: str | None = None,
        s3_endpoint: str | None = None,
        catalog_url: str | None = None,
        options: EngineOptions | None = None,
        tiering: TieringPolicy | None = None,
        warm_store: ObjectStore | None = None,
        clock: Clock | None = None,
        event_sinks: Sequence[Subscriber] = (),
    ) -> None:
        settings = Settings.resolve(
            data_dir=data_dir, options=options, storage_url=storage_url, s3_endpoint=s3_endpoint
        )
        self.settings = settings
        self.engine = Engine(
            settings.data_dir,
            workflows,
            options=settings.engine,
            clock=clock,
            event_sinks=event_sinks,
        )
        self._policy = tiering
        self._store: ObjectStore | None = warm_store
        self._catalog_url = catalog_url
        self._job: WarmMove | None = None
        self._cold: ColdTables | None = None
        self._cold_move: ColdMove | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._sql: TierSQL | None = None
        self._compliance: Compliance | None = None
        self.engine.router.register(Tier.WARM, _LazySource(self, Tier.WARM))
        self.engine.router.register(Tier.COLD, _LazySource(self, Tier.COLD))

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Open the data directory without starting the scheduler (for short commands)."""
        self.engine.open()

    async def start_scheduler(self) -> None:
        """Recover orphaned instances and start the background scheduler."""
        await self.engine.start_scheduler()

    async def __aenter__(self) -> Tierflow:
        await self.engine.__aenter__()
        await self._resume_erasures()
        if self.tiering_policy.interval:
            self._periodic = asyncio.get_running_loop().create_task(self._tier_periodically())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop periodic tiering, then the engine."""
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        await self.engine.aclose()
        if self._sql is not None:
            self._sql.close()
        if self._cold is not None:
            self._cold.close()

    @property
    def data_dir(self) -> Path:
        """Root of everything tierflow stores."""
        return self.engine.data_dir

    @property
    def index(self) -> IndexDB:
        """The instance index: the locator of every instance in every tier."""
        return self.engine.index

    # -- workflows (delegated to the engine; reads go through its tier router) -----------

    # Each takes the engine's signature and docstring (tierflow.hot.delegate): one definition.
    start = forward("engine", Engine.start)
    run = forward("engine", Engine.run)
    get_handle = forward("engine", Engine.get_handle)
    describe = forward("engine", Engine.describe)
    history = forward("engine", Engine.history)
    iter_history = forward("engine", Engine.iter_history)
    status = forward("engine", Engine.status)
    result = forward("engine", Engine.result)
    query = forward("engine", Engine.query)
    replay = forward("engine", Engine.replay)
    fork = forward("engine", Engine.fork)
    list = forward("engine", Engine.list)
    signal = forward("engine", Engine.signal)
    cancel = forward("engine", Engine.cancel)
    terminate = forward("engine", Engine.terminate)
    add_sink = forward("engine", Engine.add_sink)

    def subscribe(self, name: str, fn: Any, **options: Any) -> None:
        """Deliver every history event to ``fn(events)`` (see ``Engine.subscribe``)."""
        self.engine.subscribe(name, fn, **options)

    # -- the tiers beyond hot ------------------------------------------------------------

    @property
    def compliance(self) -> Compliance:
        """Retention, legal holds, erasure, the audit log and exports (README, "Compliance")."""
        if self._compliance is None:
            from tierflow.tiering.compliance import Compliance

            self._compliance = Compliance(self)
        return self._compliance

    def forget_cached(self, workflow_ids: Sequence[str]) -> None:
        """Drop this process's in-memory copies of these workflows (erasure calls it).

        The engine's recent results and pending stream events, the SQL engine's
        cache of hot history (and its idle workers, which hold the last hot
        data they read), and the warm and cold readers' caches.
        """
        self.engine.forget(workflow_ids)
        if self._sql is not None:
            self._sql.forget()
        for tier in (Tier.WARM, Tier.COLD):
            self.engine.router.register(tier, _LazySource(self, tier))

    async def _resume_erasures(self) -> None:
        """Finish erasures a crash interrupted (cheap when there is none)."""
        from tierflow.tiering.compliance.records import has_pending_erasures

        if not has_pending_erasures(self.index):
            return
        try:
            await self.compliance.resume_erasures()
        except Exception:
            # The workflows stay hidden; the next erase call or tiering pass resumes it.
            log.exception("resuming an interrupted erasure failed")

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
    def warm_move(self) -> WarmMove:
        """The tiering job bound to this engine and store."""
        if self._job is None:
            from tierflow.tiering.to_warm import WarmMove

            self._job = WarmMove(self.engine, self.store, self.tiering_policy)
        return self._job

    @property
    def cold(self) -> ColdTables:
        """The cold Iceberg tables, through the catalog (opened on first use)."""
        if self._cold is None:
            from tierflow.cold.catalog import CatalogSettings, ColdTables

            catalog = CatalogSettings.from_env(self._catalog_url, data_dir=self.data_dir)
            self._cold = ColdTables(catalog, self.store)
        return self._cold

    @property
    def cold_move(self) -> ColdMove:
        """The warm → cold move bound to this engine, store and cold tables."""
        if self._cold_move is None:
            from tierflow.tiering.to_cold import ColdMove

            self._cold_move = ColdMove(self.engine, self.store, self.cold, self.tiering_policy)
        return self._cold_move

    async def tier(
        self,
        now: float | None = None,
        progress: Progress | None = None,
        *,
        to: TierTarget | None = None,
    ) -> TieringReport:
        """Run one tiering pass: hot → warm, then warm → cold for what is old enough.

        Args:
            now: Judge ages as if it were this time (seconds since the epoch).
            progress: ``progress(stage, done, total)`` callback.
            to: ``"warm"`` runs only the hot → warm move, ``"cold"`` only warm → cold;
                default both.

        Returns:
            The hot → warm report; ``report.cold`` holds the warm → cold one
            (None when that move did not run).

        Raises:
            StorageError: The store or the catalog is unusable; nothing moved.
            InvalidArgument: ``to`` is not "warm" or "cold".
        """
        from tierflow.tiering.compliance.records import has_pending_erasures
        from tierflow.tiering.to_warm import TieringReport

        if to not in (None, "warm", "cold"):
            raise InvalidArgument(f"to must be 'warm' or 'cold', got {to!r}")
        if has_pending_erasures(self.index):
            await self.compliance.resume_erasures()
        callback = progress or (lambda stage, done, total: None)
        report = TieringReport()
        if to != "cold":
            job = self.warm_move
            job.progress = callback
            report = await job.run(now)
        if to != "warm" and self.tiering_policy.cold_after is not None:
            cold_move = self.cold_move
            cold_move.progress = callback
            report.cold = await cold_move.run(now)
        await self._compliance_pass(now, report)
        return report

    async def _compliance_pass(self, now: float | None, report: TieringReport) -> None:
        """After a pass: apply retention when policies exist, append the audit log to Iceberg."""
        # Only a data directory that ever used compliance has its tables: else nothing to do.
        if not self.index.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='retention_policies'", ()
        ):
            return
        compliance = self.compliance
        if compliance.has_retention():
            report.retention = await compliance.apply_retention(now=now)
        try:
            await compliance.publish_audit()
        except StorageError:
            # The moves are done; the records stay in the index and the next pass appends them.
            log.exception("appending the audit log to the Iceberg table failed")

    async def tiering_status(self, limit: int = 20) -> TieringStatus:
        """The ledger: how many instances each tier holds, and the ``limit`` newest batches."""
        from tierflow.tiering.warm_ledger import WarmLedger

        return WarmLedger(self.index).status(self.store.url, limit)

    async def maintain_cold(
        self,
        now: float | None = None,
        *,
        rewrite: bool = True,
        snapshot_retention: float | str | None = None,
        keep_snapshots: int | None = None,
        orphan_grace: float | str | None = None,
    ) -> MaintenanceReport:
        """Maintain the cold tables (see ``ColdMove.maintain``); returns what was done.

        Rewrites small files into large sorted ones, expires snapshots older
        than the retention (keeping the newest ``keep_snapshots``), and deletes
        files no live snapshot references that are older than ``orphan_grace``.
        Defaults come from the tiering policy.

        Raises:
            StorageError: The catalog or the store failed.
        """
        return await self.cold_move.maintain(
            now,
            rewrite=rewrite,
            snapshot_retention=snapshot_retention,
            keep_snapshots=keep_snapshots,
            orphan_grace=orphan_grace,
        )

    async def cold_status(self) -> ColdStatus:
        """The cold tables as the catalog sees them now: snapshot, files, rows, bytes.

        Raises:
            StorageError: The catalog or the store cannot be reached.
        """
        from tierflow.cold.status import cold_status

        cold = self.cold
        return await self.engine.io(lambda: cold_status(cold))

    async def sql(
        self,
        query: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        as_of: AsOf | None = None,
        *,
        limit: int | EllipsisType | None = ...,
        timeout: float | EllipsisType | None = ...,
        memory_limit: str | EllipsisType = ...,
        max_bytes: int | EllipsisType | None = ...,
        stream: bool = False,
    ) -> SqlResult:
        """Run one read-only SQL query across every tier (DuckDB, confined).

        Views: ``workflows`` and ``history`` (every tier; each row has a
        ``tier`` column), and ``hot_*``, ``warm_*``, ``cold_*`` of each. The
        query reads one consistent cut of the tiers: each workflow once, even
        while another process moves workflows between tiers (README, "Consistent
        reads and read leases").

        Args:
            query: One SELECT (or WITH ... SELECT) statement.
            params: Values for ``?``/``$1`` (a sequence) or ``$name`` (a mapping).
            as_of: An aware datetime, ISO 8601 text or a cold snapshot id: read
                the cold archive as of then (hot and warm views are empty).
            limit: Rows returned at most (the rest is cut: ``result.truncated``);
                None for no limit; default 100,000.
            timeout: Seconds the whole query may take; past them its worker
                process is killed (``QueryTimeout``); None for none; default 60.
            memory_limit: Memory the query may use (``"1GB"``, the default):
                DuckDB's limit and the OS limit of its worker process.
            max_bytes: Result bytes returned at most (Arrow IPC size; the rest
                is cut: ``result.truncated``); None for no limit; default 256 MiB.
            stream: Return at once and stream rows with ``result.batches()``.

        Returns:
            The result: ``columns``, ``rows``, ``to_arrow()``, ``batches()``.

        Raises:
            InvalidArgument: The statement is refused (the message says what)
                or malformed.
            QueryTimeout: It ran past the timeout (an ``InvalidArgument``).
            StorageError: The index, the catalog or a file cannot be read.
        """
        from tierflow.tiering.sql import replace_limits

        engine = self.sql_engine
        limits = replace_limits(
            engine.limits,
            max_rows=limit,
            timeout=timeout,
            memory_limit=memory_limit,
            max_bytes=max_bytes,
        )
        return await engine.run(query, params, as_of, limits=limits, stream=stream)

    @property
    def sql_engine(self) -> TierSQL:
        """The SQL-across-tiers engine (its ``limits`` are the defaults of ``sql``)."""
        if self._sql is None:
            from tierflow.tiering.leases import ReadLeases
            from tierflow.tiering.sql import TierSQL

            self._sql = TierSQL(
                self.index,
                self.engine.instances_dir,
                self.settings.engine.durability,
                self.store,
                lambda: self.cold,
                self.engine.io,
                native_reads=self.settings.sql_native_reads,
                hot_cache_bytes=self.settings.sql_hot_cache_mb * 2**20,
                leases=ReadLeases(self.engine.data_dir),
            )
        return self._sql

    async def _tier_periodically(self) -> None:
        interval = self.tiering_policy.interval or 0
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.tier()
                if report.workflows_moved:
                    log.info("moved %d workflows to warm", report.workflows_moved)
                cold = report.cold
                if cold is not None and cold.workflows_moved:
                    log.info("moved %d workflows to cold", cold.workflows_moved)
                if self.tiering_policy.maintain_cold and cold is not None and cold.commits:
                    done = await self.maintain_cold()
                    log.info("cold maintenance: %s", done)
            except Exception:
                log.exception("periodic tiering pass failed")


class _LazySource:
    """The router's reader for ``warm`` or ``cold``, importing that tier on first use."""

    def __init__(self, tf: Tierflow, tier: Tier) -> None:
        self.tf = tf
        self.tier = tier
        self._source: Any = None

    def _get(self) -> Any:
        if self._source is None:
            if self.tier == Tier.WARM:
                from tierflow.tiering.source import WarmSource
                from tierflow.tiering.warm_ledger import WarmLedger

                self._source = WarmSource(
                    self.tf.store, WarmLedger(self.tf.index), self.tf.engine.io
                )
            else:
                from tierflow.cold.reader import ColdReader
                from tierflow.tiering.source import ColdSource

                self._source = ColdSource(ColdReader(self.tf.cold), self.tf.engine.io)
        return self._source

    async def describe(self, row: IndexRow) -> WorkflowInfo:
        result: WorkflowInfo = await self._get().describe(row)
        return result

    async def iter_history(
        self, row: IndexRow, *, after_seq: int = 0, chunk: int = HISTORY_CHUNK
    ) -> AsyncGenerator[list[HistoryEvent], None]:
        # A generator, so that opening the tier (which can fail) happens inside the
        # router's guarded read, as it does for ``history``.
        source = self._get()
        async with contextlib.aclosing(
            source.iter_history(row, after_seq=after_seq, chunk=chunk)
        ) as parts:
            async for part in parts:
                yield part
