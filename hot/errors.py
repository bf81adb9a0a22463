"""The tierflow exception tree.

Every error tierflow raises derives from :class:`TierflowError`. Subtrees are
grouped by what a caller can do about them::

    TierflowError
    ├── InvalidArgument (also ValueError)        fix the input and call again
    │   ├── InvalidWorkflowId
    │   ├── PayloadError                         not JSON, or too large
    │   ├── UnknownQuery
    │   ├── HoldNotFound (also LookupError)      no active legal hold with that id
    │   └── QueryTimeout (also TimeoutError)     tf.sql() ran past its timeout
    ├── WorkflowNotFound (also LookupError)      unknown id, or unknown type
    ├── WorkflowAlreadyExists                    start(..., on_conflict="fail")
    ├── WorkflowAlreadyFinished                  signal/cancel of a finished run
    ├── WorkflowOnHold                           erasure of a workflow under legal hold
    ├── WorkflowStillRunning                     erasure of an unfinished one, no force
    ├── WorkflowFailed                           result() of a failed run; .cause
    │   └── ChildWorkflowFailed                  raised in a parent workflow
    ├── WorkflowCancelledError                   result() of a cancelled run
    ├── WorkflowTerminatedError                  result() of a terminated run
    ├── NonDeterminismError                      replay diverged from history
    ├── StepError                                a step failed for good
    │   ├── StepTimeout
    │   └── RetryExhausted
    ├── SignalTimeout
    ├── ResultTimeout (also TimeoutError)        handle.result(timeout) expired
    ├── ExportVerificationError                  an export's files or events differ
    ├── ApiError                                 HTTP API: auth, limits (.status, .code)
    ├── InsecureBindError                        HTTP API: no keys, non-loopback host
    └── StorageError                             disk, SQLite or object store
        ├── CorruptInstance                      an instance file is unreadable
        └── ObjectNotFound (also LookupError)    no object at that key in the store

    BaseException
    └── WorkflowCancelled                        raised inside a cancelled workflow

Cancellation delivered *inside* a workflow (:class:`WorkflowCancelled`) derives
from ``BaseException`` so that ``except Exception`` in user code does not
swallow it; ``finally`` blocks still run.

Names: an exception class's name ends in ``Error``. The names above that do
not (``InvalidArgument``, ``WorkflowNotFound``, ``StepTimeout``,
``WorkflowCancelled``, ...) predate the rule and stay, because applications
catch them by name; this tree is where each of them is documented. A new
exception ends in ``Error`` and is added to the tree; a test checks that
every exception ``tierflow`` exports appears here. ``QueryTimeout`` lives in
``tierflow.tiering.sql``, ``ObjectNotFound`` in ``tierflow.warm.storage``,
``ApiError`` and ``InsecureBindError`` in ``tierflow.http``; every other one is
defined in this module. Exceptions the engine raises and
catches itself (``IncompleteInstance``, the signals that suspend or stop a
running workflow, a SQL worker's deadline) never reach a caller and are not
part of the tree.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChildWorkflowFailed",
    "CorruptInstance",
    "ExportVerificationError",
    "HoldNotFound",
    "InvalidArgument",
    "InvalidWorkflowId",
    "NonDeterminismError",
    "PayloadError",
    "ResultTimeout",
    "RetryExhausted",
    "SignalTimeout",
    "StepError",
    "StepTimeout",
    "StorageError",
    "TierflowError",
    "UnknownQuery",
    "WorkflowAlreadyExists",
    "WorkflowAlreadyFinished",
    "WorkflowCancelled",
    "WorkflowCancelledError",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WorkflowOnHold",
    "WorkflowStillRunning",
    "WorkflowTerminatedError",
]


class TierflowError(Exception):
    """Root of every error tierflow raises.

    Attributes:
        workflow_id: The instance concerned, when there is one.
    """

    def __init__(self, message: str, *, workflow_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.workflow_id = workflow_id


class InvalidArgument(TierflowError, ValueError):
    """The caller passed something tierflow cannot accept; nothing was changed."""


class HoldNotFound(InvalidArgument, LookupError):
    """No active legal hold has this id: it was never placed, or it was already released."""


class InvalidWorkflowId(InvalidArgument):
    """A workflow id does not match ``^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$``."""


class PayloadError(InvalidArgument):
    """A value is not JSON-serialisable or exceeds the payload size limit."""


class UnknownQuery(InvalidArgument):
    """A query name has no handler; ``known`` lists the registered names."""

    def __init__(
        self, message: str, *, workflow_id: str | None = None, known: list[str] | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.known = known or []


class WorkflowNotFound(TierflowError, LookupError):
    """No instance with this id exists, or no workflow type with this name.

    Attributes:
        known_types: For an unknown type, the registered type names.
    """

    def __init__(
        self, message: str, *, workflow_id: str | None = None, known_types: list[str] | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.known_types = known_types or []


class WorkflowAlreadyExists(TierflowError):
    """``start``/``run`` with ``on_conflict="fail"`` found an instance with that id."""


class WorkflowAlreadyFinished(TierflowError):
    """The operation needs a live instance, but it has finished.

    Attributes:
        status: The terminal status the instance has.
    """

    def __init__(
        self, message: str, *, workflow_id: str | None = None, status: str | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.status = status


class WorkflowOnHold(TierflowError):
    """Erasure refused: a legal hold covers the workflow (or one erased with it); nothing changed.

    Attributes:
        hold_ids: The holds that cover it; each must be released first.
    """

    def __init__(
        self, message: str, *, workflow_id: str | None = None, hold_ids: list[str] | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.hold_ids = hold_ids or []


class WorkflowStillRunning(TierflowError):
    """Erasure refused: the workflow (or one erased with it) has not finished; nothing changed.

    Pass ``force=True`` to terminate it first.

    Attributes:
        status: Its status now.
    """

    def __init__(
        self, message: str, *, workflow_id: str | None = None, status: str | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.status = status


class WorkflowFailed(TierflowError):
    """The workflow ended with an error.

    Attributes:
        error_type: Qualified name of the exception the workflow raised.
        cause: The error message recorded in history.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        error_type: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.error_type = error_type
        self.cause = cause


