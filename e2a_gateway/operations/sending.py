"""Sending mail: a new message, a reply (threaded), a test message; each becomes one stored
outbound message.

An agent with HITL enabled has its message held (`pending_approval`) and nothing leaves until
a reviewer approves; otherwise it is queued for the send worker, and the operation waits
briefly for the first hand-off attempt: mail refused for good meanwhile is refused here too
(Undeliverable, the message kept as `failed`); mail handed off, deferred or still in flight
is durably accepted, and the worker records its progress on the message.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from html import escape
from typing import Any, Literal, Protocol, TypedDict

import trio
from pydantic import Field

from e2a_gateway.addresses import Mailbox, format_mailbox
from e2a_gateway.charsets import without_nul
from e2a_gateway.clock import format_timestamp, parse_timestamp
from e2a_gateway.events import blocked_send_event
from e2a_gateway.gateway import Gateway
from e2a_gateway.ids import new_id
from e2a_gateway.inbound.parse import (
    ParsedBody,
    attachment_data,
    parse_body,
    reply_recipients,
    summarise_headers,
)
from e2a_gateway.local_delivery import agent_here, is_operator_mailbox_here
from e2a_gateway.operations import idempotency, lifecycle, templates, unsubscribe
from e2a_gateway.operations.agents import agent_count, only_sender, owned_agent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.drafts import (
    MAX_RECIPIENTS,
    V1_BAD_RECIPIENT,
    V1_MAX_ATTACHMENTS,
    AttachmentIn,
    carried_addresses,
    checked_addresses,
    checked_attachments,
    checked_mailbox,
    checked_text,
    fits_header,
    mailbox_addresses,
    named_besides,
    suppressed_refusal,
    within_recipient_bound,
    within_size_bounds,
)
from e2a_gateway.operations.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Undeliverable,
)
from e2a_gateway.operations.requests import RequestBody, Verbatim
from e2a_gateway.outbound.gate import outbound_verdict
from e2a_gateway.outbound.mime import bare_content_id, carriable_type, header_text, reply_subject
from e2a_gateway.outbound.mime import new_message_id as rfc_message_id
from e2a_gateway.rate_windows import RateLimit
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.storage.base import (
    Agent,
    AgentGone,
    InboundMessage,
    OutboundMessage,
    OutboundStatus,
    RateFull,
)
from e2a_gateway.storage.vocabulary import BOUNCED, FAILED, QUEUED, SENT, TERMINAL_STATUSES

MAX_REFERENCES = 100
"""The most Message-IDs a reply's References names: the thread's first and the latest. A
received References may fill the header section (256 KiB); carried over whole it makes the
reply's header larger than relays keep (Postfix drops what exceeds its 100 KiB
`header_size_limit`, breaking the DKIM signature), and longer with every reply."""
SEND_WAIT_SECONDS = 5.0
SEND_POLL_SECONDS = 0.05
SEND_RATE_WINDOW_SECONDS = 60
CONVERSATION_RATE_WINDOW_SECONDS = 3600


class SendBody(RequestBody):
    """POST /send."""

    from_: str | None = Field(default=None, alias="from")
    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: Verbatim = Field(max_length=998)
    body: Verbatim
    html_body: Verbatim | None = None
    conversation_id: str | None = Field(default=None, max_length=200)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)


class ReplyBody(RequestBody):
    """POST /agents/{email}/messages/{id}/reply."""

    body: Verbatim
    html_body: Verbatim | None = None
    reply_all: bool = False
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    conversation_id: str | None = Field(default=None, max_length=200)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)


@dataclass(frozen=True)
class Submission:
    """A message just stored, and the state it had reached when the operation stopped waiting
    for its hand-off."""

    message: OutboundMessage
    status: OutboundStatus
    error: str | None = None
    """The last hand-off error, while the message stays queued for a retry (deferred)."""

    @property
    def held(self) -> bool:
        """Whether the message waits for a reviewer."""
        return lifecycle.awaits_review(self.status)

    @property
    def deferred(self) -> bool:
        """Whether a hand-off was tried and failed for now: the send worker retries it."""
        return self.status == QUEUED and self.error is not None


async def send(gateway: Gateway, caller: Caller, request: SendBody) -> Submission:
    """A new message from one of the caller's agents."""
    agent = await _sender(gateway, caller, request.from_)
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="send",
        **_addressees(request),
        subject=checked_text("subject", request.subject) or "",
        body=request.body,
        html=request.html_body,
        attachments=checked_attachments(request.attachments),
        conversation_id=checked_text("conversation_id", request.conversation_id),
    )
    return await _submit(gateway, message)


