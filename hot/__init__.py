"""Hot tier: the durable runtime for active workflow instances.

Authoring (``workflow``, ``WorkflowContext``, ``RetryPolicy``), the engine
that runs and recovers instances on per-instance SQLite files, the instance
index and the scheduler. Knows nothing of the other tiers.

Names are imported on first use, so a process that needs one module (the CLI
refusing a statement, the SQL worker) does not import the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow.hot.lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.hot.authoring import WorkflowDefinition, workflow
    from tierflow.hot.clock import Clock, ManualClock, SystemClock
    from tierflow.hot.context import WorkflowContext
    from tierflow.hot.engine import Engine
    from tierflow.hot.errors import (
        ChildWorkflowFailed,
        CorruptInstance,
        ExportVerificationError,
        HoldNotFound,
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
    "HoldNotFound",
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
    "CallbackSubscriber": "stream",
    "ChildWorkflowFailed": "errors",
    "Clock": "clock",
    "CorruptInstance": "errors",
    "Engine": "engine",
    "EngineOptions": "options",
    "EventType": "models",
    "ExportVerificationError": "errors",
    "HistoryEvent": "models",
    "HttpSink": "stream",
    "HoldNotFound": "errors",
    "InvalidArgument": "errors",
    "InvalidWorkflowId": "errors",
    "ManualClock": "clock",
    "NonDeterminismError": "errors",
    "Page": "reads",
    "PayloadError": "errors",
    "ResultTimeout": "errors",
    "RetryExhausted": "errors",
    "RetryPolicy": "retry",
    "SignalTimeout": "errors",
    "Status": "models",
    "StepError": "errors",
    "StepTimeout": "errors",
    "StorageError": "errors",
    "Subscriber": "stream",
    "SystemClock": "clock",
    "TierflowError": "errors",
    "UnknownQuery": "errors",
    "WorkflowAlreadyExists": "errors",
    "WorkflowAlreadyFinished": "errors",
    "WorkflowCancelled": "errors",
    "WorkflowCancelledError": "errors",
    "WorkflowContext": "context",
    "WorkflowDefinition": "authoring",
    "WorkflowFailed": "errors",
    "WorkflowHandle": "handle",
    "WorkflowInfo": "models",
    "WorkflowNotFound": "errors",
    "WorkflowOnHold": "errors",
    "WorkflowStillRunning": "errors",
    "WorkflowTerminatedError": "errors",
    "parse_duration": "retry",
    "workflow": "authoring",
}


__getattr__ = lazy_names(__name__, _HOME)
