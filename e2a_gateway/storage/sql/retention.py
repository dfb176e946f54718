"""The SQL of the retention sweep: old messages, webhook attempt records, idempotency keys,
feedback and the sign-outs of expired dashboard sessions, deleted in batches.

Each batch is one short transaction that passes over rows another replica's sweep holds. A
message that still has a job, or outbound mail not yet finished, is never deleted.
"""

from __future__ import annotations

from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.vocabulary import HELD_FOR_REVIEW, INBOUND, TERMINAL_STATUSES

FINISHED = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
EXPIRABLE_MESSAGE = (
    f"((m.direction = '{INBOUND}' AND coalesce(m.hold, '') <> '{HELD_FOR_REVIEW}') "
    f"OR m.status IN ({FINISHED}) OR m.sent_at IS NOT NULL) "
    "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.message_id = m.id)"
)
"""Condition on `messages m` that the sweep may delete the row: inbound mail not waiting for
review, or outbound mail that is finished (in a terminal status, or handed on: an
auto-approval sent stays `expired_approved`), and in either case no job (delivery, send,
notice) pending."""


class RetentionSql(Runner):
    """`Retention` in SQL."""

    async def delete_messages_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` messages made, and reviewed if ever (mail held for review counts
        from its release), before `cutoff` that may go, oldest first (their attempts by
        cascade, their raw bytes with the last message pointing at them); how many went."""
        return await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m "
                    "WHERE m.created_at < ? AND (m.reviewed_at IS NULL OR m.reviewed_at < ?) "
                    f"AND {EXPIRABLE_MESSAGE} ORDER BY m.created_at "
                    f"LIMIT ?{tx.dialect.skip_locked()})",
                    (cutoff, cutoff, limit),
                ).rowcount
            )
        )

    async def delete_webhook_attempts_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` webhook attempts made before `cutoff`, oldest first."""
        return await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts "
                    "WHERE attempted_at < ? ORDER BY attempted_at "
                    f"LIMIT ?{tx.dialect.skip_locked()})",
                    (cutoff, limit),
                ).rowcount
            )
        )

    async def delete_idempotency_keys_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` idempotency keys claimed, and completed if ever, before the
        epoch `cutoff`, oldest first."""
        return await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM idempotency_keys WHERE (user_id, key_hash) IN "
                    "(SELECT user_id, key_hash FROM idempotency_keys WHERE claimed_at < ? "
                    "AND (completed_at IS NULL OR completed_at < ?) ORDER BY claimed_at "
                    f"LIMIT ?{tx.dialect.skip_locked()})",
                    (cutoff, cutoff, limit),
                ).rowcount
            )
        )

    async def delete_feedback_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` pieces of feedback sent before `cutoff`, oldest first."""
        return await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM feedback WHERE id IN (SELECT id FROM feedback "
                    "WHERE created_at < ? ORDER BY created_at "
                    f"LIMIT ?{tx.dialect.skip_locked()})",
                    (cutoff, limit),
                ).rowcount
            )
        )

    async def delete_signouts_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` records of signed-out sessions that expired before the epoch
        `cutoff`, soonest expired first."""
        return await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM dashboard_signouts WHERE (user_id, session_id) IN "
                    "(SELECT user_id, session_id FROM dashboard_signouts WHERE expires_at < ? "
                    f"ORDER BY expires_at LIMIT ?{tx.dialect.skip_locked()})",
                    (cutoff, limit),
                ).rowcount
            )
        )
