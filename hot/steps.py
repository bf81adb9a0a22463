"""Steps: run a step's body at most once to success, recording every attempt.

``WorkflowContext.step`` checks its arguments and calls :func:`run_step`,
which drives one step through its records. A recorded outcome is returned (or
raised) without running anything. Otherwise an attempt runs: a sync body on
the I/O pool, in the same thread hop that makes earlier records durable (its
result is written by the next commit); an async body, or one with a timeout,
on the event loop after a commit of what is buffered. A failed attempt is
recorded at once; if the policy retries it, the next attempt waits on a
durable timer (a long backoff unloads the instance).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from tierflow.hot import serde
from tierflow.hot.errors import (
    PayloadError,
    RetryExhausted,
    StepError,
    StepTimeout,
    WorkflowCancelled,
    error_info,
)
from tierflow.hot.executor import Execution
from tierflow.hot.models import EventType, from_micros, to_micros
from tierflow.hot.records import EventRow, OpKind, OpRecord, OpStatus
from tierflow.hot.retry import RetryPolicy

__all__ = ["run_step"]


async def run_step(
    ex: Execution,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy,
    limit: float | None,
) -> Any:
    """Run the step ``name`` of ``ex`` (``fn(*args, **kwargs)``) and return its result.

    Args:
        ex: The execution the step belongs to.
        name: The step's name (checked on replay).
        fn: The step's body.
        args: Positional arguments for ``fn``.
        kwargs: Keyword arguments for ``fn``.
        policy: How failed attempts are retried.
        limit: Seconds one attempt may take; None for no limit.

    Raises:
        StepError: The step failed for good (``RetryExhausted``, ``StepTimeout``).
        WorkflowCancelled: The instance was cancelled.
    """
    seq = ex.next_seq()
    rec = ex.record_for(seq, OpKind.STEP, name)
    attempt = 1
    if rec is not None:
        if rec.status == OpStatus.COMPLETED:
            return serde.decode(rec.result)
        if rec.status == OpStatus.FAILED:
            raise _rebuild_step_error(ex.workflow_id, name, rec)
        if rec.status == OpStatus.CANCELLED:
            raise WorkflowCancelled(ex.cancel_reason)
        if rec.status == OpStatus.RETRYING:
            wake = rec.wake_at or 0
            if ex.now_us() < wake:
                ex.check_cancel(seq, OpKind.STEP, name)
                await ex.wait_until(wake, "retry")
            attempt = rec.attempt + 1
    ex.check_cancel(seq, OpKind.STEP, name)
    while True:
        await ex.flush_values()
        started = ex.now_us()
        if limit is None and not inspect.iscoroutinefunction(fn):
            # Fast path: one hop on the I/O pool commits what is buffered, then
            # runs the body; the result is written by the next commit.
            records = functools.partial(_completed, ex, seq, name, attempt, started)
            ex.count_step()
            ok, out = await ex.run_step_deferred(lambda: _call_sync(fn, args, kwargs), records)
            if ok:
                return out
            ex.uncount_step()
            exc = out
        else:
            if ex.has_pending():  # earlier results must be durable before this side effect
                await ex.commit()
            try:
                value = await ex.track(
                    _invoke(fn, args, kwargs, limit, name, attempt, ex.workflow_id)
                )
                events, op, seen = _completed(ex, seq, name, attempt, started, value)
            except Exception as err:
                exc = err
            else:
                # Like the fast path: written by the next commit, before any
                # later side effect.
                ex.count_step()
                ex.buffer(events=events, ops=[op])
                return seen
        # A result that cannot be recorded is a bug in the step, not a transient
        # fault: fail at once, naming the step and the type.
        retryable = not isinstance(exc, PayloadError) and policy.is_retryable(exc)
        wake = await _fail_step(ex, seq, name, attempt, started, exc, policy, retryable=retryable)
        # Retry scheduled and durable. A long backoff unloads the instance; a
        # short one waits here, exactly as a resumed replay would.
        await ex.wait_until(wake, "retry")
        ex.check_cancel(seq, OpKind.STEP, name)
        attempt += 1


async def _fail_step(
    ex: Execution,
    seq: str,
    name: str,
    attempt: int,
    started: int,
    exc: Exception,
    policy: RetryPolicy,
    *,
    retryable: bool,
) -> int:
    """Record a failed attempt; return the retry time, or raise if it was the last."""
    info = error_info(exc)
    now = ex.now_us()
    events = _attempt_events(
        ex,
        seq,
        name,
        attempt,
        started,
        EventType.STEP_FAILED,
        # The object's members without its braces: spliced after "seq".
        serde.encode({"error": info, "retryable": retryable}, what="step.failed payload")[1:-1],
        at=now,
    )
    if retryable and attempt < policy.max_attempts:
        delay = policy.delay_after(attempt, ex.rng)
        wake = now + to_micros(delay)
        events.append(
            ex.event(
                EventType.RETRY_SCHEDULED,
                step=name,
                attempt=attempt + 1,
                payload={"seq": seq, "delay": delay, "fire_at": from_micros(wake).isoformat()},
                at=now,
            )
        )
        op = OpRecord(
            seq,
            OpKind.STEP,
            name,
            OpStatus.RETRYING,
            attempt,
            None,
            serde.encode(info, what="error"),
            wake,
        )
        await ex.commit(events=events, ops=[op])
        return wake
    exhausted = retryable and policy.max_attempts > 1
    if exhausted:
        events.append(
            ex.event(
                EventType.RETRY_EXHAUSTED,
                step=name,
                attempt=attempt,
                payload={"seq": seq, "attempts": attempt, "error": info},
                at=now,
            )
        )
    info["attempts"] = attempt
    info["exhausted"] = exhausted
    info["timeout"] = isinstance(exc, StepTimeout)
    op = OpRecord(
        seq, OpKind.STEP, name, OpStatus.FAILED, attempt, None, serde.encode(info, what="error")
    )
    await ex.commit(events=events, ops=[op])
    raise _rebuild_step_error(ex.workflow_id, name, op) from exc


def _attempt_events(
    ex: Execution,
    seq: str,
    name: str,
    attempt: int,
    started: int,
    outcome: EventType,
    fields: str,
    at: int | None = None,
) -> list[EventRow]:
    """``step.started`` (at ``started``) and the attempt's ``outcome`` event (at ``at``, or now).

    Both payloads are spliced from JSON text, not encoded again: ``{"seq": seq}``, and
    ``seq`` followed by ``fields`` (the outcome's members as JSON text, without braces).
    """
    seq_text = serde.encode(seq, what="step sequence")
    return [
        ex.event(
            EventType.STEP_STARTED,
            step=name,
            attempt=attempt,
            payload_text=f'{{"seq":{seq_text}}}',
            at=started,
        ),
        ex.event(
            outcome,
            step=name,
            attempt=attempt,
            payload_text=f'{{"seq":{seq_text},{fields}}}',
            at=at,
        ),
    ]


# Values JSON gives back unchanged, of the same type: a step returning one of these
# needs no decode of its recorded result (exact types: a str or int subclass does not
# come back as itself).
_SAME_AFTER_JSON = frozenset({str, int, float, bool, type(None)})


def _completed(
    ex: Execution, seq: str, name: str, attempt: int, started: int, value: Any
) -> tuple[list[EventRow], OpRecord, Any]:
    """A successful attempt's events and record, and the value the workflow gets back.

    The workflow gets the result as a replay will give it, decoded from its record.
    The events' payloads are spliced from the encoded result rather than encoded
    again (the same text: re-encoding decoded JSON reproduces it).

    Raises:
        PayloadError: ``value`` is not JSON, or too large.
    """
    text = ex.encode(value, f"result of step {name!r}")
    events = _attempt_events(
        ex, seq, name, attempt, started, EventType.STEP_COMPLETED, f'"result":{text}'
    )
    seen = value if type(value) in _SAME_AFTER_JSON else serde.decode(text)
    return events, OpRecord(seq, OpKind.STEP, name, OpStatus.COMPLETED, attempt, text), seen


def _call_sync(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        raise PayloadError(
            f"step function {getattr(fn, '__name__', fn)!r} returned an awaitable; "
            "declare it 'async def' so it runs on the event loop"
        )
    return value


async def _invoke(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    limit: float | None,
    name: str,
    attempt: int,
    workflow_id: str,
) -> Any:
    if inspect.iscoroutinefunction(fn):
        aw = fn(*args, **kwargs)
    else:
        aw = asyncio.to_thread(fn, *args, **kwargs)
    if limit is None:
        value = await aw
    else:
        try:
            value = await asyncio.wait_for(aw, limit)
        except TimeoutError:
            raise StepTimeout(
                f"step {name!r} timed out after {limit:g}s (attempt {attempt})",
                workflow_id=workflow_id,
                step=name,
                attempt=attempt,
            ) from None
    if inspect.isawaitable(value):
        value = await value
    return value


def _rebuild_step_error(workflow_id: str, name: str, rec: OpRecord) -> StepError:
    info = serde.decode(rec.error) or {}
    message = info.get("message", "")
    etype = info.get("type")
    attempts = info.get("attempts", rec.attempt)
    cls: type[StepError] = StepError
    if info.get("timeout"):
        cls = StepTimeout
    if info.get("exhausted"):
        cls = RetryExhausted
        text = f"step {name!r} failed after {attempts} attempts: {etype}: {message}"
    else:
        text = f"step {name!r} failed: {etype}: {message}"
    return cls(text, workflow_id=workflow_id, step=name, attempt=attempts, error_type=etype)
