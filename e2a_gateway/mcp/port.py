"""What the MCP tools ask of an e2a gateway, for one caller: the port the tool layer is written
against, so one set of tools serves both transports.

Its methods are the SDK client's (`AsyncE2AClient`), with the same arguments and answers: the
SDK's typed views of e2a's 2.x objects, refusals as `E2AApiError` (status, code, message). Two
adapters: `remote.SdkPort` is the SDK client itself, reaching a gateway over HTTP (`e2a mcp` on
stdio); `in_process.OperationsPort` calls the operations of the gateway the tools run in
(`/mcp`). A tool answers and fails alike over either.
"""

from __future__ import annotations

from typing import Any, Protocol

from e2a_gateway.v1 import (
    Agent,
    AsyncInboundEmail,
    Attachment,
    DeploymentInfo,
    Domain,
    ListDomainsResponse,
    ListPendingMessagesResponse,
    MessageList,
    PendingMessageDetail,
    SendResult,
)


class GatewayPort(Protocol):
    """The gateway as one API key reaches it; every call may raise `E2AApiError`."""

    @property
    def gateway_url(self) -> str:
        """The gateway's base URL, as the caller reaches it."""
        ...

    async def get_info(self) -> DeploymentInfo:
        """The gateway's public settings (`GET /info`)."""
        ...

    async def get_account(self) -> dict[str, Any]:
        """Who the key speaks for, as `/v1` shows it: its `scope` (`account` or `agent`), the
        agent an agent key is bound to (`agent_email`), the user, caps and usage."""
        ...

    async def get_agent(self, email: str) -> Agent:
        """One of the caller's agents."""
        ...

    async def register_agent(
        self,
        slug: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        webhook_url: str | None = None,
        agent_mode: str | None = None,
    ) -> Agent:
        """A new agent: `slug@<shared domain>`, or `email` on a domain the caller verified."""
        ...

    async def update_agent(self, email: str, *, name: str | None = None) -> Agent:
        """Rename one of the caller's agents."""
        ...

    async def list_agent_page(self, query: dict[str, Any]) -> dict[str, Any]:
        """One `/v1` page of the caller's agents (or, with `deleted`, of their trash), newest
        first, as listAgents answers it (`query`: cursor, limit, deleted)."""
        ...

    async def trash_agent(self, email: str) -> dict[str, Any]:
        """Move one of the caller's agents to the trash with its messages (restorable); `/v1`'s
        receipt: `{deleted, email, messages_deleted}`."""
        ...

    async def get_messages(
        self,
        status: str = "unread",
        page_size: int = 50,
        token: str | None = None,
        agent_email: str | None = None,
    ) -> MessageList:
        """One page of an agent's inbox, oldest first (`token` from the previous page)."""
        ...

    async def get_message(
        self, message_id: str, agent_email: str | None = None
    ) -> AsyncInboundEmail:
        """One inbound message in full; marks it read."""
        ...

    async def get_v1_message(self, email: str, message_id: str) -> dict[str, Any]:
        """One message of the agent at `email`, received or sent, as `/v1`'s getMessage
        answers it (MessageView, with the reading of mail received); marks mail received
        read."""
        ...

    async def get_attachment(
        self, email: str, message_id: str, index: int, inline: bool = False
    ) -> dict[str, Any]:
        """Attachment `index` of a message of the agent at `email`, as `/v1`'s getAttachment
        answers it: metadata, a short-lived `download_url` and `expires_at`, and base64 `data`
        when `inline` (404 `attachment_not_found`, 413 `attachment_too_large`)."""
        ...

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
        """A new message from an agent (`POST /api/v1/send`). A repeat with the same
        `idempotency_key` and arguments gets the first answer again instead of sending twice."""
        ...

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
    ) -> SendResult:
        """A reply to an inbound message of an agent, threaded."""
        ...

    async def send_message(
        self, email: str, fields: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """A new message from the agent at `email` (sendMessage's fields); the send result as
        `/v1` answers it. A repeat with the same `idempotency_key` and fields gets the first
        answer again instead of sending twice."""
        ...

    async def reply_to_message(
        self,
        email: str,
        message_id: str,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """A reply threaded onto a message of the agent at `email` (replyToMessage's fields);
        the send result as `/v1` answers it, replayed for a repeated `idempotency_key`."""
        ...

    async def list_pending_messages(self) -> ListPendingMessagesResponse:
        """The caller's outbound messages held for approval."""
        ...

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
    ) -> PendingMessageDetail:
        """Approve a held message, optionally with edits."""
        ...

    async def approve_review(
        self, message_id: str, fields: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Approve a held message with the edits in `fields` (approveReview's); the send
        result as `/v1` answers it, replayed for a repeated `idempotency_key`."""
        ...

    async def reject_message(self, message_id: str, reason: str = "") -> PendingMessageDetail:
        """Reject a held message, keeping `reason` with it."""
        ...

    async def list_agent_messages(self, email: str, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the agent's messages as `/v1`'s listMessages answers it, filtered by
        `query` (its parameters; `labels` a list)."""
        ...

    async def list_templates(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the account's templates as `/v1`'s listTemplates answers it."""
        ...

    async def get_template(self, template_id: str) -> dict[str, Any]:
        """One of the account's templates, as `/v1`'s getTemplate answers it."""
        ...

    async def create_template(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A new template from createTemplate's `fields`."""
        ...

    async def update_template(self, template_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A template changed by updateTemplate's `fields`."""
        ...

    async def delete_template(self, template_id: str) -> dict[str, Any]:
        """A template deleted for good: `{deleted, id}`."""
        ...

    async def validate_template(self, fields: dict[str, Any]) -> dict[str, Any]:
        """validateTemplate's dry run of `fields`."""
        ...

    async def list_starter_templates(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the starter catalog as `/v1`'s listStarterTemplates answers it."""
        ...

    async def get_starter_template(self, alias: str) -> dict[str, Any]:
        """One starter with its sources, as `/v1`'s getStarterTemplate answers it."""
        ...

    async def list_reviews(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the account's review queue (outbound drafts and inbound holds) as `/v1`'s
        listReviews answers it (`items`, `next_cursor`); `query` holds `cursor` and `limit`."""
        ...

    async def get_review(self, message_id: str) -> dict[str, Any]:
        """One reviewed message of the account in full, as `/v1`'s getReview answers it."""
        ...

    async def reject_review(self, message_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Reject a held message of either direction (rejectReview's `fields`: `reason`); the
        result as `/v1` answers it."""
        ...

    async def list_domains(self) -> ListDomainsResponse:
        """The caller's custom domains."""
        ...

    async def register_domain(self, domain: str) -> Domain:
        """Add a domain; the answer names the DNS records to publish."""
        ...

    async def verify_domain(self, domain: str) -> Domain:
        """Check a domain's DNS records."""
        ...

    async def delete_domain(self, domain: str) -> None:
        """Remove a domain no agent uses."""
        ...

    async def list_api_keys(self, query: dict[str, Any]) -> dict[str, Any]:
        """One `/v1` page of the caller's API keys not revoked (expired ones too), newest first
        (`query`: cursor, limit): metadata only, with each key's scope, an agent key's agent
        and its expiry."""
        ...

    async def delete_api_key(self, key_id: str) -> None:
        """Revoke one of the caller's API keys."""
        ...

    async def trash_message(self, email: str, message_id: str) -> dict[str, Any]:
        """Move an agent's message to the trash (`DELETE /v1/agents/{email}/messages/{id}`)."""
        ...

    async def restore_message(self, email: str, message_id: str) -> dict[str, Any]:
        """Bring an agent's message back from the trash; the message as `/v1` shows it."""
        ...

    async def restore_agent(self, email: str) -> dict[str, Any]:
        """Bring one of the caller's agents back from the trash; the agent as `/v1` shows it."""
        ...

    async def get_conversation(
        self, email: str, conversation_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """One conversation of an agent with its messages, as `/v1` shows it (`query`: cursor,
        limit: one page of its messages)."""
        ...

    async def list_conversations(self, email: str, query: dict[str, Any]) -> dict[str, Any]:
        """One `/v1` page of an agent's conversations (`query`: since, until, cursor, limit)."""
        ...

    async def update_message_labels(
        self, email: str, message_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply `changes` (add_labels, remove_labels) to an agent's message; the labels."""
        ...

    async def list_events(self, query: dict[str, Any]) -> dict[str, Any]:
        """One `/v1` page of the caller's events (`query`: listEvents' filters, cursor, limit)."""
        ...

    async def get_event(self, event_id: str) -> dict[str, Any]:
        """One of the caller's events, with its delivery counts."""
        ...

    async def redeliver_event(self, event_id: str, webhook_id: str | None) -> dict[str, Any]:
        """Queue an event again, to `webhook_id` or to every webhook it went to."""
        ...

    async def list_webhooks(self, query: dict[str, Any]) -> dict[str, Any]:
        """One `/v1` page of the caller's webhooks (`query`: cursor, limit)."""
        ...

    async def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        """One of the caller's webhooks (no secret)."""
        ...

    async def create_webhook(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A new webhook (createWebhook's fields); its signing secret is in this answer only."""
        ...

    async def update_webhook(self, webhook_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change a webhook (updateWebhook's fields)."""
        ...

    async def delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Delete a webhook for good."""
        ...

    async def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """A new signing secret for a webhook; the previous one signs for 24 h more."""
        ...

    async def test_webhook(self, webhook_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Queue a synthetic event to a webhook; the delivery's id."""
        ...

    async def list_webhook_deliveries(
        self, webhook_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """One `/v1` page of a webhook's deliveries (`query`: status, cursor, limit)."""
        ...

    async def create_api_key(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A new API key (createApiKey's fields); the key is in this answer only."""
        ...

    async def get_protection(self, email: str) -> dict[str, Any]:
        """An agent's protection config, as `/v1` shows it."""
        ...

    async def put_protection(self, email: str, config: dict[str, Any]) -> dict[str, Any]:
        """Replace an agent's protection config; the config as it stands now."""
        ...

    async def forward_message(
        self,
        email: str,
        message_id: str,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Forward an agent's message (forwardMessage's fields); the send result as `/v1`
        answers it. A repeat with the same `idempotency_key` and fields gets the first
        answer again instead of forwarding twice."""
        ...

    async def get_message_lifecycle(
        self, email: str, message_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """One `/v1` page of a message's lifecycle transitions (`query`: cursor, limit)."""
        ...
