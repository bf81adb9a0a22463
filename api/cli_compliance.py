"""``tierflow compliance ...``: retention, legal holds, erasure, the audit log, verified export.

Each command opens the data directory (and the warm and cold storage, which erasure and
retention reach) and calls ``tf.compliance``. Every command that changes something records
``--actor`` (default: the operating-system user) and ``--reason`` in the audit log.
``--json`` prints the result as JSON instead of a table. Exit codes are those of every
command (``tierflow.cli_common``): 0 done, 1 a ``remove`` found no policy or an export
did not verify, 2 bad input, 3 an unknown workflow id, 4 refused (a legal hold, a
workflow still running).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from tierflow.cli_common import (
    FROM_OPTIONS,
    AsJson,
    Where,
    console,
    err_console,
    parse_attribute,
    run_command,
    storage_options,
    with_tf,
)
from tierflow.hot.errors import ExportVerificationError

if TYPE_CHECKING:
    from tierflow.facade import Tierflow

__all__ = ["compliance_app"]

compliance_app = typer.Typer(
    help="Retention, legal holds, erasure, the audit log and verified exports.",
    no_args_is_help=True,
)
retention_app = typer.Typer(help="Retention policies per workflow type.", no_args_is_help=True)
compliance_app.add_typer(retention_app, name="retention")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "unknown"


Actor = Annotated[
    str | None,
    typer.Option("--actor", help="Who does this, for the audit log (default: the OS user)"),
]
Reason = Annotated[str | None, typer.Option("--reason", help="Why, for the audit log")]
NeededReason = Annotated[str, typer.Option("--reason", help="Why, for the audit log (required)")]
Attribute = Annotated[
    str | None,
    typer.Option(
        "--attribute",
        help="NAME=VALUE: every workflow with that attribute value (VALUE is read as JSON "
        "when it is a number, true, false or null: --attribute code='\"5\"' is the text 5)",
    ),
]


def _actor(actor: str | None) -> str:
    return actor or _os_user()


def _attribute(text: str | None) -> dict[str, Any] | None:
    return None if text is None else parse_attribute(text)


def _plain(value: Any) -> Any:
    """A result as JSON-ready data: dataclasses by their ``to_dict`` (else their fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        data = to_dict() if callable(to_dict) else dataclasses.asdict(value)
        return _plain(data)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _show(
    result: Any, as_json: bool, title: str | None = None, columns: tuple[str, ...] = ()
) -> None:
    """Print one result (key/value rows) or a list of them (one row each).

    ``columns`` picks the columns of a list's table (``--json`` prints every field).
    """
    data = _plain(result)
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    if isinstance(data, list):
        found = list(dict.fromkeys(k for row in data for k in row))
        picked = [c for c in columns if c in found] or found
        table = Table(*picked, title=title)
        for row in data:
            table.add_row(*(_cell(row.get(c)) for c in picked))
        if not data:
            console.print(f"{title}: none" if title else "none")
            return
        console.print(table)
        return
    if isinstance(data, dict):
        table = Table("field", "value", title=title)
        for key, value in data.items():
            table.add_row(key, _cell(value))
        console.print(table)
        return
    console.print(_cell(data))


# What a table shows of each kind of row (``--json`` has every field).
_POLICY_COLUMNS = ("workflow_type", "status", "keep", "start_or_finish", "actor", "reason")
_HOLD_COLUMNS = ("hold_id", "workflow_id", "attribute", "reason", "actor", "created_at")
_AUDIT_COLUMNS = ("seq", "at", "operation", "actor", "reason", "subject", "counts")


def _go(where: Where, fn: Callable[[Tierflow], Awaitable[Any]], as_json: bool) -> Any:
    return run_command(lambda: with_tf(where.data_dir, fn, **where.options()), as_json)


# -- retention -----------------------------------------------------------------------------


@retention_app.command("set")
@storage_options
def retention_set(
    workflow_type: Annotated[str, typer.Argument(help='A type name or a glob: "debug_*", "*"')],
    keep: Annotated[str, typer.Argument(help="How long to keep: 90d, 7y, 12h or seconds")],
    start_or_finish: Annotated[
        str, typer.Option("--from", help="Measure from the workflow's start or finish")
    ] = "finish",
    status: Annotated[
        str | None, typer.Option("--status", help="Only workflows that ended with this status")
    ] = None,
    actor: Actor = None,
    reason: Reason = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Keep finished workflows of a type for KEEP, then delete them from every tier."""
    if start_or_finish not in ("start", "finish"):
        raise typer.BadParameter("--from must be 'start' or 'finish'")
    keep_value: str | int = int(keep) if keep.isdigit() else keep

    async def go(tf: Tierflow) -> None:
        policy = await tf.compliance.set_retention(
            workflow_type,
            keep_value,
            start_or_finish=start_or_finish,
            status=status,
            actor=_actor(actor),
            reason=reason,
        )
        _show(policy, as_json, "retention policy set")

    _go(where, go, as_json)


@retention_app.command("list")
@storage_options
def retention_list(
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """List the retention policies."""

    async def go(tf: Tierflow) -> None:
        policies = await tf.compliance.retention_policies()
        _show(policies, as_json, "retention policies", _POLICY_COLUMNS)

    _go(where, go, as_json)


@retention_app.command("remove")
@storage_options
def retention_remove(
    workflow_type: Annotated[str, typer.Argument(help="The policy's type name or glob")],
    status: Annotated[
        str | None, typer.Option("--status", help="The policy's status, if it has one")
    ] = None,
    actor: Actor = None,
    reason: Reason = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Remove a retention policy; exits 1 if there was none."""

    async def go(tf: Tierflow) -> bool:
        removed = await tf.compliance.remove_retention(
            workflow_type, status=status, actor=_actor(actor), reason=reason
        )
        if as_json:
            print(
                json.dumps({"workflow_type": workflow_type, "status": status, "removed": removed})
            )
        elif removed:
            console.print(f"retention policy for {workflow_type!r} removed")
        else:
            err_console.print(f"no retention policy for {workflow_type!r}")
        return bool(removed)

    if not _go(where, go, as_json):
        raise typer.Exit(1)


@compliance_app.command("apply")
@storage_options
def apply_cmd(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; change nothing")
    ] = False,
    actor: Actor = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Delete every expired finished workflow from every tier (held ones are kept)."""

    async def go(tf: Tierflow) -> None:
        report = await tf.compliance.apply_retention(dry_run=dry_run, actor=_actor(actor))
        _show(report, as_json, "retention (dry run)" if dry_run else "retention applied")

    _go(where, go, as_json)


# -- holds ---------------------------------------------------------------------------------


@compliance_app.command("hold")
@storage_options
def hold_cmd(
    reason: NeededReason,
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="Hold this workflow and its children")
    ] = None,
    attribute: Attribute = None,
    actor: Actor = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Place a legal hold (--id or --attribute): no retention or erasure until released."""
    if (workflow_id is None) == (attribute is None):
        raise typer.BadParameter("give exactly one of --id and --attribute")
    attr = _attribute(attribute)

    async def go(tf: Tierflow) -> None:
        hold = await tf.compliance.hold(
            workflow_id=workflow_id, attribute=attr, reason=reason, actor=_actor(actor)
        )
        _show(hold, as_json, "hold placed")

    _go(where, go, as_json)


@compliance_app.command("release")
@storage_options
def release_cmd(
    hold_id: Annotated[str, typer.Argument(help="The hold's id")],
    reason: NeededReason,
    actor: Actor = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Release a legal hold."""

    async def go(tf: Tierflow) -> None:
        hold = await tf.compliance.release(hold_id, actor=_actor(actor), reason=reason)
        _show(hold, as_json, "hold released")

    _go(where, go, as_json)


@compliance_app.command("holds")
@storage_options
def holds_cmd(
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="Only the holds covering this workflow")
    ] = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """List the active legal holds."""

    async def go(tf: Tierflow) -> None:
        _show(await tf.compliance.holds(workflow_id), as_json, "legal holds", _HOLD_COLUMNS)

    _go(where, go, as_json)


# -- erasure -------------------------------------------------------------------------------


@compliance_app.command("erase")
@storage_options
def erase_cmd(
    reason: NeededReason,
    workflow_id: Annotated[
        str | None, typer.Argument(help="The workflow to erase (with its children)")
    ] = None,
    attribute: Attribute = None,
    force: Annotated[
        bool, typer.Option("--force", help="Terminate a workflow that has not finished, first")
    ] = False,
    actor: Actor = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Erase a workflow (ID) or every workflow with an attribute value from every tier.

    Refused, with nothing erased, when a legal hold covers any of them, or one has not
    finished (unless --force). Cold snapshots that held them are expired: time travel to
    before the erasure is gone for the files it rewrote.
    """
    if (workflow_id is None) == (attribute is None):
        raise typer.BadParameter("give exactly one of ID and --attribute")
    attr = _attribute(attribute)

    async def go(tf: Tierflow) -> None:
        report = await tf.compliance.erase(
            workflow_id=workflow_id,
            attribute=attr,
            reason=reason,
            actor=_actor(actor),
            force=force,
        )
        _show(report, as_json, "erased")

    _go(where, go, as_json)


# -- audit ---------------------------------------------------------------------------------


def _since(text: str | None) -> float | datetime | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"--since must be ISO 8601 or seconds since the epoch, got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise typer.BadParameter("--since needs a time zone, e.g. 2026-01-01T00:00:00+00:00")
    return when


@compliance_app.command("audit")
@storage_options
def audit_cmd(
    workflow_id: Annotated[
        str | None,
        typer.Option("--id", help="Only this workflow's records (erased ones by their keyed hash)"),
    ] = None,
    operation: Annotated[
        str | None, typer.Option("--operation", help="Only this operation, e.g. erase")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only records from then on (ISO 8601 or seconds)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Records at most")] = 1000,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Show the audit log, oldest first."""
    when = _since(since)

    async def go(tf: Tierflow) -> None:
        records = await tf.compliance.audit_log(
            workflow_id=workflow_id, operation=operation, since=when, limit=limit
        )
        rows = _plain(records)
        if not as_json:
            for row in rows:  # an erased workflow is named by its keyed hash only
                digest = row.get("subject_hash")
                row["subject"] = row.get("workflow_id") or (digest and f"hash {digest[:16]}")
                row["at"] = str(row.get("at", ""))[:19]
                counts = row.get("counts") or {}
                row["counts"] = " ".join(f"{k} {v}" for k, v in counts.items() if v) or None
        _show(rows, as_json, "audit log", _AUDIT_COLUMNS)

    _go(where, go, as_json)


# -- export --------------------------------------------------------------------------------


@compliance_app.command("export")
@storage_options
def export_cmd(
    workflow_id: Annotated[str, typer.Argument(help="The workflow to export")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="A new or empty directory to write it to")
    ],
    actor: Actor = None,
    reason: Reason = None,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Write a workflow's row, every event and a manifest of checksums to --out."""

    async def go(tf: Tierflow) -> None:
        manifest = await tf.compliance.export(workflow_id, out, actor=_actor(actor), reason=reason)
        if as_json:
            print(json.dumps(_plain(manifest), ensure_ascii=False))
            return
        snapshot = (
            f", cold snapshot {manifest.cold_snapshot_id}" if manifest.cold_snapshot_id else ""
        )
        console.print(
            f"exported {workflow_id} from {manifest.tier}{snapshot}: {manifest.events} events "
            f"to {out}"
        )
        for f in manifest.files:
            console.print(f"  {f.name}  {f.size:>10,} B  sha256 {f.sha256}")

    _go(where, go, as_json)


@compliance_app.command("verify")
@storage_options
def verify_cmd(
    directory: Annotated[Path, typer.Argument(help="The export's directory")],
    files_only: Annotated[
        bool,
        typer.Option(
            "--files-only",
            help="Check the files against the manifest only; open no data directory",
        ),
    ] = False,
    where: Where = FROM_OPTIONS,
    as_json: AsJson = False,
) -> None:
    """Check an export: checksums, no file missing or added, events equal to the archive's.

    Exits 1, naming each file concerned, when it does not verify.
    """
    from tierflow.tiering.compliance.export import verify_export

    # Caught where it is raised: run_command would turn it into exit code 2.
    async def go(tf: Tierflow) -> Any:
        try:
            return tf.compliance.verify_export(directory)
        except ExportVerificationError as exc:
            return exc

    if files_only:
        try:
            outcome: Any = verify_export(directory)
        except ExportVerificationError as exc:
            outcome = exc
    else:
        outcome = _go(where, go, as_json)
    if isinstance(outcome, ExportVerificationError):
        if as_json:
            print(
                json.dumps(
                    {
                        "directory": str(directory),
                        "verified": False,
                        "files": list(outcome.files),
                        "problems": list(outcome.problems),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            err_console.print(f"[red]does not verify:[/red] {directory}")
            for line in outcome.problems:
                err_console.print(f"  {line}")
        raise typer.Exit(1)
    manifest = outcome
    if as_json:
        print(json.dumps({"verified": True, **_plain(manifest)}, ensure_ascii=False))
        return
    against = "the files" if files_only else "the files and the archive"
    console.print(
        f"[green]verified[/green] {directory}: {manifest.workflow_id}, {manifest.events} events "
        f"from {manifest.tier}, checked against {against}"
    )
