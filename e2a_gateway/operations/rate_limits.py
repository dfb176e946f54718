"""Request rate limits: refused with the wait once a window is full.

Counts that must hold across replicas and restarts (agent registrations) are kept in the
database, one hit per request; message polls are counted in this process's memory
(`e2a_gateway.local_rate_counts`), so a read never waits for a durable write.
"""

from __future__ import annotations

import math
import time

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.errors import RateLimited


async def count_request(
    gateway: Gateway, key: str, window_seconds: int, limit: int, what: str
) -> None:
    """Count this request against `key` in the database; RateLimited (`rate_limited`, with the
    whole seconds to wait, at least 1) once over `limit` in the window.

    `what` completes "{limit} {what}", e.g. "agent registrations per hour from this address"."""
    wait = await gateway.storage.hit_rate_limit(key, window_seconds, limit, time.time())
    _refuse_when_over(wait, limit, what)


def count_local_request(
    gateway: Gateway, key: str, window_seconds: int, limit: int, what: str
) -> None:
    """Count this request against `key` in this process's memory; RateLimited as
    `count_request` once over `limit` in the window."""
    wait = gateway.local_counts.hit(key, window_seconds, limit, time.time())
    _refuse_when_over(wait, limit, what)


def _refuse_when_over(wait: float | None, limit: int, what: str) -> None:
    """RateLimited with the whole seconds to wait (at least 1) when `wait` is not None."""
    if wait is None:
        return
    retry_after = max(1, math.ceil(wait))
    raise RateLimited(
        "rate_limited",
        f"rate limit reached: {limit} {what}; retry in {retry_after} seconds",
        retry_after,
    )
