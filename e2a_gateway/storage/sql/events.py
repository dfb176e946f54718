"""The SQL of the `/v1` events log: an event is recorded inside the transaction that commits
what it describes, with a queued delivery to every webhook of the account it matches; events
are listed and read with their delivery counts, redelivered to the webhooks they matched, and
swept after 30 days, their settled deliveries too.

The webhooks an event matched are those with a delivery of it: its fan-out queued one to each
in its own transaction, and a redelivery goes only to one of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import orjson

from e2a_gateway.events import (
    EMAIL_RECEIVED,
    Subscription,
    copy_envelope,
    copy_event,
    derived_event_id,
    event_envelope,
    matches,
)
from e2a_gateway.ids import new_id
from e2a_gateway.storage.announcements import JobsAdded
from e2a_gateway.storage.base import (
    DeliveryCounts,
    EventFilter,
    FoldedCopy,
    NewEvent,
    StoredEvent,
)
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
    "e.envelope, b.envelope, e.copies"
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


EVENTS_LOCK = 0x657674
"""The key space of the accounts' event-log locks: (EVENTS_LOCK, the user's id)."""


def record_events(tx: Transaction, events: Sequence[NewEvent | FoldedCopy]) -> None:
    """Log `events` as `tx` commits (`_log_events`): they are written last, under their
    accounts' event-log locks, so the events of one account are numbered in the order they
    commit. (PostgreSQL numbers a row as it is inserted: an event inserted early in a long
    transaction would commit after later-numbered ones, below what a reader had already
    listed.) Holding the locks only for the last statements, no transaction waits for them
    while it holds a lock another one takes before logging its events."""
    tx.gathered("events", partial(_log_events, tx)).extend(events)


def _log_events(tx: Transaction, events: Sequence[NewEvent | FoldedCopy]) -> None:
    """Log `events`: each a row of its own, but a further copy's `email.received`
    (`FoldedCopy`), which is listed in its first copy's row (migration 33) and found by its id
    through `event_copies`. Queue a delivery of each, in order, to every enabled webhook of its
    account that it matches; the delivery worker looks once the transaction commits."""
    owners = {event.first.user_id if isinstance(event, FoldedCopy) else event.user_id
              for event in events}  # fmt: skip
    for user_id in sorted(owners):
        tx.lock(user_id, space=EVENTS_LOCK)
    whole: list[NewEvent] = []
    copies: dict[str, list[list[str | None]]] = {}
    for event in events:
        if isinstance(event, FoldedCopy):
            copies.setdefault(event.first.id, []).append(
                [event.id, event.message_id, event.agent_email, event.conversation_id]
            )
        else:
            whole.append(event)
    tx.executemany(
        "INSERT INTO events (id, user_id, type, agent_email, conversation_id, message_id, "
        "created_epoch, envelope, copies) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                _encode_copies(copies.get(event.id)),
            )
            for event in whole
        ],
    )
    for first_id, entries in copies.items():  # one statement per row, not per copy
        tx.execute(
            "INSERT INTO event_copies (id, first_id) SELECT value, ? "
            f"FROM ({tx.dialect.list_values('text')}) AS copy_ids",
            (first_id, tx.dialect.list_param([entry[0] for entry in entries])),
        )
    subscriptions = {
        user_id: found
        for user_id in {event.user_id for event in whole}
        if (found := _subscriptions(tx, user_id))
    }
    queued = False
    for item in events if subscriptions else ():
        user_id = item.first.user_id if isinstance(item, FoldedCopy) else item.user_id
        if user_id not in subscriptions:
            continue
        event = copy_event(item) if isinstance(item, FoldedCopy) else item
        lowered = replace(event, agent_email=(event.agent_email or "").lower())
        for subscription in subscriptions[user_id]:
            if matches(subscription, lowered):
                queue_delivery(
                    tx,
                    subscription.webhook_id,
                    event.id,
                    event.type,
                    event.envelope,
                    event.created_epoch,
                )
                queued = True
    if queued:
        tx.announce(JobsAdded(SUBSCRIBER_JOB))


def _encode_copies(folded: list[list[str | None]] | None) -> str | None:
    """The `copies` column: each further copy as [event id, message id, agent, conversation]."""
    if not folded:
        return None
    return orjson.dumps(folded).decode()


def decode_events(
    row: Sequence[Any], wanted: Callable[[StoredEvent], bool] | None = None
) -> list[StoredEvent]:
    """The events a row of EVENT_COLUMNS stands for, in order: its own, then each further copy
    folded into it, its envelope made from the row's with the copy's own fields put in. Only
    those `wanted` keeps (all by default) are returned, and only their envelopes are made."""
    seq, event_id, event_type, agent, conversation, message, created, envelope, shared = row[:9]
    own = StoredEvent(
        seq=int(seq),
        id=event_id,
        type=event_type,
        agent_email=agent,
        conversation_id=conversation,
        message_id=message,
        created_epoch=float(created),
        envelope=event_envelope(envelope, shared, event_id, message, agent, conversation),
    )
    found = [own] if wanted is None or wanted(own) else []
    for ordinal, (copy_id, copy_message, copy_agent, copy_conversation) in enumerate(
        json.loads(row[9]) if row[9] else (), start=1
    ):
        copy = replace(
            own,
            id=copy_id,
            agent_email=copy_agent,
            conversation_id=copy_conversation,
            message_id=copy_message,
            envelope=b"",
            ordinal=ordinal,
        )
        if wanted is None or wanted(copy):
            envelope = copy_envelope(
                own.envelope, copy_id, copy_message, copy_agent, copy_conversation
            )
            found.append(replace(copy, envelope=envelope))
    return found


_PER_COPY = ("agent_email", "conversation_id", "message_id")
"""The filter fields each copy folded into a row has its own value of."""
_SEARCHED_IN_COPIES = ("agent_email", "conversation_id")
"""The per-copy fields a folded row is searched for in its `copies` text (`_filter_sql`)."""


_MESSAGE_ROWS = (
    "e.seq IN (SELECT seq FROM events WHERE user_id = ? AND message_id = ? UNION ALL "
    "SELECT f.seq FROM event_copies c JOIN events f ON f.id = c.first_id "
    "WHERE c.id = ? AND f.user_id = ?)"
)
"""The rows of one of the user's messages, found by index: its own (`events_message`), and
the row its copy's `email.received` is folded into, by that event's id (`event_copies`, at
most one). Read by `seq` alone, so neither planner walks the user's whole log in `seq` order
(`events_user`) for the few rows these are."""


def _filter_sql(tx: Transaction, user_id: str, query: EventFilter) -> tuple[str, list[Any]]:
    """The conditions on `events e` keeping the user's rows that may stand for a matching
    event (`_kept` decides): a message's rows are found by index (`_MESSAGE_ROWS`); for an
    agent or a conversation, a folded row is kept when a copy's value appears in its
    `copies`, as those are not indexed (that would take an index entry per copy)."""
    conditions: list[str]
    params: list[Any]
    if query.message_id is None:
        conditions, params = ["e.user_id = ?"], [user_id]
    else:
        copy_id = derived_event_id(query.message_id, EMAIL_RECEIVED)
        conditions, params = [_MESSAGE_ROWS], [user_id, query.message_id, copy_id, user_id]
    if query.type is not None:
        conditions.append(" AND e.type = ?")
        params.append(query.type)
    for column in _SEARCHED_IN_COPIES:
        wanted = getattr(query, column)
        if wanted is not None:
            conditions.append(
                f" AND (e.{column} = ? OR (e.copies IS NOT NULL "
                f"AND {tx.dialect.contains_text('e.copies')}))"
            )
            params.extend([wanted, _as_copied(wanted)])
    if query.since is not None:
        conditions.append(" AND e.created_epoch >= ?")
        params.append(query.since)
    if query.until is not None:
        conditions.append(" AND e.created_epoch < ?")
        params.append(query.until)
    return "".join(conditions), params


def _as_copied(value: str) -> str:
    """`value` as `_encode_copies` writes it into a row's `copies`."""
    return json.dumps(value, ensure_ascii=False)