class ChildWorkflowFailed(WorkflowFailed):
    """A child workflow failed; raised inside the parent, which may catch it."""


class WorkflowCancelledError(TierflowError):
    """``result()`` of an instance that was cancelled."""


class WorkflowTerminatedError(TierflowError):
    """``result()`` of an instance that was terminated; ``reason`` says why."""

    def __init__(
        self, message: str, *, workflow_id: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.reason = reason


class NonDeterminismError(TierflowError):
    """Replaying the workflow code did not match its recorded history.

    Attributes:
        seq: Position of the operation that diverged.
        event_id: The history event where code and history first disagree
            (None when raised by a live run, which does not know event ids).
        expected: What history recorded at that position.
        got: What the code asked for (also as ``actual``).
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        seq: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        event_id: int | None = None,
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.seq = seq
        self.event_id = event_id
        self.expected = expected
        self.actual = actual
        self.got = actual


class StepError(TierflowError):
    """A step failed for good (inside a workflow).

    Attributes:
        step: The step name.
        attempt: The attempt that failed last.
        error_type: Qualified name of the exception the step raised.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        step: str | None = None,
        attempt: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.step = step
        self.attempt = attempt
        self.error_type = error_type


class StepTimeout(StepError, TimeoutError):
    """One attempt of a step ran longer than its ``timeout``."""


class RetryExhausted(StepError):
    """A step failed on every attempt its RetryPolicy allowed."""


class SignalTimeout(TierflowError, TimeoutError):
    """``wait_for_signal`` timed out and no default was given; ``signal`` names it."""

    def __init__(
        self, message: str, *, workflow_id: str | None = None, signal: str | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.signal = signal


class ResultTimeout(TierflowError, TimeoutError):
    """``handle.result(timeout=...)`` expired before the instance finished."""


class ExportVerificationError(TierflowError):
    """A compliance export does not verify: a file changed, is missing or was added.

    Also raised when its events differ from the archive's. The message names
    every file concerned and what is wrong with it.

    Attributes:
        directory: The export's directory.
        files: The names of the files concerned, in the order found (the
            directory itself when it is missing).
        problems: One line per problem, each starting with the file's name.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        directory: str | None = None,
        files: tuple[str, ...] = (),
        problems: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.directory = directory
        self.files = files
        self.problems = problems


class StorageError(TierflowError):
    """Disk, SQLite or object-store failure; ``url`` names the location."""

    def __init__(
        self, message: str, *, workflow_id: str | None = None, url: str | None = None
    ) -> None:
        super().__init__(message, workflow_id=workflow_id)
        self.url = url


class CorruptInstance(StorageError):
    """An instance file could not be read; it has been quarantined."""


class WorkflowCancelled(BaseException):
    """Raised inside a workflow at its next durable operation after ``cancel``.

    Derives from ``BaseException`` so ``except Exception`` does not swallow it.
    ``finally`` blocks run, and durable operations inside them still work, so
    cleanup steps can be written as usual.
    """

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "cancelled")
        self.reason = reason


def error_info(exc: BaseException) -> dict[str, Any]:
    """Describe an exception as JSON for history payloads."""
    t = type(exc)
    return {"type": f"{t.__module__}.{t.__qualname__}", "message": str(exc)}
