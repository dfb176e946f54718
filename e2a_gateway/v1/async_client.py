"""The asynchronous e2a client, the twin of `E2AClient`, for asyncio and trio alike.

httpx runs on either event loop through anyio, so nothing here names a loop. It only
performs I/O; what is sent and how answers are read lives in `e2a_gateway.v1.endpoints`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import AsyncGenerator

import httpx

from e2a_gateway.v1 import endpoints, notifications
from e2a_gateway.v1.api import AsyncE2AApi
from e2a_gateway.v1.client import (
    PARSE_DEPRECATED,
    WebhookBody,
    require_agent_email,
    signed_payload,
    webhook_payload,
)
from e2a_gateway.v1.errors import E2AConnectionError, InvalidSignatureError
from e2a_gateway.v1.inbound import AsyncInboundEmail, Attachment, MessageList, SendResult
from e2a_gateway.v1.models import (
    Agent,
    DeploymentInfo,
    Domain,
    ListAgentsResponse,
    ListDomainsResponse,
    ListPendingMessagesResponse,
    PendingMessageDetail,
)
from e2a_gateway.v1.notifications import WSNotification
from e2a_gateway.v1.retries import MAX_RETRIES
from e2a_gateway.v1.signature import MAX_AGE_SECONDS


class AsyncE2AClient:
    """Asynchronous client for the e2a REST API (`/api/v1`), under asyncio or trio.

    Args:
        api_key: API key; defaults to `E2A_API_KEY`.
        agent_email: the agent used when a call names none; defaults to `E2A_AGENT_EMAIL`.
        base_url: the gateway; defaults to `E2A_BASE_URL`, then `E2A_URL`, then e2a.dev.
        timeout: seconds per request.
        max_retries: how many times a call refused with a `retryable` error, or given no
            answer, is made again, after the wait its `Retry-After` asks (else a short
            pause), when a repeat cannot make it twice (`e2a_gateway.v1.retries`); 0: never.
    """

    api_class: type[AsyncE2AApi] = AsyncE2AApi
    """The raw client this one is built on (a subclass may change how its calls are made)."""

    def __init__(
        self,
        api_key: str | None = None,
        agent_email: str | None = None,
        base_url: str | None = None,
        timeout: float = 30,
        *,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.api = self.api_class(api_key, base_url, timeout, max_retries=max_retries)
        """The raw API client underneath (one method per endpoint)."""
        self.api_key = self.api.api_key
        self.base_url = self.api.base_url
        self.agent_email = agent_email or os.environ.get("E2A_AGENT_EMAIL", "")
        self._call = self.api.call

    # Webhooks

    def parse(self, body: WebhookBody, headers: dict[str, str] | None = None) -> AsyncInboundEmail:
        """Deprecated (as in the published SDK 2.2): an *unverified* `AsyncInboundEmail`; use
        `parse_webhook`. `headers` is accepted and ignored, as it always was."""
        warnings.warn(PARSE_DEPRECATED.format("AsyncE2AClient"), DeprecationWarning, stacklevel=2)
        return AsyncInboundEmail(webhook_payload(body), self.reply)

    def parse_webhook(
        self,
        body: WebhookBody,
        secret: str | None = None,
        *,
        max_age: float | None = MAX_AGE_SECONDS,
    ) -> AsyncInboundEmail:
        """Parse a webhook body and verify its signature (secret defaults to
        `E2A_WEBHOOK_SECRET`), signed at most `max_age` seconds ago (None: any age, for
        the stored claim `e2a listen --forward` passes on); raise `InvalidSignatureError` (a
        PermissionError) on failure."""
        email = AsyncInboundEmail(signed_payload(body), self.reply)
        if not email.verify_signature(secret, max_age=max_age):
            raise InvalidSignatureError("e2a webhook signature verification failed")
        return email

    # Messages

    async def get_messages(
        self,
        status: str = "unread",
        page_size: int = 50,
        token: str | None = None,
        agent_email: str | None = None,
    ) -> MessageList:
        """One page of the agent's inbox, oldest first (`status`: unread, read or all)."""
        email = require_agent_email(self.agent_email, agent_email)
        return await self._call(endpoints.list_messages(email, status, page_size, token))

    async def get_message(
        self, message_id: str, agent_email: str | None = None
    ) -> AsyncInboundEmail:
        """Fetch one message, parsed and marked read; pre-verified (it came over REST)."""
        email = require_agent_email(self.agent_email, agent_email)
        payload = await self._call(endpoints.get_message(email, message_id))
        return AsyncInboundEmail(payload, self.reply, trusted=True)

    async def reply(
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
        return await self._call(
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

    async def send(
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
        return await self._call(
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

    # Notifications

    def listen(
        self,
        agent_email: str | None = None,
        reconnect: bool = True,
        max_backoff: float = 30.0,
        *,
        ack: bool = False,
    ) -> AsyncGenerator[WSNotification, None]:
        """Notifications of new mail over the WebSocket (local agents), under asyncio or trio.

        Unread messages come first, then live ones; after a dropped connection it reconnects
        with jittered backoff (about 1 s, doubling up to `max_backoff`) and the server sends
        what is still unread again. With `ack`, each one is marked read once you ask for the
        next; else fetch it with `get_message`, which marks it read too. A refused connection
        (bad key, unknown or cloud agent) raises `E2AApiError`. Close it with
        `contextlib.aclosing` (or `await stream.aclose()`) when you stop early.
        """
        email = require_agent_email(self.agent_email, agent_email)
        url = notifications.websocket_url(self.base_url, email)
        return notifications.listen(
            url, api_key=self.api_key, reconnect=reconnect, max_backoff=max_backoff, ack=ack
        )

    # Agents

    async def list_agents(self) -> ListAgentsResponse:
        """The caller's agents."""
        return await self._call(endpoints.list_agents())

    async def register_agent(
        self,
        slug: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        webhook_url: str | None = None,
        agent_mode: str | None = None,
    ) -> Agent:
        """Register `slug@<shared domain>`, or `email` on a domain you verified."""
        return await self._call(
            endpoints.register_agent(slug, email, name, webhook_url, agent_mode)
        )

    async def get_agent(self, email: str) -> Agent:
        """One of the caller's agents."""
        return await self._call(endpoints.get_agent(email))

    async def update_agent(
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
        return await self._call(endpoints.update_agent(email, changes))

    async def delete_agent(self, email: str) -> None:
        """Delete an agent and its messages."""
        await self._call(endpoints.delete_agent(email))

    # Approvals

    async def list_pending_messages(self) -> ListPendingMessagesResponse:
        """Outbound messages waiting for a person's approval."""
        return await self._call(endpoints.list_pending_messages())

    async def get_pending_message(self, message_id: str) -> PendingMessageDetail:
        """One outbound message, with its body while it is not final."""
        return await self._call(endpoints.get_pending_message(message_id))

    async def approve_message(
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
        return await self._call(call)

    async def reject_message(self, message_id: str, reason: str = "") -> PendingMessageDetail:
        """Reject a held message; it is never sent."""
        return await self._call(endpoints.reject_message(message_id, reason))

    # Domains

    async def list_domains(self) -> ListDomainsResponse:
        """The caller's custom domains."""
        return await self._call(endpoints.list_domains())

    async def register_domain(self, domain: str) -> Domain:
        """Add a domain; the answer names the DNS records to create."""
        return await self._call(endpoints.register_domain(domain))

    async def verify_domain(self, domain: str) -> Domain:
        """Check the domain's TXT record."""
        return await self._call(endpoints.verify_domain(domain))

    async def delete_domain(self, domain: str) -> None:
        """Remove a domain no agent uses."""
        await self._call(endpoints.delete_domain(domain))

    # Lifecycle

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self.api.close()

    async def __aenter__(self) -> AsyncE2AClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def fetch_info(base_url: str | None = None, timeout: float = 30) -> DeploymentInfo:  # noqa: ASYNC109
    """The deployment's public settings (shared domain, URL, version); no key needed. Made
    once: no answer raises `E2AConnectionError` at once."""
    call = endpoints.get_info()
    url = endpoints.resolve_base_url(base_url)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
        try:
            response = await http.request(call.method, call.path)
        except httpx.TransportError as exc:
            raise E2AConnectionError.wrapping(exc, url) from exc
        return endpoints.answer(call, response)