async def reply(
    gateway: Gateway, caller: Caller, email: str, message_id: str, request: ReplyBody
) -> Submission:
    """An answer to an inbound message of the caller's agent at `email`, threaded: to its
    Reply-To (else From), `Re:` subject, In-Reply-To and References."""
    agent = await owned_agent(gateway, caller, email)
    original = await gateway.storage.read_inbound(caller.user_id, agent.email, message_id)
    if original is None:
        raise NotFound.of("message")
    to = _answered(agent, original, lambda named: _within_fields(to=named))
    cc = checked_addresses("cc", request.cc)
    if request.reply_all:
        _within_fields(cc=[*named_besides([*original.to, *original.cc], (agent.email, *to)), *cc])
        # compared as carried (normalised): the original may name the same mailbox otherwise
        copied = carried_addresses("cc", [*original.to, *original.cc])
        others = [a for a in copied if a not in (agent.email, *to)]
        cc = list(dict.fromkeys([*others, *cc]))
    _within_fields(to=to, cc=cc)
    in_reply_to = original.rfc_message_id if fits_header(original.rfc_message_id) else None
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="reply",
        to=to,
        cc=cc,
        bcc=checked_addresses("bcc", request.bcc),
        subject=_answering_subject(reply_subject, original.subject),
        body=request.body,
        html=request.html_body,
        attachments=checked_attachments(request.attachments),
        conversation_id=checked_text("conversation_id", request.conversation_id)
        or original.conversation_id,
        in_reply_to=in_reply_to,
        references=_references_onto(original.raw_message, in_reply_to),
    )
    return await _submit(gateway, message)


def _within_fields(**fields: list[str]) -> None:
    """Invalid (`invalid_request`) when a reply would name more than MAX_RECIPIENTS addresses
    in one of `fields`, as a send may not: the original chose them (its Reply-To, or its To
    and Cc for a reply-all), and an agent's answer must not become mail to a crowd."""
    for name, addresses in fields.items():
        if len(addresses) > MAX_RECIPIENTS:
            raise Invalid(
                "invalid_request",
                f"{name}: a reply names at most {MAX_RECIPIENTS} addresses there, and this one "
                f"would name {len(addresses)} (the original's Reply-To or From, or its To and "
                "Cc with reply_all)",
            )


def _answered(
    agent: Agent,
    original: InboundMessage,
    within_bound: Callable[[list[str]], None],
    code: str | None = None,
) -> list[str]:
    """The To of a reply to `original`: every mailbox its Reply-To names, else its From
    (`reply_recipients`), as `_addressed_to` takes them, the agent's own address left out
    unless it is the only one. They are held to `within_bound` (the API's bound on a reply's
    recipients) as the original names them, before each is checked."""
    named = reply_recipients(original.raw_message) or (
        address_list(original.reply_to) or [original.from_addr]
    )
    within_bound(named_besides(named, (agent.email,)))
    to = _addressed_to(named, code)
    return [address for address in to if address != agent.email] or to


def _addressed_to(named: list[str], code: str | None = None) -> list[str]:
    """The To of a reply naming the addresses `named`: the first checked as a send's recipient
    (Invalid, with `code` when given, when it is no address e2a can send to), the others
    carried as a reply-all carries the addresses it copies (`carried_addresses`: one e2a cannot
    send to is refused alone at the hand-off), each once."""
    to = checked_addresses("to", named[:1], code=code)
    for address in carried_addresses("to", named[1:], code=code):
        if address not in to:
            to.append(address)
    return to


def _references_onto(raw: bytes, parent_id: str | None) -> list[str]:
    """The References of a reply to the received message `raw`, whose Message-ID is
    `parent_id` (RFC 5322 section 3.6.4): the parent's References, or its In-Reply-To when it
    has no References (as clients that write only In-Reply-To send it), then the parent's id,
    which ends the chain. Ids that cannot be written into a header are left out; the chain is
    `_bounded`."""
    headers = summarise_headers(raw)
    prior = headers.references or ([headers.in_reply_to] if headers.in_reply_to else [])
    chain = [ref for ref in prior if fits_header(ref) and ref != parent_id]
    return _bounded([*chain, parent_id] if parent_id else chain)


def _bounded(chain: list[str]) -> list[str]:
    """A References chain of at most MAX_REFERENCES ids: its first (the thread's root) and the
    latest, as mail clients shorten a long one; threading needs no more."""
    if len(chain) <= MAX_REFERENCES:
        return chain
    return [chain[0], *chain[1 - MAX_REFERENCES :]]


async def send_test(
    gateway: Gateway, caller: Caller, email: str, *, new_conversation: bool
) -> Submission:
    """A test message from the caller's agent at `email` to itself; with `new_conversation`
    (`/v1`, as e2a anchors it) in a new conversation, which the copy the agent receives joins,
    else in none (`/api/v1`: the 2.x contract leaves conversation ids to the agents)."""
    agent = await owned_agent(gateway, caller, email)
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="test",
        to=[agent.email],
        cc=[],
        bcc=[],
        subject="e2a test message",
        body=f"This is a test message from e2a to {agent.email}. Delivery works.",
        html=None,
        attachments=[],
        conversation_id=new_id("conv") if new_conversation else None,
    )
    return await _submit(gateway, message)


