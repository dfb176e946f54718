"""The SQL of bounces, complaints and recipient suppressions: a bounce is recorded against the
outbound message it names (its events, the account's suppression of a hard-bounced address, the
message's `bounced` state) in one transaction, and so is a complaint (its event, once, and the
account's suppression of the address that complained); suppressions are listed, added and lifted per
account or per agent (an agent's new one logged as `agent.suppression_added`), a send asks
which of its recipients are suppressed, and a message's lifecycle which suppressions it added.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import (
    AGENT_SUPPRESSION_ADDED,
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
    SUPPRESSION_ADDED,
    new_event,
    recipient_event,
)
from e2a_gateway.storage.base import (
    AgentGone,
    BouncedRecipient,
    NewEvent,
    OutboundMessage,
    Suppression,
    UnsubscribeScope,
)
from e2a_gateway.storage.rows import (
    OUTBOUND_COLUMNS,
    RECIPIENT_RESULTS,
    decode_outbound,
    recipient_results,
    reported_bounce_type,
    reported_result,
)
from e2a_gateway.storage.sql.events import record_events
from e2a_gateway.storage.sql.owners import keep_account, keep_agent
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import (
    BOUNCED,
    EXPIRED_APPROVED,
    FAILED,
    OUTBOUND,
    QUEUED,
    SENT,
    SUPPRESSED_BY_BOUNCE,
    SUPPRESSED_BY_COMPLAINT,
    SUPPRESSED_BY_HAND,
    SUPPRESSED_BY_UNSUBSCRIBE,
)

SUPPRESSION_COLUMNS = "seq, address, source, created_at, agent_email, reason, source_message_id"
EVERY_AGENT = ""
"""The `agent_email` of an account-wide suppression."""
BOUNCEABLE = ", ".join(f"'{status}'" for status in (QUEUED, SENT, FAILED, EXPIRED_APPROVED))
"""States a hard bounce moves to `bounced`: handed on (or being handed on, or refused)."""


def decode_suppression(row: Sequence[Any]) -> Suppression:
    """A suppression from a row selected with SUPPRESSION_COLUMNS."""
    seq, address, source, created_at, agent_email, reason, source_message_id = row
    return Suppression(
        seq=int(seq),
        address=address,
        source=source,
        created_at=created_at,
        agent_email=agent_email or None,
        reason=reason,
        source_message_id=source_message_id,
    )


def _suppress(
    tx: Transaction,
    user_id: str,
    agent_email: str,
    address: str,
    source: str,
    reason: str | None,
    message_id: str | None,
    now: float,
) -> bool:
    """Add the suppression unless it exists; True when it was added. One that another
    replica is adding at the same moment is waited for and counts as existing."""
    added = tx.execute(
        "INSERT INTO suppressions (user_id, agent_email, address, source, reason, "
        "source_message_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (user_id, agent_email, address) DO NOTHING",
        (user_id, agent_email, address, source, reason, message_id, format_timestamp(now)),
    ).rowcount
    return added == 1


def suppressed_in(
    tx: Transaction, user_id: str, agent_email: str, addresses: list[str]
) -> list[str]:
    """Inside `tx`: those of `addresses` (lowercase) suppressed for the account or the agent,
    in their order."""
    rows = tx.all(
        "SELECT DISTINCT address FROM suppressions WHERE user_id = ? AND agent_email IN (?, ?) "
        f"AND {tx.dialect.in_list('address', 'text')}",
        (user_id, EVERY_AGENT, agent_email, tx.dialect.list_param(addresses)),
    )
    found = {row[0] for row in rows}
    return [address for address in addresses if address in found]


def bounce_recorded(
    tx: Transaction,
    message: OutboundMessage,
    bounced: Sequence[BouncedRecipient],
    now: float,
    *,
    settle: bool = True,
) -> bool:
    """Record `bounced` (recipients of `message`) inside `tx`: `email.bounced` for each, and for
    a permanent bounce the address suppressed for the account (`domain.suppression_added`) and,
    when `settle`, the message `bounced`. What was recorded already about a recipient (the same
    type and detail), and so is a recipient `bounced` names twice (a report naming them in two
    spellings). True when any newly recorded was a permanent bounce."""
    events: list[NewEvent] = []
    permanent = False
    seen: set[str] = set()
    for item in bounced:
        event_id = _bounce_event_id(message.id, item)
        if event_id in seen:
            continue  # named again in this report
        seen.add(event_id)
        if tx.first("SELECT 1 FROM events WHERE id = ?", (event_id,)) is not None:
            continue  # the same report again (a sender retrying it): recorded already
        extra: dict[str, Any] = {"bounce_type": item.bounce_type}
        if item.detail:
            extra["smtp_detail"] = item.detail
        events.append(
            recipient_event(
                message, EMAIL_BOUNCED, item.address, now, extra=extra, event_id=event_id
            )
        )
        if item.bounce_type != "permanent":
            continue
        permanent = True
        address = item.address.lower()
        if _suppress(
            tx, message.user_id, EVERY_AGENT, address, SUPPRESSED_BY_BOUNCE, item.detail,
            message.id, now,
        ):  # fmt: skip
            data = {"address": address, "source": SUPPRESSED_BY_BOUNCE, "message_id": message.id}
            if item.detail:
                data["reason"] = item.detail
            events.append(
                new_event(
                    message.user_id,
                    SUPPRESSION_ADDED,
                    data,
                    now,
                    agent_email=message.agent_email,
                    message_id=message.id,
                )
            )
    if permanent and settle:
        tx.execute(
            f"UPDATE messages SET status = '{BOUNCED}' WHERE id = ? AND status IN ({BOUNCEABLE})",
            (message.id,),
        )
    record_events(tx, events)
    return permanent


def _record_reported(tx: Transaction, message_id: str, bounced: Sequence[BouncedRecipient]) -> None:
    """Keep each failure of a report among the message's per-recipient results
    (`reported_result`, in place of the relay's acceptance), which `/v1` rolls up: whatever its
    type, the recipient did not get the message. A permanent bounce recorded already is not
    replaced by a report that says less against the address."""
    (stored,) = tx.first(RECIPIENT_RESULTS, (message_id,)) or (None,)
    results = recipient_results(stored)
    keys = {recipient.lower(): recipient for recipient in results}
    for item in bounced:
        key = keys.get(item.address.lower(), item.address)  # as the message names them
        earlier = reported_bounce_type(results.get(key, ""))
        if earlier == "permanent" and item.bounce_type != "permanent":
            continue
        results[key] = reported_result(item)
    tx.execute(
        "UPDATE messages SET auth_results_json = ? WHERE id = ?", (json.dumps(results), message_id)
    )


def _bounce_event_id(message_id: str, item: BouncedRecipient) -> str:
    """The id of the `email.bounced` event of `item` about `message_id`: the same for every
    copy of one report, so a report delivered again logs nothing more (a later report saying
    something else about the recipient, such as a failure after a delay, is logged)."""
    fields = [message_id, EMAIL_BOUNCED, item.address.lower(), item.bounce_type, item.detail or ""]
    digest = hashlib.sha256("|".join(fields).encode()).hexdigest()
    return f"evt_{digest[:24]}"


def _complaint_event_id(message_id: str, recipient: str) -> str:
    """The id of the `email.complained` event of `recipient` about `message_id`: the same for
    every report of one complaint, so a report sent again logs nothing more."""
    digest = hashlib.sha256(f"{message_id}|{EMAIL_COMPLAINED}|{recipient}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


def _complained(
    tx: Transaction, message_id: str, recipients: Sequence[str], reason: str, now: float
) -> list[str]:
    """Inside `tx`: record a feedback report (SuppressionsSql.record_complaint) when it names
    exactly one recipient of the message (or names none and the message had one)."""
    row = tx.first(
        f"SELECT {OUTBOUND_COLUMNS} FROM messages WHERE id = ? "
        f"AND direction = '{OUTBOUND}'{tx.dialect.for_update()}",
        (message_id,),
    )
    if row is None:
        return []
    message = decode_outbound(row)
    sent_to = list(dict.fromkeys(a.lower() for a in [*message.to, *message.cc, *message.bcc]))
    if recipients:
        ours = [a for a in dict.fromkeys(r.lower() for r in recipients) if a in sent_to]
    else:  # redacted: only a message to one person says who it was
        ours = sent_to
    if len(ours) != 1:
        # A complaint is one person's: a report naming several recipients (the To of a
        # redacted copy of mail to many) does not say which, and suppresses nobody.
        return []
    recorded = []
    for address in ours:
        event_id = _complaint_event_id(message.id, address)
        if tx.first("SELECT 1 FROM events WHERE id = ?", (event_id,)) is not None:
            continue
        events = [recipient_event(message, EMAIL_COMPLAINED, address, now, event_id=event_id)]
        if _suppress(
            tx, message.user_id, EVERY_AGENT, address, SUPPRESSED_BY_COMPLAINT, reason,
            message.id, now,
        ):  # fmt: skip
            data = {
                "address": address,
                "source": SUPPRESSED_BY_COMPLAINT,
                "reason": reason,
                "message_id": message.id,
            }
            events.append(
                new_event(
                    message.user_id,
                    SUPPRESSION_ADDED,
                    data,
                    now,
                    agent_email=message.agent_email,
                    message_id=message.id,
                )
            )
        record_events(tx, events)
        recorded.append(address)
    if recorded:
        tx.execute(
            "UPDATE messages SET complained_at = ? WHERE id = ? AND complained_at IS NULL",
            (format_timestamp(now), message.id),
        )
    return recorded


class SuppressionsSql(Runner):
    """`Suppressions` in SQL."""

    async def record_bounce(
        self, message_id: str, bounced: list[BouncedRecipient], now: float
    ) -> bool:
        """Record a bounce report against the outbound message it names."""

        def record(tx: Transaction) -> bool:
            row = tx.first(
                f"SELECT {OUTBOUND_COLUMNS} FROM messages WHERE id = ? "
                f"AND direction = '{OUTBOUND}'{tx.dialect.for_update()}",
                (message_id,),
            )
            if row is None:
                return False
            message = decode_outbound(row)
            recipients = {
                address.lower(): address for address in [*message.to, *message.cc, *message.bcc]
            }
            ours = [  # named as the message names them, whatever case the report used
                replace(item, address=recipients[item.address.lower()])
                for item in bounced
                if item.address.lower() in recipients
            ]
            if not ours:
                return False
            # Mail still handed on to others (a recipient deferred) is settled by its send job,
            # which a final state would stop: it is `bounced` once that job is done. Mail
            # approved at its deadline stays `expired_approved` once handed on (`sent_at`): no
            # job is left to settle it, so the report does.
            waiting = message.sent_at is None and message.status in (QUEUED, EXPIRED_APPROVED)
            bounce_recorded(tx, message, ours, now, settle=not waiting)
            _record_reported(tx, message.id, ours)
            return True

        return await self._write(record)

    async def record_complaint(
        self, message_id: str, recipients: list[str], reason: str, now: float
    ) -> list[str]:
        """Record a feedback report against the outbound message it names: per recipient of
        it, `email.complained` once and its suppression for the account."""
        return await self._write(lambda tx: _complained(tx, message_id, recipients, reason, now))

    async def suppressed_among(
        self, user_id: str, agent_email: str, addresses: list[str]
    ) -> list[str]:
        """The addresses suppressed for the account or the agent."""
        if not addresses:
            return []
        return await self._read(lambda tx: suppressed_in(tx, user_id, agent_email, addresses))

    async def suppressions_from(
        self, user_id: str, message_id: str, addresses: list[str]
    ) -> list[Suppression]:
        """The account's suppressions of `addresses` the message added, oldest first."""
        if not addresses:
            return []
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE user_id = ? "
                f"AND agent_email = ? AND {tx.dialect.in_list('address', 'text')} "
                "AND source_message_id = ? ORDER BY seq",
                (user_id, EVERY_AGENT, tx.dialect.list_param(addresses), message_id),
            )
        )
        return [decode_suppression(row) for row in rows]

    async def suppression_page(
        self, user_id: str, agent_email: str | None, limit: int, before_seq: int | None
    ) -> list[Suppression]:
        """The account's (or agent's) suppressions, newest first."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE user_id = ? "
                "AND agent_email = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (user_id, agent_email or EVERY_AGENT, before_seq or 2**62, limit),
            )
        )
        return [decode_suppression(row) for row in rows]

    async def add_suppression(
        self, user_id: str, agent_email: str | None, address: str, reason: str | None, now: float
    ) -> Suppression:
        """Suppress `address` by hand (an existing suppression is returned as it is); an
        agent's new suppression is told as `agent.suppression_added`, once. The account (the
        agent) is kept from deletion until the commit: AccountGone (AgentGone) when it is
        gone already, or the agent in the trash."""
        scope = agent_email or EVERY_AGENT

        def add(tx: Transaction) -> Suppression:
            if agent_email:
                keep_agent(tx, user_id, agent_email)
            else:
                keep_account(tx, user_id)
            added = _suppress(tx, user_id, scope, address, SUPPRESSED_BY_HAND, reason, None, now)
            if added and agent_email:
                _tell_agent_suppression(tx, user_id, agent_email, address, SUPPRESSED_BY_HAND, now)
            row = tx.one(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE user_id = ? "
                "AND agent_email = ? AND address = ?",
                (user_id, scope, address),
            )
            return decode_suppression(row)

        return await self._write(add)

    async def delete_suppression(self, user_id: str, agent_email: str | None, address: str) -> bool:
        """Lift one suppression."""
        deleted = await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM suppressions WHERE user_id = ? AND agent_email = ? "
                    "AND address = ?",
                    (user_id, agent_email or EVERY_AGENT, address),
                ).rowcount
            )
        )
        return bool(deleted)

    async def add_unsubscribe_token(
        self, token_hash: str, user_id: str, agent_email: str, address: str, now: float
    ) -> None:
        """Keep the link's scope unless it is kept already."""
        await self._write(
            lambda tx: tx.execute(
                f"INSERT INTO agent_unsubscribe_tokens ({UNSUBSCRIBE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
                (token_hash, user_id, agent_email, address, format_timestamp(now)),
            )
        )

    async def find_unsubscribe_token(self, token_hash: str) -> UnsubscribeScope | None:
        """The link's scope, or None."""
        return await self._read(lambda tx: _unsubscribe_scope(tx, token_hash))

    async def unsubscribe_by_token(self, token_hash: str, now: float) -> UnsubscribeScope | None:
        """The link's address suppressed for its agent, told once; None for no such link, or
        for one whose agent was deleted for good meanwhile (the agent, in the trash too, is
        kept from deletion until the commit, so its suppressions go with it)."""

        def unsubscribe(tx: Transaction) -> UnsubscribeScope | None:
            scope = _unsubscribe_scope(tx, token_hash)
            if scope is None:
                return None
            try:
                keep_agent(tx, scope.user_id, scope.agent_email, in_trash_too=True)
            except AgentGone:
                return None
            user_id, agent_email, address = scope.user_id, scope.agent_email, scope.address
            source = SUPPRESSED_BY_UNSUBSCRIBE
            if _suppress(tx, user_id, agent_email, address, source, None, None, now):
                _tell_agent_suppression(tx, user_id, agent_email, address, source, now)
            return scope

        return await self._write(unsubscribe)


UNSUBSCRIBE_COLUMNS = "token_hash, user_id, agent_email, address, created_at"


def _unsubscribe_scope(tx: Transaction, token_hash: str) -> UnsubscribeScope | None:
    row = tx.first(
        f"SELECT {UNSUBSCRIBE_COLUMNS} FROM agent_unsubscribe_tokens WHERE token_hash = ?",
        (token_hash,),
    )
    return UnsubscribeScope(*row[1:]) if row else None


def _tell_agent_suppression(
    tx: Transaction, user_id: str, agent_email: str, address: str, source: str, now: float
) -> None:
    """Log `agent.suppression_added` for the agent's new suppression of `address`."""
    data = {"agent_email": agent_email, "address": address, "source": source}
    event = new_event(user_id, AGENT_SUPPRESSION_ADDED, data, now, agent_email=agent_email)
    record_events(tx, [event])
