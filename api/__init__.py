"""tierflow's public surface: import everything from here.

Authoring names are defined in ``tierflow.hot`` and re-exported, so
``from tierflow import Tierflow, workflow, WorkflowContext, RetryPolicy`` is all
an application needs.

Names are imported on first use, so ``python -m tierflow.cli`` and the worker
processes import only what they run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "CallbackSubscriber": "tierflow.hot",
    "ChildWorkflowFailed": "tierflow.hot",
    "CorruptInstance": "tierflow.hot",
    "EngineOptions": "tierflow.hot",
    "EventType": "tierflow.hot",
    "ExportVerificationError": "tierflow.hot",
    "HistoryEvent": "tierflow.hot",
    "HttpSink": "tierflow.hot",
    "InvalidArgument": "tierflow.hot",
    "InvalidWorkflowId": "tierflow.hot",
    "ManualClock": "tierflow.hot",
    "NonDeterminismError": "tierflow.hot",
    "Page": "tierflow.hot",
    "PayloadError": "tierflow.hot",
    "ReplayResult": "tierflow.hot.replay",
    "ResultTimeout": "tierflow.hot",
    "RetryExhausted": "tierflow.hot",
    "RetryPolicy": "tierflow.hot",
    "Settings": "tierflow.settings",
    "SignalTimeout": "tierflow.hot",
    "Status": "tierflow.hot",
    "StepError": "tierflow.hot",
    "StepTimeout": "tierflow.hot",
    "StorageError": "tierflow.hot",
    "Subscriber": "tierflow.hot",
    "SystemClock": "tierflow.hot",
    "Tierflow": "tierflow.facade",
    "TierflowError": "tierflow.hot",
    "UnknownQuery": "tierflow.hot",
    "WorkflowAlreadyExists": "tierflow.hot",
    "WorkflowAlreadyFinished": "tierflow.hot",
    "WorkflowCancelled": "tierflow.hot",
    "WorkflowCancelledError": "tierflow.hot",
    "WorkflowContext": "tierflow.hot",
    "WorkflowDefinition": "tierflow.hot",
    "WorkflowFailed": "tierflow.hot",
    "WorkflowHandle": "tierflow.hot",
    "WorkflowInfo": "tierflow.hot",
    "WorkflowNotFound": "tierflow.hot",
    "WorkflowOnHold": "tierflow.hot",
    "WorkflowStillRunning": "tierflow.hot",
    "WorkflowTerminatedError": "tierflow.hot",
    "workflow": "tierflow.hot",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