def _kept(event: StoredEvent, query: EventFilter) -> bool:
    """Whether one event of a row `_filter_sql` kept matches `query`'s per-copy fields."""
    return not any(
        getattr(query, column) is not None and getattr(event, column) != getattr(query, column)
        for column in _PER_COPY
    )


def _listed(event: StoredEvent, query: EventFilter, before: tuple[int, int] | None) -> bool:
    """Whether `event` belongs on a page of `query` before the position `before`."""
    return (before is None or (event.seq, event.ordinal) < before) and _kept(event, query)


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


def _with_counts(tx: Transaction, events: Sequence[StoredEvent]) -> list[StoredEvent]:
    counts = _counts(tx, [event.id for event in events])
    return [
        replace(event, deliveries=counts[event.id]) if event.id in counts else event
        for event in events
    ]


def _find_event(tx: Transaction, user_id: str, event_id: str) -> StoredEvent | None:
    """One of the user's events by its id: a row's own, or a copy folded into a row."""
    first_id = event_id
    folded = tx.first("SELECT first_id FROM event_copies WHERE id = ?", (event_id,))
    if folded is not None:
        first_id = folded[0]
    row = tx.first(
        f"SELECT {EVENT_COLUMNS} FROM {EVENTS_WITH_BODIES} WHERE e.id = ? AND e.user_id = ?",
        (first_id, user_id),
    )
    if row is None:
        return None
    found = decode_events(row, lambda event: event.id == event_id)
    return found[0] if found else None


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
        self, user_id: str, query: EventFilter, limit: int, before: tuple[int, int] | None
    ) -> list[StoredEvent]:
        """The user's matching events, newest first, before the position `before`. Rows are
        read a page at a time until `limit` events are found (a row may stand for many)."""

        def read(tx: Transaction) -> list[StoredEvent]:
            conditions, params = _filter_sql(tx, user_id, query)
            found: list[StoredEvent] = []
            position = before
            while len(found) < limit:
                bound, bound_params = "", []
                if position is not None:
                    bound = " AND e.seq <= ?" if position[1] > 0 else " AND e.seq < ?"
                    bound_params = [position[0]]
                wanted = limit - len(found)
                rows = tx.all(
                    f"SELECT {EVENT_COLUMNS} FROM {EVENTS_WITH_BODIES} "
                    f"WHERE {conditions}{bound} ORDER BY e.seq DESC LIMIT ?",
                    (*params, *bound_params, wanted),
                )
                listed = partial(_listed, query=query, before=position)
                for row in rows:
                    found.extend(reversed(decode_events(row, listed)))
                found = found[:limit]
                if len(rows) < wanted:
                    break
                position = (int(rows[-1][0]), 0)
            return _with_counts(tx, found)

        return await self._read(read, snapshot=True)

    async def get_event(self, user_id: str, event_id: str) -> StoredEvent | None:
        """One of the user's events with its delivery counts."""

        def load(tx: Transaction) -> StoredEvent | None:
            event = _find_event(tx, user_id, event_id)
            return None if event is None else _with_counts(tx, [event])[0]

        return await self._read(load, snapshot=True)

    async def redeliver_event(
        self, user_id: str, event_id: str, webhook_id: str | None, now: float
    ) -> list[tuple[str, str]] | None:
        """Queue the event again to `webhook_id`, or to every webhook it matched; nothing when
        `webhook_id` is not one it matched."""

        def redeliver(tx: Transaction) -> list[tuple[str, str]] | None:
            event = _find_event(tx, user_id, event_id)
            if event is None:
                return None
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
        """Delete up to `limit` rows of events made before `cutoff`, oldest first (a row with
        the copies folded into it goes whole), and the shared envelopes of migration 31 that no
        event is left to read (all that share one were made at its time); how many events
        went. The rows are found by `events_created`: taken in `seq` order, a sweep with
        nothing to delete would read the whole log."""

        def sweep(tx: Transaction) -> int:
            deleted = tx.all(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events "
                f"WHERE created_epoch < ? ORDER BY created_epoch LIMIT ?"
                f"{tx.dialect.skip_locked()}) "
                "RETURNING copies",
                (cutoff, limit),
            )
            tx.execute(
                "DELETE FROM event_bodies WHERE created_epoch < ? AND created_epoch < "
                "(SELECT COALESCE(MIN(created_epoch), ?) FROM events)",
                (cutoff, cutoff),
            )
            return sum(1 + (len(json.loads(copies)) if copies else 0) for (copies,) in deleted)

        return await self._write(sweep)

    async def delete_webhook_deliveries_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` deliveries queued before `cutoff`, oldest first: the settled
        ones, found by the partial index `webhook_deliveries_settled` (whose condition the
        query repeats, as SQLite needs), then those waiting for a disabled webhook whose next
        attempt has been due since before `cutoff` (found by `webhook_deliveries_due`): no
        worker attempts them, so they never settle; how many went."""

        def sweep(tx: Transaction) -> int:
            settled = tx.execute(
                "DELETE FROM webhook_deliveries WHERE seq IN (SELECT seq FROM "
                f"webhook_deliveries WHERE status IN ('{DELIVERY_DONE}', '{DELIVERY_FAILED}') "
                "AND created_epoch < ? ORDER BY created_epoch "
                f"LIMIT ?{tx.dialect.skip_locked()})",
                (cutoff, limit),
            ).rowcount
            if settled >= limit:
                return settled
            stranded = tx.execute(
                "DELETE FROM webhook_deliveries WHERE seq IN (SELECT d.seq FROM "
                "webhook_deliveries d WHERE d.run_at < ? AND d.created_epoch < ? "
                f"AND d.status = '{DELIVERY_WAITING}' AND EXISTS (SELECT 1 FROM webhooks w "
                f"WHERE w.id = d.webhook_id AND w.enabled = {tx.dialect.false}) "
                f"ORDER BY d.run_at LIMIT ?{tx.dialect.skip_locked()})",
                (cutoff, cutoff, limit - settled),
            ).rowcount
            return settled + stranded

        return await self._write(sweep)

    async def log_events(self, events: Sequence[NewEvent]) -> None:
        """Log `events` in a transaction of their own, queued to the webhooks they match."""
        await self._write(lambda tx: record_events(tx, events))