async def _sender(gateway: Gateway, caller: Caller, requested: str | None) -> Agent:
    """The agent a send comes from: `from` when given, else the caller's only agent
    (`only_agent`: a postmaster inbox beside it does not count)."""
    if requested is not None:
        try:
            return await owned_agent(gateway, caller, requested)
        except NotFound:
            raise Invalid(
                "invalid_from", f"'from' must be one of your agents; {requested} is not"
            ) from None
    chosen = await only_sender(gateway, caller)
    if chosen is None:
        count = await agent_count(gateway, caller)
        raise Invalid(
            "invalid_from",
            "give 'from': you have "
            + ("no agents" if not count else f"{count} agents")
            + ", so the sender cannot be chosen for you",
        )
    return chosen


def _send_limit_key(message: OutboundMessage) -> str:
    """The key `message` is counted under against its agent's send limit: its owner's and its
    address's, so an agent deleted and created again at the address by its owner goes on
    with the count, and one another owner creates at a freed address starts with none."""
    return f"send:agent:{message.user_id}:{message.agent_email}"


def _send_limit(gateway: Gateway, message: OutboundMessage) -> RateLimit:
    """The send limit of `message`'s agent: `limits.sends_per_agent_per_minute` in any minute
    (`_send_limit_key`)."""
    return RateLimit(
        _send_limit_key(message),
        SEND_RATE_WINDOW_SECONDS,
        gateway.settings.limits.sends_per_agent_per_minute,
    )


def conversation_of(message: OutboundMessage) -> str | None:
    """What `message` continues: its `conversation_id` when it has one, else the thread it
    replies in, named by the thread's first Message-ID (the first of its References, which a
    reply always keeps, else the message it answers); None for a message that starts one."""
    if message.conversation_id:
        return message.conversation_id
    return message.references[0] if message.references else message.in_reply_to


