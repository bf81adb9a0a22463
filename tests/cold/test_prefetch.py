"""`prefetched`: the load into cold reads the next partition while the last one is written."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from tierflow.cold.load import prefetched

pytestmark = pytest.mark.timeout(30)


def test_yields_everything_in_order():
    assert list(prefetched(iter(range(50)))) == list(range(50))
    assert list(prefetched(iter([]))) == []


def test_produces_at_most_one_item_ahead():
    produced: list[int] = []
    ahead = threading.Event()

    def items() -> Iterator[int]:
        for i in range(5):
            produced.append(i)
            if i == 1:
                ahead.set()
            yield i

    it = prefetched(items())
    assert next(it) == 0
    assert ahead.wait(5)  # item 1 is read while the caller holds item 0...
    assert produced == [0, 1]  # ...and nothing further until the caller takes it
    assert list(it) == [1, 2, 3, 4]


def test_a_producer_error_reaches_the_consumer():
    def items() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    it = prefetched(items())
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def producers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "tierflow-cold-load-read"}


def test_closing_stops_the_producer():
    produced: list[int] = []
    before = producers()

    def items() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    it = prefetched(items())
    assert next(it) == 0
    assert len(producers() - before) == 1
    it.close()
    assert len(produced) <= 3
    assert producers() - before == set()
