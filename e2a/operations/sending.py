"""Sending mail: a new message, a reply (threaded), a test message; each becomes one stored
outbound message.

An agent with HITL enabled has its message held (`pending_approval`) and nothing leaves until
a reviewer approves; otherwise it is queued for the send worker, and the operation waits
briefly for the first hand-off attempt: mail refused for good meanwhile is refused here too
(Undeliverable, the message kept as `failed`); mail handed off, deferred or still in flight
is durably accepted, and the worker records its progress on the message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import trio
from pydantic import Field

from e2a.clock import format_timestamp
from e2a.gateway import Gateway
from e2a.ids import new_id
from e2a.inbound.parse import summarise_headers
from e2a.operations import lifecycle
from e2a.operations.agents import owned_agent, owned_agents
from e2a.operations.caller import Caller
from e2a.operations.drafts import (
    MAX_RECIPIENTS,
    AttachmentIn,
    checked_addresses,
    checked_attachments,
    checked_text,
    fits_header,
)
from e2a.operations.errors import Invalid, NotFound, RateLimited, Undeliverable, Unprocessable
from e2a.operations.requests import RequestBody
from e2a.outbound.mime import header_text, reply_subject
from e2a.outbound.mime import new_message_id as rfc_message_id
from e2a.storage.base import Agent, OutboundMessage, OutboundStatus
from e2a.storage.vocabulary import BOUNCED, FAILED

SEND_WAIT_SECONDS = 5.0
SEND_POLL_SECONDS = 0.05
SEND_RATE_WINDOW_SECONDS = 60


class SendBody(RequestBody):
    """POST /send."""

    from_: str | None = Field(default=None, alias="from")
    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: str = Field(max_length=998)
    body: str
    html_body: str | None = None
    conversation_id: str | None = Field(default=None, max_length=200)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=50)


class ReplyBody(RequestBody):
    """POST /agents/{email}/messages/{id}/reply."""

    body: str
    html_body: str | None = None
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

    @property
    def held(self) -> bool:
        """Whether the message waits for a reviewer."""
        return lifecycle.awaits_review(self.status)


async def send(gateway: Gateway, caller: Caller, request: SendBody) -> Submission:
    """A new message from one of the caller's agents."""
    agent = await _sender(gateway, caller, request.from_)
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="send",
        to=checked_addresses("to", request.to),
        cc=checked_addresses("cc", request.cc),
        bcc=checked_addresses("bcc", request.bcc),
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
    recipient = original.reply_to or original.from_addr
    to = checked_addresses("to", [recipient])
    cc = checked_addresses("cc", request.cc)
    if request.reply_all:
        others = [a for a in [*original.to, *original.cc] if a not in (agent.email, *to)]
        cc = checked_addresses("cc", [*others, *cc])
    headers = summarise_headers(original.raw_message)
    in_reply_to = original.rfc_message_id if fits_header(original.rfc_message_id) else None
    references = [ref for ref in headers.references if fits_header(ref)]
    if in_reply_to and in_reply_to not in references:
        references.append(in_reply_to)
    message = await _new_message(
        gateway,
        caller,
        agent,
        kind="reply",
        to=to,
        cc=cc,
        bcc=checked_addresses("bcc", request.bcc),
        subject=reply_subject(header_text(original.subject)),
        body=request.body,
        html=request.html_body,
        attachments=checked_attachments(request.attachments),
        conversation_id=checked_text("conversation_id", request.conversation_id)
        or original.conversation_id,
        in_reply_to=in_reply_to,
        references=references,
    )
    return await _submit(gateway, message)


async def send_test(gateway: Gateway, caller: Caller, email: str) -> Submission:
    """A test message from the caller's agent at `email` to itself."""
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
        conversation_id=None,
    )
    return await _submit(gateway, message)


async def _sender(gateway: Gateway, caller: Caller, requested: str | None) -> Agent:
    """The agent a send comes from: `from` when given, else the caller's only agent."""
    if requested is not None:
        try:
            return await owned_agent(gateway, caller, requested)
        except NotFound:
            raise Invalid(
                "invalid_from", f"'from' must be one of your agents; {requested} is not"
            ) from None
    agents = await owned_agents(gateway, caller)
    if len(agents) != 1:
        raise Invalid(
            "invalid_from",
            "give 'from': you have "
            + ("no agents" if not agents else f"{len(agents)} agents")
            + ", so the sender cannot be chosen for you",
        )
    return agents[0]


async def _check_rate(gateway: Gateway, agent: Agent, now: float) -> None:
    limit = gateway.settings.limits.sends_per_agent_per_minute
    since = now - SEND_RATE_WINDOW_SECONDS
    if await gateway.storage.count_recent_outbound(agent.email, since) >= limit:
        raise RateLimited(
            "rate_limited",
            f"{agent.email} may send {limit} messages per minute; try again shortly",
            SEND_RATE_WINDOW_SECONDS,
        )


async def _refuse_suppressed(gateway: Gateway, agent: Agent, recipients: list[str]) -> None:
    """Unprocessable (`recipient_suppressed`) when the account, or this agent, suppressed any
    of `recipients` (a hard bounce, or by hand): the send is refused whole, never partly
    dropped."""
    addresses = list(dict.fromkeys(address.strip().lower() for address in recipients))
    suppressed = await gateway.storage.suppressed_among(agent.user_id, agent.email, addresses)
    if suppressed:
        listed = ", ".join(suppressed)
        raise Unprocessable(
            "recipient_suppressed",
            f"not sent: {listed} is on the suppression list (a hard bounce, or added by hand); "
            f"remove it from the recipients, or lift it with "
            f"DELETE /v1/account/suppressions/{suppressed[0]}?confirm=DELETE",
        )


async def _method(gateway: Gateway, recipients: list[str]) -> Literal["smtp", "local"]:
    """`local` when every recipient is an agent of this deployment, else `smtp`."""
    for address in recipients:
        if await gateway.storage.find_agent(address) is None:
            return "smtp"
    return "local"


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
) -> OutboundMessage:
    now = time.time()
    await _check_rate(gateway, agent, now)
    await _refuse_suppressed(gateway, agent, [*to, *cc, *bcc])
    held = agent.hitl_enabled
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
    )


async def _submit(gateway: Gateway, message: OutboundMessage) -> Submission:
    """Store the message (with its send job or approval notice, whose commit wakes the worker);
    for a message queued to send, wait up to SEND_WAIT_SECONDS for the first attempt's outcome
    (handed off, failed, or deferred: an error recorded while it stays queued).

    Raises Undeliverable (`send_failed`) when it failed meanwhile: nothing was sent."""
    await gateway.storage.add_outbound(message)
    status, error = message.status, None
    if lifecycle.awaits_review(status):
        return Submission(message, status)
    with trio.move_on_after(SEND_WAIT_SECONDS):
        while status in lifecycle.AWAITING_HAND_OFF and error is None:
            await trio.sleep(SEND_POLL_SECONDS)
            current = await gateway.storage.get_outbound(message.user_id, message.id)
            if current is not None:
                status, error = current.status, current.send_error
    if status in (FAILED, BOUNCED):
        raise Undeliverable(
            "send_failed",
            f"message {message.id} was not sent: {error or 'no reason recorded'} "
            f"(kept as {status}: GET /api/v1/messages/{message.id})",
        )
    return Submission(message, status)
