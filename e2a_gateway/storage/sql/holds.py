"""The SQL of the review queue: outbound drafts pending approval and inbound messages an agent's
gate held, listed together; inbound holds released (delivered then) or rejected, once. The
held mail of an agent in the trash is out of the queue and waits for it (no review, no expiry).

A release locks the row, so two reviewers (or a reviewer and the expiry) never both move it; a
released message gets what it would have had on arrival, in the same commit: a cloud agent's
its webhook job, a local agent's an announcement to its live listeners, and its place in its
agent's mail. Released, it enters the inbox then: it takes the next `seq` of its agent's mail
(under the agent's mail lock, taken before the row's lock, as `mail_order` orders new mail) and
`created_at` becomes the time of its release, so a client paging by cursor or polling with
`since` past where it arrived still gets it, once; `received_at` stays the time it arrived.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import ReceivedEvents, inbound_review_event
from e2a_gateway.storage.announcements import MessageStored
from e2a_gateway.storage.base import (
    PAST_DEADLINE,
    AgentInTrash,
    ExpiredHolds,
    HeldKey,
    HeldMessage,
    InboundMessage,
    NotPending,
)
from e2a_gateway.storage.new_inbound import NewInboundMessage
from e2a_gateway.storage.rows import MESSAGE_COLUMNS, decode_message
from e2a_gateway.storage.sql.events import record_events
from e2a_gateway.storage.sql.idempotency import settle_claim
from e2a_gateway.storage.sql.jobs import add_job
from e2a_gateway.storage.sql.mail_order import lock_agents_mail
from e2a_gateway.storage.sql.outbound import agent_in_service, agent_trashed
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import (
    CLOUD,
    DELIVERY_PENDING,
    EXPIRE_BY_APPROVING,
    HELD_FOR_REVIEW,
    HOLD_REJECTED,
    INBOUND,
    OUTBOUND,
    PENDING_APPROVAL,
    WEBHOOK_JOB,
)

EXPIRY_BATCH = 500
"""At most this many overdue inbound holds are resolved by one call."""
EXPIRY_REASON = "approval expired"
"""The reason the review events of a hold its agent's expiration action settled give (as a
draft's do)."""
WAITING = (
    f"((m.direction = '{OUTBOUND}' AND m.status = '{PENDING_APPROVAL}') OR "
    f"(m.direction = '{INBOUND}' AND m.hold = '{HELD_FOR_REVIEW}'))"
)
"""Condition on `messages m`: waiting for review, whichever way it goes."""
QUEUE_COLUMNS = (
    "m.id, m.seq, m.agent_email, m.direction, m.from_addr, m.envelope_from, m.to_json, m.subject, "
    "m.conversation_id, m.auth_results_json, m.created_at, "
    "coalesce(m.approval_expires_at, m.hold_expires_at), m.flag_reason, m.scheduled_at"
)


def _queue_item(row: Any) -> HeldMessage:
    inbound = row[3] == INBOUND
    return HeldMessage(
        id=row[0],
        seq=row[1],
        agent_email=row[2],
        direction=INBOUND if inbound else OUTBOUND,
        from_addr=row[4] or "",
        envelope_from=row[5] or "",
        to=json.loads(row[6]),
        subject=row[7],
        conversation_id=row[8],
        # an outbound row keeps its per-recipient hand-off results in that column
        authentication_results=json.loads(row[9]) if inbound and row[9] else {},
        created_at=row[10],
        expires_at=row[11],
        reason=row[12],
        scheduled_at=row[13],
    )


def _inbound_row(tx: Transaction, user_id: str | None, message_id: str, *, lock: bool) -> Any:
    if lock:  # the row itself: a lock through the view would reach its content's outer join
        tx.lock_row("messages", "id", message_id)
    query = (
        f"SELECT {MESSAGE_COLUMNS} FROM messages_with_content m "
        f"WHERE m.id = ? AND m.direction = '{INBOUND}'"
    )
    params: tuple[str, ...] = (message_id,)
    if user_id is not None:
        query += " AND m.user_id = ?"
        params = (message_id, user_id)
    return tx.first(query, params)


