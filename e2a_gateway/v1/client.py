"""The synchronous e2a client: agents, domains, inbox, send/reply, approvals, webhooks.

Same surface as the published e2a 2.x SDK, so switching is a change of base URL. It only
performs I/O; what is sent and how answers are read lives in `e2a_gateway.v1.endpoints`.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import httpx
from pydantic import BaseModel

from e2a_gateway.v1 import endpoints
from e2a_gateway.v1.api import E2AApi
from e2a_gateway.v1.errors import E2AConnectionError, InvalidSignatureError
from e2a_gateway.v1.inbound import Attachment, InboundEmail, MessageList, SendResult
from e2a_gateway.v1.models import (
    Agent,
    DeploymentInfo,
    Domain,
    ListAgentsResponse,
    ListDomainsResponse,
    ListPendingMessagesResponse,
    PendingMessageDetail,
)
from e2a_gateway.v1.retries import MAX_RETRIES
from e2a_gateway.v1.signature import MAX_AGE_SECONDS

PARSE_DEPRECATED = (
    "{}.parse() is deprecated and will be removed in 3.0: use parse_webhook(body, secret), "
    "which parses and verifies the signature in one call (email.unverified_payload shows "
    "the unchecked values)"
)

WebhookBody = bytes | str | dict[str, Any] | BaseModel
"""A webhook request body: its bytes or text, the decoded JSON, or a `MessageDetail`."""


def webhook_payload(body: WebhookBody) -> dict[str, Any]:
    """The JSON object of a webhook request body."""
    if isinstance(body, BaseModel):
        return body.model_dump(by_alias=True, exclude_none=True)
    data = body if isinstance(body, dict) else json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("a webhook body is a JSON object")
    return data


def signed_payload(body: WebhookBody) -> dict[str, Any]:
    """`webhook_payload` of a body `parse_webhook` is to verify: one that is no JSON object
    (anyone can POST to a webhook URL) raises InvalidSignatureError, as a forgery does."""
    try:
        return webhook_payload(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError among them
        raise InvalidSignatureError(
            f"a webhook body is a JSON object; this one is not: {exc}"
        ) from exc


def require_agent_email(default: str, agent_email: str | None) -> str:
    """`agent_email`, else the client's default; a ValueError saying how to set one."""
    email = agent_email or default
    if not email:
        raise ValueError("agent_email is required: pass agent_email=… or set E2A_AGENT_EMAIL")
    return email


