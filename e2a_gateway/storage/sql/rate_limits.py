"""The SQL of request rate limits: fixed-window counters shared by every process on the database.

A hit is one atomic upsert, so concurrent replicas never lose one; expired windows are pruned a
bounded batch at a time, passing over rows another transaction is already deleting.
"""

from __future__ import annotations

from e2a_gateway.rate_windows import RateCount, rate_window
from e2a_gateway.storage.rows import RATE_LIMIT_PRUNE_BATCH
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction


def _count_hit(tx: Transaction, key: str, start: int, end: int, now: float) -> int:
    """Prune a batch of expired windows and count one hit in `key`'s window from `start` to
    `end`; the window's hits so far, this one included."""
    tx.execute(
        "DELETE FROM rate_limits WHERE (key, window_start) IN (SELECT key, window_start "
        f"FROM rate_limits WHERE expires_at <= ? LIMIT ?{tx.dialect.skip_locked()})",
        (now, RATE_LIMIT_PRUNE_BATCH),
    )
    row = tx.one(
        "INSERT INTO rate_limits (key, window_start, expires_at, hits) VALUES (?, ?, ?, 1) "
        "ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1 "
        "RETURNING hits",
        (key, start, end),
    )
    return int(row[0])


class RateLimitsSql(Runner):
    """`RateLimits` in SQL."""

    async def hit_rate_limit(
        self, key: str, window_seconds: int, limit: int, now: float
    ) -> RateCount:
        """Count one request against `key` in the window of `window_seconds` holding `now`,
        whose quota is `limit`."""
        start, end = rate_window(now, window_seconds)
        hits = await self._write(lambda tx: _count_hit(tx, key, start, end, now))
        return RateCount(limit, hits, end, now)
