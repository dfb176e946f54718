"""The MCP tools of the review queue (outbound drafts held for a person's approval and inbound
mail an agent's gate holds) under every name e2a has given them: `*_pending_message` (its first
server), `*_review` (its current one) and `approve_message`/`reject_message` (between the two).
All of them work on `/v1`'s review queue, as e2a's current server's do.

Approving and rejecting act with the key owner's authority: account keys may review, keys bound
to one agent may not (docs/mcp.md, "Approvals"), and the operations decide it, not this module.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from e2a_gateway.mcp.answers import listed, review
from e2a_gateway.mcp.bounds import bounded_row
from e2a_gateway.mcp.mailbox_tools import present
from e2a_gateway.mcp.toolkit import (
    Arguments,
    AttachmentArgument,
    NoArguments,
    PageArguments,
    ToolCaller,
    ToolSpec,
    idempotency_key,
)

MessageIdArgument = Field(min_length=1, description="The held message's id (from a list).")
APPROVAL_KEY = "The held message's id makes a natural key (a fresh one if you change the edits)."


class HeldMessageArguments(Arguments):
    """A held message."""

    message_id: str = MessageIdArgument


class ApprovePendingArguments(Arguments):
    """Arguments of approve_pending_message: the edits under e2a's first names."""

    message_id: str = MessageIdArgument
    subject: str | None = Field(default=None, description="Replace the subject.")
    body_text: str | None = Field(default=None, description="Replace the plain-text body.")
    body_html: str | None = Field(default=None, description="Replace the HTML body.")
    to: list[str] | None = Field(default=None, description="Replace the recipients.")
    cc: list[str] | None = Field(default=None, description="Replace the Cc: addresses.")
    bcc: list[str] | None = Field(default=None, description="Replace the Bcc: addresses.")
    attachments: list[AttachmentArgument] | None = Field(
        default=None,
        max_length=50,
        description="Replace the attachments (at most 50); an empty list removes them all.",
    )
    idempotency_key: str | None = idempotency_key(APPROVAL_KEY)


class ApproveReviewArguments(Arguments):
    """Arguments of approve_review and approve_message: the edits under e2a's current names."""

    message_id: str = MessageIdArgument
    subject: str | None = Field(default=None, description="Replace the subject.")
    text: str | None = Field(default=None, description="Replace the plain-text body.")
    html: str | None = Field(default=None, description="Replace the HTML body.")
    to: list[str] | None = Field(default=None, description="Replace the recipients.")
    cc: list[str] | None = Field(default=None, description="Replace the Cc: addresses.")
    bcc: list[str] | None = Field(default=None, description="Replace the Bcc: addresses.")
    attachments: list[AttachmentArgument] | None = Field(
        default=None,
        max_length=50,
        description="Replace the attachments (at most 50); an empty list removes them all.",
    )
    idempotency_key: str | None = idempotency_key(APPROVAL_KEY)


class RejectArguments(Arguments):
    """Arguments of every reject tool."""

    message_id: str = MessageIdArgument
    reason: str | None = Field(default=None, description="Why (kept with the message).")


MAX_QUEUE_PAGES = 100
"""list_pending_messages reads at most this many pages of 100 (the whole queue, all at once)."""


async def list_pending_messages(caller: ToolCaller, _: NoArguments) -> dict[str, Any]:
    """Every message of the account held for review (`{"messages": […]}`, e2a's first
    answer), read page by page."""
    held: list[Any] = []
    query: dict[str, Any] = {"limit": 100}
    for _page in range(MAX_QUEUE_PAGES):
        page = await caller.port.list_reviews(query)
        held.extend(bounded_row(item) for item in page["items"])
        if not page.get("next_cursor"):
            break
        query = {"limit": 100, "cursor": page["next_cursor"]}
    return {"messages": held}


async def list_reviews(caller: ToolCaller, arguments: PageArguments) -> dict[str, Any]:
    """One page of the account's review queue, newest first."""
    page = await caller.port.list_reviews(present(arguments, "cursor", "limit"))
    rows = [bounded_row(item) for item in page["items"]]
    return listed("reviews", rows, page.get("next_cursor"))


async def get_review(caller: ToolCaller, arguments: HeldMessageArguments) -> dict[str, Any]:
    """One reviewed message of the account, without its raw bytes."""
    return review(await caller.port.get_review(arguments.message_id))


async def approve_pending_message(
    caller: ToolCaller, arguments: ApprovePendingArguments
) -> dict[str, Any]:
    """Approve a held message, optionally edited (e2a's first argument names): `/v1`'s send
    result, as e2a answers."""
    edits = {
        "subject": arguments.subject,
        "text": arguments.body_text,
        "html": arguments.body_html,
        "to": arguments.to,
        "cc": arguments.cc,
        "bcc": arguments.bcc,
        "attachments": arguments.model_dump()["attachments"],  # [] removes them all
    }
    return await _approve(caller, arguments.message_id, edits, arguments.idempotency_key)


