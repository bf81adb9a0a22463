"""Hot tier: the durable runtime for active workflow instances.

Authoring (``workflow``, ``WorkflowContext``, ``RetryPolicy``), the engine
that runs and recovers instances on per-instance SQLite files, the instance
index and the scheduler. Knows nothing of the other tiers.
"""

from tierflow.hot.authoring import WorkflowDefinition, workflow
from tierflow.hot.clock import Clock, ManualClock, SystemClock
from tierflow.hot.context import WorkflowContext
from tierflow.hot.engine import Engine
from tierflow.hot.errors import (
    ChildWorkflowFailed,
    CorruptInstance,
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
