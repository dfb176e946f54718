"""The SQL of webhook delivery: claiming due deliveries within each receiver's room, what an
attempt needs (message, URL, signing seed), and the record of every attempt.

An attempt's record, its message's delivery status and its job's fate commit together; the
attempts of a message deleted meanwhile are not recorded, nor those whose job has passed to
another claim since.
"""

from __future__ import annotations

from collections.abc import Mapping

from e2a_gateway.clock import parse_timestamp
from e2a_gateway.storage.base import FinishedAttempt, Job, WebhookAttempt, WebhookDelivery
from e2a_gateway.storage.rows import (
    MESSAGE_COLUMNS,
    WEBHOOK_ATTEMPT_COLUMNS,
    attempt_params,
    decode_message,
    delivery_status_params,
    done_job_ids,
    jobs_within_room,
    retry_params,
)
from e2a_gateway.storage.sql.accounts import mark_signed
from e2a_gateway.storage.sql.jobs import RETRY_JOB, current_leases, lease, lease_time
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import CLOUD, WEBHOOK_JOB

WEBHOOK_URL = "coalesce(a.webhook_url, '')"
"""A webhook job's URL, from its message's agent `a` (empty when it has none)."""


def _record_attempts(tx: Transaction, finished: list[FinishedAttempt]) -> None:
    """Record the attempts whose job still holds the lease they were made under, set each
    message's delivery status, drop or reschedule its job."""
    leases = current_leases(tx, "jobs", "bigint", (item.job_id for item in finished))
    finished = [item for item in finished if leases.get(item.job_id) == item.leased_until]
    if not finished:
        return
    tx.executemany(
        "INSERT INTO webhook_attempts "
        "(message_id, attempt, attempted_at, status_code, error, duration_ms) "
        "SELECT ?, CAST(? AS INTEGER), ?, CAST(? AS INTEGER), ?, CAST(? AS INTEGER) "
        "WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?)",
        attempt_params(finished),
    )
    tx.executemany(
        "UPDATE messages SET delivery_status = ? WHERE id = ?", delivery_status_params(finished)
    )
    tx.executemany(RETRY_JOB, retry_params(finished))
    answered = [item.message_id for item in finished if item.attempt.status_code is not None]
    if answered:
        owners = tx.all(
            f"SELECT id, user_id FROM messages WHERE {tx.dialect.in_list('id', 'text')}",
            (tx.dialect.list_param(answered),),
        )
        signed_at = {item.message_id: item.attempt.attempted_at for item in finished}
        mark_signed(
            tx,
            (
                (user_id, parse_timestamp(signed_at[message_id]).timestamp())
                for message_id, user_id in owners
            ),
        )
    done = done_job_ids(finished)
    if done:
        tx.execute(
            f"DELETE FROM jobs WHERE {tx.dialect.in_list('id', 'bigint')}",
            (tx.dialect.list_param(done),),
        )


class WebhooksSql(Runner):
    """`WebhookDeliveries` in SQL."""

    async def claim_webhook_jobs(
        self,
        now: float,
        limit: int | None,
        lease_seconds: float,
        room: Mapping[str, int],
        default_room: int,
    ) -> list[Job]:
        """Lease due webhook jobs in order, at most `room[url]` (else `default_room`) per URL;
        jobs another replica is claiming are passed over, not waited for, and those of agents
        in the trash wait for their restore."""
        full = [url for url, free in room.items() if free <= 0]

        def claim(tx: Transaction) -> list[Job]:
            dialect = tx.dialect
            leased_at = lease_time(tx, now)
            candidates = tx.all(
                "SELECT j.id, j.kind, j.message_id, j.attempts, j.earlier_attempts, j.run_at, "
                f"j.created_at, {WEBHOOK_URL} FROM jobs j JOIN messages m ON m.id = j.message_id "
                "JOIN agents a ON a.email = m.agent_email "
                "WHERE j.kind = ? AND j.run_at <= ? AND a.deleted_at IS NULL "
                "AND (j.locked_until IS NULL OR j.locked_until < ?) "
                f"AND {dialect.not_in_list(WEBHOOK_URL, 'text')} "
                f"ORDER BY j.run_at, j.id LIMIT ?{dialect.skip_locked(of='j')}",
                (
                    WEBHOOK_JOB,
                    now,
                    leased_at,
                    dialect.list_param(full),
                    dialect.no_limit if limit is None else limit,
                ),
            )
            until = leased_at + lease_seconds
            jobs = jobs_within_room(candidates, room, default_room, until)
            lease(tx, [job.id for job in jobs], until, self.holder)
            return jobs

        return await self._write(claim, durable=False)

    async def webhook_deliveries(self, message_ids: list[str]) -> dict[str, WebhookDelivery]:
        """The messages with their agents' webhook URLs (cloud agents only) and signing seeds."""

        def load(tx: Transaction) -> dict[str, WebhookDelivery]:
            rows = tx.all(
                f"SELECT {MESSAGE_COLUMNS}, "
                f"CASE WHEN a.agent_mode = '{CLOUD}' THEN a.webhook_url END, "
                "(SELECT seed FROM signing_secrets s WHERE s.user_id = m.user_id "
                " ORDER BY s.seq DESC LIMIT 1) "
                "FROM messages_with_content m JOIN agents a ON a.email = m.agent_email "
                f"WHERE {tx.dialect.in_list('m.id', 'text')}",
                (tx.dialect.list_param(message_ids),),
            )
            found: dict[str, WebhookDelivery] = {}
            for row in rows:
                message = decode_message(row[:-2])
                found[message.id] = WebhookDelivery(message, row[-2], row[-1])
            return found

        return await self._read(load)

    async def webhook_job_due(self, job_id: int, leased_until: float, url: str) -> bool:
        """Whether the job still holds its lease and its agent, in service, still posts to
        `url` (one read)."""
        row = await self._read(
            lambda tx: tx.first(
                "SELECT 1 FROM jobs j JOIN messages m ON m.id = j.message_id "
                "JOIN agents a ON a.email = m.agent_email "
                "WHERE j.id = ? AND j.locked_until = ? AND a.deleted_at IS NULL "
                f"AND a.agent_mode = '{CLOUD}' AND a.webhook_url = ?",
                (job_id, leased_until, url),
            )
        )
        return row is not None

    async def finish_webhook_attempts(self, finished: list[FinishedAttempt]) -> None:
        """Record the attempts, update the statuses, drop or reschedule the jobs, atomically."""
        await self._write(lambda tx: _record_attempts(tx, finished))

    async def webhook_attempts(self, user_id: str, message_id: str) -> list[WebhookAttempt]:
        """Attempts for one of the user's messages, oldest first (none for another's)."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {WEBHOOK_ATTEMPT_COLUMNS} FROM webhook_attempts WHERE message_id = ? "
                "AND message_id IN (SELECT id FROM messages WHERE id = ? AND user_id = ?) "
                "ORDER BY attempt, id",
                (message_id, message_id, user_id),
            )
        )
        return [WebhookAttempt(*row) for row in rows]
