"""The SQL of request rate limits: sliding windows shared by every process on the database.

Each allowed request is a row (`rate_limit_hits`); weighing one takes a lock on its key, so
concurrent replicas weigh a key's requests one at a time and never both take its last place.
Requests that have left their window are pruned a bounded batch at a time, passing over rows
another transaction is already deleting.
"""

from __future__ import annotations

from e2a_gateway.rate_windows import RateCount, weigh, window_cutoff
from e2a_gateway.storage.rows import RATE_LIMIT_PRUNE_BATCH
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction

RATE_LIMIT_LOCK = 0x65326172
"""The key space of the rate-limit locks: (RATE_LIMIT_LOCK, the limit's key)."""


def _weigh_hit(tx: Transaction, key: str, window_seconds: int, limit: int, now: float) -> RateCount:
    """Prune a batch of requests that have left their windows, weigh one request against
    `key`'s window ending at `now` and count it when allowed."""
    tx.execute(
        "DELETE FROM rate_limit_hits WHERE id IN (SELECT id FROM rate_limit_hits "
        f"WHERE expires_at <= ? LIMIT ?{tx.dialect.skip_locked()})",
        (now, RATE_LIMIT_PRUNE_BATCH),
    )
    tx.lock(key, space=RATE_LIMIT_LOCK)
    counted, oldest = tx.one(
        "SELECT count(*), min(at) FROM rate_limit_hits WHERE key = ? AND at > ?",
        (key, window_cutoff(now, window_seconds)),
    )
    count = weigh(int(counted), oldest, limit, window_seconds, now)
    if count.allowed:
        tx.execute(
            "INSERT INTO rate_limit_hits (key, at, expires_at) VALUES (?, ?, ?)",
            (key, now, now + window_seconds),
        )
    return count


class RateLimitsSql(Runner):
    """`RateLimits` in SQL."""

    async def hit_rate_limit(
        self, key: str, window_seconds: int, limit: int, now: float
    ) -> RateCount:
        """Weigh one request against `key`'s window of `window_seconds` ending at `now`, whose
        quota is `limit`, and count it when allowed."""
        return await self._write(lambda tx: _weigh_hit(tx, key, window_seconds, limit, now))
