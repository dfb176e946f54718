"""Sending mail: `/send`, replies, test mail, and the review queue (list, approve, reject).

A request becomes one stored outbound message. An agent with HITL enabled gets 202
`pending_approval` and nothing leaves until a reviewer approves; otherwise the message is
queued for the send worker, and the answer waits briefly for the hand-off so callers usually
learn `sent` at once (`queued` when the relay is slow).
"""

from __future__ import annotations

import time
from typing import Any, Literal, get_args

import trio
from pydantic import BaseModel, Field
from quart import Blueprint, request

from e2a.addresses import AddressError, normalise_address
from e2a.api.agents import owned_agent
from e2a.api.auth import gateway, requires_user
from e2a.api.errors import ApiError, not_found
from e2a.api.requests import RequestBody, read_body
from e2a.clock import format_timestamp
from e2a.ids import new_id
from e2a.inbound.parse import summarise_headers
from e2a.outbound.mime import (
    InvalidDraft,
    check_header_value,
    decode_attachment,
    header_text,
    reply_subject,
)
from e2a.outbound.mime import new_message_id as rfc_message_id
from e2a.storage.base import (
    TERMINAL_STATUSES,
    Agent,
    NotPending,
    OutboundEdits,
    OutboundMessage,
    OutboundStatus,
    User,
)

blueprint = Blueprint("outbound", __name__)

SEND_WAIT_SECONDS = 5.0
SEND_POLL_SECONDS = 0.05
MAX_RECIPIENTS = 100
OUTBOUND_STATUSES: tuple[str, ...] = get_args(OutboundStatus)


class AttachmentIn(BaseModel):
    """An attachment in a request: base64 data."""

    model_config = RequestBody.model_config
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    data: str


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


class ApproveBody(RequestBody):
    """POST /messages/{id}/approve: optional edits."""

    subject: str | None = Field(default=None, max_length=998)
    body_text: str | None = None
    body_html: str | None = None
    to: list[str] | None = Field(default=None, min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] | None = Field(default=None, max_length=MAX_RECIPIENTS)
    bcc: list[str] | None = Field(default=None, max_length=MAX_RECIPIENTS)
    attachments: list[AttachmentIn] | None = Field(default=None, max_length=50)


class RejectBody(RequestBody):
    """POST /messages/{id}/reject."""

    reason: str | None = Field(default=None, max_length=1000)


def outbound_view(message: OutboundMessage) -> dict[str, Any]:
    """The Outbound message object (bodies only while not terminal)."""
    view: dict[str, Any] = {
        "id": message.id,
        "message_id": message.id,
        "agent_id": message.agent_email,
        "direction": "outbound",
        "type": message.kind,
        "to": message.to,
        "cc": message.cc,
        "bcc": message.bcc,
        "subject": message.subject,
        "conversation_id": message.conversation_id,
        "status": message.status,
        "approval_expires_at": (
            format_timestamp(message.approval_expires_at)
            if message.approval_expires_at is not None
            else None
        ),
        "created_at": message.created_at,
        "reviewed_at": message.reviewed_at,
        "rejection_reason": message.rejection_reason,
        "email_message_id": message.email_message_id,
        "method": message.method,
        "edited": message.edited,
    }
    if message.status not in TERMINAL_STATUSES:
        view["body_text"] = message.body_text
        view["body_html"] = message.body_html
        view["attachments"] = message.attachments or []
    if message.send_error and message.status in ("queued", "failed", "expired_rejected"):
        view["error"] = message.send_error
    return view


def _addresses(field: str, values: list[str]) -> list[str]:
    """Validated, lowercased, de-duplicated addresses; 400 naming the field otherwise."""
    found: list[str] = []
    for value in values:
        try:
            check_header_value(field, value)
            address = normalise_address(value)
        except InvalidDraft as exc:
            raise ApiError(400, "invalid_header", str(exc)) from None
        except AddressError as exc:
            raise ApiError(400, "invalid_email", f"{field}: {exc}") from None
        if address not in found:
            found.append(address)
    return found


def _attachments(items: list[AttachmentIn]) -> list[dict[str, str]]:
    """Checked attachments, kept base64 as sent."""
    try:
        for index, item in enumerate(items):
            decode_attachment(index, item.filename, item.content_type, item.data)
    except InvalidDraft as exc:
        raise ApiError(400, "invalid_attachment", str(exc)) from None
    return [item.model_dump() for item in items]


