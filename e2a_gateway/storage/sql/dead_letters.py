"""The SQL of dead letters: inbound mail whose webhook delivery failed for good, listed per
agent with its last attempt, and queued for delivery again by hand.

Every query is scoped by the owner's user id and the agent, so another user's message is
neither listed nor redelivered. A redelivery locks the messages it takes and re-checks their
status, so two redeliveries of one dead letter never queue two deliveries.
"""

from __future__ import annotations

from typing import Any

from e2a_gateway.storage.announcements import JobsAdded
from e2a_gateway.storage.base import DeadLetter
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import DELIVERY_PENDING, FAILED, INBOUND, WEBHOOK_JOB

DEAD = (
    f"m.user_id = ? AND m.agent_email = ? AND m.direction = '{INBOUND}' "
    f"AND m.delivery_status = '{FAILED}' AND m.deleted_at IS NULL "
    f"AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.message_id = m.id AND j.kind = '{WEBHOOK_JOB}')"
)
"""Condition on `messages m`: a dead letter of the user's agent (not one trashed on `/v1`)."""
LAST_ATTEMPT = (
    "LEFT JOIN webhook_attempts w ON w.id = (SELECT x.id FROM webhook_attempts x "
    "WHERE x.message_id = m.id ORDER BY x.attempt DESC, x.id DESC LIMIT 1)"
)


def _requeue(
    tx: Transaction, user_id: str, agent_email: str, message_ids: list[str] | None, now: float
) -> list[str]:
    """Queue one webhook job per dead letter taken, its attempts to be numbered on from the last
    one recorded (`earlier_attempts`) while its retry schedule starts afresh; their ids."""
    query = f"SELECT m.id FROM messages m WHERE {DEAD}"
    params: list[Any] = [user_id, agent_email]
    if message_ids is not None:
        query += f" AND {tx.dialect.in_list('m.id', 'text')}"
        params.append(tx.dialect.list_param(message_ids))
    taken = [row[0] for row in tx.all(query + " ORDER BY m.seq" + tx.dialect.for_update(), params)]
    if not taken:
        return []
    tx.execute(
        "INSERT INTO jobs (kind, message_id, run_at, earlier_attempts, created_at) "
        "SELECT ?, m.id, ?, (SELECT coalesce(max(w.attempt), 0) FROM webhook_attempts w "
        f"WHERE w.message_id = m.id), ? FROM messages m "
        f"WHERE {tx.dialect.in_list('m.id', 'text')}",
        (WEBHOOK_JOB, now, now, tx.dialect.list_param(taken)),
    )
    tx.execute(
        f"UPDATE messages SET delivery_status = '{DELIVERY_PENDING}' "
        f"WHERE {tx.dialect.in_list('id', 'text')}",
        (tx.dialect.list_param(taken),),
    )
    tx.announce(JobsAdded(WEBHOOK_JOB))
    return taken


class DeadLettersSql(Runner):
    """The dead-letter half of `WebhookDeliveries` in SQL."""

    async def dead_letters(
        self, user_id: str, agent_email: str, limit: int, after_seq: int | None
    ) -> list[DeadLetter]:
        """Up to `limit` dead letters of the agent, oldest first, after `after_seq`."""
        rows = await self._read(
            lambda tx: tx.all(
                "SELECT m.id, m.seq, m.from_addr, m.subject, m.received_at, "
                "coalesce(w.attempt, 0), w.attempted_at, w.status_code, w.error "
                f"FROM messages_with_content m {LAST_ATTEMPT} WHERE {DEAD} AND m.seq > ? "
                "ORDER BY m.seq LIMIT ?",
                (user_id, agent_email, after_seq or 0, limit),
            )
        )
        return [DeadLetter(*row) for row in rows]

    async def redeliver_dead_letters(
        self, user_id: str, agent_email: str, message_ids: list[str] | None, now: float
    ) -> list[str]:
        """Queue the agent's dead letters among `message_ids` (None: all) for delivery again."""
        return await self._write(lambda tx: _requeue(tx, user_id, agent_email, message_ids, now))
