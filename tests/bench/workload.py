"""The benchmarked workload, defined once for both sides (hot_engine.py and peer_dbos.py).

Both sides run the same workflow (3 steps, each ``x.upper()`` on a short string), the same
numbers of workflows per phase, the same warm-ups, the same 8 callers and the same pacing of
the timed ``start`` calls. Every phase then counts its instances by status through the
engine's own listing API and fails the run unless every benchmarked workflow completed
(``check``).
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


def process_cpu_s() -> float:
    """User + system CPU seconds of this process so far, all threads.

    Kernel threads working for us (the ext4 journal, block I/O) are not
    counted, so a ceiling computed from this is optimistic.
    """
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# The benchmarked workflow: this many steps, each ``str.upper`` on one short string.
STEPS = 3
ITEMS = ["a", "b", "c"]
# Concurrent callers (threads for DBOS, asyncio tasks for tierflow).
CALLERS = 8


@dataclass(frozen=True)
class Sizes:
    """How many workflows each phase runs; the same on both sides."""

    seq: int  # timed sequential 3-step workflows
    conc8: int  # timed 3-step workflows over CALLERS concurrent callers (a multiple of CALLERS)
    warmup: int  # untimed 3-step workflows before seq, conc8 and start
    start_samples: int  # timed ``start`` calls while the CALLERS run workflows
    start_pacing_s: float  # pause between two timed ``start`` calls (open loop)
    sleep_warmup: int  # untimed runs of the 10 ms sleep workflow
    sleep_runs: int  # timed runs of it (median reported)
    # tierflow only (no DBOS counterpart):
    paused: int  # instances left paused on a 1 h timer for the memory figure
    signals: int  # signal -> resume round trips
    queries: int  # queries on a paused 100-step instance
    publish: int  # sequential workflows per round, with and without an HTTP sink
    publish_rounds: int  # interleaved rounds of both
    tier: int  # 20-event workflows in the hot -> warm backlog

    def __post_init__(self) -> None:
        if self.conc8 % CALLERS:
            raise ValueError(f"conc8={self.conc8} is not a multiple of {CALLERS}")


FULL = Sizes(
    seq=600,
    conc8=1200,
    warmup=20,
    start_samples=200,
    start_pacing_s=0.050,
    sleep_warmup=3,
    sleep_runs=20,
    paused=10_000,
    signals=200,
    queries=50,
    publish=400,
    publish_rounds=5,
    tier=10_000,
)

# ``make bench-quick``: a smoke run (every phase, both sides, tiny sizes); its figures mean
# nothing and nothing is judged on them.
QUICK = Sizes(
    seq=16,
    conc8=16,
    warmup=2,
    start_samples=8,
    start_pacing_s=0.020,
    sleep_warmup=1,
    sleep_runs=3,
    paused=100,
    signals=8,
    queries=5,
    publish=10,
    publish_rounds=1,
    tier=100,
)


def sizes(quick: bool) -> Sizes:
    """The sizes of a quick (smoke) or full run."""
    return QUICK if quick else FULL


def sizes_dict(quick: bool) -> dict[str, Any]:
    """``sizes(quick)`` as a JSON-ready dict."""
    return asdict(sizes(quick))


class IncompleteRun(RuntimeError):
    """A benchmarked workflow did not complete: the figures of that run are void."""


# Every check of this process, in order: what the JSON output records.
CHECKS: list[dict[str, Any]] = []


def check(
    side: str,
    phase: str,
    expected: int,
    statuses: Mapping[str, int],
    want: str = "completed",
) -> dict[str, Any]:
    """Record that ``expected`` instances of a phase all reached status ``want``.

    Args:
        side: ``tierflow`` or ``dbos``.
        phase: The phase that ran them.
        expected: How many instances the phase started (warm-ups included).
        statuses: Instances found, by status, as the engine's listing reports them.
        want: The status every one of them must have.

    Raises:
        IncompleteRun: Some instance is missing or has another status.
    """
    found = {status: count for status, count in Counter(statuses).items() if count}
    entry = {
        "side": side,
        "phase": phase,
        "status": want,
        "expected": expected,
        "found": found,
    }
    CHECKS.append(entry)
    if found.get(want, 0) != expected or sum(found.values()) != expected:
        raise IncompleteRun(
            f"{side} {phase}: expected {expected} instances, all {want}; found {found}"
        )
    return entry
