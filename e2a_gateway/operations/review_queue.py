"""The review queue as e2a's `/v1` has it: outbound drafts awaiting approval and inbound mail an
agent's gate held, in one queue addressed by message id alone. Account keys only: an agent can
neither see nor resolve its own holds.

Approving an outbound draft sends it (with the reviewer's edits); approving an inbound hold
delivers it to the agent; rejecting drops either. Each resolves once: a message no longer
waiting is a Conflict `message_not_pending`. The held mail of an agent in the trash is out of the
queue: not listed, and NotFound to review until the agent is restored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import idempotency, lifecycle, reviews
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.drafts import (
    V1_BAD_RECIPIENT,
    AttachmentIn,
    edits_within_bounds,
    mailbox_addresses,
)
from e2a_gateway.operations.errors import Conflict, NotFound
from e2a_gateway.operations.rate_limits import NamedLimit, count_request
from e2a_gateway.operations.requests import RequestBody, Verbatim, parse_request
from e2a_gateway.operations.reviews import ApproveBody
from e2a_gateway.operations.templates import MAX_SUBJECT_CHARS
from e2a_gateway.rate_windows import RateLimit
from e2a_gateway.storage.base import (
    AgentInTrash,
    HeldMessage,
    InboundMessage,
    NotPending,
    OutboundMessage,
)

APPROVAL_WINDOW_SECONDS = 60

QueuePosition = int
"""Where a page of the queue ended: the last item's `seq`."""


class ApproveReview(RequestBody):
    """POST /v1/reviews/{id}/approve: optional edits of an outbound draft (ignored for inbound)."""

    subject: Verbatim | None = Field(default=None, max_length=MAX_SUBJECT_CHARS)
    text: Verbatim | None = Field(default=None, max_length=1048576)
    html: Verbatim | None = Field(default=None, max_length=1048576)
    to: list[str] | None = None  # to, cc and bcc: at most 50 together (edits_within_bounds)
    cc: list[str] | None = None
    bcc: list[str] | None = None
    attachments: list[AttachmentIn] | None = Field(default=None, max_length=50)


class _V1Edits(ApproveBody):
    """The gateway's approval edits as `/v1` bounds them: a subject as long as `/v1`'s
    sendMessage takes (MAX_SUBJECT_CHARS; ApproveBody's 998 is `/api/v1`'s, whose send takes
    998), so a reviewer may give any subject the agent could have sent."""

    subject: Verbatim | None = Field(default=None, max_length=MAX_SUBJECT_CHARS)


class RejectReview(RequestBody):
    """POST /v1/reviews/{id}/reject."""

    reason: str | None = Field(default=None, max_length=2000)


@dataclass(frozen=True)
class Resolved:
    """A review resolved: which way the message went, and the message as it stands now."""

    direction: Literal["inbound", "outbound"]
    outbound: OutboundMessage | None = None
    inbound: InboundMessage | None = None
    reason: str | None = None
    """The reviewer's reason for rejecting inbound mail (a draft keeps its own)."""

    @property
    def message_id(self) -> str:
        """The id of the message reviewed."""
        message = self.outbound or self.inbound
        assert message is not None
        return message.id


async def queue_page(
    gateway: Gateway, caller: Caller, limit: int, after: QueuePosition | None
) -> list[HeldMessage]:
    """Up to `limit` of the account's messages waiting for review, newest first."""
    caller.require_account("list the review queue")
    return await gateway.storage.review_queue(caller.user_id, limit, after)


async def review_detail(
    gateway: Gateway, caller: Caller, message_id: str
) -> OutboundMessage | InboundMessage:
    """One reviewed message of the account: an outbound draft (in whatever state its review
    left it) or an inbound message still held."""
    caller.require_account("review held messages")
    outbound = await gateway.storage.get_outbound(caller.user_id, message_id, live=True)
    if outbound is not None:
        return outbound
    inbound = await gateway.storage.held_inbound(caller.user_id, message_id)
    if inbound is None:
        raise NotFound("not_found", "no held message with this id in your account")
    return inbound


