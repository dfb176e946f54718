"""The in-memory fixed-window counters that limit message polls: the same windows and verdicts
as the database's counters, and bounded memory."""

from __future__ import annotations

from e2a_gateway.local_rate_counts import LocalRateCounts


def test_a_window_allows_its_limit_then_tells_the_wait() -> None:
    counts = LocalRateCounts()
    allowed = [counts.hit("a", 60, 3, 120.0 + n) for n in range(3)]
    assert [count.wait for count in allowed] == [None, None, None]
    assert [count.remaining for count in allowed] == [2, 1, 0]
    assert [count.reset_seconds for count in allowed] == [60, 59, 58]
    refused = counts.hit("a", 60, 3, 150.0)
    assert refused.wait == 30.0  # the window [120, 180) ends in 30 s
    assert (refused.limit, refused.hits, refused.remaining) == (3, 4, 0)
    assert counts.hit("b", 60, 3, 150.0).wait is None  # another key counts on its own


def test_the_reset_is_whole_seconds_and_never_zero() -> None:
    counts = LocalRateCounts()
    assert counts.hit("a", 60, 3, 179.2).reset_seconds == 1  # 0.8 s left: 1
    assert counts.hit("a", 60, 3, 178.5).reset_seconds == 2  # 1.5 s left: 2


def test_the_next_window_starts_the_count_again() -> None:
    counts = LocalRateCounts()
    for n in range(5):
        counts.hit("a", 60, 2, 61.0 + n)
    assert counts.hit("a", 60, 2, 119.5).wait == 0.5
    assert counts.hit("a", 60, 2, 120.0).wait is None
    assert counts.hit("a", 60, 2, 121.0).wait is None
    assert counts.hit("a", 60, 2, 122.0).wait is not None


def test_memory_is_bounded_and_ended_windows_go_first() -> None:
    counts = LocalRateCounts(max_keys=4)
    for key in "abc":
        counts.hit(key, 60, 1, 0.0)  # windows of long ago
    counts.hit("d", 60, 1, 7200.0)
    assert counts.hit("e", 60, 1, 7200.0).wait is None  # room made by dropping a, b and c
    assert counts.hit("d", 60, 1, 7201.0).wait is not None  # the recent one was kept, counted
    for key in "fghijk":
        counts.hit(key, 60, 1, 7202.0)  # nothing has ended: the oldest half makes room
    assert len(counts) <= 4
