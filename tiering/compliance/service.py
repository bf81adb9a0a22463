"""``tf.compliance``: retention, legal holds, erasure, the audit log and verified exports.

Every operation that changes something takes an ``actor`` (who) and a
``reason`` (why) and leaves an audit record in the same index transaction as
the change. Policies, holds, erasure progress and the audit log live in the
instance index (:mod:`.records`); each tiering pass also appends new audit
records to the Iceberg table ``tierflow.audit`` (:meth:`Compliance.publish_audit`).

Why ~600 lines: this is the public surface, one documented method per operation
of ``tf.compliance`` with its argument checks and audit record; the machinery is
in ``records``, ``retention``, ``holds``, ``targets``, ``erase`` and ``export``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.hot.errors import (
    HoldNotFound,
    InvalidArgument,
    WorkflowAlreadyFinished,
    WorkflowNotFound,
    WorkflowOnHold,
    WorkflowStillRunning,
)
from tierflow.hot.ids import validate_workflow_id
from tierflow.hot.models import from_micros, to_micros
from tierflow.tiering.compliance import holds as _holds
from tierflow.tiering.compliance import targets
from tierflow.tiering.compliance.erase import Eraser, ErasureReport
from tierflow.tiering.compliance.holds import Hold, connection_run, coverage, read_holds
from tierflow.tiering.compliance.host import Host
from tierflow.tiering.compliance.records import AuditRecord, ComplianceRecords
from tierflow.tiering.compliance.retention import (
    RetentionPolicy,
    RetentionReport,
    check_policy,
    parse_keep,
    policy_from_row,
    select_expired,
)

if TYPE_CHECKING:
    from tierflow.tiering.compliance.export import ExportManifest

__all__ = ["Compliance"]

_POLICY_COLUMNS = (
    "workflow_type, status, keep_seconds, keep, start_or_finish, actor, reason, created_at"
)
_NOTHING = ErasureReport(
    erasure_id="", workflows_erased=0, per_tier={"hot": 0, "warm": 0, "cold": 0}
)
"""The report of an erasure that found nothing to erase."""
# How long a forced erasure waits for a terminated execution of this process to stop.
_STOP_WAIT = 10.0


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{what} is required (non-empty text)")
    return value


def _micros(value: float | datetime, what: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgument(f"{what}: use an aware datetime (with a time zone)")
        return to_micros(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{what}: seconds since the epoch or an aware datetime")
    return to_micros(float(value))


class Compliance:
    """Retention, legal holds, erasure, the audit log and exports of one data directory.

    Built by the facade (``tf.compliance``); every method but
    :meth:`verify_export` is async.

    Args:
        tf: The tiers (the ``Tierflow`` facade).
    """

    def __init__(self, tf: Host) -> None:
        self.tf = tf
        self.records = ComplianceRecords(tf.index, tf.data_dir)
        self.eraser = Eraser(tf, self.records)

    def _now_us(self, now: float | datetime | None) -> int:
        return self.tf.engine.now_us() if now is None else _micros(now, "now")

    def _run(self) -> _holds.Run:
        return lambda sql, params: self.tf.index.execute(sql, params)

    # -- retention ------------------------------------------------------------------------

    async def set_retention(
        self,
        workflow_type: str,
        keep: str | int | float | timedelta,
        *,
        start_or_finish: str = "finish",
        status: str | None = None,
        actor: str,
        reason: str | None = None,
    ) -> RetentionPolicy:
        """Keep finished workflows of a type (or glob) for ``keep``, then delete them everywhere.

        Replaces the policy with the same type and status. ``apply_retention``
        (and every ``tf.tier()`` pass once a policy exists) deletes what expired.

        Args:
            workflow_type: A type name or a glob (``"debug_*"``, ``"*"``).
            keep: ``"90d"``, ``"7y"`` (365-day years), ``"12w"``, seconds, or a timedelta.
            start_or_finish: Count ``keep`` from the workflow's ``"finish"`` or ``"start"``.
            status: Only finished workflows with this status (e.g. keep ``"failed"``
                ones longer); None for any.
            actor: Who sets it.
            reason: Why.

        Returns:
            The policy.

        Raises:
            InvalidArgument: A malformed duration, type, status or actor.
        """
        check_policy(workflow_type, status, start_or_finish)
        _text(actor, "actor")
        seconds, text = parse_keep(keep)
        now = self.tf.engine.now_us()
        audit = self.records.values(
            "retention.set",
            actor=actor,
            reason=reason,
            at_us=now,
            detail={
                "workflow_type": workflow_type,
                "status": status,
                "keep": text,
                "keep_seconds": seconds,
                "start_or_finish": start_or_finish,
            },
        )

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO retention_policies VALUES (?,?,?,?,?,?,?,?)",
                (workflow_type, status or "", seconds, text, start_or_finish, actor, reason, now),
            )
            ComplianceRecords.insert(conn, [audit])

        self.tf.index.write_now(fn, durable=True)
        return RetentionPolicy(
            workflow_type=workflow_type,
            keep=timedelta(seconds=seconds),
            start_or_finish=start_or_finish,
            status=status,
            actor=actor,
            reason=reason,
            created_at=from_micros(now),
        )

    async def remove_retention(
        self,
        workflow_type: str,
        *,
        status: str | None = None,
        actor: str,
        reason: str | None = None,
    ) -> bool:
        """Remove the policy for this type (or glob) and status; False if there was none.

        Raises:
            InvalidArgument: No actor, or a malformed type or status.
        """
        check_policy(workflow_type, status, "finish")
        _text(actor, "actor")
        audit = self.records.values(
            "retention.remove",
            actor=actor,
            reason=reason,
            at_us=self.tf.engine.now_us(),
            detail={"workflow_type": workflow_type, "status": status},
        )

        def fn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM retention_policies WHERE workflow_type=? AND status=?",
                (workflow_type, status or ""),
            )
            if cur.rowcount:
                ComplianceRecords.insert(conn, [audit])
            return cur.rowcount > 0

        removed: bool = self.tf.index.write_now(fn, durable=True)
        return removed

    async def retention_policies(self) -> list[RetentionPolicy]:
        """Every retention policy, by type then status."""
        rows = self.tf.index.execute(
            f"SELECT {_POLICY_COLUMNS} FROM retention_policies ORDER BY workflow_type, status", ()
        )
        return [policy_from_row(r) for r in rows]

    def has_retention(self) -> bool:
        """Whether any retention policy exists (cheap)."""
        return bool(self.tf.index.execute("SELECT 1 FROM retention_policies LIMIT 1", ()))

    async def apply_retention(
        self,
        *,
        now: float | datetime | None = None,
        dry_run: bool = False,
        actor: str = "retention",
    ) -> RetentionReport:
        """Delete, from every tier, the finished workflows whose retention has run out.

        A top-level workflow expires under its most specific policy; its
        descendants go with it. Families with a held member are kept (counted
        in ``held_back``), as are families with a member still running.
        Deletion is an erasure (see ``erase``); each deleted workflow gets a
        ``retention.expire`` audit record (its keyed hash only), the pass a
        ``retention.apply`` record.

        Args:
            now: Judge ages as of this time (seconds since the epoch or an aware
                datetime); default the engine clock.
            dry_run: Change nothing; report the same counts a real run would.
            actor: Who runs it (recorded).

        Raises:
            InvalidArgument: A malformed ``now``.
            StorageError: A tier failed; the erasure resumes at the next pass.
        """
        now_us = self._now_us(now)
        _text(actor, "actor")
        policies = await self.retention_policies()
        run = self._run()
        held = set().union(*coverage(run, read_holds(run)).values())
        selection = select_expired(run, policies, now_us, held)
        expired = selection.per_tier(selection.tiers)
        held_back = selection.per_tier(selection.held)
        if dry_run or not policies:
            return RetentionReport(dry_run, from_micros(now_us), expired, held_back)
        erasure = None
        if selection.erase:
            erasure = await self.eraser.erase(
                selection.erase,
                operation="retention.expire",
                actor=actor,
                reason="the retention policy of its type ran out",
                requested={},
                check=self._retention_check,
            )
            expired = dict(erasure.per_tier) if erasure else selection.per_tier({})
        audit = self.records.values(
            "retention.apply",
            actor=actor,
            reason=None,
            at_us=self.tf.engine.now_us(),
            counts=expired,
            snapshots_before=erasure.snapshots_before if erasure else None,
            snapshots_after=erasure.snapshots_after if erasure else None,
            detail={
                "now": from_micros(now_us).isoformat(),
                "held_back": held_back,
                "erasure_id": erasure.erasure_id if erasure else None,
            },
        )
        self.records.append(audit)
        return RetentionReport(False, from_micros(now_us), expired, held_back, erasure)

    @staticmethod
    def _retention_check(conn: sqlite3.Connection, ids: list[str]) -> list[str]:
        """In the intent transaction: drop what became held, unfinished or gone meanwhile."""
        run = connection_run(conn)
        held = set().union(*coverage(run, read_holds(run)).values())
        ok = targets.finished(run, ids)
        return [w for w in ids if w in ok and w not in held]

    # -- holds ----------------------------------------------------------------------------

    async def hold(
        self,
        *,
        workflow_id: str | None = None,
        attribute: Mapping[str, Any] | None = None,
        reason: str,
        actor: str,
    ) -> Hold:
        """Place a legal hold: nothing it covers is erased or expires until it is released.

        Args:
            workflow_id: Hold this workflow and its descendants.
            attribute: Or hold every workflow, present or future, with this one
                attribute value (``{"customer": "c-42"}``), and their descendants.
            reason: Why (required).
            actor: Who (required).

        Returns:
            The hold (``hold_id`` releases it).

        Raises:
            InvalidArgument: Neither or both of ``workflow_id`` and ``attribute``,
                a malformed attribute, or no reason or actor.
            WorkflowNotFound: No workflow with that id.
        """
        _text(reason, "reason")
        _text(actor, "actor")
        if (workflow_id is None) == (attribute is None):
            raise InvalidArgument("hold needs exactly one of workflow_id= or attribute=")
        name = value = None
        if workflow_id is not None:
            validate_workflow_id(workflow_id)
            if self.tf.index.find(workflow_id) is None:
                raise WorkflowNotFound(
                    f"no workflow with id {workflow_id!r}", workflow_id=workflow_id
                )
        else:
            assert attribute is not None
            name, value = _holds.check_attribute(attribute)
        now = self.tf.engine.now_us()
        hold = Hold(
            hold_id=_holds.new_hold_id(),
            workflow_id=workflow_id,
            attribute=None if name is None else {name: value},
            reason=reason,
            actor=actor,
            created_at=from_micros(now),
        )
        detail: dict[str, Any] = {"hold_id": hold.hold_id}
        if hold.attribute is not None:
            detail["attribute"] = hold.attribute
        audit = self.records.values(
            "hold", actor=actor, reason=reason, at_us=now, workflow_id=workflow_id, detail=detail
        )
        subject = self.records.subject_hash(workflow_id) if workflow_id else None

        def fn(conn: sqlite3.Connection) -> None:
            if workflow_id is not None and not _holds.exists(connection_run(conn), workflow_id):
                raise WorkflowNotFound(
                    f"no workflow with id {workflow_id!r}", workflow_id=workflow_id
                )
            _holds.insert(conn, hold, subject, now)
            ComplianceRecords.insert(conn, [audit])

        self.tf.index.write_now(fn, durable=True)
        return hold

    async def release(self, hold_id: str, *, actor: str, reason: str) -> Hold:
        """Release a hold; what it covered may be erased or expire again.

        Raises:
            HoldNotFound: No such active hold (never placed, or already released).
            InvalidArgument: No reason or actor.
        """
        _text(reason, "reason")
        _text(actor, "actor")
        found = read_holds(self._run(), active_only=False, hold_id=hold_id)
        if not found:
            raise HoldNotFound(f"no hold {hold_id!r}")
        if not found[0].active:
            raise HoldNotFound(f"hold {hold_id!r} was already released")
        now = self.tf.engine.now_us()
        audit = self.records.values(
            "release",
            actor=actor,
            reason=reason,
            at_us=now,
            workflow_id=found[0].workflow_id,
            detail={"hold_id": hold_id},
        )

        def fn(conn: sqlite3.Connection) -> None:
            if not _holds.release(conn, hold_id, actor=actor, reason=reason, now_us=now):
                raise HoldNotFound(f"hold {hold_id!r} was already released")
            ComplianceRecords.insert(conn, [audit])

        self.tf.index.write_now(fn, durable=True)
        return read_holds(self._run(), active_only=False, hold_id=hold_id)[0]

    async def holds(self, workflow_id: str | None = None) -> list[Hold]:
        """The active holds; with ``workflow_id``, those that cover that workflow.

        Raises:
            WorkflowNotFound: No workflow with that id.
        """
        run = self._run()
        if workflow_id is None:
            return read_holds(run)
        validate_workflow_id(workflow_id)
        if self.tf.index.find(workflow_id) is None:
            raise WorkflowNotFound(f"no workflow with id {workflow_id!r}", workflow_id=workflow_id)
        return _holds.covering(run, workflow_id)

    # -- erasure --------------------------------------------------------------------------

    async def erase(
        self,
        *,
        workflow_id: str | None = None,
        attribute: Mapping[str, Any] | None = None,
        reason: str,
        actor: str,
        force: bool = False,
    ) -> ErasureReport:
        """Erase workflows from every tier, for good: rows, files, old snapshots, caches.

        The workflow named (or every workflow with the attribute value) and
        all its descendants are erased. Afterwards no read, list, SQL query,
        time travel, replay or export finds them, and no file under the data
        directory or in the store holds their bytes; the cold snapshots that
        referenced their files are expired (time travel to before the erasure
        is gone for those files). The audit log gets one ``erase`` record per
        workflow, naming it only by its keyed hash.

        Args:
            workflow_id: The workflow to erase (with its descendants).
            attribute: Or every workflow with this one attribute value.
            reason: Why (required; recorded).
            actor: Who asks (required; recorded).
            force: Terminate workflows that have not finished first.

        Returns:
            What was erased (an empty report when no workflow has the attribute value).

        Raises:
            WorkflowNotFound: No workflow with that id.
            WorkflowOnHold: A legal hold covers one of them (``hold_ids`` names the
                holds); nothing was erased.
            WorkflowStillRunning: One of them has not finished and ``force`` is
                False; nothing was erased.
            InvalidArgument: Neither or both selectors, or no reason or actor.
            StorageError: A tier failed; the erasure is recorded and resumes at the
                next ``erase`` call, tiering pass or process start.
        """
        _text(reason, "reason")
        _text(actor, "actor")
        if (workflow_id is None) == (attribute is None):
            raise InvalidArgument("erase needs exactly one of workflow_id= or attribute=")
        await self.eraser.resume()
        run = self._run()
        requested: dict[str, Any]
        if workflow_id is not None:
            validate_workflow_id(workflow_id)
            if self.tf.index.find(workflow_id) is None:
                raise WorkflowNotFound(
                    f"no workflow with id {workflow_id!r}", workflow_id=workflow_id
                )
            seeds = [workflow_id]
            requested = {"workflows": [workflow_id]}
        else:
            assert attribute is not None
            name, value = _holds.check_attribute(attribute)
            seeds = targets.with_attribute(run, name, value)
            requested = {
                "workflows": seeds,
                "attribute": name,
                "attribute_value_hash": self.records.subject_hash(f"{name}={value!r}"),
            }
        chosen = sorted(_holds.descendants(run, seeds))
        if not chosen:
            return _NOTHING
        self._refuse_held(run, chosen, workflow_id)
        unfinished = targets.unfinished(run, chosen)
        if unfinished and not force:
            wid, status = next(iter(unfinished.items()))
            raise WorkflowStillRunning(
                f"workflow {wid!r} has not finished (status {status}); erase(force=True) "
                "terminates it first",
                workflow_id=wid,
                status=status,
            )
        for wid in unfinished:
            await self._terminate(wid, reason)

        def check(conn: sqlite3.Connection, ids: list[str]) -> list[str]:
            crun = connection_run(conn)
            self._refuse_held(crun, ids, workflow_id)
            still = targets.unfinished(crun, ids)
            if still:
                wid, status = next(iter(still.items()))
                raise WorkflowStillRunning(
                    f"workflow {wid!r} has not finished (status {status})",
                    workflow_id=wid,
                    status=status,
                )
            present = targets.finished(crun, ids)
            if workflow_id is not None and workflow_id not in present:
                raise WorkflowNotFound(
                    f"no workflow with id {workflow_id!r}", workflow_id=workflow_id
                )
            return [w for w in ids if w in present]

        report = await self.eraser.erase(
            chosen,
            operation="erase",
            actor=actor,
            reason=reason,
            requested=requested,
            check=check,
        )
        return report or _NOTHING

    @staticmethod
    def _refuse_held(run: _holds.Run, ids: list[str], workflow_id: str | None) -> None:
        covering = targets.held_by(run, ids)
        if covering:
            what = (
                "the workflow or one of its descendants"
                if workflow_id
                else "a workflow with that attribute"
            )
            raise WorkflowOnHold(
                f"erasure refused: legal hold(s) {', '.join(covering)} cover {what}; "
                "release them first. Nothing was erased.",
                workflow_id=workflow_id,
                hold_ids=covering,
            )

    async def _terminate(self, workflow_id: str, reason: str) -> None:
        engine = self.tf.engine
        with contextlib.suppress(WorkflowAlreadyFinished):
            await engine.terminate(workflow_id, f"erasure: {reason}")
        # Its execution in this process stops at once; wait for it to let go of the file.
        loop = asyncio.get_running_loop()
        end = loop.time() + _STOP_WAIT
        while engine.instances.is_active(workflow_id) and loop.time() < end:
            await asyncio.sleep(0.01)

    async def resume_erasures(self) -> list[ErasureReport]:
        """Finish erasures a crash interrupted (the facade calls it at start and each pass)."""
        return await self.eraser.resume()

    # -- the audit log --------------------------------------------------------------------

    async def audit_log(
        self,
        *,
        workflow_id: str | None = None,
        operation: str | None = None,
        since: float | datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Audit records, oldest first.

        Args:
            workflow_id: Only records about this workflow, found by its keyed hash,
                so an erased workflow's records are found too (they no longer name it).
            operation: Only this operation (``"erase"``, ``"hold"``, ...).
            since: Only records at or after this time.
            limit: At most this many (1 to 100,000).

        Raises:
            InvalidArgument: A malformed argument.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise InvalidArgument("limit must be between 1 and 100000")
        subject = None
        if workflow_id is not None:
            validate_workflow_id(workflow_id)
            subject = self.records.subject_hash(workflow_id)
        return self.records.query(
            subject_hash=subject,
            operation=operation,
            since_us=None if since is None else _micros(since, "since"),
            limit=limit,
        )

    async def publish_audit(self) -> int:
        """Append audit records not yet in the Iceberg table ``tierflow.audit``; how many.

        Cheap when there is nothing new (the index remembers how far it got;
        the table's own snapshot property is what counts, so a crash between
        the append and that note never appends a record twice).
        """
        from tierflow.tiering.compliance.audit import publish

        return await publish(self.tf, self.records)

    # -- export ---------------------------------------------------------------------------

    async def export(
        self,
        workflow_id: str,
        out_dir: str | Path,
        *,
        actor: str = "export",
        reason: str | None = None,
    ) -> ExportManifest:
        """Write one workflow's row, events and a checksummed manifest to ``out_dir``.

        Recorded in the audit log (``export``, naming the workflow, with the
        tier, the cold snapshot and the files' checksums). See
        :func:`~tierflow.tiering.compliance.export.export_workflow`.

        Raises:
            WorkflowNotFound: No workflow has that id (an erased one included).
            InvalidArgument: ``out_dir`` is a file or a directory that is not empty.
            StorageError: A tier cannot be read, or the files cannot be written.
        """
        from tierflow.tiering.compliance.export import export_workflow

        _text(actor, "actor")
        manifest = await export_workflow(self.tf, workflow_id, out_dir)
        audit = self.records.values(
            "export",
            actor=actor,
            reason=reason,
            at_us=self.tf.engine.now_us(),
            workflow_id=workflow_id,
            detail={
                "tier": manifest.tier,
                "cold_snapshot_id": manifest.cold_snapshot_id,
                "files": [f.to_dict() for f in manifest.files],
            },
        )
        self.records.append(audit)
        return manifest

    def verify_export(self, directory: str | Path) -> ExportManifest:
        """Re-hash an export's files and compare its row and events with the archive (sync).

        See :func:`~tierflow.tiering.compliance.export.verify_export`.

        Raises:
            ExportVerificationError: A file changed, is missing or was added, or
                the events differ from the archive's; the message names each file.
        """
        from tierflow.tiering.compliance.export import verify_export

        return verify_export(directory, self.tf)