async def approve(
    gateway: Gateway, caller: Caller, message_id: str, request: ApproveReview
) -> Resolved:
    """Approve a held message: an outbound draft is queued for sending with the edits asked
    for; an inbound hold is delivered to its agent as it arrived (edits are ignored)."""
    caller.require_account("approve held messages")
    outbound = await gateway.storage.get_outbound(caller.user_id, message_id)
    if outbound is not None:
        if lifecycle.awaits_review(outbound.status):
            edits_within_bounds(
                outbound,
                to=request.to,
                cc=request.cc,
                bcc=request.bcc,
                subject=request.subject,
                text=request.text,
                html=request.html,
                attachments=request.attachments,
            )
        # checked as the gateway's own approval is (`to` not empty), its recipients first taken
        # as a send takes them (`edited_recipients`)
        asked = request.model_dump(exclude_none=True) | edited_recipients(request)
        renamed = {"text": "body_text", "html": "body_html"}
        edits = parse_request(_V1Edits, {renamed.get(k, k): v for k, v in asked.items()})
        if lifecycle.awaits_review(outbound.status):
            await _count_approval(gateway, outbound)
        try:
            sent = await reviews.approve(gateway, caller, message_id, edits)
        except Conflict as exc:
            raise _not_pending(exc.message) from None
        return Resolved("outbound", outbound=sent)
    # an inbound hold is delivered as it arrived: edits are ignored for it, as e2a's server
    # ignores them (docs/api.md)
    inbound = await _release(gateway, caller.user_id, message_id, True)
    return Resolved("inbound", inbound=inbound)


def edited_recipients(request: ApproveReview) -> dict[str, list[str]]:
    """The recipients `request` edits, each mailbox as `/v1`'s sendMessage takes it (a display
    name allowed, the address kept; Invalid `invalid_recipient` naming the field otherwise)."""
    fields = {"to": request.to, "cc": request.cc, "bcc": request.bcc}
    return {
        field: mailbox_addresses(field, values, code=V1_BAD_RECIPIENT)
        for field, values in fields.items()
        if values is not None
    }


async def _count_approval(gateway: Gateway, draft: OutboundMessage) -> None:
    """Count the approval of `draft`, a held send (e2a weighs each one as a send:
    `limits.sends_per_agent_per_minute` approvals of the agent's drafts in any minute, counted
    by its owner and address as the send limit is); RateLimited, approving nothing, past it."""
    agent_email = draft.agent_email
    limit = RateLimit(
        f"send_approval:agent:{draft.user_id}:{agent_email}",
        APPROVAL_WINDOW_SECONDS,
        gateway.settings.limits.sends_per_agent_per_minute,
    )
    await count_request(gateway, NamedLimit(limit, f"approved sends per minute for {agent_email}"))


async def approved(gateway: Gateway, caller: Caller, message_id: str) -> OutboundMessage | None:
    """The caller's outbound draft `message_id` as it stands, or None for an inbound hold, for
    an approveReview retried after its first request approved it and died before it
    answered."""
    caller.require_account("approve held messages")
    return await gateway.storage.get_outbound(caller.user_id, message_id)


async def reject(
    gateway: Gateway, caller: Caller, message_id: str, request: RejectReview
) -> Resolved:
    """Reject a held message: an outbound draft is never sent; an inbound hold never reaches
    its agent (kept hidden)."""
    caller.require_account("reject held messages")
    outbound = await gateway.storage.get_outbound(caller.user_id, message_id)
    if outbound is not None:
        try:
            dropped = await reviews.reject(gateway, caller, message_id, request.reason)
        except Conflict as exc:
            raise _not_pending(exc.message) from None
        return Resolved("outbound", outbound=dropped)
    inbound = await _release(gateway, caller.user_id, message_id, False, request.reason)
    return Resolved("inbound", inbound=inbound, reason=request.reason)


async def _release(
    gateway: Gateway,
    user_id: str | None,
    message_id: str,
    approve: bool,
    reason: str | None = None,
) -> InboundMessage:
    try:
        message = await gateway.storage.release_inbound(
            user_id, message_id, approve, time.time(), idempotency.held_key(), reason
        )
    except AgentInTrash as exc:
        raise reviews.agent_in_trash(message_id, exc.agent_email) from None
    except NotPending as exc:
        raise _not_pending(f"message is {exc}, not pending_review; nothing was changed") from None
    if message is None:
        raise NotFound("not_found", "no held message with this id in your account")
    if approve:  # delivered now: its agent's live listeners hear of it, as on arrival
        agent = await gateway.storage.find_agent(message.agent_email)
        if agent is not None:
            gateway.hub.publish_message(agent.id, message)
    return message


def _not_pending(message: str) -> Conflict:
    return Conflict("message_not_pending", message)
