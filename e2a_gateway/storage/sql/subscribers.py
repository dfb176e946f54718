"""The SQL of `/v1` webhook subscribers: an account's webhooks, and the queue of deliveries to
them that the delivery worker claims (within each URL's room, under leases) and finishes.

Every query about a webhook is scoped by its owner's `user_id`; the worker's claim and the
auto-disable sweep are not (they serve every account).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from e2a_gateway.clock import format_timestamp
from e2a_gateway.storage.announcements import JobsAdded
from e2a_gateway.storage.base import (
    ClaimedDelivery,
    CoolingDown,
    HeldKey,
    LimitReached,
    SubscriberAttempt,
    SubscriberDelivery,
    Webhook,
    WebhookChanges,
)
from e2a_gateway.storage.sql.events import queue_delivery
from e2a_gateway.storage.sql.idempotency import settle_claim
from e2a_gateway.storage.sql.jobs import current_leases, lease_time, renew_lease
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import (
    DELIVERY_DONE,
    DELIVERY_FAILED,
    DELIVERY_WAITING,
    SUBSCRIBER_JOB,
)

WEBHOOK_COLUMNS = (
    "seq, id, user_id, url, description, events_json, filters_json, enabled, seed, "
    "previous_seed, previous_until, created_at, last_delivered_at, auto_disabled_at"
)
DELIVERY_COLUMNS = (
    "d.seq, d.id, d.webhook_id, d.event_id, d.event_type, d.envelope, d.status, d.attempts, "
    "d.run_at, d.created_epoch, d.last_attempt_at, d.last_status_code, d.last_error, "
    "d.last_latency_ms"
)


def decode_webhook(row: Sequence[Any]) -> Webhook:
    """A webhook from a row selected with WEBHOOK_COLUMNS."""
    (seq, webhook_id, user_id, url, description, events_json, filters_json, enabled, seed,
     previous_seed, previous_until, created_at, last_delivered_at,
     auto_disabled_at) = row  # fmt: skip
    filters = json.loads(filters_json)
    return Webhook(
        id=webhook_id,
        user_id=user_id,
        url=url,
        description=description,
        events=json.loads(events_json),
        agent_emails=filters.get("agent_emails", []),
        conversation_ids=filters.get("conversation_ids", []),
        enabled=bool(enabled),
        seed=seed,
        created_at=created_at,
        seq=int(seq),
        previous_seed=previous_seed,
        previous_until=previous_until,
        last_delivered_at=last_delivered_at,
        auto_disabled_at=auto_disabled_at,
    )


def _decode_delivery(row: Sequence[Any]) -> SubscriberDelivery:
    return SubscriberDelivery(
        seq=int(row[0]),
        id=row[1],
        webhook_id=row[2],
        event_id=row[3],
        event_type=row[4],
        envelope=bytes(row[5]),
        status=row[6],
        attempts=int(row[7]),
        run_at=row[8],
        created_epoch=float(row[9]),
        last_attempt_at=row[10],
        last_status_code=row[11],
        last_error=row[12],
        last_latency_ms=row[13],
    )


def _filters_json(agent_emails: list[str], conversation_ids: list[str]) -> str:
    return json.dumps({"agent_emails": agent_emails, "conversation_ids": conversation_ids})


def _webhook_row(tx: Transaction, user_id: str, webhook_id: str, lock: bool = False) -> Any:
    """The user's webhook; with `lock`, held until the commit (a sweep passes it over)."""
    return tx.first(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ? AND user_id = ?"
        f"{tx.dialect.for_update() if lock else ''}",
        (webhook_id, user_id),
    )


CHRONICALLY_FAILING = (
    "WITH settled AS MATERIALIZED (SELECT webhook_id, status FROM webhook_deliveries "
    f"WHERE status IN ('{DELIVERY_DONE}', '{DELIVERY_FAILED}') AND created_epoch > ?) "
    "SELECT webhook_id FROM settled GROUP BY webhook_id "
    f"HAVING sum(CASE WHEN status = '{DELIVERY_FAILED}' THEN 1 ELSE 0 END) >= ? "
    f"AND sum(CASE WHEN status = '{DELIVERY_DONE}' THEN 1 ELSE 0 END) = 0"
)
"""The webhooks whose deliveries made after `?` count at least `?` failed for good and none
delivered (e2a's AutoDisableFailingWebhooks). The settled deliveries of the window are read
first, by the partial index `webhook_deliveries_settled` (whose condition the query repeats, as
SQLite needs); grouped at once, SQLite would read every delivery by the webhook index."""


