"""Reviewing outbound mail: the queue, one message, approve (optionally edited) or reject —
by the owner's API key, on the dashboard or by a magic link from the notice email (replies to
the notice are `e2a_gateway.inbound.approval_replies`). Each review records who made it and how.

Approving and rejecting go through one storage transition that succeeds once: a message no
longer awaiting review is a Conflict, so two approvals racing send the mail once.
"""

from __future__ import annotations

import re
import time

from pydantic import Field

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import idempotency, lifecycle, unsubscribe
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.drafts import (
    MAX_RECIPIENTS,
    AttachmentIn,
    checked_addresses,
    checked_attachments,
    checked_text,
    suppressed_refusal,
)
from e2a_gateway.operations.errors import Conflict, Gone, Invalid, NotFound
from e2a_gateway.operations.requests import RequestBody, Verbatim
from e2a_gateway.signing.magic_links import Action, TokenError, TokenExpired, link_key, verify_token
from e2a_gateway.storage.base import (
    AgentInTrash,
    NotPending,
    OutboundEdits,
    OutboundMessage,
    OutboundSummary,
    RecipientsSuppressed,
    ReviewedBy,
    ReviewMethod,
)

LINK_REJECTION_REASON = "rejected by the owner from the email link"
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class ApproveBody(RequestBody):
    """POST /messages/{id}/approve: optional edits."""

    subject: Verbatim | None = Field(default=None, max_length=998)
    body_text: Verbatim | None = None
    body_html: Verbatim | None = None
    to: list[str] | None = Field(default=None, min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] | None = Field(default=None, max_length=MAX_RECIPIENTS)
    bcc: list[str] | None = Field(default=None, max_length=MAX_RECIPIENTS)
    attachments: list[AttachmentIn] | None = Field(default=None, max_length=50)


class RejectBody(RequestBody):
    """POST /messages/{id}/reject."""

    reason: str | None = Field(default=None, max_length=1000)


class AlreadyResolved(Conflict):
    """A magic link's message is no longer awaiting review; `outbound` is how it stands now."""

    def __init__(self, outbound: OutboundMessage) -> None:
        super().__init__("conflict", f"message is {outbound.status}, not pending_approval")
        self.outbound = outbound


def agent_in_trash(message_id: str, agent_email: str) -> NotFound:
    """The refusal of a review of held mail whose agent is in the trash: out of the queue."""
    return NotFound(
        "not_found",
        f"message {message_id} is not in the review queue: its agent {agent_email} is in the "
        f"trash; restore it (POST /v1/agents/{agent_email}/restore) to review its held mail",
    )


async def outbound_messages(
    gateway: Gateway,
    caller: Caller,
    status: str,
    agent_filter: str | None,
    *,
    newest_first: bool = False,
) -> list[OutboundMessage]:
    """The caller's outbound messages in `status`, optionally of one of their agents, in
    storage's order (`list_outbound`: a bounded list, the most recent with `newest_first`)."""
    agent_email = await _listed_agent(gateway, caller, status, agent_filter)
    return await gateway.storage.list_outbound(
        caller.user_id, status, agent_email, newest_first=newest_first
    )


async def outbound_summaries(
    gateway: Gateway,
    caller: Caller,
    status: str | None,
    agent_filter: str | None,
    limit: int,
    after_seq: int | None,
    *,
    by_deadline: bool = False,
    preview_chars: int | None = None,
    body_chars: int | None = None,
) -> list[OutboundSummary]:
    """A page of the caller's outbound messages (in `status`, of one of their agents, when
    given) without their whole bodies or attachments' contents, as
    `Outbox.outbound_summaries` orders, previews and cuts them: what a list shows, however
    large the mail."""
    agent_email = await _listed_agent(gateway, caller, status, agent_filter)
    return await gateway.storage.outbound_summaries(
        caller.user_id,
        status,
        agent_email,
        limit,
        after_seq,
        by_deadline=by_deadline,
        preview_chars=preview_chars,
        body_chars=body_chars,
    )


async def _listed_agent(
    gateway: Gateway, caller: Caller, status: str | None, agent_filter: str | None
) -> str | None:
    """The address of the caller's agent `agent_filter` a listing of outbound mail in
    `status` (None: any) is limited to, if any; Invalid for a status e2a has not, NotFound
    for an agent not theirs."""
    caller.require_account("list the review queue")
    if status is not None and status not in lifecycle.STATES:
        raise Invalid("invalid_request", f"status must be one of {', '.join(lifecycle.STATES)}")
    agent = await owned_agent(gateway, caller, agent_filter) if agent_filter else None
    return agent.email if agent else None


async def outbound_message(gateway: Gateway, caller: Caller, message_id: str) -> OutboundMessage:
    """One of the caller's outbound messages, or NotFound (also when it or its agent is in
    the trash)."""
    caller.require_account("review messages")
    message = await gateway.storage.get_outbound(caller.user_id, message_id, live=True)
    if message is None:
        raise NotFound.of("message")
    return message


def approval_edits(request: ApproveBody) -> OutboundEdits:
    """The checked edits a reviewer asks for when approving."""
    return OutboundEdits(
        subject=checked_text("subject", request.subject),
        body_text=request.body_text,
        body_html=request.body_html,
        to=checked_addresses("to", request.to) if request.to is not None else None,
        cc=checked_addresses("cc", request.cc) if request.cc is not None else None,
        bcc=checked_addresses("bcc", request.bcc) if request.bcc is not None else None,
        attachments=(
            checked_attachments(request.attachments) if request.attachments is not None else None
        ),
    )


