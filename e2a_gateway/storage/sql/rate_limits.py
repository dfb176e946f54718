"""The SQL of request rate limits: sliding windows shared by every process on the database.

Each allowed request is a row (`rate_limit_hits`); weighing one takes a lock on its key, so
concurrent replicas weigh a key's requests one at a time and never both take its last place.
Requests are dated, and their windows judged, by the database's clock when several processes
share it (`lease_time`, as leases are): replicas whose own clocks disagree still count one
window, where the one running ahead would take the others' requests for gone too early (and
let a limit through up to twice) and the one running behind would refuse too long. The counts
are told back on the caller's clock, so its waits (`Retry-After`) are right for it.
Requests that have left their window are pruned a bounded batch at a time, passing over rows
another transaction is already deleting.
"""

from __future__ import annotations

from collections.abc import Sequence

from e2a_gateway.rate_windows import (
    RateCount,
    RateLimit,
    freeing_position,
    on_clock,
    uncounted,
    weigh,
    window_cutoff,
)
from e2a_gateway.storage.rows import RATE_LIMIT_PRUNE_BATCH
from e2a_gateway.storage.sql.jobs import lease_time
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction

RATE_LIMIT_LOCK = 0x65326172
"""The key space of the rate-limit locks: (RATE_LIMIT_LOCK, the limit's key)."""


def weigh_hits(tx: Transaction, limits: Sequence[RateLimit], now: float) -> list[RateCount]:
    """Prune a batch of requests that have left their windows, weigh one request made at `now`
    (the caller's clock) against each of `limits` (their keys locked in order, until `tx`
    commits) and count it against every one of them when all allow it, else against none.
    Requests are dated by `lease_time` (the database's clock when it is shared); the counts
    are on the caller's clock."""
    clock = lease_time(tx, now)
    tx.execute(
        "DELETE FROM rate_limit_hits WHERE id IN (SELECT id FROM rate_limit_hits "
        f"WHERE expires_at <= ? LIMIT ?{tx.dialect.skip_locked()})",
        (clock, RATE_LIMIT_PRUNE_BATCH),
    )
    for key in sorted({limit.key for limit in limits}):
        tx.lock(key, space=RATE_LIMIT_LOCK)
    counts = []
    for limit in limits:
        cutoff = window_cutoff(clock, limit.window_seconds)
        counted, first_to_leave = tx.one(
            "SELECT count(*), min(at) FROM rate_limit_hits WHERE key = ? AND at > ?",
            (limit.key, cutoff),
        )
        newest = freeing_position(int(counted), limit)
        if newest is not None:
            (first_to_leave,) = tx.one(
                "SELECT at FROM rate_limit_hits WHERE key = ? AND at > ? "
                "ORDER BY at DESC LIMIT 1 OFFSET ?",
                (limit.key, cutoff, newest),
            )
        counts.append(on_clock(weigh(int(counted), first_to_leave, limit, clock), now - clock))
    if not all(count.allowed for count in counts):
        return [uncounted(count) for count in counts]
    tx.executemany(
        "INSERT INTO rate_limit_hits (key, at, expires_at) VALUES (?, ?, ?)",
        [(limit.key, clock, clock + limit.window_seconds) for limit in limits],
    )
    return counts


class RateLimitsSql(Runner):
    """`RateLimits` in SQL."""

    async def hit_rate_limits(self, limits: Sequence[RateLimit], now: float) -> list[RateCount]:
        """Weigh one request made at `now` against each of `limits` and count it against all
        of them when all allow it, else against none; a count per limit, in order."""
        return await self._write(lambda tx: weigh_hits(tx, limits, now))