def _conversation_limit(gateway: Gateway, message: OutboundMessage, conversation: str) -> RateLimit:
    """The limit of `message`'s agent (its owner's, at its address) in one `conversation`
    (`conversation_of`):
    `limits.sends_per_conversation_per_hour` in any hour, which ends a reply loop (two
    agents, or an agent and an auto-responder, answering each other) within minutes."""
    digest = hashlib.sha256(conversation.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return RateLimit(
        f"send:conversation:{message.user_id}:{message.agent_email}:{digest}",
        CONVERSATION_RATE_WINDOW_SECONDS,
        gateway.settings.limits.sends_per_conversation_per_hour,
    )


def _send_refusal(
    limit: RateLimit, message: OutboundMessage, room_at: float, now: float
) -> RateLimited:
    """The refusal of `message` over `limit` (the agent's send limit, or its conversation's),
    with the whole seconds (at least 1) until the window has room again at `room_at`."""
    wait = max(1, math.ceil(room_at - now))
    if limit.key != _send_limit_key(message):
        text = (
            f"{message.agent_email} may send {limit.limit} messages per hour in one "
            f"conversation, and has in {conversation_of(message)} (a reply loop with another "
            f"agent or an auto-responder?); retry in {wait} seconds"
        )
    else:
        text = (
            f"{message.agent_email} may send {limit.limit} messages per minute; "
            f"retry in {wait} seconds"
        )
    return RateLimited("rate_limited", text, wait)


async def _store(gateway: Gateway, message: OutboundMessage) -> None:
    """Store the new message, settling the request's Idempotency-Key claim, and count it
    against the agent's send limit and its conversation's in the same commit; RateLimited,
    storing nothing and counting nothing, when either is full; NotFound when the agent was
    deleted or moved to the trash meanwhile."""
    limits = [_send_limit(gateway, message)]
    if (conversation := conversation_of(message)) is not None:
        limits.append(_conversation_limit(gateway, message, conversation))
    try:
        await gateway.storage.add_outbound(
            message, settles=idempotency.held_key(), send_limits=limits
        )
    except RateFull as full:
        limit = next((limit for limit in limits if limit.key == full.key), limits[0])
        raise _send_refusal(limit, message, full.room_at, time.time()) from None
    except AgentGone:  # deleted or trashed while the request ran, as if just before it
        raise NotFound.of("agent") from None


async def _refuse_suppressed(gateway: Gateway, agent: Agent, recipients: list[str]) -> None:
    """Unprocessable (`recipient_suppressed`) when the account, or this agent, suppressed any
    of `recipients` (a hard bounce, a complaint, an unsubscribe, or by hand): the send is
    refused whole, never partly dropped."""
    addresses = list(dict.fromkeys(address.strip().lower() for address in recipients))
    suppressed = await gateway.storage.suppressed_among(agent.user_id, agent.email, addresses)
    if suppressed:
        raise suppressed_refusal(suppressed, agent.email, "not sent")


async def _method(gateway: Gateway, recipients: list[str]) -> Literal["smtp", "local"]:
    """`local` when every recipient is an agent of this deployment or an operator mailbox
    here (delivered to the agent that takes postmaster mail), else `smtp`."""
    for address in recipients:
        here = await agent_here(gateway, address) is not None
        if not (here or is_operator_mailbox_here(gateway, address)):
            return "smtp"
    return "local"


class _Addressed(Protocol):
    """A request naming a new message's recipients."""

    to: list[str]
    cc: list[str]
    bcc: list[str]


class _Addressees(TypedDict):
    """A new message's recipients, checked."""

    to: list[str]
    cc: list[str]
    bcc: list[str]


def _addressees(request: _Addressed) -> _Addressees:
    """The To, Cc and Bcc of an `/api/v1` `request`, each checked (Invalid naming the field
    otherwise)."""
    return {
        "to": checked_addresses("to", request.to),
        "cc": checked_addresses("cc", request.cc),
        "bcc": checked_addresses("bcc", request.bcc),
    }


def _v1_addressees(request: _Addressed) -> _Addressees:
    """The To, Cc and Bcc of a `/v1` `request`, each mailbox as e2a takes it, a display name
    allowed (`mailbox_addresses`; `invalid_recipient` otherwise)."""
    return {
        "to": mailbox_addresses("to", request.to, code=V1_BAD_RECIPIENT),
        "cc": mailbox_addresses("cc", request.cc, code=V1_BAD_RECIPIENT),
        "bcc": mailbox_addresses("bcc", request.bcc, code=V1_BAD_RECIPIENT),
    }


async def _new_message(
    gateway: Gateway,
    caller: Caller,
    agent: Agent,
    *,
    kind: Literal["send", "reply", "test"],
    to: list[str],
    cc: list[str],
    bcc: list[str],
    subject: str,
    body: str,
    html: str | None,
    attachments: list[dict[str, str]],
    conversation_id: str | None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    reply_to: str | None = None,
    unsubscribe: str | None = None,
    send_at: str | None = None,
) -> OutboundMessage:
    now = time.time()
    scheduled_at = scheduled_instant(send_at, agent.email, [*to, *cc, *bcc], now)
    await _refuse_suppressed(gateway, agent, [*to, *cc, *bcc])
    verdict = outbound_verdict(agent, [*to, *cc, *bcc])
    if verdict.outcome == "block":
        recipients = {"to": to, "cc": cc, "bcc": bcc}
        await gateway.storage.log_events(
            [
                blocked_send_event(
                    caller.user_id,
                    agent.email,
                    recipients,
                    subject,
                    conversation_id,
                    verdict.reason,
                    now,
                )
            ]
        )
        raise Forbidden(
            "blocked_by_policy", f"message blocked by the agent's outbound policy: {verdict.reason}"
        )
    held = verdict.outcome == "review"
    return OutboundMessage(
        id=new_id("msg"),
        user_id=caller.user_id,
        agent_email=agent.email,
        kind=kind,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        body_text=body,
        body_html=html,
        attachments=attachments,
        conversation_id=conversation_id,
        in_reply_to=in_reply_to,
        references=references or [],
        email_message_id=rfc_message_id(agent.domain),
        status=lifecycle.initial_state(held),
        approval_expires_at=now + agent.hitl_ttl_seconds if held else None,
        created_at=format_timestamp(now),
        created_epoch=now,
        method=await _method(gateway, [*to, *cc, *bcc]),
        reply_to=reply_to,
        flag_reason=verdict.reason,
        unsubscribe=unsubscribe,
        scheduled_at=scheduled_at,
    )


SCHEDULE_MAX_SECONDS = 90 * 86400
"""How far ahead `send_at` may schedule a send (e2a's bound: 90 days)."""


def scheduled_instant(
    send_at: str | None, agent_email: str, recipients: list[str], now: float
) -> float | None:
    """The instant (epoch seconds) a `/v1` send is scheduled for by `send_at` (e2a's beta
    scheduled sending): None without one or for one at or before `now` (sent at once);
    Invalid unless it is RFC 3339 with a UTC offset, for one more than 90 days ahead, and for a
    future one whose only recipient is the sending agent itself (delivery to itself is an
    immediate loopback, e2a's rule, even where the send would be held for review)."""
    if send_at is None:
        return None
    try:
        instant = parse_timestamp(send_at).timestamp()
    except ValueError:
        raise Invalid(
            "invalid_request",
            "send_at must be an RFC 3339 date-time with a UTC offset (e.g. 2030-01-01T09:00:00Z)",
        ) from None
    if instant <= now:
        return None
    if instant - now > SCHEDULE_MAX_SECONDS:
        raise Invalid("invalid_request", "send_at must be no more than 90 days ahead")
    if {address.lower() for address in recipients} == {agent_email.lower()}:
        raise Invalid(
            "invalid_request",
            "a future send_at cannot schedule a message whose only recipient is the sending "
            "agent itself (delivery to itself is immediate); send without send_at",
        )
    return instant


async def _submit(gateway: Gateway, message: OutboundMessage) -> Submission:
    """Store the message (with its send job or approval notice, whose commit wakes the worker);
    for a message queued to send, wait up to SEND_WAIT_SECONDS for the first attempt's outcome
    (handed off, failed, or deferred: an error recorded while it stays queued).

    Raises Undeliverable (`send_failed`) when it failed meanwhile: nothing was sent."""
    await _store(gateway, message)
    status, error = message.status, None
    if lifecycle.awaits_review(status):
        return Submission(message, status)
    status, error = await _first_hand_off(
        gateway, message, status, error, lifecycle.AWAITING_HAND_OFF, SEND_WAIT_SECONDS
    )
    _refuse_failed(message, status, error)
    return Submission(message, status)


async def _first_hand_off(
    gateway: Gateway,
    message: OutboundMessage,
    status: OutboundStatus,
    error: str | None,
    waiting: Collection[str],
    seconds: float,
) -> tuple[OutboundStatus, str | None]:
    """The status and send error of the stored `message` (now `status`, `error`) once its first
    hand-off attempt has an outcome — it leaves the `waiting` statuses, or an error is recorded
    while it stays — or once `seconds` have passed. NotFound as soon as the message is gone:
    its agent was deleted for good (its mail with it) while the request waited."""
    with trio.move_on_after(seconds):
        while status in waiting and error is None:
            await trio.sleep(SEND_POLL_SECONDS)
            current = await gateway.storage.get_outbound(message.user_id, message.id)
            if current is None:
                raise NotFound(
                    "not_found",
                    f"message {message.id} is gone: it was deleted with its agent "
                    f"{message.agent_email} while this request waited for its hand-off",
                )
            status, error = current.status, current.send_error
    return status, error


def _refuse_failed(message: OutboundMessage, status: OutboundStatus, error: str | None) -> None:
    """Undeliverable (`send_failed`) when the message `status` says failed: nothing was sent.
    It is kept as `failed` in the contract's words, as `GET /api/v1/messages/{id}` shows it
    (a `bounced` message too: `/api/v1` has no such state)."""
    if status in (FAILED, BOUNCED):
        raise Undeliverable(
            "send_failed",
            f"message {message.id} was not sent: {error or 'no reason recorded'} "
            f"(kept as {FAILED}: GET /api/v1/messages/{message.id})",
        )


async def stored_send(gateway: Gateway, caller: Caller, message_id: str) -> Submission:
    """`/api/v1`'s answer for the caller's message `message_id` as it stands, for a send
    stored and never answered (its request was killed after storing it): what `send` would
    answer, Undeliverable when it has failed since."""
    submission = await stored_submission(gateway, caller, message_id)
    _refuse_failed(submission.message, submission.status, submission.error)
    return Submission(submission.message, submission.status)


# -- e2a's current API (`/v1`): send, reply and forward from the agent named in the path -------

V1_MAX_REPLY_TO = 5
SENT_WAIT_SECONDS = 15.0
"""How long `?wait=sent` holds a request for the message's terminal (or held) state."""
QUOTE_MAX_CHARS = 100_000
"""The most of an original's text a quoted history or a forward carries."""


class UnsubscribeOptions(RequestBody):
    """e2a's UnsubscribeOptions (beta): the strict object `{"mode": "managed"}` opting one
    message into the gateway's managed unsubscribe (`unsubscribe.managed`)."""

    mode: Literal["managed"]


class ComposeBody(RequestBody):
    """What every `/v1` write of a message may carry (e2a's request schemas, 220fe0a7). The
    recipients are bounded together, to, cc and bcc (`within_recipient_bound`), not each."""

    text: Verbatim | None = Field(default=None, max_length=1_048_576)
    html: Verbatim | None = Field(default=None, max_length=1_048_576)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    reply_to: str | list[str] | None = None
    conversation_id: str | None = Field(default=None, max_length=200)
    attachments: list[AttachmentIn] = Field(default_factory=list)
    unsubscribe: UnsubscribeOptions | None = None
    send_at: str | None = None

    def without_nul(self) -> None:
        """Invalid when the text or HTML body holds a NUL character (no mail carries one)."""
        for name in ("text", "html"):
            if "\x00" in (getattr(self, name) or ""):
                raise Invalid("invalid_request", f"{name} must not contain NUL characters")

    def with_body(self) -> None:
        """Invalid unless the text or the HTML body says something: e2a requires the text of
        a send and of a reply, so an empty one (an agent's empty output, say) is refused rather
        than mailed blank; HTML alone is a body here."""
        if not self.text and not self.html:
            raise Invalid("invalid_request", "give the message a body: 'text', 'html' or both")

    def unsubscribe_mode(self) -> str | None:
        """The managed unsubscribe the message opts into (`managed`), or None."""
        return self.unsubscribe.mode if self.unsubscribe is not None else None


class SendMessageBody(ComposeBody):
    """sendMessage (e2a's SendEmailRequest)."""

    to: list[str] = Field(min_length=1)
    subject: Verbatim = Field(default="", max_length=templates.MAX_SUBJECT_CHARS)
    template_id: Verbatim | None = None
    template_alias: Verbatim | None = None
    template_data: dict[str, Any] | None = None


class ReplyMessageBody(ComposeBody):
    """replyToMessage (e2a's ReplyRequest)."""

    text: Verbatim = Field(max_length=1_048_576)
    reply_all: bool = False
    quote_history: bool = False


class ForwardMessageBody(ComposeBody):
    """forwardMessage (e2a's ForwardRequest)."""

    text: Verbatim = Field(max_length=1_048_576)
    to: list[str]
    """Required, but may be empty when `cc` names someone (e2a's rule)."""


async def send_message(
    gateway: Gateway, caller: Caller, email: str, request: SendMessageBody
) -> Submission:
    """A new message from the caller's agent at `email`: a new thread, in the conversation the
    request names or in a new one."""
    request.without_nul()
    agent = await owned_agent(gateway, caller, email)
    subject, text, html = await _content(gateway, caller, request)
    within_recipient_bound(request.to, request.cc, request.bcc)
    addressees = _v1_addressees(request)
    attachments = _v1_attachments(request.attachments, [])
    within_size_bounds(subject, text, html, attachments)
    unsubscribe.check_recipients(request.unsubscribe_mode(), **addressees)
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="send",
        **addressees,
        unsubscribe=request.unsubscribe_mode(),
        send_at=request.send_at,
        subject=checked_text("subject", subject) or "",
        body=text,
        html=html,
        attachments=attachments,
        conversation_id=checked_text("conversation_id", request.conversation_id) or new_id("conv"),
        reply_to=_reply_to(request.reply_to),
    )
    return await _submit_v1(gateway, message)


