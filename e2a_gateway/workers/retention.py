"""The retention sweep: deletes messages (raw bodies and attachments with them), webhook
attempt records and feedback older than `retention.days`, idempotency keys past their window,
messages in the `/v1` trash for longer than TRASH_KEPT_SECONDS, agents in the trash for longer
than TRASH_DAYS (with their messages), `/v1` events older than 30 days with the settled
deliveries of that time to webhooks (each a copy of an event) and those a disabled webhook
has left waiting, and the records of dashboard
sessions signed out once the sessions have expired.

It deletes in small batches, each its own short transaction, and pauses between batches, so
SMTP ingest and API writes always get the database in between. It never touches a message that
still has work pending (a delivery, a send, an approval notice) or that awaits approval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import RETENTION_SECONDS as EVENT_RETENTION_SECONDS
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.agents import TRASH_DAYS
from e2a_gateway.operations.idempotency import KEPT_SECONDS as IDEMPOTENCY_KEPT_SECONDS
from e2a_gateway.operations.mailbox import TRASH_KEPT_SECONDS
from e2a_gateway.storage.base import AgentPurge
from e2a_gateway.workers.rounds import Rounds

log = logging.getLogger("e2a.retention")

SWEEP_INTERVAL_SECONDS = 3600.0
BATCH_SIZE = 200
"""Rows deleted per transaction: small enough that a batch holds the writer for milliseconds."""
BATCH_PAUSE_SECONDS = 0.05
"""Pause between two batches, leaving the database to ingest and the API."""
MAX_BATCHES_PER_SWEEP = 500
"""A bound on one sweep (100,000 rows of each kind by default); the next sweep goes on where
this one stopped."""
SECONDS_PER_DAY = 86_400
Cutoff = TypeVar("Cutoff", str, float)
"""Before when rows go: RFC 3339 text (messages, attempts) or epoch seconds (idempotency)."""


@dataclass(frozen=True)
class SweepResult:
    """What one sweep deleted."""

    messages: int
    webhook_attempts: int
    idempotency_keys: int = 0
    trashed_messages: int = 0
    feedback: int = 0
    events: int = 0
    trashed_agents: int = 0
    webhook_deliveries: int = 0
    signouts: int = 0


class RetentionWorker:
    """Deletes what is older than `retention.days`. `sweep(now)` does one round (tests pass
    their own time); `run()` sweeps at start and then every `interval_seconds`
    (SWEEP_INTERVAL_SECONDS)."""

    def __init__(
        self,
        gateway: Gateway,
        clock: Callable[[], float] = time.time,
        pause: float = BATCH_PAUSE_SECONDS,
        batch_size: int = BATCH_SIZE,
        interval_seconds: float = SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._pause = pause
        self._batch_size = batch_size
        self._interval_seconds = interval_seconds
        self._rounds = Rounds(log)

    async def run(self) -> None:
        """Sweep every `interval_seconds` until cancelled; a sweep the database fails is said
        once in the log and made again at the next (`Rounds`)."""
        while True:
            await self._rounds.run("retention", self.sweep(self._clock()))
            await trio.sleep(self._interval_seconds)

    async def sweep(self, now: float) -> SweepResult:
        """Delete every message, webhook attempt and piece of feedback from before
        `now - retention.days`, the idempotency keys claimed and completed more than their
        window ago, trashed messages and agents past their time, the events and settled
        webhook deliveries older than 30 days, and the sign-outs of sessions expired by `now`."""
        cutoff = format_timestamp(now - self._gateway.settings.retention.days * SECONDS_PER_DAY)
        storage = self._gateway.storage
        result = SweepResult(
            messages=await self._in_batches("messages", storage.delete_messages_before, cutoff),
            webhook_attempts=await self._in_batches(
                "webhook_attempts", storage.delete_webhook_attempts_before, cutoff
            ),
            idempotency_keys=await self._in_batches(
                "idempotency_keys",
                storage.delete_idempotency_keys_before,
                now - IDEMPOTENCY_KEPT_SECONDS,
            ),
            trashed_messages=await self._in_batches(
                "trashed_messages",
                storage.delete_trashed_before,
                format_timestamp(now - TRASH_KEPT_SECONDS),
            ),
            feedback=await self._in_batches("feedback", storage.delete_feedback_before, cutoff),
            events=await self._in_batches(
                "events", storage.delete_events_before, now - EVENT_RETENTION_SECONDS
            ),
            trashed_agents=await self._in_batches(
                "trashed_agents",
                storage.purge_agents_trashed_before,
                format_timestamp(now - TRASH_DAYS * SECONDS_PER_DAY),
            ),
            webhook_deliveries=await self._in_batches(
                "webhook_deliveries",
                storage.delete_webhook_deliveries_before,
                now - EVENT_RETENTION_SECONDS,
            ),
            signouts=await self._in_batches(
                "dashboard_signouts", storage.delete_signouts_before, now
            ),
        )
        if result.messages or result.webhook_attempts:
            log.info(
                "retention: deleted %d messages and %d webhook attempts from before %s",
                result.messages,
                result.webhook_attempts,
                cutoff,
            )
        if result.events:
            log.info("retention: deleted %d events older than 30 days", result.events)
        if result.webhook_deliveries:
            log.info(
                "retention: deleted %d webhook deliveries older than 30 days",
                result.webhook_deliveries,
            )
        if result.idempotency_keys:
            log.info("retention: deleted %d expired idempotency keys", result.idempotency_keys)
        if result.trashed_messages:
            log.info("retention: emptied %d messages from the trash", result.trashed_messages)
        if result.feedback:
            log.info("retention: deleted %d feedback entries before %s", result.feedback, cutoff)
        if result.trashed_agents:
            log.info(
                "retention: purged %d agents trashed more than %d days ago",
                result.trashed_agents,
                TRASH_DAYS,
            )
        if result.signouts:
            log.info("retention: deleted %d sign-outs of expired sessions", result.signouts)
        return result

    async def _in_batches(
        self,
        kind: str,
        delete: Callable[[Cutoff, int], Awaitable[int | AgentPurge]],
        cutoff: Cutoff,
    ) -> int:
        """Call `delete(cutoff, batch size)` until a batch comes back short (or the sweep's
        bound is reached), pausing between batches; return the total deleted (of the trash's
        purge, the agents: its batches count their messages too)."""
        total = 0
        for _ in range(MAX_BATCHES_PER_SWEEP):
            batch = await delete(cutoff, self._batch_size)
            rows, deleted = (batch, batch) if isinstance(batch, int) else (batch.rows, batch.agents)
            total += deleted
            self._gateway.metrics.retention_deleted.labels(kind).inc(deleted)
            if rows < self._batch_size:
                break
            await trio.sleep(self._pause)
        return total
