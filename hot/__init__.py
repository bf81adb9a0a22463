"""Hot tier: the durable runtime for active workflow instances.

Authoring (``workflow``, ``WorkflowContext``, ``RetryPolicy``), the engine
that runs and recovers instances on per-instance SQLite files, the instance
index and the scheduler. Knows nothing of the other tiers.

Names are imported on first use, so a process that needs one module (the CLI
refusing a statement, the SQL worker) does not import the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierflow.hot.authoring import WorkflowDefinition, workflow
    from tierflow.hot.clock import Clock, ManualClock, SystemClock
    from tierflow.hot.context import WorkflowContext
    from tierflow.hot.engine import Engine
    from tierflow.hot.errors import (
        ChildWorkflowFailed,
        CorruptInstance,
        ExportVerificationError,
        InvalidArgument,
        InvalidWorkflowId,
        NonDeterminismError,
        PayloadError,
        ResultTimeout,
        RetryExhausted,
        SignalTimeout,
        StepError,
        StepTimeout,
        StorageError,
        TierflowError,
        UnknownQuery,
        WorkflowAlreadyExists,
        WorkflowAlreadyFinished,
        WorkflowCancelled,
        WorkflowCancelledError,
        WorkflowFailed,
        WorkflowNotFound,
        WorkflowOnHold,
        WorkflowStillRunning,
        WorkflowTerminatedError,
    )
    from tierflow.hot.handle import WorkflowHandle
    from tierflow.hot.models import EventType, HistoryEvent, Status, WorkflowInfo
    from tierflow.hot.options import EngineOptions
    from tierflow.hot.reads import Page
    from tierflow.hot.retry import RetryPolicy, parse_duration
    from tierflow.hot.stream import CallbackSubscriber, HttpSink, Subscriber

__all__ = [
    "CallbackSubscriber",
    "ChildWorkflowFailed",
    "Clock",
    "CorruptInstance",
    "Engine",
    "EngineOptions",
    "EventType",
    "ExportVerificationError",
    "HistoryEvent",
    "HttpSink",
    "InvalidArgument",
    "InvalidWorkflowId",
    "ManualClock",
    "NonDeterminismError",
    "Page",
    "PayloadError",
    "ResultTimeout",
    "RetryExhausted",
    "RetryPolicy",
    "SignalTimeout",
    "Status",
    "StepError",
    "StepTimeout",
    "StorageError",
    "Subscriber",
    "SystemClock",
    "TierflowError",
    "UnknownQuery",
    "WorkflowAlreadyExists",
    "WorkflowAlreadyFinished",
    "WorkflowCancelled",
    "WorkflowCancelledError",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowOnHold",
    "WorkflowStillRunning",
    "WorkflowTerminatedError",
    "parse_duration",
    "workflow",
]

_HOME = {
    "CallbackSubscriber": "tierflow.hot.stream",
    "ChildWorkflowFailed": "tierflow.hot.errors",
    "Clock": "tierflow.hot.clock",
    "CorruptInstance": "tierflow.hot.errors",
    "Engine": "tierflow.hot.engine",
    "EngineOptions": "tierflow.hot.options",
    "EventType": "tierflow.hot.models",
    "ExportVerificationError": "tierflow.hot.errors",
    "HistoryEvent": "tierflow.hot.models",
    "HttpSink": "tierflow.hot.stream",
    "InvalidArgument": "tierflow.hot.errors",
    "InvalidWorkflowId": "tierflow.hot.errors",
    "ManualClock": "tierflow.hot.clock",
    "NonDeterminismError": "tierflow.hot.errors",
    "Page": "tierflow.hot.reads",
    "PayloadError": "tierflow.hot.errors",
    "ResultTimeout": "tierflow.hot.errors",
    "RetryExhausted": "tierflow.hot.errors",
    "RetryPolicy": "tierflow.hot.retry",
    "SignalTimeout": "tierflow.hot.errors",
    "Status": "tierflow.hot.models",
    "StepError": "tierflow.hot.errors",
    "StepTimeout": "tierflow.hot.errors",
    "StorageError": "tierflow.hot.errors",
    "Subscriber": "tierflow.hot.stream",
    "SystemClock": "tierflow.hot.clock",
    "TierflowError": "tierflow.hot.errors",
    "UnknownQuery": "tierflow.hot.errors",
    "WorkflowAlreadyExists": "tierflow.hot.errors",
    "WorkflowAlreadyFinished": "tierflow.hot.errors",
    "WorkflowCancelled": "tierflow.hot.errors",
    "WorkflowCancelledError": "tierflow.hot.errors",
    "WorkflowContext": "tierflow.hot.context",
    "WorkflowDefinition": "tierflow.hot.authoring",
    "WorkflowFailed": "tierflow.hot.errors",
    "WorkflowHandle": "tierflow.hot.handle",
    "WorkflowInfo": "tierflow.hot.models",
    "WorkflowNotFound": "tierflow.hot.errors",
    "WorkflowOnHold": "tierflow.hot.errors",
    "WorkflowStillRunning": "tierflow.hot.errors",
    "WorkflowTerminatedError": "tierflow.hot.errors",
    "parse_duration": "tierflow.hot.retry",
    "workflow": "tierflow.hot.authoring",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