async def _content(
    gateway: Gateway, caller: Caller, request: SendMessageBody
) -> tuple[str, str, str | None]:
    """The subject, text and HTML a new message is sent with: as given, or the account's
    template the request names rendered with its `template_data` (before any review hold, so
    a reviewer reads what would be sent)."""
    if not (request.template_id or request.template_alias):
        if request.template_data:
            raise Invalid("invalid_request", "template_data requires template_id or template_alias")
        request.with_body()
        return request.subject, request.text or "", request.html
    if request.template_id and request.template_alias:
        raise Invalid("invalid_request", "template_id and template_alias are mutually exclusive")
    if request.subject or request.text or request.html:
        raise Invalid(
            "invalid_request",
            "a template reference is mutually exclusive with subject, text and html",
        )
    rendered = await templates.rendered_template(
        gateway, caller, request.template_id, request.template_alias, request.template_data or {}
    )
    return rendered.subject, rendered.text, rendered.html


async def reply_to_message(
    gateway: Gateway,
    caller: Caller,
    email: str,
    message_id: str,
    request: ReplyMessageBody,
) -> Submission:
    """An answer to a live message of the caller's agent at `email`, threaded onto it: to the
    sender of mail it received (Reply-To, else From), to the recipients of mail it sent (which
    must have been handed on while it still may be: it has no Message-ID to thread onto
    before; one that never will be, failed or rejected, is answered without threading onto
    it, as e2a answers it; one sent with no To is refused, as e2a refuses it). `reply_all`
    adds the original's other recipients; `quote_history` quotes the original's text beneath.
    It is in the conversation the request names, else the original's, else a new one (e2a's
    order), which the answer to it joins."""
    request.without_nul()
    agent = await owned_agent(gateway, caller, email)
    original = await _original(gateway, caller, agent, message_id)
    request.with_body()
    unsent = (
        isinstance(original, OutboundMessage)
        and original.sent_at is None
        and original.status != SENT
    )
    if unsent and original.status not in TERMINAL_STATUSES:
        raise Conflict(
            "message_not_yet_delivered",
            f"message {message_id} has not been sent yet, so a reply has nothing to thread "
            "onto; retry once it is sent (or send it with ?wait=sent)",
        )
    within_recipient_bound(request.cc, request.bcc)
    extra_cc = mailbox_addresses("cc", request.cc, code=V1_BAD_RECIPIENT)
    bcc = mailbox_addresses("bcc", request.bcc, code=V1_BAD_RECIPIENT)
    if isinstance(original, OutboundMessage):
        if not original.to:  # sent to Cc or Bcc alone: e2a has no one to answer
            raise Invalid(
                V1_BAD_RECIPIENT,
                f"cannot reply: message {message_id} was sent with no recipients in To, so "
                "the reply has no recipients to go to; send a new message instead",
            )
        to = _addressed_to(original.to, V1_BAD_RECIPIENT)
        others = original.cc if request.reply_all else []
        in_reply_to: str | None = None if unsent else original.email_message_id
        references = [ref for ref in original.references if ref != in_reply_to]
        references = _bounded([*references, in_reply_to] if in_reply_to else references)
        quoted, sender, when = original.body_text, original.agent_email, original.created_at
    else:
        to = _answered(agent, original, within_recipient_bound, V1_BAD_RECIPIENT)
        others = [*original.to, *original.cc] if request.reply_all else []
        in_reply_to = original.rfc_message_id if fits_header(original.rfc_message_id) else None
        references = _references_onto(original.raw_message, in_reply_to)
        quoted = without_nul(parse_body(original.raw_message).text or "")
        sender, when = original.from_addr, original.received_at
    within_recipient_bound(to, [*named_besides(others, (agent.email, *to)), *extra_cc], bcc)
    copied = carried_addresses("cc", others, code=V1_BAD_RECIPIENT)
    kept = [a for a in copied if a not in to]
    cc = _without(agent.email, list(dict.fromkeys([*kept, *extra_cc])))
    bcc = _without(agent.email, bcc)
    within_recipient_bound(to, cc, bcc)  # reply_all counted as it expands
    text, html = request.text, request.html
    if request.quote_history and quoted:
        text, html = _quote(text, html, quoted, sender, when)
    subject = _answering_subject(reply_subject, original.subject)
    attachments = _v1_attachments(request.attachments, [])
    within_size_bounds(subject, text, html, attachments)
    unsubscribe.check_recipients(request.unsubscribe_mode(), to=to, cc=cc, bcc=bcc)
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="reply",
        to=to,
        cc=cc,
        bcc=bcc,
        unsubscribe=request.unsubscribe_mode(),
        send_at=request.send_at,
        subject=subject,
        body=text,
        html=html,
        attachments=attachments,
        conversation_id=checked_text("conversation_id", request.conversation_id)
        or original.conversation_id
        or new_id("conv"),
        in_reply_to=in_reply_to,
        references=references,
        reply_to=_reply_to(request.reply_to),
    )
    return await _submit_v1(gateway, message)


