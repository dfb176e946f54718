"""Request counts kept in this process's memory, for limits against runaway polling.

A message poll (an inbox page or a message read) is cheap to answer and frequent; counting it
with a durable write would make every read wait for the disk. These windows follow the same
fixed-window rule as the database's counters (`e2a_gateway.rate_windows`), per process:
with several replicas each one counts its own share, and a restart starts the count again.
"""

from __future__ import annotations

from e2a_gateway.rate_windows import RateCount, rate_window

MAX_KEYS = 100_000
"""Windows remembered at most; past this, ended windows are dropped (then the oldest)."""


class LocalRateCounts:
    """Fixed-window hit counters per key, in memory."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._windows: dict[str, tuple[int, int]] = {}
        self._max_keys = max_keys

    def __len__(self) -> int:
        """How many windows are remembered."""
        return len(self._windows)

    def hit(self, key: str, window_seconds: int, limit: int, now: float) -> RateCount:
        """Count one request against `key` in the window of `window_seconds` holding `now`,
        whose quota is `limit`."""
        start, end = rate_window(now, window_seconds)
        window_start, hits = self._windows.get(key, (start, 0))
        hits = hits + 1 if window_start == start else 1
        if key not in self._windows and len(self._windows) >= self._max_keys:
            self._forget_some(now)
        self._windows[key] = (start, hits)
        return RateCount(limit, hits, end, now)

    def _forget_some(self, now: float) -> None:
        """Make room: drop windows that started over an hour ago, else the oldest half."""
        hour_ago = now - 3600
        ended = [key for key, (start, _) in self._windows.items() if start < hour_ago]
        if not ended:
            by_age = sorted(self._windows, key=lambda key: self._windows[key][0])
            ended = by_age[: max(1, len(by_age) // 2)]
        for key in ended:
            del self._windows[key]
