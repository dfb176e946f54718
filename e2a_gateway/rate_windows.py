"""Sliding-window request counting: the rule the database's counters and this process's
in-memory ones share, as e2a's limiter applies it.

A request is allowed when fewer than `limit` requests were allowed for its key in the
`window_seconds` before it; an allowed request is counted, a refused one is not (a client that
keeps asking while refused does not push its own turn further away). A request weighed
against several limits at once (a registration: the account's and the address's) is counted
against all of them or, when one refuses it, against none. Each counted request leaves the
window `window_seconds` after it was made, so a refused client may ask again once the oldest
counted one has left. A `RateCount` is what weighing one request found: whether it was
allowed, how long to wait if not, and the IETF `RateLimit-*` values e2a's `/v1` answers carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def window_cutoff(now: float, window_seconds: int) -> float:
    """The time before which (inclusive) a counted request has left the window ending at
    `now`; ValueError for a window shorter than a second."""
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be at least 1, not {window_seconds}")
    return now - window_seconds


@dataclass(frozen=True)
class RateLimit:
    """One limit a request is weighed against: at most `limit` requests per `key` in any
    `window_seconds`."""

    key: str
    window_seconds: int
    limit: int


@dataclass(frozen=True)
class RateCount:
    """One request weighed against its key's sliding window: the quota (`limit`), whether the
    request was `allowed` (and so counted), the requests the window holds now, this one
    included when it was allowed (`hits`), when the oldest of them leaves the window
    (`oldest_leaves_at`, epoch seconds; for a window holding more than the limit, when enough
    have left it for one more) and when the request was weighed (`now`)."""

    limit: int
    allowed: bool
    hits: int
    oldest_leaves_at: float
    now: float

    @property
    def wait(self) -> float | None:
        """None when the request was allowed, else the seconds until the oldest counted
        request leaves the window (and one more is allowed)."""
        if self.allowed:
            return None
        return max(self.oldest_leaves_at - self.now, 0.0)

    @property
    def remaining(self) -> int:
        """How many more requests the window allows now (`RateLimit-Remaining`)."""
        return max(self.limit - self.hits, 0)

    @property
    def reset_seconds(self) -> int:
        """Whole seconds, rounded up and at least 1, until the oldest counted request leaves
        the window (`RateLimit-Reset`; on a refusal, `Retry-After`)."""
        return max(1, math.ceil(self.oldest_leaves_at - self.now))


def weigh(counted: int, first_to_leave: float | None, limit: RateLimit, now: float) -> RateCount:
    """Weigh a request made at `now` against the `counted` requests its key's window holds,
    as if it is counted when allowed (`uncounted` says what it is when another limit refuses
    it). `first_to_leave` is when the request was made whose leaving the window counts (None
    when there are none): the oldest, or when the window holds more than `limit.limit` (a
    limit lowered meanwhile) the one at `freeing_position`, whose leaving makes room."""
    allowed = counted < limit.limit
    hits = counted + 1 if allowed else counted
    first = now if first_to_leave is None else first_to_leave
    return RateCount(limit.limit, allowed, hits, first + limit.window_seconds, now)


def freeing_position(counted: int, limit: RateLimit) -> int | None:
    """Of `counted` requests in a window, newest first, the position (from 0) of the one
    whose leaving makes room under `limit` when there are more than it allows (None when
    the oldest is that one)."""
    return limit.limit - 1 if counted > limit.limit else None


def on_clock(count: RateCount, ahead: float) -> RateCount:
    """`count`, weighed on one clock, told on another running `ahead` seconds ahead of it
    (behind when negative): the same wait, as the caller's clock reads it."""
    return RateCount(
        count.limit, count.allowed, count.hits, count.oldest_leaves_at + ahead, count.now + ahead
    )


def uncounted(count: RateCount) -> RateCount:
    """`count` of a request another limit refused: not counted here either."""
    if not count.allowed:
        return count
    return RateCount(count.limit, True, count.hits - 1, count.oldest_leaves_at, count.now)
