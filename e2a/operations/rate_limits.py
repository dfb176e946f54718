"""Request counts kept in the database, so every replica shares them: one hit per request,
refused with the wait once a window is full."""

from __future__ import annotations

import math
import time

from e2a.gateway import Gateway
from e2a.operations.errors import RateLimited


async def count_request(
    gateway: Gateway, key: str, window_seconds: int, limit: int, what: str
) -> None:
    """Count this request against `key`; RateLimited (`rate_limited`, with the whole seconds
    to wait, at least 1) once over `limit` in the window.

    `what` completes "{limit} {what}", e.g. "agent registrations per hour from this address"."""
    wait = await gateway.storage.hit_rate_limit(key, window_seconds, limit, time.time())
    if wait is None:
        return
    retry_after = max(1, math.ceil(wait))
    raise RateLimited(
        "rate_limited",
        f"rate limit reached: {limit} {what}; retry in {retry_after} seconds",
        retry_after,
    )
