"""Typed views of the gateway's JSON objects (contract/rest.md), as pydantic models.

Every field is optional and unknown fields are kept, so a newer gateway never breaks an
older SDK. No I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Agent(_Model):
    """An agent mailbox: its address, delivery mode and approval settings."""

    id: str | None = None
    email: str | None = None
    domain: str | None = None
    name: str | None = None
    webhook_url: str | None = None
    agent_mode: str | None = None
    domain_verified: bool | None = None
    hitl_enabled: bool | None = None
    hitl_ttl_seconds: int | None = None
    hitl_expiration_action: str | None = None
    created_at: str | None = None


class ListAgentsResponse(_Model):
    """`GET /agents`."""

    agents: list[Agent] = []


class Domain(_Model):
    """A custom domain and the DNS records that verify it."""

    domain: str | None = None
    verified: bool | None = None
    verification_token: str | None = None
    dns_records: dict[str, Any] | None = None
    created_at: str | None = None
    verified_at: str | None = None


class ListDomainsResponse(_Model):
    """`GET /domains`."""

    domains: list[Domain] = []


class PendingMessageDetail(_Model):
    """An outbound message (held for approval, approved, rejected, sent…)."""

    id: str | None = None
    agent_id: str | None = None
    direction: str | None = None
    type: str | None = None
    to: list[str] = []
    cc: list[str] = []
    bcc: list[str] = []
    subject: str | None = None
    conversation_id: str | None = None
    status: str | None = None
    approval_expires_at: str | None = None
    created_at: str | None = None
    reviewed_at: str | None = None
    rejection_reason: str | None = None
    email_message_id: str | None = None
    method: str | None = None
    edited: bool | None = None
    body_text: str | None = None
    body_html: str | None = None
    attachments: list[dict[str, Any]] | None = None

    @property
    def message_id(self) -> str | None:
        """The outbound message id (the published SDK's name for `id`)."""
        return self.id


class ListPendingMessagesResponse(_Model):
    """`GET /messages`."""

    messages: list[PendingMessageDetail] = []


class DeploymentInfo(_Model):
    """`GET /info`: what a client needs before it logs in."""

    shared_domain: str | None = None
    slug_registration_enabled: bool | None = None
    public_url: str | None = None
    version: str | None = None