async def approve_review(caller: ToolCaller, arguments: ApproveReviewArguments) -> dict[str, Any]:
    """Approve a held message, optionally edited (e2a's current argument names): `/v1`'s send
    result, as e2a answers."""
    edits = arguments.model_dump(exclude={"message_id", "idempotency_key"})
    return await _approve(caller, arguments.message_id, edits, arguments.idempotency_key)


async def _approve(
    caller: ToolCaller, message_id: str, edits: dict[str, Any], key: str | None
) -> dict[str, Any]:
    """Approve through `/v1`'s approveReview with the edits given and the idempotency key."""
    fields = {name: value for name, value in edits.items() if value is not None}
    return await caller.port.approve_review(message_id, fields, key)


async def reject(caller: ToolCaller, arguments: RejectArguments) -> dict[str, Any]:
    """Reject a held message of either direction: `/v1`'s reject result."""
    fields = {"reason": arguments.reason} if arguments.reason else {}
    return await caller.port.reject_review(arguments.message_id, fields)


OWNER_ONLY = (
    " This is the account owner's decision: only call it when the person you work for asked you to."
)
APPROVE = (
    "Approve a message held for review. Outbound (a draft awaiting approval): it is sent; "
    "approve as it is with message_id alone, or edit it first with any of the other "
    "arguments; answers status accepted (queued to send; the outcome comes later). Inbound "
    "(mail the agent's gate held): it is delivered to the agent's inbox as it arrived "
    "(edits are refused, 400); answers status review_approved. A message no longer held is "
    "refused (409 message_not_pending); pass an idempotency_key to retry safely." + OWNER_ONLY
)
REJECT = (
    "Reject a message held for review: an outbound draft is never sent, an inbound hold "
    "never reaches the agent; `reason` is kept with it. Answers status review_rejected. A "
    "message no longer held is refused (409 message_not_pending)." + OWNER_ONLY
)

REVIEW_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "list_reviews",
        "List messages awaiting review",
        "List the messages of every agent of the account held for a person's review, newest "
        "first: outgoing drafts awaiting approval and incoming mail an agent's gate held, "
        "each with its direction, recipients, subject and hold_reason (no body: get_review "
        "has it). Pass next_cursor back as `cursor` while it is present. Then approve_review "
        "or reject_review by id.",
        PageArguments,
        list_reviews,
    ),
    ToolSpec(
        "get_review",
        "Get a review",
        "One message held for review (an outgoing draft, or decided since; or incoming mail "
        "still held): sender and its authentication, recipients, subject, body as text and "
        "html, attachments as metadata, review_status and hold_reason. No raw message.",
        HeldMessageArguments,
        get_review,
    ),
    ToolSpec(
        "approve_review",
        "Approve a held message",
        APPROVE,
        ApproveReviewArguments,
        approve_review,
        read_only=False,
    ),
    ToolSpec(
        "reject_review",
        "Reject a held message",
        REJECT,
        RejectArguments,
        reject,
        read_only=False,
        destructive=True,
    ),
    ToolSpec(
        "list_pending_messages",
        "List messages awaiting review",
        "List every message of the account held for a person's review, outgoing and "
        "incoming, as list_reviews does, all at once in `messages` (e2a's first name for "
        "list_reviews).",
        NoArguments,
        list_pending_messages,
        replaced_by="list_reviews",
    ),
    ToolSpec(
        "get_pending_message",
        "Get a held message",
        "One message held for review, as get_review answers it (e2a's first name for get_review).",
        HeldMessageArguments,
        get_review,
        replaced_by="get_review",
    ),
    ToolSpec(
        "approve_pending_message",
        "Approve a held message",
        APPROVE + " (e2a's first name for approve_review, with body_text and body_html.)",
        ApprovePendingArguments,
        approve_pending_message,
        read_only=False,
        replaced_by="approve_review",
    ),
    ToolSpec(
        "reject_pending_message",
        "Reject a held message",
        REJECT + " (e2a's first name for reject_review.)",
        RejectArguments,
        reject,
        read_only=False,
        destructive=True,
        replaced_by="reject_review",
    ),
    ToolSpec(
        "approve_message",
        "Approve a held message",
        "Same arguments as approve_review. " + APPROVE,
        ApproveReviewArguments,
        approve_review,
        read_only=False,
        replaced_by="approve_review",
    ),
    ToolSpec(
        "reject_message",
        "Reject a held message",
        "Same arguments as reject_review. " + REJECT,
        RejectArguments,
        reject,
        read_only=False,
        destructive=True,
        replaced_by="reject_review",
    ),
)
