"""Fixed-window request counting: the arithmetic the database's counters and this process's
in-memory ones share.

A window of `window_seconds` starts at a multiple of `window_seconds` since the epoch; every
request in it is a hit, refused ones included, and the count starts again at its end. A
`RateCount` is what counting one request found: whether it was within the quota, how long to
wait if not, and the IETF `RateLimit-*` values e2a's `/v1` answers carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def rate_window(now: float, window_seconds: int) -> tuple[int, int]:
    """The fixed window holding `now`: its start and its end (epoch seconds)."""
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be at least 1, not {window_seconds}")
    start = int(now // window_seconds) * window_seconds
    return start, start + window_seconds


@dataclass(frozen=True)
class RateCount:
    """One request counted in its window: the window's quota (`limit`), the requests counted
    in it so far, this one included (`hits`), when the window ends (`window_end`, epoch
    seconds) and when the request was counted (`now`)."""

    limit: int
    hits: int
    window_end: int
    now: float

    @property
    def wait(self) -> float | None:
        """None when this request is within the quota, else the seconds until the window ends
        (when the count starts again)."""
        if self.hits <= self.limit:
            return None
        return max(self.window_end - self.now, 0.0)

    @property
    def remaining(self) -> int:
        """How many more requests the window allows (`RateLimit-Remaining`)."""
        return max(self.limit - self.hits, 0)

    @property
    def reset_seconds(self) -> int:
        """Whole seconds until the window ends, at least 1 (`RateLimit-Reset`)."""
        return max(1, math.ceil(self.window_end - self.now))
