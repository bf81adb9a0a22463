"""The example workflows' flaky services: failures decided by the request id alone."""

from __future__ import annotations

import pytest
from tierflow.examples.flaky import FlakyService, ServiceUnavailableError, fraction


def _attempts_until_success(service: FlakyService, key: str, limit: int = 10) -> int | None:
    for n in range(1, limit + 1):
        try:
            service.call(key)
            return n
        except ServiceUnavailableError:
            continue
    return None


def test_failures_depend_on_the_key_only_and_a_reset_replays_them() -> None:
    keys = [f"order-{i}" for i in range(300)]
    a = FlakyService("inventory", flaky_rate=0.3, max_failures=2, down_rate=0.05)
    first = {k: _attempts_until_success(a, k) for k in keys}
    # Another instance (another process, another run) sees the same story, in any order.
    b = FlakyService("inventory", flaky_rate=0.3, max_failures=2, down_rate=0.05)
    assert {k: _attempts_until_success(b, k) for k in reversed(keys)} == first
    a.reset()
    assert {k: _attempts_until_success(a, k) for k in keys} == first
    # Some keys succeed at once, some after 1-2 failures, some never.
    outcomes = set(first.values())
    assert {1, 2, 3, None} <= outcomes and outcomes <= {1, 2, 3, None}
    # The rates roughly hold (the hash spreads keys evenly).
    assert 0.2 < sum(v in (2, 3) for v in first.values()) / len(keys) < 0.4


def test_fraction_is_stable_and_salted() -> None:
    assert fraction("w1-order-00005", "pays") == fraction("w1-order-00005", "pays")
    assert fraction("w1-order-00005", "pays") != fraction("w1-order-00005", "input")
    assert 0 <= fraction("x") < 1
    with pytest.raises(ServiceUnavailableError, match="down unavailable"):
        FlakyService("down", flaky_rate=0, down_rate=1).call("any")
