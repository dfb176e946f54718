"""Request counts kept in this process's memory, for limits against runaway polling.

A message poll (an inbox page or a message read) is cheap to answer and frequent; counting it
with a durable write would make every read wait for the disk. These counts follow the same
sliding-window rule as the database's (`e2a_gateway.rate_windows`), per process: with several
replicas each one counts its own share, and a restart starts the count again.
"""

from __future__ import annotations

from collections import deque

from e2a_gateway.rate_windows import RateCount, RateLimit, freeing_position, weigh, window_cutoff

MAX_KEYS = 100_000
"""Keys remembered at most; past this, keys with nothing left in their window are dropped
(then the least recently counted half)."""


class LocalRateCounts:
    """The times of the requests counted per key within its window, in memory."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._counted: dict[str, deque[float]] = {}
        self._max_keys = max_keys

    def __len__(self) -> int:
        """How many keys are remembered."""
        return len(self._counted)

    def hit(self, limit: RateLimit, now: float) -> RateCount:
        """Weigh one request made at `now` against `limit` and count it when allowed."""
        cutoff = window_cutoff(now, limit.window_seconds)
        times = self._counted.get(limit.key)
        if times is None:
            if len(self._counted) >= self._max_keys:
                self._forget_some(now)
            times = self._counted[limit.key] = deque()
        while times and times[0] <= cutoff:
            times.popleft()
        newest = freeing_position(len(times), limit)
        if newest is not None:
            first_to_leave: float | None = times[-1 - newest]
        else:
            first_to_leave = times[0] if times else None
        count = weigh(len(times), first_to_leave, limit, now)
        if count.allowed:
            times.append(now)
        return count

    def _forget_some(self, now: float) -> None:
        """Make room: drop keys counted nothing for an hour (longer than any window they are
        kept for), else the least recently counted half."""
        hour_ago = now - 3600
        idle = [key for key, times in self._counted.items() if not times or times[-1] <= hour_ago]
        if not idle:
            by_last = sorted(self._counted, key=lambda key: self._counted[key][-1])
            idle = by_last[: max(1, len(by_last) // 2)]
        for key in idle:
            del self._counted[key]