class SubscribersSql(Runner):
    """`Subscribers` in SQL."""

    async def add_webhook(
        self, webhook: Webhook, max_per_user: int, settles: HeldKey | None = None
    ) -> None:
        """Insert a webhook unless the user has `max_per_user` already (LimitReached), with its
        record on the Idempotency-Key claim `settles`."""

        def insert(tx: Transaction) -> None:
            tx.lock(webhook.user_id)
            count = tx.one("SELECT count(*) FROM webhooks WHERE user_id = ?", (webhook.user_id,))
            if int(count[0]) >= max_per_user:
                raise LimitReached(f"at most {max_per_user} webhooks per account")
            tx.execute(
                "INSERT INTO webhooks (id, user_id, url, description, events_json, filters_json, "
                "enabled, seed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    webhook.id,
                    webhook.user_id,
                    webhook.url,
                    webhook.description,
                    json.dumps(webhook.events),
                    _filters_json(webhook.agent_emails, webhook.conversation_ids),
                    webhook.enabled,
                    webhook.seed,
                    webhook.created_at,
                ),
            )
            if settles is not None:
                settle_claim(tx, settles, webhook.id)

        await self._write(insert)

    async def webhook_page(self, user_id: str, limit: int, after_seq: int | None) -> list[Webhook]:
        """The user's webhooks, newest first, after (older than) `after_seq`."""
        before = "" if after_seq is None else " AND seq < ?"
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = ?{before} "
                "ORDER BY seq DESC LIMIT ?",
                (user_id, *(() if after_seq is None else (after_seq,)), limit),
            )
        )
        return [decode_webhook(row) for row in rows]

    async def get_webhook(self, user_id: str, webhook_id: str) -> Webhook | None:
        """One of the user's webhooks."""
        row = await self._read(lambda tx: _webhook_row(tx, user_id, webhook_id))
        return None if row is None else decode_webhook(row)

    async def update_webhook(
        self, user_id: str, webhook_id: str, changes: WebhookChanges, cooled_before: float
    ) -> Webhook | None:
        """Apply `changes` (lists replace) to one of the user's webhooks; enabling it is refused
        while its auto-disable is later than `cooled_before`, and clears it."""

        def update(tx: Transaction) -> Webhook | None:
            row = _webhook_row(tx, user_id, webhook_id, lock=True)
            if row is None:
                return None
            current = decode_webhook(row)
            assignments: dict[str, Any] = {}
            if changes.enabled:
                if (
                    current.auto_disabled_at is not None
                    and current.auto_disabled_at > cooled_before
                ):
                    raise CoolingDown(f"webhook {webhook_id} was auto-disabled too recently")
                assignments["auto_disabled_at"] = None
                if not current.enabled:
                    tx.announce(JobsAdded(SUBSCRIBER_JOB))  # its waiting deliveries are due
            if changes.url is not None:
                assignments["url"] = changes.url
            if changes.description is not None:
                assignments["description"] = changes.description
            if changes.events is not None:
                assignments["events_json"] = json.dumps(changes.events)
            if changes.enabled is not None:
                assignments["enabled"] = changes.enabled
            if changes.agent_emails is not None or changes.conversation_ids is not None:
                assignments["filters_json"] = _filters_json(
                    current.agent_emails if changes.agent_emails is None else changes.agent_emails,
                    current.conversation_ids
                    if changes.conversation_ids is None
                    else changes.conversation_ids,
                )
            if assignments:
                columns = ", ".join(f"{column} = ?" for column in assignments)
                tx.execute(
                    f"UPDATE webhooks SET {columns} WHERE id = ? AND user_id = ?",
                    (*assignments.values(), webhook_id, user_id),
                )
            return decode_webhook(_webhook_row(tx, user_id, webhook_id))

        return await self._write(update)

    async def disable_failing_webhooks(
        self, now: float, since: float, min_failed: int
    ) -> list[Webhook]:
        """Turn off the enabled webhooks failing chronically since `since`, auto-disabled at
        `now`; those turned off. Another sweep's webhooks (replicas) are passed over while it
        holds them, and are no longer enabled once it commits: each is turned off once, and
        two sweeps never wait for each other."""

        def disable(tx: Transaction) -> list[Any]:
            dialect = tx.dialect
            return tx.all(
                f"UPDATE webhooks SET enabled = {dialect.false}, auto_disabled_at = ? "
                f"WHERE id IN (SELECT id FROM webhooks WHERE enabled = {dialect.true} "
                f"AND id IN ({CHRONICALLY_FAILING}){dialect.skip_locked()}) "
                f"RETURNING {WEBHOOK_COLUMNS}",
                (now, since, min_failed),
            )

        return [decode_webhook(row) for row in await self._write(disable)]

    async def delete_webhook(self, user_id: str, webhook_id: str) -> bool:
        """Delete the webhook (its deliveries by cascade)."""
        deleted = await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM webhooks WHERE id = ? AND user_id = ?", (webhook_id, user_id)
                ).rowcount
            )
        )
        return bool(deleted)

    async def rotate_webhook_seed(
        self,
        user_id: str,
        webhook_id: str,
        seed: str,
        previous_until: float,
        settles: HeldKey | None = None,
    ) -> Webhook | None:
        """The current seed becomes the previous one (signing until `previous_until`), and the
        rotation is recorded on the Idempotency-Key claim `settles`."""

        def rotate(tx: Transaction) -> Webhook | None:
            changed = tx.execute(
                "UPDATE webhooks SET previous_seed = seed, previous_until = ?, seed = ? "
                "WHERE id = ? AND user_id = ?",
                (previous_until, seed, webhook_id, user_id),
            ).rowcount
            if not changed:
                return None
            if settles is not None:
                settle_claim(tx, settles, webhook_id)
            return decode_webhook(_webhook_row(tx, user_id, webhook_id))

        return await self._write(rotate)

    async def add_test_delivery(
        self,
        user_id: str,
        webhook_id: str,
        event_id: str,
        event_type: str,
        envelope: bytes,
        now: float,
    ) -> str | None:
        """Queue a one-off delivery of `envelope` to one of the user's webhooks."""

        def add(tx: Transaction) -> str | None:
            if _webhook_row(tx, user_id, webhook_id) is None:
                return None
            delivery_id = queue_delivery(tx, webhook_id, event_id, event_type, envelope, now)
            tx.announce(JobsAdded(SUBSCRIBER_JOB))
            return delivery_id

        return await self._write(add)

    async def delivery_page(
        self,
        user_id: str,
        webhook_id: str,
        status: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[SubscriberDelivery] | None:
        """The webhook's deliveries, newest first."""

        def load(tx: Transaction) -> list[SubscriberDelivery] | None:
            if _webhook_row(tx, user_id, webhook_id) is None:
                return None
            query = f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.webhook_id = ?"
            params: list[Any] = [webhook_id]
            if status is not None:
                query += " AND d.status = ?"
                params.append(status)
            if before_seq is not None:
                query += " AND d.seq < ?"
                params.append(before_seq)
            rows = tx.all(query + " ORDER BY d.seq DESC LIMIT ?", (*params, limit))
            return [_decode_delivery(row) for row in rows]

        return await self._read(load, snapshot=True)

    async def claim_subscriber_deliveries(
        self,
        now: float,
        limit: int | None,
        lease_seconds: float,
        room: Mapping[str, int],
        default_room: int,
    ) -> list[ClaimedDelivery]:
        """Lease due deliveries in order, at most `room[url]` (else `default_room`) per URL;
        deliveries another replica is claiming are passed over."""
        full = [url for url, free in room.items() if free <= 0]

        def claim(tx: Transaction) -> list[ClaimedDelivery]:
            dialect = tx.dialect
            leased_at = lease_time(tx, now)
            until = leased_at + lease_seconds
            rows = tx.all(
                f"SELECT {DELIVERY_COLUMNS}, w.url, w.seed, w.previous_seed, w.previous_until "
                "FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
                f"WHERE d.status = '{DELIVERY_WAITING}' AND d.run_at <= ? "
                f"AND w.enabled = {dialect.true} "
                "AND (d.locked_until IS NULL OR d.locked_until < ?) "
                f"AND {dialect.not_in_list('w.url', 'text')} "
                f"ORDER BY d.run_at, d.seq LIMIT ?{dialect.skip_locked(of='d')}",
                (
                    now,
                    leased_at,
                    dialect.list_param(full),
                    dialect.no_limit if limit is None else limit,
                ),
            )
            left = dict(room)
            claimed: list[ClaimedDelivery] = []
            for row in rows:
                url, seed, previous_seed, previous_until = row[-4:]
                free = left.get(url, default_room)
                if free <= 0:
                    continue
                left[url] = free - 1
                seeds = [seed]
                if previous_seed and previous_until is not None and previous_until > now:
                    seeds.append(previous_seed)
                claimed.append(ClaimedDelivery(_decode_delivery(row[:-4]), url, seeds, until))
            if claimed:
                tx.execute(
                    "UPDATE webhook_deliveries SET locked_until = ?, locked_by = ? "
                    f"WHERE {dialect.in_list('id', 'text')}",
                    (
                        until,
                        self.holder,
                        dialect.list_param([item.delivery.id for item in claimed]),
                    ),
                )
            return claimed

        return await self._write(claim, durable=False)

    async def release_subscriber_deliveries(self, claimed: Sequence[ClaimedDelivery]) -> None:
        """Drop the leases of claimed deliveries, each only while it still holds the lease it
        was claimed under (one that passed to another claim stays with it)."""
        await self._write(
            lambda tx: tx.executemany(
                "UPDATE webhook_deliveries SET locked_until = NULL "
                "WHERE id = ? AND locked_until = ?",
                [(item.delivery.id, item.leased_until) for item in claimed],
            ),
            durable=False,
        )

    async def renew_delivery_lease(
        self, delivery_id: str, leased_until: float, now: float, lease_seconds: float
    ) -> float | None:
        """Lease the delivery for `lease_seconds` more if it is still leased until
        `leased_until` (`renew_lease`)."""
        return await self._write(
            lambda tx: renew_lease(
                tx, "webhook_deliveries", delivery_id, leased_until, now, lease_seconds
            ),
            durable=False,
        )

    async def subscriber_delivery_due(
        self, delivery_id: str, leased_until: float, url: str
    ) -> bool:
        """Whether the delivery still waits under its lease for its enabled webhook at `url`
        (one read)."""
        row = await self._read(
            lambda tx: tx.first(
                "SELECT 1 FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
                f"WHERE d.id = ? AND d.locked_until = ? AND d.status = '{DELIVERY_WAITING}' "
                f"AND w.enabled = {tx.dialect.true} AND w.url = ?",
                (delivery_id, leased_until, url),
            )
        )
        return row is not None

    async def finish_subscriber_attempts(self, finished: list[SubscriberAttempt]) -> None:
        """Record each attempt as its delivery's last, with its next state, while the delivery
        still holds the lease the attempt was made under."""

        def finish(tx: Transaction) -> None:
            ids = (item.delivery_id for item in finished)
            leases = current_leases(tx, "webhook_deliveries", "text", ids)
            holding = [
                item for item in finished if leases.get(item.delivery_id) == item.leased_until
            ]
            tx.executemany(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, run_at = ?, "
                "locked_until = NULL, last_attempt_at = ?, last_status_code = ?, "
                "last_error = ?, last_latency_ms = ? WHERE id = ?",
                [
                    (
                        item.status,
                        item.attempt,
                        item.retry_at,
                        item.attempted_at,
                        item.status_code,
                        item.error,
                        item.latency_ms,
                        item.delivery_id,
                    )
                    for item in holding
                ],
            )
            delivered = [item for item in holding if item.status == DELIVERY_DONE]
            tx.executemany(
                "UPDATE webhooks SET last_delivered_at = ? WHERE id = "
                "(SELECT webhook_id FROM webhook_deliveries WHERE id = ?)",
                [(format_timestamp(item.attempted_at), item.delivery_id) for item in delivered],
            )

        await self._write(finish)