def _release(
    tx: Transaction, message: InboundMessage, now: float, reason: str | None = None
) -> str | None:
    """Deliver a held message now, its agent's mail lock held (`mail_order`): as it would
    have been on arrival, placed in its agent's mail as if it arrived now (its next `seq`,
    `created_at` now), its `email.received` event logged (and fanned out to the account's
    webhooks) then, after its `email.review_approved`; its agent's id (None when the agent is
    gone), whose live listeners on this process are told after the commit."""
    row = tx.first("SELECT agent_mode, id FROM agents WHERE email = ?", (message.agent_email,))
    cloud = row is not None and row[0] == CLOUD
    released_at = format_timestamp(now)
    tx.execute(  # reviewed_at: retention counts a released message's days from its release
        "UPDATE messages SET hold = NULL, hold_expires_at = NULL, delivery_status = ?, "
        "reviewed_at = ?, created_at = ? WHERE id = ?",
        (DELIVERY_PENDING if cloud else None, released_at, released_at, message.id),
    )
    for statement in tx.dialect.renumber("messages", "seq", "id"):
        tx.execute(statement, (message.id,))
    record_events(tx, [inbound_review_event(message.user_id, message, True, now, reason)])
    if row is None:
        return None
    if cloud:
        add_job(tx, WEBHOOK_JOB, message.id, now)
    else:
        tx.announce(MessageStored(row[1], _as_new(message)))
    record_events(tx, [ReceivedEvents().event(message.user_id, message, now)])
    return str(row[1])


def _reject(tx: Transaction, message: InboundMessage, now: float, reason: str | None) -> None:
    """Drop a held message for good, its `email.review_rejected` event logged."""
    tx.execute(
        f"UPDATE messages SET hold = '{HOLD_REJECTED}', hold_expires_at = NULL WHERE id = ?",
        (message.id,),
    )
    record_events(tx, [inbound_review_event(message.user_id, message, False, now, reason)])


def _as_new(message: InboundMessage) -> NewInboundMessage:
    """What a live listener is told of a released message (its notification's fields)."""
    return NewInboundMessage(
        id=message.id,
        agent_email=message.agent_email,
        envelope_from=message.envelope_from,
        from_addr=message.from_addr,
        reply_to=message.reply_to,
        to=message.to,
        cc=message.cc,
        subject=message.subject,
        conversation_id=message.conversation_id,
        rfc_message_id=message.rfc_message_id,
        raw_message=b"",
        auth_headers=message.auth_headers,
        authentication_results=message.authentication_results,
        received_at=message.received_at,
    )


def _expire(tx: Transaction, now: float) -> ExpiredHolds:
    overdue = (
        "FROM messages m JOIN agents a ON a.email = m.agent_email "
        f"WHERE m.direction = '{INBOUND}' AND m.hold = '{HELD_FOR_REVIEW}' "
        "AND a.deleted_at IS NULL AND m.hold_expires_at <= ?"
    )
    # the mail locks of the agents whose overdue mail is to be released, before any held row's
    # lock, in the order a release by a reviewer takes them: those of the batch's mail below
    # (one row per message, made distinct here: asked for DISTINCT, SQLite would walk all mail
    # in the agents' index instead of the held mail in `messages_held`)
    releasing = {
        str(agent_email)
        for (agent_email,) in tx.all(
            f"SELECT m.agent_email {overdue} "
            f"AND a.hitl_expiration_action = '{EXPIRE_BY_APPROVING}' "
            f"ORDER BY m.hold_expires_at, m.seq LIMIT {EXPIRY_BATCH}",
            (now,),
        )
    }
    lock_agents_mail(tx, releasing)
    due = tx.all(
        f"SELECT m.id, a.hitl_expiration_action, m.agent_email {overdue} "
        f"ORDER BY m.hold_expires_at, m.seq LIMIT {EXPIRY_BATCH}"
        f"{tx.dialect.skip_locked(of='m')}",
        (now,),
    )
    resolved = 0
    delivered: list[tuple[str, InboundMessage]] = []
    for message_id, action, agent_email in due:
        if action == EXPIRE_BY_APPROVING and agent_email not in releasing:
            continue  # overdue since the locks were taken: the next sweep releases it
        message = decode_message(_inbound_row(tx, None, message_id, lock=False))
        resolved += 1
        if action == EXPIRE_BY_APPROVING:
            agent_id = _release(tx, message, now, EXPIRY_REASON)
            if agent_id is not None:
                delivered.append((agent_id, replace(message, hold=None)))
        else:
            _reject(tx, message, now, EXPIRY_REASON)
    return ExpiredHolds(resolved, delivered)


