"""How stored rows look in e2a's 2.x contract (contract/rest.md objects), for every face that
shows them: REST answers, the dashboard's pages, MCP tool results. Pure functions, no I/O."""

from __future__ import annotations

import base64
from typing import Any

from e2a_gateway import __version__
from e2a_gateway.clock import format_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.inbound.parse import ParsedBody
from e2a_gateway.operations import lifecycle
from e2a_gateway.operations.agents import AgentEntry
from e2a_gateway.operations.sending import Submission
from e2a_gateway.outbound.dkim_signing import DkimKeyRecord
from e2a_gateway.outbound.rollup import reported_error
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.storage.base import (
    ApiKey,
    Domain,
    FiledMessage,
    InboundMessage,
    InboxEntry,
    OutboundMessage,
    OutboundSummary,
    SigningSecret,
)
from e2a_gateway.storage.vocabulary import SENT


def agent_view(entry: AgentEntry) -> dict[str, Any]:
    """The Agent object."""
    agent = entry.agent
    return {
        "id": agent.email,
        "email": agent.email,
        "domain": agent.domain,
        "name": agent.name,
        "webhook_url": agent.webhook_url,
        "agent_mode": agent.agent_mode,
        "domain_verified": entry.domain_verified,
        "hitl_enabled": agent.hitl_enabled,
        "hitl_ttl_seconds": agent.hitl_ttl_seconds,
        "hitl_expiration_action": agent.hitl_expiration_action,
        "approval_notifications": agent.approval_notifications,
        "created_at": agent.created_at,
    }


def domain_view(
    domain: Domain,
    mx_host: str,
    dkim: DkimKeyRecord | None,
    dkim_next: DkimKeyRecord | None = None,
) -> dict[str, Any]:
    """The Domain object, with the DNS records its owner must publish: the MX to `mx_host`,
    the ownership TXT and, when outbound mail is signed, the `dkim` key record (`host` under
    the domain, as the others) and, while a key rotation is under way, `dkim_next`: the record
    of the key that signs after it, to publish beside the other before the switch."""
    records: dict[str, Any] = {
        "mx": {"host": "@", "value": mx_host, "priority": 10},
        "txt": {"host": "@", "value": domain.verification_token},
    }
    if dkim is not None:
        records["dkim"] = {"host": dkim.host, "value": dkim.value}
    if dkim_next is not None:
        records["dkim_next"] = {"host": dkim_next.host, "value": dkim_next.value}
    return {
        "domain": domain.domain,
        "verified": domain.verified,
        "verification_token": domain.verification_token,
        "dns_records": records,
        "created_at": domain.created_at,
        "verified_at": domain.verified_at,
    }


def signing_secret_view(secret: SigningSecret) -> dict[str, Any]:
    """A signing secret's metadata (never the secret itself)."""
    return {
        "id": secret.id,
        "name": secret.name,
        "secret_prefix": secret.secret_prefix,
        "created_at": secret.created_at,
        "last_signed_at": secret.last_signed_at,
    }


def api_key_view(key: ApiKey) -> dict[str, Any]:
    """An API key's metadata (prefix only): what it reaches (`scope`, and for an agent key
    `agent_email`, its agent's address while that agent is there) and until when it works
    (`expires_at`; None: never)."""
    return {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "scope": key.scope,
        "agent_email": key.agent_email,
        "expires_at": key.expires_at,
    }


def message_summary_view(message: InboundMessage | InboxEntry | FiledMessage) -> dict[str, Any]:
    """The inbound message summary used in lists; `reply_to` lists the addresses its Reply-To
    names, in order (the e2a 2.x SDK reads them there)."""
    return {
        "message_id": message.id,
        "from": message.from_addr,
        "to": message.to,
        "cc": message.cc,
        "reply_to": address_list(message.reply_to),
        "recipient": message.agent_email,
        "subject": message.subject,
        "conversation_id": message.conversation_id,
        "status": message.status,
        "created_at": message.created_at,
    }


def message_full_view(message: InboundMessage, body: ParsedBody) -> dict[str, Any]:
    """The full inbound message: summary, signed headers, raw bytes and its parsed `body`
    (`parsed_body`)."""
    view = message_summary_view(message)
    view.update(
        {
            "auth_headers": message.auth_headers,
            "raw_message": base64.b64encode(message.raw_message).decode("ascii"),
            "received_at": message.received_at,
            "text_body": body.text,
            "html_body": body.html,
            "attachments": [
                {
                    "filename": attachment.filename,
                    "content_type": attachment.content_type,
                    "size": attachment.size,
                    "content_id": attachment.content_id,
                }
                for attachment in body.attachments
            ],
            "authentication_results": message.authentication_results,
        }
    )
    if message.delivery_status is not None:
        view["delivery_status"] = message.delivery_status
    return view


