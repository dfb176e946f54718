"""How protection configs, held messages and review outcomes look on e2a's `/v1` (its
ProtectionConfigView, ReviewView, MessageView of a held message, SendResultView,
RejectResultView). Pure functions, but for the clock an approval's answer reads."""

from __future__ import annotations

import base64
import time
from typing import Any

from e2a_gateway.api.v1.message_views import received_content, review_status
from e2a_gateway.api.v1.parsed_view import split_off_loop
from e2a_gateway.api.v1.views import present
from e2a_gateway.attachments import attachment_meta_view
from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import inbound_authentication, verified_domain
from e2a_gateway.operations.drafts import draft_attachments
from e2a_gateway.operations.mailbox import parsed_body
from e2a_gateway.operations.review_queue import Resolved
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.storage.base import Agent, HeldMessage, InboundMessage, OutboundMessage


def outbound_gate(agent: Agent) -> dict[str, Any]:
    """The agent's outbound gate (an allowlist with no entry and action `review` holds every
    send: the approval hold `/api/v1` calls `hitl_enabled`)."""
    return {
        "policy": agent.outbound_gate_policy,
        "allowlist": list(agent.outbound_gate_allowlist),
        "action": agent.outbound_gate_action,
    }


def protection_view(agent: Agent) -> dict[str, Any]:
    """ProtectionConfigView of the agent."""
    return {
        "inbound": {
            "gate": {
                "policy": agent.inbound_gate_policy,
                "allowlist": list(agent.inbound_gate_allowlist),
                "action": agent.inbound_gate_action,
            },
            "scan": {"sensitivity": "off"},
        },
        "outbound": {"gate": outbound_gate(agent), "scan": {"sensitivity": "off"}},
        "holds": {
            "ttl_seconds": agent.hitl_ttl_seconds,
            "on_expiry": agent.hitl_expiration_action,
            "suppress_notifications": not agent.approval_notifications,
        },
    }


def review_item_view(item: HeldMessage) -> dict[str, Any]:
    """ReviewView: one message of the queue."""
    inbound = item.direction == "inbound"
    return present(
        id=item.id,
        agent_email=item.agent_email,
        direction=item.direction,
        conversation_id=item.conversation_id,
        subject=item.subject,
        to=item.to,
        review_status="pending_review",
        created_at=item.created_at,
        hold_reason=_inbound_hold(item.reason) if inbound else _outbound_hold(item.reason),
        flagged=True if item.reason else None,
        flag_reason=item.reason,
        scheduled_at=(
            format_timestamp(item.scheduled_at) if item.scheduled_at is not None else None
        ),
    ) | {
        "header_from": (item.from_addr or None) if inbound else item.agent_email,
        "envelope_from": (item.envelope_from or None) if inbound else None,
        "verified_domain": (
            verified_domain(item.from_addr, item.authentication_results) if inbound else None
        ),
    }


async def review_detail_view(message: OutboundMessage | InboundMessage) -> dict[str, Any]:
    """MessageView of a reviewed message: everything a reviewer decides on (mail received
    parsed in a worker thread, `parsed_body`)."""
    if isinstance(message, OutboundMessage):
        return _outbound_detail(message)
    body = await parsed_body(message.raw_message)
    parts = await split_off_loop(body.text, body.html)
    return _inbound_detail(message) | received_content(body, parts)


def send_result_view(resolved: Resolved) -> tuple[dict[str, Any], int]:
    """SendResultView of an approval and its status: 202 `accepted` for an outbound draft now
    queued for sending, 200 `review_approved` for an inbound hold delivered."""
    return approval_view(resolved.message_id, resolved.outbound)


def approval_view(message_id: str, outbound: OutboundMessage | None) -> tuple[dict[str, Any], int]:
    """SendResultView of the approval of `message_id`: the outbound draft `outbound` (202
    `accepted`, or `scheduled` with `scheduled_at` while its `send_at` is ahead), or an
    inbound hold when None (200 `review_approved`)."""
    if outbound is not None:
        view = {"status": "accepted", "message_id": outbound.id, "edited": outbound.edited}
        if outbound.scheduled_at is not None and outbound.scheduled_at > time.time():
            view |= {"status": "scheduled", "scheduled_at": format_timestamp(outbound.scheduled_at)}
        return view, 202
    return {"status": "review_approved", "message_id": message_id}, 200


def reject_result_view(resolved: Resolved) -> dict[str, Any]:
    """RejectResultView of a rejection."""
    outbound = resolved.outbound
    reason = outbound.rejection_reason if outbound is not None else resolved.reason
    return present(
        status="review_rejected", message_id=resolved.message_id, rejection_reason=reason
    )


def _inbound_hold(reason: str | None) -> dict[str, Any]:
    """Why inbound mail waits: the inbound gate, in e2a's words, and the gate's own reason
    as the detail."""
    return present(
        type="gate",
        code="sender_gate",
        summary="This sender isn't allowed by the inbox policy.",
        detail=reason,
    )


def _outbound_hold(reason: str | None) -> dict[str, Any]:
    """Why a send waits: the outbound gate (a recipient it does not pass), in e2a's words, and
    the gate's own reason as the detail."""
    return present(
        type="gate",
        code="recipient_gate",
        summary="One or more recipients aren't allowed by the inbox policy.",
        detail=reason,
    )


def _outbound_detail(message: OutboundMessage) -> dict[str, Any]:
    body = present(text=message.body_text, html=message.body_html)
    attachments = [
        attachment_meta_view(index, attachment)
        for index, attachment in enumerate(draft_attachments(message))
    ]
    expires = message.approval_expires_at
    return present(
        body=body,
        review_status=review_status(message.status, message.review_method),
        approval_expires_at=format_timestamp(expires) if expires is not None else None,
        rejection_reason=message.rejection_reason,
        hold_reason=_outbound_hold(message.flag_reason),
    ) | {
        "id": message.id,
        "header_from": message.agent_email,
        "envelope_from": None,
        "verified_domain": None,
        "authentication": None,
        "to": message.to,
        "cc": message.cc,
        "reply_to": [],
        "delivered_to": message.agent_email,
        "subject": message.subject,
        "conversation_id": message.conversation_id or "",
        "direction": "outbound",
        "read_status": "read",
        "labels": [],
        "created_at": message.created_at,
        "raw_message": None,
        "attachments": attachments,
    }


def _inbound_detail(message: InboundMessage) -> dict[str, Any]:
    """MessageView of an inbound hold, but its body and attachments (`received_content`)."""
    return {
        "id": message.id,
        "header_from": message.from_addr or None,
        "envelope_from": message.envelope_from or None,
        "verified_domain": verified_domain(message.from_addr, message.authentication_results),
        "authentication": inbound_authentication(
            message.from_addr, message.authentication_results, message.raw_message
        ),
        "to": message.to,
        "cc": message.cc,
        "reply_to": address_list(message.reply_to),
        "delivered_to": message.agent_email,
        "subject": message.subject,
        "conversation_id": message.conversation_id or "",
        "direction": "inbound",
        "read_status": message.status,
        "labels": [],
        "created_at": message.created_at,
        "raw_message": base64.b64encode(message.raw_message).decode("ascii"),
        "size_bytes": len(message.raw_message),
        "review_status": "pending_review"
        if message.hold == "pending_review"
        else "review_rejected",
        "hold_reason": _inbound_hold(message.flag_reason),
    }