async def forward_message(
    gateway: Gateway,
    caller: Caller,
    email: str,
    message_id: str,
    request: ForwardMessageBody,
) -> Submission:
    """A live message the caller's agent at `email` received, forwarded to new recipients: the
    original quoted beneath `text`, its attachments carried over before the request's own. Mail
    the agent sent cannot be forwarded: its body is not kept once it is handed on. A forward
    starts a new thread (in a new conversation unless the request names one)."""
    request.without_nul()
    agent = await owned_agent(gateway, caller, email)
    original = await _original(gateway, caller, agent, message_id)
    if not request.to and not request.cc:
        raise Invalid("invalid_request", "at least one recipient in to or cc is required")
    within_recipient_bound(request.to, request.cc, request.bcc)
    addressees = _v1_addressees(request)
    addressees["cc"] = _without(agent.email, addressees["cc"])
    addressees["bcc"] = _without(agent.email, addressees["bcc"])
    if not addressees["to"] and not addressees["cc"]:
        raise Invalid(
            "invalid_request", "at least one recipient other than the agent in to or cc is required"
        )
    if isinstance(original, OutboundMessage):
        raise Conflict(
            "conflict",
            f"message {message_id} was sent by this agent; the gateway does not keep the body "
            "of sent mail, so it cannot be forwarded — forward a received message instead",
        )
    body, carried = await trio.to_thread.run_sync(_forwarded_content, original.raw_message)
    banner = "---------- Forwarded message ----------"
    facts = [
        f"From: {original.from_addr}",
        f"Date: {original.received_at}",
        f"Subject: {header_text(original.subject[: templates.MAX_SUBJECT_CHARS])}",
        f"To: {', '.join(original.to)}",
    ]
    original_text = without_nul(body.text or "")[:QUOTE_MAX_CHARS]
    text = "\n".join([request.text, "", banner, *facts, "", original_text])
    html = None
    if request.html is not None:
        quoted_html = without_nul(body.html) if body.html is not None else _as_html(original_text)
        html = (
            f"{request.html}<br><br><div>{escape(banner)}<br>"
            + "<br>".join(escape(fact) for fact in facts)
            + f"</div><br>{quoted_html}"
        )
    subject = _answering_subject(_forward_subject, original.subject)
    attachments = _v1_attachments(request.attachments, carried)
    within_size_bounds(subject, text, html, attachments)
    unsubscribe.check_recipients(request.unsubscribe_mode(), **addressees)
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="send",
        **addressees,
        unsubscribe=request.unsubscribe_mode(),
        send_at=request.send_at,
        subject=subject,
        body=text,
        html=html,
        attachments=attachments,
        conversation_id=checked_text("conversation_id", request.conversation_id) or new_id("conv"),
        reply_to=_reply_to(request.reply_to),
    )
    return await _submit_v1(gateway, message)


