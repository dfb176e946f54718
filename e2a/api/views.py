"""How stored rows look on the wire (contract/rest.md objects). Pure functions, no I/O."""

from __future__ import annotations

import base64
from typing import Any

from e2a.inbound.parse import parse_body
from e2a.storage.base import Agent, ApiKey, Domain, InboundMessage, SigningSecret


def agent_view(agent: Agent, domain_verified: bool) -> dict[str, Any]:
    """The Agent object."""
    return {
        "id": agent.email,
        "email": agent.email,
        "domain": agent.domain,
        "name": agent.name,
        "webhook_url": agent.webhook_url,
        "agent_mode": agent.agent_mode,
        "domain_verified": domain_verified,
        "hitl_enabled": agent.hitl_enabled,
        "hitl_ttl_seconds": agent.hitl_ttl_seconds,
        "hitl_expiration_action": agent.hitl_expiration_action,
        "created_at": agent.created_at,
    }


def domain_view(domain: Domain, mx_host: str) -> dict[str, Any]:
    """The Domain object, with the DNS records its owner must publish."""
    return {
        "domain": domain.domain,
        "verified": domain.verified,
        "verification_token": domain.verification_token,
        "dns_records": {
            "mx": {"host": "@", "value": mx_host, "priority": 10},
            "txt": {"host": "@", "value": domain.verification_token},
        },
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
    """An API key's metadata (prefix only)."""
    return {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


def message_summary_view(message: InboundMessage) -> dict[str, Any]:
    """The inbound message summary used in lists."""
    return {
        "message_id": message.id,
        "from": message.from_addr,
        "to": message.to,
        "cc": message.cc,
        "recipient": message.agent_email,
        "subject": message.subject,
        "conversation_id": message.conversation_id,
        "status": message.status,
        "created_at": message.created_at,
    }


def message_full_view(message: InboundMessage) -> dict[str, Any]:
    """The full inbound message: summary, signed headers, raw bytes and parsed body."""
    body = parse_body(message.raw_message)
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
