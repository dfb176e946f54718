"""The events e2a's `/v1` API logs and pushes to webhook subscribers: their types, the envelope
`{type, id, schema_version, created_at, data}` and each type's metadata-only `data` (e2a's
docs/events.md), and which subscriber an event goes to. Pure: no storage, no clock.

`email.received` is built here for every channel: the log and its webhooks store it, and the
`/v1` WebSocket builds the same envelope (same id, same `data`) from the stored message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from e2a_gateway.attachments import Attachment, attachment_meta_view
from e2a_gateway.clock import format_timestamp, parse_timestamp
from e2a_gateway.ids import derived_id, new_id
from e2a_gateway.mailauth.dmarc import author_domain
from e2a_gateway.mailauth.results import dmarc_policy_named, spf_domain_named
from e2a_gateway.rfc5322 import address_list, header_section
from e2a_gateway.storage.base import FoldedCopy, NewEvent, OutboundMessage
from e2a_gateway.storage.new_inbound import ByContent, NewInboundMessage

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
EMAIL_FLAGGED: Final = "email.flagged"
EMAIL_BLOCKED: Final = "email.blocked"
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
    EMAIL_FLAGGED,
    EMAIL_BLOCKED,
    REVIEW_REQUESTED,
)
"""Every type a webhook may subscribe to (e2a's CreateWebhookRequest enum)."""


class ReceivedMessage(Protocol):
    """An inbound message as `email.received` describes it: the record storage takes
    (`NewInboundMessage`) and the one it gives back (`InboundMessage`) both are one."""

    @property
    def id(self) -> str: ...
    @property
    def agent_email(self) -> str: ...
    @property
    def envelope_from(self) -> str: ...
    @property
    def from_addr(self) -> str: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def to(self) -> list[str]: ...
    @property
    def cc(self) -> list[str]: ...
    @property
    def subject(self) -> str: ...
    @property
    def conversation_id(self) -> str | None: ...
    @property
    def received_at(self) -> str: ...
    @property
    def authentication_results(self) -> dict[str, str]: ...
    @property
    def raw_message(self) -> bytes: ...
    @property
    def attachments(self) -> tuple[Attachment, ...]: ...


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
    return _envelope(event_type, event_id, format_timestamp(now), dict(data))


def _envelope(event_type: str, event_id: str, created_at: str, data: dict[str, Any]) -> bytes:
    document = {
        "type": event_type,
        "id": event_id,
        "schema_version": SCHEMA_VERSION,
        "created_at": created_at,
        "data": data,
    }
    return orjson.dumps(document)  # compact UTF-8, as json.dumps(ensure_ascii=False) writes


def derived_event_id(message_id: str, event_type: str) -> str:
    """The id of the `event_type` event of message `message_id`, the same wherever it is
    worked out (`e2a_gateway.ids.derived_id`): it sorts by the message's time, and the events
    id index grows at its end."""
    return derived_id("evt", message_id, event_type)


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


_FIRST_RESULTS = re.compile(
    rb"^Authentication-Results[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE | re.IGNORECASE
)
"""The first Authentication-Results field of a delivered message, folded lines and all: the
gateway's own, which `delivered_message` puts above every field the sender wrote (those in
its name are removed), whatever `smtp.hostname` was then."""
SPF_STATUSES = frozenset({"pass", "fail", "none", "neutral", "softfail", "temperror", "permerror"})
DMARC_STATUSES = frozenset({"pass", "fail", "none", "temperror", "permerror"})


def verified_domain(from_addr: str, results: Mapping[str, str]) -> str | None:
    """The From domain when DMARC passed for it, as DMARC judged it (`author_domain`: lowercase
    A-labels, as the Authentication-Results field names it); else None."""
    return author_domain(from_addr) if results.get("dmarc") == "pass" else None


def delivered_locally(results: Mapping[str, str]) -> bool:
    """Whether a message with these kept verdicts was delivered by another agent of this
    gateway (`e2a_gateway.local_delivery`), which authenticated the agent by its API key: no
    SMTP peer, so no SPF, DKIM or DMARC was evaluated."""
    return results.get("auth") == "pass"


def inbound_authentication(
    from_addr: str, results: Mapping[str, str], raw_message: bytes
) -> dict[str, Any] | None:
    """e2a's Authentication of an inbound message: the verdicts the gateway kept, the domain SPF
    checked (the MAIL FROM's, or the HELO's for a null reverse path) and the DMARC policy, as
    its Authentication-Results field names them and getMessage shows them (the policy null
    when the sender publishes no record, as e2a has it).
    Per-signature DKIM detail and which mechanism aligned are not read: `dkim` and
    `aligned_by` list none. None for mail delivered locally, as e2a has it for providerless
    loopback delivery (no authenticating SMTP peer) and as getMessage shows it."""
    if delivered_locally(results):
        return None
    ours = _FIRST_RESULTS.search(header_section(raw_message), 0, 65536)
    field = ours.group(1).decode("utf-8", "replace") if ours else ""
    return {
        "spf": {
            "status": _known(results.get("spf"), SPF_STATUSES),
            "domain": spf_domain_named(field),
            "aligned": None,
        },
        "dkim": [],
        "dmarc": {
            "status": _known(results.get("dmarc"), DMARC_STATUSES),
            "domain": author_domain(from_addr),
            "policy": dmarc_policy_named(field),
            "aligned_by": [],
        },
    }


def _known(value: str | None, known: frozenset[str]) -> str:
    return value if value in known else "none"


@dataclass(frozen=True)
class _Sender:
    """What every copy of one inbound message says alike: how its sender authenticated, and
    what it carries attached."""

    verified_domain: str | None
    authentication: dict[str, Any] | None
    attachments: list[dict[str, Any]]


def _sender_of(message: ReceivedMessage) -> _Sender:
    results = message.authentication_results
    return _Sender(
        verified_domain(message.from_addr, results),
        inbound_authentication(message.from_addr, results, message.raw_message),
        [attachment_meta_view(index, item) for index, item in enumerate(message.attachments)],
    )


def received_envelope(message: ReceivedMessage) -> bytes:
    """The `email.received` envelope of an inbound message delivered to its agent (e2a's
    EmailReceivedData, metadata only), as the events log, webhooks and the WebSocket carry it:
    its id derived from the message, made when the message was received."""
    event_id = derived_event_id(message.id, EMAIL_RECEIVED)
    return _received_envelope(message, event_id, _sender_of(message))


def _received_envelope(message: ReceivedMessage, event_id: str, sender: _Sender) -> bytes:
    return _envelope(EMAIL_RECEIVED, event_id, message.received_at, _received_data(message, sender))


def _inbound_data(message: ReceivedMessage, **fields: Any) -> dict[str, Any]:
    """The data every event about an inbound message opens with (its id, agent, direction,
    conversation and sender), then `fields`."""
    data: dict[str, Any] = {
        "message_id": message.id,
        "agent_email": message.agent_email,
        "direction": "inbound",
    }
    if message.conversation_id:
        data["conversation_id"] = message.conversation_id
    data.update(
        header_from=message.from_addr or None,
        envelope_from=message.envelope_from or None,
        **fields,
    )
    return data


def _received_data(message: ReceivedMessage, sender: _Sender) -> dict[str, Any]:
    data = _inbound_data(
        message,
        verified_domain=sender.verified_domain,
        to=message.to,
        cc=message.cc,
        reply_to=address_list(message.reply_to),
        authentication=sender.authentication,
        delivered_to=message.agent_email,
        subject=message.subject,
        received_at=message.received_at,
    )
    if sender.attachments:  # e2a leaves the field out when there are none
        data["attachments"] = sender.attachments
    return data


_COPY_FIELDS = frozenset({"message_id", "agent_email", "direction", "conversation_id"})
"""The fields `_inbound_data` opens with, which `copy_envelope` writes anew for each copy."""


def copy_envelope(
    shared: bytes,
    event_id: str,
    message_id: str,
    agent_email: str,
    conversation_id: str | None,
) -> bytes:
    """The `email.received` envelope of one copy of a message, made from the envelope of its
    first copy (`shared`) with this copy's event id, message id, agent and conversation put in:
    the same bytes `received_envelope` makes from the copy itself."""
    document = orjson.loads(shared)
    data = document["data"]
    copy: dict[str, Any] = {
        "message_id": message_id,
        "agent_email": agent_email,
        "direction": data["direction"],
    }
    if conversation_id:
        copy["conversation_id"] = conversation_id
    for name, value in data.items():
        if name not in _COPY_FIELDS:
            copy[name] = agent_email if name == "delivered_to" else value
    document["id"] = event_id
    document["data"] = copy
    return orjson.dumps(document)


def event_envelope(
    own: bytes,
    shared: bytes | None,
    event_id: str,
    message_id: str | None,
    agent_email: str | None,
    conversation_id: str | None,
) -> bytes:
    """An event's envelope as it is sent and read: its `own`, or the one its message's copies
    `shared` with its own fields put in (`copy_envelope`)."""
    if shared is None:
        return bytes(own)
    return copy_envelope(
        bytes(shared), event_id, message_id or "", agent_email or "", conversation_id
    )


def copy_event(copy: FoldedCopy) -> NewEvent:
    """The event a folded copy stands for, with its own envelope (`copy_envelope`)."""
    first = copy.first
    return NewEvent(
        id=copy.id,
        user_id=first.user_id,
        type=first.type,
        agent_email=copy.agent_email,
        conversation_id=copy.conversation_id,
        message_id=copy.message_id,
        created_epoch=first.created_epoch,
        envelope=copy_envelope(
            first.envelope, copy.id, copy.message_id, copy.agent_email, copy.conversation_id
        ),
    )


def _message_event(
    user_id: str,
    message: ReceivedMessage,
    event_type: str,
    event_id: str,
    created: float,
    stored_envelope: bytes,
) -> NewEvent:
    """The event of `event_type` about an inbound message, filed under its agent, conversation
    and id."""
    return NewEvent(
        id=event_id,
        user_id=user_id,
        type=event_type,
        agent_email=message.agent_email,
        conversation_id=message.conversation_id,
        message_id=message.id,
        created_epoch=created,
        envelope=stored_envelope,
    )


class ReceivedEvents:
    """Makes the `email.received` events of a batch of stored messages. The copies of one
    message for many agents share its raw bytes and its time: how its sender authenticated
    and when it was received are worked out once for them all, and a whole event is made once
    per account, for its first copy; the further copies (equal `content_key`s) are folded into
    it (`FoldedCopy`)."""

    def __init__(self) -> None:
        self._senders: dict[int, tuple[ReceivedMessage, _Sender]] = {}
        self._epochs: dict[str, float] = {}
        self._firsts: ByContent[dict[str, NewEvent]] = ByContent(dict)
        """Per content, the whole event of its first copy for each account."""

    def event(self, user_id: str, message: ReceivedMessage, now: float) -> NewEvent:
        """`email.received` for `message`, stored for its agent (`now` dates it only when its
        `received_at` cannot be read)."""
        event_id = derived_event_id(message.id, EMAIL_RECEIVED)
        received = self._epochs.get(message.received_at)
        if received is None:
            received = self._epochs[message.received_at] = _epoch(message.received_at, now)
        envelope = _received_envelope(message, event_id, self._sender(message))
        return _message_event(user_id, message, EMAIL_RECEIVED, event_id, received, envelope)

    def of_copy(
        self, user_id: str, message: NewInboundMessage, now: float
    ) -> NewEvent | FoldedCopy:
        """`email.received` for one agent's copy of a message stored in this batch: folded
        into the event of an earlier copy for the same account, else a whole event (`event`).
        Copies are told apart by their content key (`ByContent`)."""
        firsts = self._firsts.of(message)
        first = firsts.get(user_id)
        if first is not None:
            return FoldedCopy(
                first,
                derived_event_id(message.id, EMAIL_RECEIVED),
                message.id,
                message.agent_email,
                message.conversation_id,
            )
        event = firsts[user_id] = self.event(user_id, message, now)
        return event

    def screened(
        self, user_id: str, message: NewInboundMessage, now: float, *, policy: str
    ) -> NewEvent:
        """What the agent's inbound gate did with `message`, as e2a tells it: it blocked it
        (`email.blocked`: accepted, then quarantined), held it for review
        (`email.review_requested`, with when the hold expires), or delivered it flagged
        (`email.flagged`, beside its `email.received`): the sender's identity and
        authentication, the gate's `policy` and its reason."""
        data = _inbound_data(
            message,
            authentication=self._sender(message).authentication,
            delivered_to=message.agent_email,
            subject=message.subject,
            reason=message.flag_reason,
        )
        if message.blocked:
            event_type = EMAIL_BLOCKED
            data.update(reason_source="sender_gate")
        elif message.hold_expires_at is None:
            event_type = EMAIL_FLAGGED
            data.update(reply_to=address_list(message.reply_to), policy=policy)
        else:
            event_type = REVIEW_REQUESTED
            data.update(
                reason_source="sender_gate",
                approval_expires_at=format_timestamp(message.hold_expires_at),
            )
        event_id = derived_event_id(message.id, event_type)
        stored = envelope(event_type, event_id, now, data)
        return _message_event(user_id, message, event_type, event_id, now, stored)

    def _sender(self, message: ReceivedMessage) -> _Sender:
        kept = self._senders.get(id(message.raw_message))
        if kept is not None:
            first, sender = kept
            if (
                first.raw_message is message.raw_message
                and first.authentication_results == message.authentication_results
                and first.from_addr == message.from_addr
                and first.attachments == message.attachments
            ):
                return sender
        sender = _sender_of(message)
        self._senders[id(message.raw_message)] = (message, sender)
        return sender


def inbound_review_event(
    user_id: str,
    message: ReceivedMessage,
    approved: bool,
    now: float,
    reason: str | None = None,
) -> NewEvent:
    """How a review of inbound mail its agent's gate held ended, as e2a tells it with
    `direction` `inbound`: `email.review_approved` (delivered to the agent now) or
    `email.review_rejected` (never delivered), with the reviewer's (or the expiry's) `reason`
    when there is one."""
    event_type = REVIEW_APPROVED if approved else REVIEW_REJECTED
    data = _inbound_data(message, **{"from": message.from_addr}, subject=message.subject)
    if reason:
        data["reason"] = reason
    event_id = derived_event_id(message.id, event_type)
    stored = envelope(event_type, event_id, now, data)
    return _message_event(user_id, message, event_type, event_id, now, stored)


def _epoch(text: str, otherwise: float) -> float:
    try:
        return parse_timestamp(text).timestamp()
    except ValueError:
        return otherwise


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
    event_id: str | None = None,
) -> NewEvent:
    """A message-level event about an outbound message (`email.sent`, `email.failed` with its
    `reason` in `extra`, review events), with a fresh id unless `event_id` is given."""
    data = {**_outbound_data(message, method), **(extra or {})}
    if event_type == EMAIL_SENT and data["method"] != "loopback" and message.email_message_id:
        data.setdefault("provider_message_id", message.email_message_id)  # none for loopback
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


def blocked_send_event(
    user_id: str,
    agent_email: str,
    recipients: Mapping[str, list[str]],
    subject: str,
    conversation_id: str | None,
    reason: str | None,
    now: float,
) -> NewEvent:
    """`email.blocked` for a send the agent's outbound gate refused (nothing of it is stored:
    its `message_id` names the refusal only), as e2a tells it: whom it was for and why."""
    refusal = new_id("msgblk")
    data = {
        "message_id": refusal,
        "agent_email": agent_email,
        "direction": "outbound",
        **recipients,
        "subject": subject,
        "reason": reason,
        "reason_source": "recipient_gate",
    }
    return new_event(
        user_id,
        EMAIL_BLOCKED,
        data,
        now,
        agent_email=agent_email,
        conversation_id=conversation_id,
        event_id=derived_event_id(refusal, EMAIL_BLOCKED),
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
