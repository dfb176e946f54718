"""The in-memory sliding-window counts that limit message polls: the same rule and verdicts as
the database's counts, and bounded memory."""

from __future__ import annotations

import pytest

from e2a_gateway.local_rate_counts import LocalRateCounts
from e2a_gateway.rate_windows import RateLimit

pytestmark = pytest.mark.backend_independent


def test_a_window_allows_its_limit_then_tells_the_wait() -> None:
    counts = LocalRateCounts()
    allowed = [counts.hit(RateLimit("a", 60, 3), 130.0 + n) for n in range(3)]
    assert [count.wait for count in allowed] == [None, None, None]
    assert [count.remaining for count in allowed] == [2, 1, 0]
    assert [count.reset_seconds for count in allowed] == [60, 59, 58]
    refused = counts.hit(RateLimit("a", 60, 3), 150.0)
    assert refused.wait == 40.0  # the request of 130 s leaves the window at 190 s
    assert (refused.limit, refused.hits, refused.remaining) == (3, 3, 0)
    assert counts.hit(RateLimit("b", 60, 3), 150.0).wait is None  # another key counts on its own


def test_the_reset_is_whole_seconds_and_never_zero() -> None:
    counts = LocalRateCounts()
    counts.hit(RateLimit("a", 60, 3), 120.0)
    assert counts.hit(RateLimit("a", 60, 3), 179.2).reset_seconds == 1  # 0.8 s left: 1
    counts.hit(RateLimit("b", 60, 3), 120.0)
    assert counts.hit(RateLimit("b", 60, 3), 178.5).reset_seconds == 2  # 1.5 s left: 2


def test_the_window_slides_and_refused_requests_are_not_counted() -> None:
    counts = LocalRateCounts()
    assert counts.hit(RateLimit("a", 60, 2), 61.0).wait is None
    assert counts.hit(RateLimit("a", 60, 2), 90.0).wait is None
    for n in range(10):  # refused again and again: the turn does not move away
        assert counts.hit(RateLimit("a", 60, 2), 100.0 + n).wait == 21.0 - n
    assert counts.hit(RateLimit("a", 60, 2), 120.5).wait == 0.5
    assert counts.hit(RateLimit("a", 60, 2), 121.0).wait is None  # the request of 61 s has left
    refused = counts.hit(RateLimit("a", 60, 2), 140.0)
    assert refused.wait == 10.0  # the request of 90 s leaves at 150 s
    assert counts.hit(RateLimit("a", 60, 2), 150.0).wait is None


def test_a_window_shorter_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LocalRateCounts().hit(RateLimit("a", 0, 3), 1.0)


def test_memory_is_bounded_and_idle_keys_go_first() -> None:
    counts = LocalRateCounts(max_keys=4)
    for key in "abc":
        counts.hit(RateLimit(key, 60, 1), 0.0)  # counted long ago
    counts.hit(RateLimit("d", 60, 1), 7200.0)
    # Room is made by dropping a, b and c.
    assert counts.hit(RateLimit("e", 60, 1), 7200.0).wait is None
    assert len(counts) == 2
    # The recent one was kept, and counted.
    assert counts.hit(RateLimit("d", 60, 1), 7201.0).wait is not None
    for key in "fghijk":
        counts.hit(RateLimit(key, 60, 1), 7202.0)  # none idle: the least recently counted half goes
    assert len(counts) <= 4
