"""The SQL of the `/v1` events log: an event is recorded inside the transaction that commits
what it describes, with a queued delivery to every webhook of the account it matches; events
are listed and read with their delivery counts, redelivered to the webhooks they matched, and
swept after 30 days.

The webhooks an event matched are those with a delivery of it: its fan-out queued one to each
in its own transaction, and a redelivery goes only to one of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from e2a_gateway.events import Subscription, event_envelope, full_envelope, matches
from e2a_gateway.ids import new_id
from e2a_gateway.storage.announcements import JobsAdded
from e2a_gateway.storage.base import DeliveryCounts, EventFilter, NewEvent, StoredEvent
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import (
    DELIVERY_DONE,
    DELIVERY_FAILED,
    DELIVERY_WAITING,
    SUBSCRIBER_JOB,
)

EVENT_COLUMNS = (
    "e.seq, e.id, e.type, e.agent_email, e.conversation_id, e.message_id, e.created_epoch, "
    "e.envelope, b.envelope"
)
EVENTS_WITH_BODIES = "events e LEFT JOIN event_bodies b ON b.id = e.body_id"
"""What EVENT_COLUMNS are selected from: each event with the envelope it shares, if any."""


def _subscriptions(tx: Transaction, user_id: str) -> list[Subscription]:
    rows = tx.all(
        f"SELECT id, events_json, filters_json FROM webhooks WHERE user_id = ? "
        f"AND enabled = {tx.dialect.true} ORDER BY seq",
        (user_id,),
    )
    found = []
    for webhook_id, events_json, filters_json in rows:
        filters = json.loads(filters_json)
        found.append(
            Subscription(
                webhook_id,
                json.loads(events_json),
                [address.lower() for address in filters.get("agent_emails", [])],
                filters.get("conversation_ids", []),
            )
        )
    return found


def queue_delivery(
    tx: Transaction,
    webhook_id: str,
    event_id: str,
    event_type: str,
    envelope: bytes,
    now: float,
) -> str:
    """Queue `envelope` for the webhook, due at `now`; the delivery's id. The caller announces
    the job (`JobsAdded(SUBSCRIBER_JOB)`)."""
    delivery_id = new_id("dlv")
    tx.execute(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, envelope, "
        "status, attempts, run_at, created_epoch) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (delivery_id, webhook_id, event_id, event_type, envelope, DELIVERY_WAITING, now, now),
    )
    return delivery_id


def record_events(tx: Transaction, events: Sequence[NewEvent]) -> None:
    """Log `events` and queue a delivery of each to every enabled webhook of its account that
    it matches; the delivery worker looks once the transaction commits."""
    bodies = {
        event.shared.id: (
            event.shared.id,
            event.user_id,
            event.created_epoch,
            event.shared.envelope,
        )
        for event in events
        if event.shared is not None
    }
    if bodies:
        tx.executemany(
            "INSERT INTO event_bodies (id, user_id, created_epoch, envelope) VALUES (?, ?, ?, ?)",
            list(bodies.values()),
        )
    tx.executemany(
        "INSERT INTO events (id, user_id, type, agent_email, conversation_id, message_id, "
        "created_epoch, envelope, body_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                event.id,
                event.user_id,
                event.type,
                event.agent_email,
                event.conversation_id,
                event.message_id,
                event.created_epoch,
                event.envelope,
                None if event.shared is None else event.shared.id,
            )
            for event in events
        ],
    )
    subscriptions: dict[str, list[Subscription]] = {}
    queued = False
    for event in events:
        if event.user_id not in subscriptions:
            subscriptions[event.user_id] = _subscriptions(tx, event.user_id)
        if not subscriptions[event.user_id]:
            continue
        lowered = replace(event, agent_email=(event.agent_email or "").lower())
        sent: bytes | None = None
        for subscription in subscriptions[event.user_id]:
            if matches(subscription, lowered):
                sent = sent or full_envelope(event)
                queue_delivery(
                    tx, subscription.webhook_id, event.id, event.type, sent, event.created_epoch
                )
                queued = True
    if queued:
        tx.announce(JobsAdded(SUBSCRIBER_JOB))


def decode_event(row: Sequence[Any], counts: DeliveryCounts | None = None) -> StoredEvent:
    """A StoredEvent from EVENT_COLUMNS, its envelope whole."""
    seq, event_id, event_type, agent, conversation, message, created, envelope, shared = row[:9]
    return StoredEvent(
        seq=int(seq),
        id=event_id,
        type=event_type,
        agent_email=agent,
        conversation_id=conversation,
        message_id=message,
        created_epoch=float(created),
        envelope=event_envelope(envelope, shared, event_id, message, agent, conversation),
        deliveries=counts or DeliveryCounts(),
    )


def _filter_sql(query: EventFilter) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    for column, wanted in (
        ("type", query.type),
        ("agent_email", query.agent_email),
        ("conversation_id", query.conversation_id),
        ("message_id", query.message_id),
    ):
        if wanted is not None:
            conditions.append(f" AND e.{column} = ?")
            params.append(wanted)
    if query.since is not None:
        conditions.append(" AND e.created_epoch >= ?")
        params.append(query.since)
    if query.until is not None:
        conditions.append(" AND e.created_epoch < ?")
        params.append(query.until)
    if query.agent_emails is not None:
        marks = ", ".join("?" for _ in query.agent_emails) or "NULL"
        conditions.append(f" AND e.agent_email IN ({marks})")
        params.extend(query.agent_emails)
    return "".join(conditions), params


def _counts(tx: Transaction, event_ids: Sequence[str]) -> dict[str, DeliveryCounts]:
    """The delivery counts of each of `event_ids` that has deliveries, in one query: every
    delivery by its state, redeliveries too, as e2a counts them (`matched_webhooks` is their
    sum)."""
    if not event_ids:
        return {}
    by_event: dict[str, dict[str, int]] = {}
    for event_id, status, count in tx.all(
        "SELECT event_id, status, count(*) FROM webhook_deliveries "
        f"WHERE {tx.dialect.in_list('event_id', 'text')} GROUP BY event_id, status",
        (tx.dialect.list_param(event_ids),),
    ):
        by_event.setdefault(event_id, {})[status] = int(count)
    return {
        event_id: DeliveryCounts(
            matched_webhooks=sum(by_status.values()),
            delivered=by_status.get(DELIVERY_DONE, 0),
            pending=by_status.get(DELIVERY_WAITING, 0),
            failed=by_status.get(DELIVERY_FAILED, 0),
        )
        for event_id, by_status in by_event.items()
    }


def _with_counts(tx: Transaction, rows: Sequence[Sequence[Any]]) -> list[StoredEvent]:
    counts = _counts(tx, [row[1] for row in rows])
    return [decode_event(row, counts.get(row[1])) for row in rows]


def _matched_webhooks(tx: Transaction, user_id: str, event_id: str) -> list[str]:
    """The user's webhooks the event matched when it was recorded, oldest first."""
    rows = tx.all(
        "SELECT w.id FROM webhooks w WHERE w.user_id = ? AND EXISTS (SELECT 1 FROM "
        "webhook_deliveries d WHERE d.event_id = ? AND d.webhook_id = w.id) ORDER BY w.seq",
        (user_id, event_id),
    )
    return [row[0] for row in rows]