class E2AClient:
    """Synchronous client for the e2a REST API (`/api/v1`).

    Args:
        api_key: API key; defaults to `E2A_API_KEY`.
        agent_email: the agent used when a call names none; defaults to `E2A_AGENT_EMAIL`.
        base_url: the gateway; defaults to `E2A_BASE_URL`, then `E2A_URL`, then e2a.dev.
        timeout: seconds per request.
        max_retries: how many times a call refused with a `retryable` error, or given no
            answer, is made again, after the wait its `Retry-After` asks (else a short
            pause), when a repeat cannot make it twice (`e2a_gateway.v1.retries`); 0: never.
    """

    def __init__(
        self,
        api_key: str | None = None,
        agent_email: str | None = None,
        base_url: str | None = None,
        timeout: float = 30,
        *,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.api = E2AApi(api_key, base_url, timeout, max_retries=max_retries)
        """The raw API client underneath (one method per endpoint)."""
        self.api_key = self.api.api_key
        self.base_url = self.api.base_url
        self.agent_email = agent_email or os.environ.get("E2A_AGENT_EMAIL", "")
        self._call = self.api.call

    # Webhooks

    def parse(self, body: WebhookBody, headers: dict[str, str] | None = None) -> InboundEmail:
        """Deprecated (as in the published SDK 2.2): an *unverified* `InboundEmail` whose
        fields raise `UnverifiedEmailError` until `verify_signature` succeeds. Use
        `parse_webhook`. `headers` is accepted and ignored, as it always was."""
        warnings.warn(PARSE_DEPRECATED.format("E2AClient"), DeprecationWarning, stacklevel=2)
        return InboundEmail(webhook_payload(body), self.reply)

    def parse_webhook(
        self,
        body: WebhookBody,
        secret: str | None = None,
        *,
        max_age: float | None = MAX_AGE_SECONDS,
    ) -> InboundEmail:
        """Parse a webhook body and verify its signature (secret defaults to
        `E2A_WEBHOOK_SECRET`), signed at most `max_age` seconds ago (None: any age, for
        the stored claim `e2a listen --forward` passes on); raise `InvalidSignatureError` (a
        PermissionError) on failure."""
        email = InboundEmail(signed_payload(body), self.reply)
        if not email.verify_signature(secret, max_age=max_age):
            raise InvalidSignatureError("e2a webhook signature verification failed")
        return email

    # Messages

    def get_messages(
        self,
        status: str = "unread",
        page_size: int = 50,
        token: str | None = None,
        agent_email: str | None = None,
    ) -> MessageList:
        """One page of the agent's inbox, oldest first (`status`: unread, read or all)."""
        email = require_agent_email(self.agent_email, agent_email)
        return self._call(endpoints.list_messages(email, status, page_size, token))

    def get_message(self, message_id: str, agent_email: str | None = None) -> InboundEmail:
        """Fetch one message, parsed and marked read; pre-verified (it came over REST)."""
        email = require_agent_email(self.agent_email, agent_email)
        payload = self._call(endpoints.get_message(email, message_id))
        return InboundEmail(payload, self.reply, trusted=True)

    def reply(
        self,
        message_id: str,
        body: str,
        html_body: str | None = None,
        reply_all: bool | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        conversation_id: str | None = None,
        attachments: list[Attachment] | None = None,
        agent_email: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Reply to an inbound message (to its Reply-To or From, subject `Re: …`, threaded).
        A repeat with the same `idempotency_key` answers the first reply instead of replying
        again (without one, the SDK makes one per call, which covers its own retries)."""
        email = require_agent_email(self.agent_email, agent_email)
        return self._call(
            endpoints.reply(
                email,
                message_id,
                body,
                html_body=html_body,
                reply_all=reply_all,
                cc=cc,
                bcc=bcc,
                conversation_id=conversation_id,
                attachments=attachments,
                idempotency_key=idempotency_key,
            )
        )

    def send(
        self,
        to: list[str],
        subject: str,
        body: str,
        html_body: str | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        conversation_id: str | None = None,
        attachments: list[Attachment] | None = None,
        agent_email: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Send a new message from the agent (optional when the key has exactly one agent).
        A repeat with the same `idempotency_key` answers the first send instead of sending
        again (without one, the SDK makes one per call, which covers its own retries)."""
        return self._call(
            endpoints.send(
                agent_email or self.agent_email or None,
                to,
                subject,
                body,
                html_body=html_body,
                cc=cc,
                bcc=bcc,
                conversation_id=conversation_id,
                attachments=attachments,
                idempotency_key=idempotency_key,
            )
        )

    # Agents

    def list_agents(self) -> ListAgentsResponse:
        """The caller's agents."""
        return self._call(endpoints.list_agents())

    def register_agent(
        self,
        slug: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        webhook_url: str | None = None,
        agent_mode: str | None = None,
    ) -> Agent:
        """Register `slug@<shared domain>`, or `email` on a domain you verified."""
        return self._call(endpoints.register_agent(slug, email, name, webhook_url, agent_mode))

    def get_agent(self, email: str) -> Agent:
        """One of the caller's agents."""
        return self._call(endpoints.get_agent(email))

    def update_agent(
        self,
        email: str,
        *,
        name: str | None = None,
        webhook_url: str | None = None,
        agent_mode: str | None = None,
        hitl_enabled: bool | None = None,
        hitl_ttl_seconds: int | None = None,
        hitl_expiration_action: str | None = None,
        approval_notifications: bool | None = None,
    ) -> Agent:
        """Change only the settings given; the others keep their values.
        `approval_notifications=False` stops the email to the owner about held mail."""
        changes = {
            "name": name,
            "webhook_url": webhook_url,
            "agent_mode": agent_mode,
            "hitl_enabled": hitl_enabled,
            "hitl_ttl_seconds": hitl_ttl_seconds,
            "hitl_expiration_action": hitl_expiration_action,
            "approval_notifications": approval_notifications,
        }
        return self._call(endpoints.update_agent(email, changes))

    def delete_agent(self, email: str) -> None:
        """Delete an agent and its messages."""
        self._call(endpoints.delete_agent(email))

    # Approvals

    def list_pending_messages(self) -> ListPendingMessagesResponse:
        """Outbound messages waiting for a person's approval."""
        return self._call(endpoints.list_pending_messages())

    def get_pending_message(self, message_id: str) -> PendingMessageDetail:
        """One outbound message, with its body while it is not final."""
        return self._call(endpoints.get_pending_message(message_id))

    def approve_message(
        self,
        message_id: str,
        *,
        subject: str | None = None,
        body_text: str | None = None,
        body_html: str | None = None,
        to: list[str] | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> PendingMessageDetail:
        """Approve a held message, optionally with edits. A repeat with the same
        `idempotency_key` answers the first approval instead of a 409 (without one, the SDK
        makes one per call, which covers its own retries)."""
        overrides = {
            "subject": subject,
            "body_text": body_text,
            "body_html": body_html,
            "to": to,
            "cc": cc,
            "bcc": bcc,
        }
        call = endpoints.approve_message(message_id, overrides, idempotency_key)
        return self._call(call)

    def reject_message(self, message_id: str, reason: str = "") -> PendingMessageDetail:
        """Reject a held message; it is never sent."""
        return self._call(endpoints.reject_message(message_id, reason))

    # Domains

    def list_domains(self) -> ListDomainsResponse:
        """The caller's custom domains."""
        return self._call(endpoints.list_domains())

    def register_domain(self, domain: str) -> Domain:
        """Add a domain; the answer names the DNS records to create."""
        return self._call(endpoints.register_domain(domain))

    def verify_domain(self, domain: str) -> Domain:
        """Check the domain's TXT record."""
        return self._call(endpoints.verify_domain(domain))

    def delete_domain(self, domain: str) -> None:
        """Remove a domain no agent uses."""
        self._call(endpoints.delete_domain(domain))

    # Lifecycle

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.api.close()

    def __enter__(self) -> E2AClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_info(base_url: str | None = None, timeout: float = 30) -> DeploymentInfo:
    """The deployment's public settings (shared domain, URL, version); no key needed. Made
    once: no answer raises `E2AConnectionError` at once."""
    call = endpoints.get_info()
    url = endpoints.resolve_base_url(base_url)
    with httpx.Client(base_url=url, timeout=timeout) as http:
        try:
            response = http.request(call.method, call.path)
        except httpx.TransportError as exc:
            raise E2AConnectionError.wrapping(exc, url) from exc
        return endpoints.answer(call, response)