async def _original(
    gateway: Gateway, caller: Caller, agent: Agent, message_id: str
) -> InboundMessage | OutboundMessage:
    """The live message of `agent` that a reply or forward refers to, its read state left as
    it is (as e2a's GetRepliableMessage reads it: only opening a message marks it read);
    NotFound when it is not the agent's, or is in the trash."""
    if "\x00" in message_id:
        raise NotFound.of("message")
    filed = await gateway.storage.filed_message(
        caller.user_id, agent.email, message_id, mark_read=False
    )
    found: InboundMessage | OutboundMessage | None = None
    if filed is not None and filed.deleted_at is None:
        if filed.direction == "outbound":
            found = await gateway.storage.get_outbound(caller.user_id, message_id)
        else:
            found = await gateway.storage.read_inbound(
                caller.user_id, agent.email, message_id, mark_read=False
            )
    if found is None:
        raise NotFound.of("message")
    return found


def _without(agent_email: str, addresses: list[str]) -> list[str]:
    """`addresses` (lowercased) but the agent's own: copied on its own reply or forward, the
    agent would receive its own mail and might answer it (e2a strips it from Cc and Bcc too)."""
    return [address for address in addresses if address != agent_email]


def _reply_to(value: str | list[str] | None) -> str | None:
    """The Reply-To of a request as the message keeps it (`format_mailbox`es joined with ", "):
    one mailbox, as e2a takes it (`Support Desk <help@example.com>`; "" is none), or a list of
    up to V1_MAX_REPLY_TO; the same address given twice is kept once."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        mailboxes = [checked_mailbox("reply_to", value)]
    elif not value or len(value) > V1_MAX_REPLY_TO:
        raise Invalid("invalid_request", f"reply_to takes 1 to {V1_MAX_REPLY_TO} addresses")
    else:
        mailboxes = [checked_mailbox(f"reply_to[{i}]", item) for i, item in enumerate(value)]
    kept: dict[str, Mailbox] = {}
    for mailbox in mailboxes:
        kept.setdefault(mailbox.address, mailbox)
    return ", ".join(format_mailbox(mailbox) for mailbox in kept.values())


def _v1_attachments(
    items: list[AttachmentIn], carried: list[dict[str, str]]
) -> list[dict[str, str]]:
    """The request's attachments after those `carried` over, within e2a's count."""
    if len(carried) + len(items) > V1_MAX_ATTACHMENTS:
        raise Invalid(
            "invalid_request",
            f"a message carries at most {V1_MAX_ATTACHMENTS} attachments"
            + (f" ({len(carried)} carried over from the original)" if carried else ""),
        )
    return [*carried, *checked_attachments(items)]


def _forwarded_content(raw: bytes) -> tuple[ParsedBody, list[dict[str, str]]]:
    """The body of received message `raw` and its attachments as a forward carries them
    (`_carried`): parsed in a worker thread, as mail of thousands of parts takes seconds."""
    body = parse_body(raw)
    return body, [_carried(raw, index, body.html) for index in range(len(body.attachments))]


def _carried(raw: bytes, index: int, html: str | None) -> dict[str, str]:
    """Attachment `index` of a received message, as a stored attachment (base64), with its
    Content-ID when its `html` shows it by a `cid:` URL (an inline image, which the forward's
    quoted HTML shows again)."""
    found = attachment_data(raw, index)
    assert found is not None
    meta, data = found
    carried = {
        "filename": header_text((meta.filename or f"attachment-{index + 1}")[:255]),
        "content_type": carriable_type(meta.content_type),
        "data": base64.b64encode(data).decode("ascii"),
    }
    content_id = bare_content_id(meta.content_id or "")
    if content_id and html and f"cid:{content_id}".lower() in html.lower():
        carried["content_id"] = content_id
    return carried


def _quote(
    text: str, html: str | None, original: str, sender: str, when: str
) -> tuple[str, str | None]:
    """`text` (and `html`) with `original` quoted beneath, mail-client style."""
    attribution = f"On {when}, {sender} wrote:"
    lines = original[:QUOTE_MAX_CHARS].splitlines() or [""]
    quoted_text = "\n".join(f"> {line}" if line else ">" for line in lines)
    text = f"{text}\n\n{attribution}\n{quoted_text}"
    if html is not None:
        quoted_html = f"<blockquote>{_as_html(original)}</blockquote>"
        html = f"{html}<br><br><div>{escape(attribution)}</div>{quoted_html}"
    return text, html


def _as_html(text: str) -> str:
    return escape(text[:QUOTE_MAX_CHARS]).replace("\n", "<br>")


def _answering_subject(prefixed: Callable[[str], str], received: str) -> str:
    """The subject of a reply or forward (`prefixed` adds its `Re:` or `Fwd:`) of a message
    whose subject was `received`, cut to the MAX_SUBJECT_CHARS a typed subject may have: a
    received subject may run to the header section's limit, and writing a header that long
    holds the outbound worker's event loop for a second or more."""
    cut = received[: templates.MAX_SUBJECT_CHARS]  # header_text reads encoded words: cut first
    return prefixed(header_text(cut))[: templates.MAX_SUBJECT_CHARS]


