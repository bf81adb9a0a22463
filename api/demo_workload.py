"""The demo's workload: example workflows with inputs and signals decided by their ids.

Time is a :class:`~tierflow.hot.clock.ManualClock` that :func:`drive` moves
forward only when nothing can run (every live instance waits on a timer, a
retry or a signal's timeout), straight to the next due time. So an order's
one-hour payment window or an approval's two-day wait costs no wall time, and
the durations the demo reports are the workflows' own (timers and retry
backoff), not how long they sat in the queue of a busy laptop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tierflow.examples import (
    capture_payment,
    expense_approval,
    process_order,
    provision_account,
    refund_payment,
)
from tierflow.examples.flaky import fraction
from tierflow.hot.models import Status

if TYPE_CHECKING:
    from tierflow.facade import Tierflow
    from tierflow.hot.clock import ManualClock

__all__ = ["CUSTOMERS", "Started", "Wave", "drive", "start_wave"]

# Workflows of each customer: about 20 each at the default size.
CUSTOMERS = 97

# Share of the top-level workflows of each type, in this order, and their id prefixes.
_MIX = (
    ("process_order", 0.40, "order"),
    ("capture_payment", 0.15, "capture"),
    ("refund_payment", 0.10, "refund"),
    ("provision_account", 0.10, "account"),
    ("expense_approval", 0.25, "expense"),
)


@dataclass
class Started:
    """What one wave started, and what the demo does to some of them later.

    Attributes:
        ids: Every top-level workflow started.
        to_cancel: Approvals the submitter withdraws once they wait for a decision.
        expired_orders: Orders that get no payment signal (they expire after an hour).
    """

    ids: list[str] = field(default_factory=list)
    to_cancel: list[str] = field(default_factory=list)
    expired_orders: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Wave:
    """A batch of top-level workflows: ``count`` of them, ids ``<prefix>-<type>-<n>``."""

    prefix: str
    first: int
    count: int


def _kind(n: int) -> tuple[str, str]:
    # Spread types over the sequence so every wave has each of them.
    f = fraction(str(n), "mix")
    for name, share, prefix in _MIX:
        if f < share:
            return name, prefix
        f -= share
    return _MIX[-1][0], _MIX[-1][2]


async def start_wave(tf: Tierflow, wave: Wave) -> Started:
    """Start ``wave``'s workflows and send the signals they will get (signals wait in inboxes)."""
    out = Started()
    for n in range(wave.first, wave.first + wave.count):
        kind, short = _kind(n)
        wid = f"{wave.prefix}-{short}-{n:05d}"
        customer = f"c-{n % CUSTOMERS:03d}"
        f = fraction(wid, "input")
        if kind == "process_order":
            amount = round(20 + 960 * f, 2)  # over 900: declined
            await tf.start(
                process_order,
                {"id": wid, "customer": customer, "items": ["book", "pen"], "amount": amount},
                workflow_id=wid,
            )
            # One in ten orders is never paid; so is a wave's first, so the demo always
            # has an expired order to fork.
            if fraction(wid, "pays") >= 0.1 and out.expired_orders:
                await tf.signal(wid, "payment", {"amount": amount})
            else:
                out.expired_orders.append(wid)
        elif kind == "capture_payment":
            await tf.start(
                capture_payment,
                {"id": wid, "customer": customer, "amount": round(5 + 500 * f, 2), "risk": f},
                workflow_id=wid,
            )
        elif kind == "refund_payment":
            paid = round(10 + 300 * f, 2)
            over = fraction(wid, "over") < 0.1  # asks back more than was paid: refused
            amount = paid + 5 if over else round(paid / 2, 2)
            await tf.start(
                refund_payment,
                {
                    "payment_id": f"pay-{n}",
                    "customer": customer,
                    "amount": amount,
                    "paid": paid,
                },
                workflow_id=wid,
            )
        elif kind == "provision_account":
            await tf.start(
                provision_account,
                {"id": wid, "customer": customer, "resources": ["database", "bucket", "dns"]},
                workflow_id=wid,
            )
        else:
            await tf.start(
                expense_approval,
                {"id": wid, "customer": customer, "amount": round(50 + 2000 * f, 2)},
                workflow_id=wid,
            )
            g = fraction(wid, "decision")
            if g < 0.7:
                approved = g < 0.55
                await tf.signal(wid, "decision", {"approved": approved, "by": "manager-7"})
            elif g < 0.8:
                out.to_cancel.append(wid)  # withdrawn while it waits
            # else: nobody answers; escalated after two days
        out.ids.append(wid)
    return out


_LIVE = (Status.QUEUED.value, Status.RUNNING.value, Status.PAUSED.value)


def _counts(tf: Tierflow) -> tuple[int, int, int | None]:
    """(runnable, paused, earliest wake-up in µs) of the live instances, from the index."""
    rows = tf.index.execute(
        "SELECT count(*) FILTER (WHERE status IN (?, ?)), "
        "count(*) FILTER (WHERE status = ?), "
        "min(wake_at) FILTER (WHERE status = ?) "
        "FROM instances WHERE status IN (?, ?, ?)",
        (*_LIVE[:2], Status.PAUSED.value, Status.PAUSED.value, *_LIVE),
    )
    runnable, paused, wake = rows[0]
    return int(runnable), int(paused), wake


async def drive(
    tf: Tierflow,
    clock: ManualClock,
    total: int,
    progress: Callable[[int], None],
    on_idle: Callable[[], Any] | None = None,
) -> None:
    """Run until no instance is live, moving ``clock`` when nothing else can happen.

    Args:
        tf: The running Tierflow (its scheduler executes the instances).
        clock: The clock its engine uses.
        total: How many instances (children included) were started for this drive.
        progress: Called with how many of them have finished (``total`` minus the live).
        on_idle: Called once, awaited if it returns an awaitable, the first time every
            live instance waits (the demo cancels approvals then, so their waits end).
    """
    idle_seen = on_idle is None
    while True:
        runnable, paused, wake = _counts(tf)
        progress(max(0, total - runnable - paused))
        if runnable:
            await asyncio.sleep(0.02)  # the scheduler is working: look again shortly
            continue
        if not paused:
            return
        if not idle_seen and on_idle is not None:
            idle_seen = True
            done = on_idle()
            if asyncio.iscoroutine(done):
                await done
            continue
        now_us = int(clock.now() * 1_000_000)
        if wake is None:
            # Paused with no due time: a parent waiting on children that are themselves
            # being woken; the children show up as runnable on the next look.
            await asyncio.sleep(0.02)
            continue
        if wake > now_us:
            clock.advance((wake - now_us) / 1_000_000)
        # Due instances are being resumed by the scheduler; give it the loop.
        await asyncio.sleep(0.005)