class EventsSql(Runner):
    """`EventLog` in SQL."""

    async def list_events(
        self, user_id: str, query: EventFilter, limit: int, before_seq: int | None
    ) -> list[StoredEvent]:
        """The user's matching events, newest first, before `before_seq`."""
        conditions, params = _filter_sql(query)
        if before_seq is not None:
            conditions += " AND e.seq < ?"
            params.append(before_seq)
        return await self._read(
            lambda tx: _with_counts(
                tx,
                tx.all(
                    f"SELECT {EVENT_COLUMNS} FROM {EVENTS_WITH_BODIES} "
                    f"WHERE e.user_id = ?{conditions} ORDER BY e.seq DESC LIMIT ?",
                    (user_id, *params, limit),
                ),
            ),
            snapshot=True,
        )

    async def get_event(self, user_id: str, event_id: str) -> StoredEvent | None:
        """One of the user's events with its delivery counts."""

        def load(tx: Transaction) -> StoredEvent | None:
            row = tx.first(
                f"SELECT {EVENT_COLUMNS} FROM {EVENTS_WITH_BODIES} "
                "WHERE e.id = ? AND e.user_id = ?",
                (event_id, user_id),
            )
            return None if row is None else _with_counts(tx, [row])[0]

        return await self._read(load, snapshot=True)

    async def redeliver_event(
        self, user_id: str, event_id: str, webhook_id: str | None, now: float
    ) -> list[tuple[str, str]] | None:
        """Queue the event again to `webhook_id`, or to every webhook it matched; nothing when
        `webhook_id` is not one it matched."""

        def redeliver(tx: Transaction) -> list[tuple[str, str]] | None:
            row = tx.first(
                f"SELECT {EVENT_COLUMNS} FROM {EVENTS_WITH_BODIES} "
                "WHERE e.id = ? AND e.user_id = ?",
                (event_id, user_id),
            )
            if row is None:
                return None
            event = decode_event(row)
            targets = _matched_webhooks(tx, user_id, event_id)
            if webhook_id is not None:
                targets = [webhook_id] if webhook_id in targets else []
            queued = [
                (target, queue_delivery(tx, target, event_id, event.type, event.envelope, now))
                for target in targets
            ]
            if queued:
                tx.announce(JobsAdded(SUBSCRIBER_JOB))
            return queued

        return await self._write(redeliver)

    async def delete_events_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` events made before `cutoff`, oldest first, and the shared
        envelopes no event is left to read (all that share one were made at its time)."""

        def sweep(tx: Transaction) -> int:
            deleted = tx.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events "
                f"WHERE created_epoch < ? ORDER BY seq LIMIT ?{tx.dialect.skip_locked()})",
                (cutoff, limit),
            ).rowcount
            tx.execute(
                "DELETE FROM event_bodies WHERE created_epoch < ? AND created_epoch < "
                "(SELECT COALESCE(MIN(created_epoch), ?) FROM events)",
                (cutoff, cutoff),
            )
            return int(deleted)

        return await self._write(sweep)

    async def log_events(self, events: Sequence[NewEvent]) -> None:
        """Log `events` in a transaction of their own, queued to the webhooks they match."""
        await self._write(lambda tx: record_events(tx, events))
