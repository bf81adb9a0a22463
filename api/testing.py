"""Test helpers for applications: replay stored histories against today's code.

Like Temporal's ``Replayer``: export a history once
(``tierflow history ID --json > tests/histories/order-42.json``), keep it
with your tests, and check every code change against it::

    from tierflow.testing import replay_history

    def test_order_history_still_replays():
        replay_history("tests/histories/order-42.json", process_order)

:func:`replay_history` runs no step, starts no child and writes nothing; it
raises ``NonDeterminismError`` at the first event where the code and the
history disagree.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tierflow.hot.authoring import WorkflowDefinition, WorkflowFn
from tierflow.hot.errors import InvalidArgument
from tierflow.hot.models import HistoryEvent
from tierflow.hot.replay import ReplayResult, replay_events

__all__ = ["ReplayResult", "load_history", "replay_history", "replay_history_async"]

HistorySource = (
    str | os.PathLike[str] | Mapping[str, Any] | Iterable[HistoryEvent | Mapping[str, Any]]
)


def load_history(source: HistorySource) -> list[HistoryEvent]:
    """Read a history: a path to ``tierflow history --json`` output, that JSON, or events.

    Raises:
        InvalidArgument: The source holds no events, or an event lacks a field.
    """
    data: Any = source
    if isinstance(source, str | os.PathLike):
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    if isinstance(data, Mapping):
        data = data.get("events")
    if data is None:
        raise InvalidArgument("no events found (expected the output of `tierflow history --json`)")
    events = [e if isinstance(e, HistoryEvent) else _event(e) for e in data]
    if not events:
        raise InvalidArgument("the history has no events")
    return events


def _event(d: Mapping[str, Any]) -> HistoryEvent:
    try:
        t = d["event_time"]
        return HistoryEvent(
            workflow_id=d["workflow_id"],
            run_id=d["run_id"],
            event_id=int(d["event_id"]),
            event_type=d["event_type"],
            event_time=datetime.fromisoformat(t) if isinstance(t, str) else t,
            step_name=d.get("step_name"),
            attempt=d.get("attempt"),
            payload=d.get("payload"),
            workflow_type=d["workflow_type"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"not a history event: {exc!r} in {dict(d)!r:.200}") from exc


def _definition(workflow: WorkflowDefinition | WorkflowFn) -> WorkflowDefinition:
    if isinstance(workflow, WorkflowDefinition):
        return workflow
    from tierflow.hot.authoring import Registry

    return Registry([workflow]).resolve(workflow)


async def replay_history_async(
    source: HistorySource, workflow: WorkflowDefinition | WorkflowFn
) -> ReplayResult:
    """:func:`replay_history` for code already inside an event loop."""
    return await replay_events(_definition(workflow), load_history(source), tier="file")


def replay_history(
    source: HistorySource, workflow: WorkflowDefinition | WorkflowFn
) -> ReplayResult:
    """Replay a stored history against ``workflow``'s current code.

    Args:
        source: A path to a file written by ``tierflow history ID --json``,
            its parsed JSON, or a list of events (``HistoryEvent`` or dicts).
        workflow: The ``@workflow`` to check.

    Returns:
        What the code returned, with the events replayed.

    Raises:
        NonDeterminismError: The code no longer matches the history;
            ``event_id``, ``expected`` and ``got`` say where and how.
    """
    return asyncio.run(replay_history_async(source, workflow))