async def approve(
    gateway: Gateway,
    caller: Caller,
    message_id: str,
    request: ApproveBody,
    method: ReviewMethod = "api",
) -> OutboundMessage:
    """Approve a held message of the caller, with the edits `request` asks for (the commit
    queues its send and wakes the send worker), recorded as theirs by `method`; Conflict when
    it is no longer held, NotFound when it is not theirs."""
    caller.require_account("approve held messages")
    edits = approval_edits(request)
    by = ReviewedBy(method, caller.user.email)
    return await _review(gateway, caller.user_id, message_id, True, edits, None, time.time(), by)


async def reject(
    gateway: Gateway,
    caller: Caller,
    message_id: str,
    reason: str | None,
    method: ReviewMethod = "api",
) -> OutboundMessage:
    """Reject a held message of the caller, keeping `reason` with it, recorded as theirs by
    `method`; Conflict when it is no longer held, NotFound when it is not theirs."""
    caller.require_account("reject held messages")
    by = ReviewedBy(method, caller.user.email)
    return await _review(gateway, caller.user_id, message_id, False, None, reason, time.time(), by)


async def _review(
    gateway: Gateway,
    user_id: str | None,
    message_id: str,
    approve: bool,
    edits: OutboundEdits | None,
    reason: str | None,
    now: float,
    by: ReviewedBy,
) -> OutboundMessage:
    if approve and edits is not None:
        await _edits_keep_one_recipient(gateway, user_id, message_id, edits)
    try:
        message = await gateway.storage.review_outbound(
            user_id, message_id, approve, edits, reason, now, by=by, settles=idempotency.held_key()
        )
    except AgentInTrash as exc:
        raise agent_in_trash(message_id, exc.agent_email) from None
    except NotPending as exc:
        raise Conflict(
            "conflict", f"message is {exc}, not pending_approval; nothing was changed"
        ) from None
    except RecipientsSuppressed as exc:
        refused = "not approved (the message stays held)"
        raise suppressed_refusal(
            exc.addresses, exc.agent_email, refused, ", and approve again"
        ) from None
    if message is None:
        raise NotFound.of("message")
    return message


async def _edits_keep_one_recipient(
    gateway: Gateway, user_id: str | None, message_id: str, edits: OutboundEdits
) -> None:
    """Invalid when `edits` give a held message that opted into managed unsubscribe other than
    one recipient (the message stays held). Its recipients change only by an approval, which
    settles it, so they are the same when the approval is stored."""
    if edits.to is None and edits.cc is None and edits.bcc is None:
        return
    message = await gateway.storage.get_outbound(user_id, message_id)
    if message is None or message.unsubscribe is None:
        return
    unsubscribe.check_recipients(
        message.unsubscribe,
        to=message.to if edits.to is None else edits.to,
        cc=message.cc if edits.cc is None else edits.cc,
        bcc=message.bcc if edits.bcc is None else edits.bcc,
    )


def past_deadline(message: OutboundMessage, now: float) -> bool:
    """Whether `message`'s review deadline has passed at `now`: from then on no review is
    taken, its agent's expiration action decides it, even before the expiry sweep comes."""
    deadline = message.approval_expires_at
    return lifecycle.awaits_review(message.status) and deadline is not None and deadline <= now


async def expiration_action(gateway: Gateway, message: OutboundMessage) -> str:
    """What happens to `message` at its deadline: its agent's `hitl_expiration_action`
    (`reject` when the agent cannot be read)."""
    agent = await gateway.storage.get_agent(message.user_id, message.agent_email)
    return agent.hitl_expiration_action if agent is not None else "reject"


async def message_for_link(
    gateway: Gateway, token: str, action: Action, now: float
) -> OutboundMessage:
    """The message a genuine, unexpired `action` token names: Invalid for a token that is not
    genuine or not for `action`, Gone once expired, NotFound when the message is gone. The
    token is checked against the gateway's magic-link key before anything is read."""
    invalid = Invalid("invalid_link", "This link is not valid. Was it copied whole?")
    try:
        verified = verify_token(link_key(gateway.server_key), token, now)
    except TokenExpired:
        raise Gone("link_expired", "This link has expired.") from None
    except TokenError:
        raise invalid from None
    if verified.action != action or not _MESSAGE_ID.fullmatch(verified.message_id):
        raise invalid
    message = await gateway.storage.get_outbound(None, verified.message_id, live=True)
    if message is None:
        raise NotFound(
            "not_found", "This message no longer exists, or its agent was deleted (in the trash)."
        )
    return message


async def act_on_link(
    gateway: Gateway, message: OutboundMessage, action: Action, now: float
) -> OutboundMessage:
    """Perform a magic link's `action` on `message` (from `message_for_link`), once:
    AlreadyResolved when it was resolved meanwhile, NotFound when it is gone."""
    approve = action == "approve"
    reason = None if approve else LINK_REJECTION_REASON
    try:
        return await _review(
            gateway, None, message.id, approve, None, reason, now, ReviewedBy("link")
        )
    except Conflict:
        current = await gateway.storage.get_outbound(None, message.id)
        raise AlreadyResolved(current or message) from None
    except NotFound:
        raise NotFound("not_found", "This message no longer exists.") from None