def _forward_subject(subject: str) -> str:
    """`Fwd: <subject>`, without stacking prefixes."""
    return subject if subject.lower().startswith(("fwd:", "fw:")) else f"Fwd: {subject}"


async def _submit_v1(gateway: Gateway, message: OutboundMessage) -> Submission:
    """Store the message (with its job), answered at once: `?wait=sent` waits after, outside
    the request's Idempotency-Key (`await_handoff`)."""
    await _store(gateway, message)
    return Submission(message, message.status)


async def await_handoff(gateway: Gateway, submission: Submission) -> Submission:
    """`?wait=sent`: hold on until the stored message's first hand-off attempt has an outcome
    — handed on, refused (failed or bounced), or deferred (an error recorded while it stays
    queued) — at most SENT_WAIT_SECONDS; a message held for review answers at once."""
    message = submission.message
    status, error = submission.status, submission.error
    if lifecycle.awaits_review(status):
        return submission
    status, error = await _first_hand_off(
        gateway, message, status, error, (QUEUED,), SENT_WAIT_SECONDS
    )
    return Submission(message, status, error)


async def stored_submission(gateway: Gateway, caller: Caller, message_id: str) -> Submission:
    """The caller's message `message_id` as it stands, for a send answered before (a replayed
    Idempotency-Key) or stored and never answered; NotFound when it is gone."""
    message = await gateway.storage.get_outbound(caller.user_id, message_id)
    if message is None:
        raise NotFound.of("message")
    return Submission(message, message.status, message.send_error)