def outbound_view(message: OutboundMessage) -> dict[str, Any]:
    """The Outbound message object: the body only while it is kept, what went wrong (the
    hand-off error, and the bounces reported since) only where it explains the state."""
    view = _outbound_envelope(message)
    if lifecycle.body_kept(message.status, handed_on=message.sent_at is not None):
        view["body_text"] = message.body_text
        view["body_html"] = message.body_html
        # as a request gives them (an inline image's Content-ID is the gateway's own)
        view["attachments"] = [
            {key: value for key, value in item.items() if key != "content_id"}
            for item in message.attachments or []
        ]
    view.update(_shown_error(message.status, message.send_error, message.recipient_results))
    return view


def outbound_content_view(summary: OutboundSummary) -> dict[str, Any]:
    """The Outbound message object of a summary read with its content (`body_chars`), as
    `outbound_view` shows the whole message but with the bodies as far as they were read and
    each attachment's decoded `size` in place of its `data`."""
    view = _outbound_envelope(summary)
    content = summary.content
    if content is not None and lifecycle.body_kept(
        summary.status, handed_on=summary.sent_at is not None
    ):
        view["body_text"] = content.text
        view["body_html"] = content.html
        view["attachments"] = [
            {"filename": item.filename, "content_type": item.content_type, "size": item.size}
            for item in content.attachments
        ]
    view.update(_shown_error(summary.status, summary.send_error, summary.recipient_results))
    return view


def _outbound_envelope(message: OutboundMessage | OutboundSummary) -> dict[str, Any]:
    """The fields of the Outbound message object every state shows."""
    return {
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
        "reviewed_by": message.reviewed_by,
        "review_method": message.review_method,
        "email_message_id": message.email_message_id,
        "method": message.method,
        "edited": message.edited,
        "sent_at": message.sent_at,
    }


def outbound_summary_view(summary: OutboundSummary) -> dict[str, Any]:
    """An outbound message as the dashboard's lists show it: the fields every state shows
    (`_outbound_envelope`) and the addresses of its Reply-To (`reply_to_addresses`), without
    body or attachments, with the preview read in their place, if any, and how many characters
    of the text it leaves out (`preview_left`)."""
    view = _outbound_envelope(summary)
    view["reply_to_addresses"] = address_list(summary.reply_to)
    if summary.preview is not None:
        view["preview"] = summary.preview
        view["preview_left"] = summary.preview.text_length - len(summary.preview.text or "")
    view.update(_shown_error(summary.status, summary.send_error, summary.recipient_results))
    return view


def _shown_error(status: str, send_error: str | None, results: dict[str, str]) -> dict[str, str]:
    """`{"error": …}` when what went wrong with an outbound message explains its `status`,
    else nothing."""
    error = reported_error(send_error, results)
    return {"error": error} if error and status in lifecycle.SEND_ERROR_SHOWN else {}


def submission_view(submission: Submission) -> dict[str, Any]:
    """The answer to a send, reply or test: the approval deadline while the message is held,
    else `sent` and how it travels.

    `sent` means durably accepted and not refused, whether or not the relay has answered yet:
    e2a 2.x said `sent` once a message was handed on, and its SDKs know no other word for
    accepted mail (docs/api.md). The message's own progress is on `GET /messages/{id}`."""
    message = submission.message
    if submission.held:
        assert message.approval_expires_at is not None
        return {
            "status": submission.status,
            "message_id": message.id,
            "approval_expires_at": format_timestamp(message.approval_expires_at),
        }
    return {"status": SENT, "message_id": message.id, "method": message.method}


def submission_answer(submission: Submission) -> tuple[dict[str, Any], int]:
    """A submission as `/api/v1` answers it: its view, 202 while held, else 200."""
    return submission_view(submission), 202 if submission.held else 200


def info_view(settings: Settings) -> dict[str, Any]:
    """What a client needs to know before it logs in (`GET /info`)."""
    return {
        "shared_domain": settings.shared_domain,
        "slug_registration_enabled": bool(settings.shared_domain),
        "public_url": settings.http.public_url,
        "version": __version__,
    }