def _checked_text(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_header_value(field, value)
    except InvalidDraft as exc:
        raise ApiError(400, "invalid_header", str(exc)) from None


def _fits_header(message_id: str | None) -> bool:
    """Whether a Message-ID taken from received mail can be written into our headers."""
    try:
        check_header_value("message_id", message_id or "")
    except InvalidDraft:
        return False
    return bool(message_id)


async def _sender(user: User, requested: str | None) -> Agent:
    """The agent a send comes from: `from` when given, else the caller's only agent."""
    if requested is not None:
        try:
            return await owned_agent(user, requested)
        except ApiError:
            raise ApiError(
                400, "invalid_from", f"'from' must be one of your agents; {requested} is not"
            ) from None
    agents = await gateway().storage.list_agents(user.id)
    if len(agents) != 1:
        raise ApiError(
            400,
            "invalid_from",
            "give 'from': you have "
            + ("no agents" if not agents else f"{len(agents)} agents")
            + ", so the sender cannot be chosen for you",
        )
    return agents[0]


async def _check_rate(agent: Agent, now: float) -> None:
    limit = gateway().settings.limits.sends_per_agent_per_minute
    if await gateway().storage.count_recent_outbound(agent.email, now - 60) >= limit:
        raise ApiError(
            429,
            "rate_limited",
            f"{agent.email} may send {limit} messages per minute; try again shortly",
            {"Retry-After": "60"},
        )


async def _method(recipients: list[str]) -> Literal["smtp", "local"]:
    """`local` when every recipient is an agent of this deployment, else `smtp`."""
    for address in recipients:
        if await gateway().storage.find_agent(address) is None:
            return "smtp"
    return "local"


async def _submit(message: OutboundMessage) -> tuple[dict[str, Any], int]:
    """Store the message and answer as the contract says (202 held, 200 queued/sent)."""
    storage = gateway().storage
    await storage.add_outbound(message)
    if message.status == "pending_approval":
        gateway().hub.jobs_added()
        assert message.approval_expires_at is not None
        return {
            "status": "pending_approval",
            "message_id": message.id,
            "approval_expires_at": format_timestamp(message.approval_expires_at),
        }, 202
    gateway().hub.jobs_added()
    status: str = message.status
    with trio.move_on_after(SEND_WAIT_SECONDS):
        while status == "queued":
            await trio.sleep(SEND_POLL_SECONDS)
            current = await storage.get_outbound(message.user_id, message.id)
            status = current.status if current is not None else status
    return {"status": status, "message_id": message.id, "method": message.method}, 200


async def _new_message(
    user: User,
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
    await _check_rate(agent, now)
    held = agent.hitl_enabled
    return OutboundMessage(
        id=new_id("msg"),
        user_id=user.id,
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
        status="pending_approval" if held else "queued",
        approval_expires_at=now + agent.hitl_ttl_seconds if held else None,
        created_at=format_timestamp(now),
        created_epoch=now,
        method=await _method([*to, *cc, *bcc]),
    )


@blueprint.post("/send")
@requires_user
async def send(user: User) -> tuple[dict[str, Any], int]:
    """POST /send: a new message from one of the caller's agents."""
    body = await read_body(SendBody)
    agent = await _sender(user, body.from_)
    message = await _new_message(
        user,
        agent,
        kind="send",
        to=_addresses("to", body.to),
        cc=_addresses("cc", body.cc),
        bcc=_addresses("bcc", body.bcc),
        subject=_checked_text("subject", body.subject) or "",
        body=body.body,
        html=body.html_body,
        attachments=_attachments(body.attachments),
        conversation_id=_checked_text("conversation_id", body.conversation_id),
    )
    return await _submit(message)


@blueprint.post("/agents/<email>/messages/<message_id>/reply")
@requires_user
async def reply(user: User, email: str, message_id: str) -> tuple[dict[str, Any], int]:
    """POST …/reply: answer an inbound message, threaded."""
    body = await read_body(ReplyBody)
    agent = await owned_agent(user, email)
    original = await gateway().storage.read_inbound(user.id, agent.email, message_id)
    if original is None:
        raise not_found("message")
    recipient = original.reply_to or original.from_addr
    to = _addresses("to", [recipient])
    cc = _addresses("cc", body.cc)
    if body.reply_all:
        others = [a for a in [*original.to, *original.cc] if a not in (agent.email, *to)]
        cc = _addresses("cc", [*others, *cc])
    headers = summarise_headers(original.raw_message)
    in_reply_to = original.rfc_message_id if _fits_header(original.rfc_message_id) else None
    references = [ref for ref in headers.references if _fits_header(ref)]
    if in_reply_to and in_reply_to not in references:
        references.append(in_reply_to)
    message = await _new_message(
        user,
        agent,
        kind="reply",
        to=to,
        cc=cc,
        bcc=_addresses("bcc", body.bcc),
        subject=reply_subject(header_text(original.subject)),
        body=body.body,
        html=body.html_body,
        attachments=_attachments(body.attachments),
        conversation_id=_checked_text("conversation_id", body.conversation_id)
        or original.conversation_id,
        in_reply_to=in_reply_to,
        references=references,
    )
    return await _submit(message)


@blueprint.post("/agents/<email>/test")
@requires_user
async def send_test(user: User, email: str) -> tuple[dict[str, Any], int]:
    """POST /agents/{email}/test: a test message from the agent to itself."""
    agent = await owned_agent(user, email)
    message = await _new_message(
        user,
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
    return await _submit(message)


async def outbound_messages(
    user: User, status: str, agent_filter: str | None
) -> list[OutboundMessage]:
    """The caller's outbound messages in `status`, optionally of one of their agents."""
    if status not in OUTBOUND_STATUSES:
        raise ApiError(
            400, "invalid_request", f"status must be one of {', '.join(OUTBOUND_STATUSES)}"
        )
    agent_email = (await owned_agent(user, agent_filter)).email if agent_filter else None
    return await gateway().storage.list_outbound(user.id, status, agent_email)


async def outbound_message(user: User, message_id: str) -> OutboundMessage:
    """One of the caller's outbound messages, or 404."""
    message = await gateway().storage.get_outbound(user.id, message_id)
    if message is None:
        raise not_found("message")
    return message


@blueprint.get("/messages")
@requires_user
async def list_outbound(user: User) -> dict[str, Any]:
    """GET /messages?status=&agent=: the review queue by default."""
    messages = await outbound_messages(
        user, request.args.get("status", "pending_approval"), request.args.get("agent")
    )
    return {"messages": [outbound_view(message) for message in messages]}


@blueprint.get("/messages/<message_id>")
@requires_user
async def get_outbound(user: User, message_id: str) -> dict[str, Any]:
    """GET /messages/{id}."""
    return outbound_view(await outbound_message(user, message_id))


async def review_message(
    user: User, message_id: str, approve: bool, edits: OutboundEdits | None, reason: str | None
) -> OutboundMessage:
    """Approve (then wake the send worker) or reject a pending message of the caller, once:
    409 when it is no longer pending, 404 when it is not theirs."""
    try:
        message = await gateway().storage.review_outbound(
            user.id, message_id, approve, edits, reason, time.time()
        )
    except NotPending as exc:
        raise ApiError(
            409, "conflict", f"message is {exc}, not pending_approval; nothing was changed"
        ) from None
    if message is None:
        raise not_found("message")
    if approve:
        gateway().hub.jobs_added()
    return message


def approval_edits(body: ApproveBody) -> OutboundEdits:
    """The checked edits a reviewer asks for when approving."""
    return OutboundEdits(
        subject=_checked_text("subject", body.subject),
        body_text=body.body_text,
        body_html=body.body_html,
        to=_addresses("to", body.to) if body.to is not None else None,
        cc=_addresses("cc", body.cc) if body.cc is not None else None,
        bcc=_addresses("bcc", body.bcc) if body.bcc is not None else None,
        attachments=_attachments(body.attachments) if body.attachments is not None else None,
    )


@blueprint.post("/messages/<message_id>/approve")
@requires_user
async def approve(user: User, message_id: str) -> dict[str, Any]:
    """POST /messages/{id}/approve, optionally with edits (then `edited: true`)."""
    body = await read_body(ApproveBody, allow_empty=True)
    return outbound_view(await review_message(user, message_id, True, approval_edits(body), None))


@blueprint.post("/messages/<message_id>/reject")
@requires_user
async def reject(user: User, message_id: str) -> dict[str, Any]:
    """POST /messages/{id}/reject with an optional reason."""
    body = await read_body(RejectBody, allow_empty=True)
    return outbound_view(await review_message(user, message_id, False, None, body.reason))
