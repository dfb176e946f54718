"""The SQL of idempotency keys: claim a key before a write, complete it with the answer or
release it; a completed key replays its answer to the same request. A write records what it
made (a message) on its claim in the transaction that makes it (`settle_claim`), so a retry
answers that even when the request died before its answer was kept.

Claims of one user's key take turns under a lock on the key's row (PostgreSQL replicas) or the
single writer (SQLite), so two requests with the same key never both write.
"""

from __future__ import annotations

import secrets
from typing import Any

from e2a_gateway.storage.base import ClaimLost, HeldKey, IdempotencyClaim, StorageUnavailable
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction

CLAIM_ATTEMPTS = 3
"""How often a claim tries again when the key's row it waited for went away meanwhile."""


def _claim(
    tx: Transaction, user_id: str, key_hash: str, request_hash: str, now: float, stale: float
) -> IdempotencyClaim:
    token = secrets.token_hex(16)
    for _ in range(CLAIM_ATTEMPTS):
        inserted = tx.execute(
            "INSERT INTO idempotency_keys (user_id, key_hash, request_hash, token, claimed_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (user_id, key_hash, request_hash, token, now),
        ).rowcount
        if inserted == 1:
            return IdempotencyClaim("acquired", token)
        row = tx.first(
            "SELECT request_hash, status, answer, claimed_at, made_id FROM idempotency_keys "
            f"WHERE user_id = ? AND key_hash = ?{tx.dialect.for_update()}",
            (user_id, key_hash),
        )
        if row is not None:
            return _claim_held(tx, user_id, key_hash, request_hash, now, stale, token, row)
        # the claim this one waited for was let go (its request failed): claim the key anew
    raise StorageUnavailable(f"idempotency key claimed and let go {CLAIM_ATTEMPTS} times over")


def _claim_held(
    tx: Transaction,
    user_id: str,
    key_hash: str,
    request_hash: str,
    now: float,
    stale: float,
    token: str,
    row: tuple[Any, ...],
) -> IdempotencyClaim:
    """The answer to a claim of a key whose row (`row`, locked) is there already: its stored
    answer, what it made, in flight, or taken over once stale."""
    stored_hash, status, answer, claimed_at, made_id = row
    if status is not None or made_id is not None:
        if stored_hash != request_hash:
            return IdempotencyClaim("mismatch")
        if status is None:
            return IdempotencyClaim("made", made_id=str(made_id))
        return IdempotencyClaim("replay", status=int(status), answer=bytes(answer))
    if claimed_at >= stale:
        return IdempotencyClaim("in_flight")
    tx.execute(
        "UPDATE idempotency_keys SET request_hash = ?, token = ?, claimed_at = ? "
        "WHERE user_id = ? AND key_hash = ?",
        (request_hash, token, now, user_id, key_hash),
    )
    return IdempotencyClaim("acquired", token)


def settle_claim(tx: Transaction, held: HeldKey, made_id: str) -> None:
    """Record on the claim `held` that its request made `made_id` (in the transaction that
    makes it); ClaimLost, rolling the transaction back, when the claim is not held."""
    settled = tx.execute(
        "UPDATE idempotency_keys SET made_id = ? "
        "WHERE user_id = ? AND key_hash = ? AND token = ? AND status IS NULL",
        (made_id, held.user_id, held.key_hash, held.token),
    ).rowcount
    if settled != 1:
        raise ClaimLost(held.key_hash)


class IdempotencySql(Runner):
    """`Idempotency` in SQL."""

    async def claim_idempotency_key(
        self, user_id: str, key_hash: str, request_hash: str, now: float, stale_before: float
    ) -> IdempotencyClaim:
        """Claim the user's key for this request (see `Idempotency.claim_idempotency_key`)."""
        return await self._write(
            lambda tx: _claim(tx, user_id, key_hash, request_hash, now, stale_before)
        )

    async def complete_idempotency_key(
        self, user_id: str, key_hash: str, token: str, status: int, answer: bytes, now: float
    ) -> None:
        """Store the answer of the claim `token`, while it is still held."""
        await self._write(
            lambda tx: tx.execute(
                "UPDATE idempotency_keys SET status = ?, answer = ?, completed_at = ? "
                "WHERE user_id = ? AND key_hash = ? AND token = ? AND status IS NULL",
                (status, answer, now, user_id, key_hash, token),
            )
        )

    async def release_idempotency_key(
        self, user_id: str, key_hash: str, token: str, *, refused: bool = False
    ) -> None:
        """Drop the unfinished claim `token`: unless its request made what it asked for, or
        `refused` (see `Idempotency.release_idempotency_key`)."""
        kept = "" if refused else " AND made_id IS NULL"
        await self._write(
            lambda tx: tx.execute(
                "DELETE FROM idempotency_keys WHERE user_id = ? AND key_hash = ? AND token = ? "
                f"AND status IS NULL{kept}",
                (user_id, key_hash, token),
            )
        )
