"""The events e2a's `/v1` API logs and pushes to webhook subscribers: their types, the envelope
`{type, id, schema_version, created_at, data}` and each type's metadata-only `data` (e2a's
docs/events.md), and which subscriber an event goes to. Pure: no storage, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from e2a_gateway.clock import format_timestamp
from e2a_gateway.ids import new_id
from e2a_gateway.storage.base import OutboundMessage
from e2a_gateway.storage.new_inbound import NewInboundMessage

SCHEMA_VERSION: Final = "1"
RETENTION_SECONDS: Final = 30 * 24 * 3600.0
"""Events are listed and read for 30 days; older ones answer 410 and the sweep deletes them."""

EMAIL_RECEIVED: Final = "email.received"
EMAIL_SENT: Final = "email.sent"
EMAIL_DELIVERED: Final = "email.delivered"
EMAIL_FAILED: Final = "email.failed"
EMAIL_BOUNCED: Final = "email.bounced"
EMAIL_COMPLAINED: Final = "email.complained"
REVIEW_REQUESTED: Final = "email.review_requested"
REVIEW_APPROVED: Final = "email.review_approved"
REVIEW_REJECTED: Final = "email.review_rejected"
SUPPRESSION_ADDED: Final = "domain.suppression_added"
AGENT_SUPPRESSION_ADDED: Final = "agent.suppression_added"
EVENT_TYPES: Final = (
    EMAIL_RECEIVED,
    EMAIL_SENT,
    EMAIL_FAILED,
    "email.review_approved",
    "email.review_rejected",
    "domain.sending_verified",
    "domain.sending_failed",
    EMAIL_DELIVERED,
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
    SUPPRESSION_ADDED,
    AGENT_SUPPRESSION_ADDED,
    "email.flagged",
    "email.blocked",
    REVIEW_REQUESTED,
)
"""Every type a webhook may subscribe to (e2a's CreateWebhookRequest enum)."""


@dataclass(frozen=True)
class NewEvent:
    """An event to log, with the fields `/v1/events` filters on."""

    id: str
    user_id: str
    type: str
    agent_email: str | None
    conversation_id: str | None
    message_id: str | None
    created_epoch: float
    envelope: bytes
    """The envelope exactly as every channel sends it (redelivery sends these bytes again)."""


def new_event(
    user_id: str,
    event_type: str,
    data: Mapping[str, Any],
    now: float,
    *,
    agent_email: str | None = None,
    conversation_id: str | None = None,
    message_id: str | None = None,
    event_id: str | None = None,
) -> NewEvent:
    """An event of `event_type` about `data`, made at `now`."""
    identifier = event_id or new_id("evt")
    return NewEvent(
        id=identifier,
        user_id=user_id,
        type=event_type,
        agent_email=agent_email,
        conversation_id=conversation_id,
        message_id=message_id,
        created_epoch=now,
        envelope=envelope(event_type, identifier, now, data),
    )


def envelope(event_type: str, event_id: str, now: float, data: Mapping[str, Any]) -> bytes:
    """The JSON envelope of an event (e2a's EventEnvelope)."""
    document = {
        "type": event_type,
        "id": event_id,
        "schema_version": SCHEMA_VERSION,
        "created_at": format_timestamp(now),
        "data": dict(data),
    }
    return orjson.dumps(document)  # compact UTF-8, as json.dumps(ensure_ascii=False) writes


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def received_event(user_id: str, message: NewInboundMessage, now: float) -> NewEvent:
    """`email.received` for an inbound message stored for its agent (metadata only)."""
    data = _present(
        {
            "message_id": message.id,
            "agent_email": message.agent_email,
            "direction": "inbound",
            "header_from": message.from_addr or None,
            "envelope_from": message.envelope_from or None,
            "verified_domain": None,
            "authentication": None,
            "to": list(message.to),
            "cc": list(message.cc),
            "reply_to": [message.reply_to] if message.reply_to else [],
            "delivered_to": message.agent_email,
            "subject": message.subject,
            "received_at": message.received_at,
            "conversation_id": message.conversation_id,
        }
    )
    for nullable in ("header_from", "envelope_from", "verified_domain", "authentication"):
        data.setdefault(nullable, None)
    return new_event(
        user_id,
        EMAIL_RECEIVED,
        data,
        now,
        agent_email=message.agent_email,
        conversation_id=message.conversation_id,
        message_id=message.id,
    )


def _outbound_data(message: OutboundMessage, method: str | None) -> dict[str, Any]:
    return _present(
        {
            "message_id": message.id,
            "agent_email": message.agent_email,
            "direction": "outbound",
            "method": "loopback" if method == "local" else (method or "smtp"),
            "from": message.agent_email,
            "to": list(message.to),
            "cc": list(message.cc) or None,
            "bcc": list(message.bcc) or None,
            "subject": message.subject,
            "message_type": message.kind,
            "conversation_id": message.conversation_id,
        }
    )


def outbound_event(
    message: OutboundMessage,
    event_type: str,
    now: float,
    *,
    method: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> NewEvent:
    """A message-level event about an outbound message (`email.sent`, `email.failed` with its
    `reason` in `extra`, review events)."""
    data = {**_outbound_data(message, method), **(extra or {})}
    if event_type == EMAIL_SENT:
        data.setdefault("provider_message_id", message.email_message_id)
    return new_event(
        message.user_id,
        event_type,
        data,
        now,
        agent_email=message.agent_email,
        conversation_id=message.conversation_id,
        message_id=message.id,
    )


def recipient_event(
    message: OutboundMessage,
    event_type: str,
    recipient: str,
    now: float,
    *,
    extra: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent:
    """A per-recipient outcome of an outbound message (`email.delivered`, `email.bounced`,
    `email.complained`), with a fresh id unless `event_id` is given."""
    data = _present(
        {
            "message_id": message.id,
            "agent_email": message.agent_email,
            "direction": "outbound",
            "delivered_to": recipient,
            "subject": message.subject,
            **(extra or {}),
        }
    )
    return new_event(
        message.user_id,
        event_type,
        data,
        now,
        agent_email=message.agent_email,
        conversation_id=message.conversation_id,
        message_id=message.id,
        event_id=event_id,
    )


@dataclass(frozen=True)
class Subscription:
    """What a webhook listens to: event types, and optionally only some agents or
    conversations (an empty filter list matches everything)."""

    webhook_id: str
    events: Sequence[str]
    agent_emails: Sequence[str]
    conversation_ids: Sequence[str]


def matches(subscription: Subscription, event: NewEvent) -> bool:
    """Whether `event` goes to the webhook `subscription` describes."""
    if event.type not in subscription.events:
        return False
    if subscription.agent_emails and event.agent_email not in subscription.agent_emails:
        return False
    return not (
        subscription.conversation_ids and event.conversation_id not in subscription.conversation_ids
    )