class HoldsSql(Runner):
    """`Holds` in SQL."""

    async def review_queue(self, user_id: str, limit: int, after: int | None) -> list[HeldMessage]:
        """The user's messages waiting for review, newest first (none of an agent in the
        trash)."""
        query = (
            f"SELECT {QUEUE_COLUMNS} FROM messages_with_content m "
            f"WHERE m.user_id = ? AND {WAITING} "
            f"AND {agent_in_service('m.agent_email')} AND m.seq < ? ORDER BY m.seq DESC LIMIT ?"
        )
        before = after if after is not None else 2**62
        rows = await self._read(lambda tx: tx.all(query, (user_id, before, limit)))
        return [_queue_item(row) for row in rows]

    async def held_inbound(self, user_id: str | None, message_id: str) -> InboundMessage | None:
        """An inbound message held for review (None when its agent is in the trash)."""

        def read(tx: Transaction) -> InboundMessage | None:
            row = _inbound_row(tx, user_id, message_id, lock=False)
            message = decode_message(row) if row else None
            if message is None or message.hold != HELD_FOR_REVIEW:
                return None
            return None if agent_trashed(tx, message.agent_email) else message

        return await self._read(read)

    async def release_inbound(
        self,
        user_id: str | None,
        message_id: str,
        approve: bool,
        now: float,
        settles: HeldKey | None = None,
        reason: str | None = None,
    ) -> InboundMessage | None:
        """Approve or reject a held inbound message, once, and not past its deadline: its
        agent's expiration action decides it then (AgentInTrash while its agent is in the
        trash); its review event logged with `reason`, recorded on the Idempotency-Key claim
        `settles`."""

        def review(tx: Transaction) -> InboundMessage | None:
            if approve:  # its agent's mail lock before its row's, as storing new mail takes it
                found = _inbound_row(tx, user_id, message_id, lock=False)
                if found is None:
                    return None
                lock_agents_mail(tx, [decode_message(found).agent_email])
            row = _inbound_row(tx, user_id, message_id, lock=True)
            if row is None:
                return None
            message = decode_message(row)
            if agent_trashed(tx, message.agent_email):
                raise AgentInTrash(message.agent_email)
            if message.hold != HELD_FOR_REVIEW:
                raise NotPending(message.hold or "delivered")
            (deadline,) = tx.one("SELECT hold_expires_at FROM messages WHERE id = ?", (message_id,))
            if deadline is not None and deadline <= now:
                raise NotPending(PAST_DEADLINE)  # its agent's expiration action decides it
            if approve:
                _release(tx, message, now, reason)
            else:
                _reject(tx, message, now, reason)
            if settles is not None:
                settle_claim(tx, settles, message_id)
            reread = _inbound_row(tx, None, message_id, lock=False)
            return decode_message(reread)

        return await self._write(review)

    async def expire_inbound_holds(self, now: float) -> ExpiredHolds:
        """Resolve overdue inbound holds by their agents' expiration actions."""
        return await self._write(lambda tx: _expire(tx, now))
