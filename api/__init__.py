"""tierflow's public surface: import everything from here.

Authoring names are defined in ``tierflow.hot`` and re-exported, so
``from tierflow import Tierflow, workflow, WorkflowContext, RetryPolicy`` is all
an application needs.

Names are imported on first use, so ``python -m tierflow.cli`` and the worker
processes import only what they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierflow.hot.lazy import lazy_names

if TYPE_CHECKING:
    from tierflow.facade import Tierflow
    from tierflow.hot import (
        CallbackSubscriber,
        ChildWorkflowFailed,
        CorruptInstance,
        EngineOptions,
        EventType,
        ExportVerificationError,
        HistoryEvent,
        HttpSink,
        InvalidArgument,
        InvalidWorkflowId,
        ManualClock,
        NonDeterminismError,
        Page,
        PayloadError,
        ResultTimeout,
        RetryExhausted,
        RetryPolicy,
        SignalTimeout,
        Status,
        StepError,
        StepTimeout,
        StorageError,
        Subscriber,
        SystemClock,
        TierflowError,
        UnknownQuery,
        WorkflowAlreadyExists,
        WorkflowAlreadyFinished,
        WorkflowCancelled,
        WorkflowCancelledError,
        WorkflowContext,
        WorkflowDefinition,
        WorkflowFailed,
        WorkflowHandle,
        WorkflowInfo,
        WorkflowNotFound,
        WorkflowOnHold,
        WorkflowStillRunning,
        WorkflowTerminatedError,
        workflow,
    )
    from tierflow.hot.replay import ReplayResult
    from tierflow.settings import Settings

__all__ = [
    "CallbackSubscriber",
    "ChildWorkflowFailed",
    "CorruptInstance",
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
    "ReplayResult",
    "ResultTimeout",
    "RetryExhausted",
    "RetryPolicy",
    "Settings",
    "SignalTimeout",
    "Status",
    "StepError",
    "StepTimeout",
    "StorageError",
    "Subscriber",
    "SystemClock",
    "Tierflow",
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
    "workflow",
]

_HOME = {
    "CallbackSubscriber": "hot",
    "ChildWorkflowFailed": "hot",
    "CorruptInstance": "hot",
    "EngineOptions": "hot",
    "EventType": "hot",
    "ExportVerificationError": "hot",
    "HistoryEvent": "hot",
    "HttpSink": "hot",
    "InvalidArgument": "hot",
    "InvalidWorkflowId": "hot",
    "ManualClock": "hot",
    "NonDeterminismError": "hot",
    "Page": "hot",
    "PayloadError": "hot",
    "ReplayResult": "hot.replay",
    "ResultTimeout": "hot",
    "RetryExhausted": "hot",
    "RetryPolicy": "hot",
    "Settings": "settings",
    "SignalTimeout": "hot",
    "Status": "hot",
    "StepError": "hot",
    "StepTimeout": "hot",
    "StorageError": "hot",
    "Subscriber": "hot",
    "SystemClock": "hot",
    "Tierflow": "facade",
    "TierflowError": "hot",
    "UnknownQuery": "hot",
    "WorkflowAlreadyExists": "hot",
    "WorkflowAlreadyFinished": "hot",
    "WorkflowCancelled": "hot",
    "WorkflowCancelledError": "hot",
    "WorkflowContext": "hot",
    "WorkflowDefinition": "hot",
    "WorkflowFailed": "hot",
    "WorkflowHandle": "hot",
    "WorkflowInfo": "hot",
    "WorkflowNotFound": "hot",
    "WorkflowOnHold": "hot",
    "WorkflowStillRunning": "hot",
    "WorkflowTerminatedError": "hot",
    "workflow": "hot",
}


__getattr__ = lazy_names(__name__, _HOME)
