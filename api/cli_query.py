"""The read commands: ``list``, ``describe``, ``history`` and ``query``.

They open the data directory without running anything; ``query`` imports the
application (``--app``) because a query handler is workflow code, answered by
replaying the instance's history from whichever tier holds it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tierflow.cli_common import (
    AppOpt,
    AsJson,
    DataDir,
    console,
    load_workflows,
    parse_attribute,
    parse_json,
    print_table,
    run_command,
    with_tf,
)

if TYPE_CHECKING:
    from tierflow.facade import Tierflow
    from tierflow.hot.models import HistoryEvent

__all__ = ["register"]


def _moment(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time from the command line; one without an offset is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{option} is not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


Moment = Annotated[
    str | None,
    typer.Option(
        help="ISO 8601 time, UTC if it has no offset (after: at or after; before: before)"
    ),
]


def list_cmd(
    data_dir: DataDir = None,
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Repeatable: any of these")
    ] = None,
    workflow_type: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Repeatable: any of these")
    ] = None,
    tier: Annotated[
        list[str] | None, typer.Option("--tier", help="hot, warm or cold (repeatable)")
    ] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option(
            "--attribute",
            help="NAME=VALUE, repeatable (all must match); VALUE is read as JSON when it is "
            "a number, true, false or null",
        ),
    ] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="Only children of this workflow")
    ] = None,
    created_after: Moment = None,
    created_before: Moment = None,
    started_after: Moment = None,
    started_before: Moment = None,
    finished_after: Moment = None,
    finished_before: Moment = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="next_cursor of the previous page")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List workflow instances of every tier, newest first, a page at a time."""
    attributes: dict[str, Any] = {}
    for text in attribute or ():
        attributes.update(parse_attribute(text))
    given = {
        "created_after": created_after,
        "created_before": created_before,
        "started_after": started_after,
        "started_before": started_before,
        "finished_after": finished_after,
        "finished_before": finished_before,
    }
    ranges = {k: _moment(v, "--" + k.replace("_", "-")) for k, v in given.items()}

    async def go(tf: Tierflow) -> None:
        page = await tf.list(
            status=status or None,
            workflow_type=workflow_type or None,
            tier=tier or None,
            attributes=attributes or None,
            parent_workflow_id=parent,
            **ranges,
            limit=limit,
            cursor=cursor,
        )
        if as_json:
            items = [i.to_dict() for i in page.items]
            print(json.dumps({"items": items, "next_cursor": page.next_cursor}))
            return
        columns = ("workflow_id", "type", "status", "created", "steps", "tier")
        rows = [
            (
                i.workflow_id,
                i.workflow_type,
                i.status,
                i.created_at.isoformat(timespec="seconds"),
                str(i.step_count),
                i.tier,
            )
            for i in page.items
        ]
        print_table(columns, rows, ids=("workflow_id",))
        if page.next_cursor:
            console.print(f"next page: --cursor {page.next_cursor}", highlight=False)

    run_command(lambda: with_tf(data_dir, go), as_json)


def describe(workflow_id: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Show one instance, from whichever tier holds it."""

    async def go(tf: Tierflow) -> None:
        info = (await tf.describe(workflow_id)).to_dict()
        if as_json:
            print(json.dumps(info))
            return
        rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in info.items()]
        print_table(("field", "value"), rows, ids=("field",))

    run_command(lambda: with_tf(data_dir, go), as_json)


def history(workflow_id: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Show an instance's events, from whichever tier holds it (``--json``: streamed)."""

    async def go(tf: Tierflow) -> None:
        if as_json:
            await _print_history_json(tf, workflow_id)
            return
        # The table sizes its columns to every row: it needs the whole history.
        events = await tf.history(workflow_id)
        columns = ("#", "time", "event", "step", "attempt", "payload")
        rows = [
            (
                str(e.event_id),
                e.event_time.isoformat(timespec="milliseconds"),
                e.event_type,
                e.step_name or "",
                str(e.attempt or ""),
                "" if e.payload is None else json.dumps(e.payload)[:200],
            )
            for e in events
        ]
        print_table(columns, rows, ids=("#",))

    run_command(lambda: with_tf(data_dir, go), as_json)


async def _print_history_json(tf: Tierflow, workflow_id: str) -> None:
    """Print ``{"workflow_id", "tier", "events"}`` as the events are read, chunk by chunk.

    The same text ``json.dumps`` of the whole document gives. The first chunk is
    read before anything is printed, so an unknown id prints only the error.
    """
    chunks = tf.iter_history(workflow_id)
    events: list[HistoryEvent] = await anext(chunks, [])
    row = tf.index.get(workflow_id)
    head = json.dumps({"workflow_id": workflow_id, "tier": row.tier if row else None, "events": []})
    sys.stdout.write(head[:-2])  # everything up to the events' "["
    sep = ""
    while events:
        sys.stdout.write(sep + ", ".join(json.dumps(e.to_dict()) for e in events))
        sys.stdout.flush()
        sep = ", "
        events = await anext(chunks, [])
    sys.stdout.write("]}\n")


def query(
    workflow_id: str,
    name: Annotated[str, typer.Argument(help="The query handler's name")],
    app_module: AppOpt,
    args_json: Annotated[
        str, typer.Option("--args", help="JSON array of the handler's arguments")
    ] = "[]",
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Ask a query handler of an instance; answered by replaying its history (any tier)."""
    args = parse_json(args_json, "--args")
    if not isinstance(args, list):
        raise typer.BadParameter("--args must be a JSON array, e.g. '[1, \"x\"]'")
    wfs = load_workflows(app_module)

    async def go(tf: Tierflow) -> None:
        answer = await tf.query(workflow_id, name, *args)
        if as_json:
            print(json.dumps({"result": answer}))
        else:
            console.print_json(json.dumps(answer))

    run_command(lambda: with_tf(data_dir, go, wfs), as_json)


def register(app: typer.Typer) -> None:
    """Add the read commands to the ``tierflow`` app."""
    app.command("list")(list_cmd)
    app.command()(describe)
    app.command()(history)
    app.command()(query)
