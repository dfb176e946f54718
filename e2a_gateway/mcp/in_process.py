"""The tools' port inside the gateway (`/mcp`): the same operations the REST API runs, called
in-process for the caller whose key the MCP request presented, instead of a round trip through
the SDK over loopback HTTP.

Each call authenticates the key again and validates its request as the REST API would, renders
the answer with the REST API's views and reads it as the SDK does, and turns a refusal into the
`E2AApiError` the REST API's answer would have raised: a tool answers alike over either port.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from e2a_gateway.api.v1.account import account_view
from e2a_gateway.api.v1.agents import AgentsQuery, agent_listing
from e2a_gateway.api.v1.agents import agent_view as v1_agent_view
from e2a_gateway.api.v1.bodies import validated, with_numbers_as_written
from e2a_gateway.api.v1.conversations import (
    ConversationQuery,
    ListConversationsQuery,
    conversation_detail,
    conversation_listing,
)
from e2a_gateway.api.v1.errors import V1Error, refusal
from e2a_gateway.api.v1.events import EventQuery, event_listing, event_view, redelivery
from e2a_gateway.api.v1.message_views import (
    send_result_view,
    update_result_view,
)
from e2a_gateway.api.v1.messages import (
    LifecycleQuery,
    ListMessagesQuery,
    UpdateMessageBody,
    attachment_answer,
    lifecycle_listing,
    message_listing,
    message_with_reading,
)
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.review_views import (
    protection_view,
    reject_result_view,
    review_detail_view,
)
from e2a_gateway.api.v1.review_views import send_result_view as review_result_view
from e2a_gateway.api.v1.reviews import review_listing
from e2a_gateway.api.v1.templates import (
    starter_detail_view,
    starter_listing,
    template_listing,
    template_view,
)
from e2a_gateway.api.v1.views import api_key_view as v1_api_key_view
from e2a_gateway.api.v1.webhooks import (
    DeliveryQuery,
    TestWebhook,
    delivery_listing,
    webhook_listing,
    webhook_view,
)
from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.mcp.bounds import MAX_BODY_BYTES
from e2a_gateway.operations import (
    agents,
    domains,
    events,
    keys,
    mailbox,
    messages,
    protection,
    review_queue,
    reviews,
    sending,
    templates,
    trust,
    webhooks,
)
from e2a_gateway.operations.agents import AgentEntry, CreateAgent, UpdateAgent
from e2a_gateway.operations.caller import Caller, authenticate
from e2a_gateway.operations.domains import CreateDomain
from e2a_gateway.operations.errors import OperationError
from e2a_gateway.operations.idempotency import Answer, run_once
from e2a_gateway.operations.keys import CreateScopedApiKey
from e2a_gateway.operations.mailbox import parsed_body
from e2a_gateway.operations.protection import ProtectionConfig
from e2a_gateway.operations.requests import parse_request
from e2a_gateway.operations.review_queue import ApproveReview, RejectReview
from e2a_gateway.operations.reviews import ApproveBody, RejectBody
from e2a_gateway.operations.sending import (
    ForwardMessageBody,
    ReplyBody,
    ReplyMessageBody,
    SendBody,
    SendMessageBody,
    Submission,
)
from e2a_gateway.operations.templates import CreateTemplate, UpdateTemplate, ValidateTemplate
from e2a_gateway.operations.webhooks import CreateWebhook, UpdateWebhook
from e2a_gateway.storage.base import (
    OUTBOUND_LIST_LIMIT,
    ApiKey,
    OutboundMessage,
    StorageUnavailable,
)
from e2a_gateway.storage.base import Domain as StoredDomain
from e2a_gateway.storage.vocabulary import PENDING_APPROVAL
from e2a_gateway.v1 import (
    Agent,
    AsyncInboundEmail,
    Attachment,
    DeploymentInfo,
    Domain,
    E2AApiError,
    ListDomainsResponse,
    ListPendingMessagesResponse,
    MessageList,
    PendingMessageDetail,
    SendResult,
)
from e2a_gateway.v1.inbound import summary_from_json
from e2a_gateway.web.errors import STATUSES as API_STATUSES
from e2a_gateway.web.errors import headers_of, status_of
from e2a_gateway.web.views import (
    agent_view,
    domain_view,
    info_view,
    message_full_view,
    message_summary_view,
    outbound_content_view,
    outbound_view,
    submission_answer,
    submission_view,
)

log = logging.getLogger("e2a.mcp")

P = ParamSpec("P")
T = TypeVar("T")


def _present(**fields: Any) -> dict[str, Any]:
    """The fields that are given, as the SDK puts them in a request body."""
    return {name: value for name, value in fields.items() if value is not None}


def _wire(attachments: list[Attachment] | None) -> list[dict[str, str]] | None:
    return [item.to_wire() for item in attachments] if attachments else None


def _send_result(answer: dict[str, Any]) -> SendResult:
    """The SDK's reading of a send answer of `/api/v1`."""
    return SendResult(
        status=str(answer["status"]),
        message_id=str(answer["message_id"]),
        method=str(answer.get("method") or ""),
        approval_expires_at=answer.get("approval_expires_at"),
    )


def _detail(message: OutboundMessage) -> PendingMessageDetail:
    return PendingMessageDetail.model_validate(outbound_view(message))


def _agent(entry: AgentEntry) -> Agent:
    return Agent.model_validate(agent_view(entry))


def _key_position(key: ApiKey) -> tuple[str, str]:
    """A key's place in `/v1`'s key listing (its cursor), newest first."""
    return key.created_at, key.id


class OperationsPort:
    """`GatewayPort` over the operations of `gateway`, for the holder of `api_key`."""

    def __init__(self, gateway: Gateway, api_key: str, remote_addr: str | None = None) -> None:
        self._gateway = gateway
        self._api_key = api_key
        self._remote_addr = remote_addr
        """The client's address (behind trusted proxies), for the per-address limits."""

    async def _run(
        self,
        operation: Callable[Concatenate[Gateway, Caller, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`operation` for the key's owner (checked again now); a refusal as E2AApiError,
        with the status `/api/v1` answers it with."""

        async def bound(gateway: Gateway, caller: Caller) -> T:
            return await operation(gateway, caller, *args, **kwargs)

        return await self._invoke(bound)

    async def _run_v1(
        self,
        operation: Callable[Concatenate[Gateway, Caller, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`operation` as `_run` does it, a refusal as `/v1` answers it: its status and e2a's
        code (`invalid_email` is `invalid_request` there, `domain_in_use` a 400
        `domain_has_agents`)."""

        async def bound(gateway: Gateway, caller: Caller) -> T:
            return await operation(gateway, caller, *args, **kwargs)

        return await self._invoke(bound, v1=True)

    async def _invoke(
        self, operation: Callable[[Gateway, Caller], Awaitable[T]], *, v1: bool = False
    ) -> T:
        try:
            caller = await authenticate(self._gateway, self._api_key)
            return await operation(self._gateway, caller)
        except OperationError as refused:
            if v1:
                answer = refusal(refused)
                status, message, code = answer.status, answer.message, answer.code
                headers = answer.headers
            else:
                status, message, code = (
                    status_of(refused, API_STATUSES),
                    refused.message,
                    refused.code,
                )
                headers = headers_of(refused)
            wait = headers.get("Retry-After")
            raise E2AApiError(
                status, message, code, None if wait is None else float(wait)
            ) from None
        except V1Error as refused:
            raise E2AApiError(refused.status, refused.message, refused.code) from None
        except StorageUnavailable as exc:
            log.error("storage unavailable: %s", exc)
            raise E2AApiError(
                503, "the database is not answering; try again shortly", "storage_unavailable"
            ) from None

    def _domain(self, domain: StoredDomain) -> Domain:
        gateway = self._gateway
        return Domain.model_validate(
            domain_view(
                domain,
                gateway.settings.smtp.hostname,
                gateway.dkim_record(domain.domain),
                gateway.dkim_next_record(domain.domain),
            )
        )

    @property
    def gateway_url(self) -> str:
        """The gateway's public URL (`http.public_url`)."""
        return self._gateway.settings.http.public_url

    async def get_info(self) -> DeploymentInfo:
        """The gateway's public settings."""
        return DeploymentInfo.model_validate(info_view(self._gateway.settings))

    async def get_account(self) -> dict[str, Any]:
        """Who the key speaks for: its scope, bound agent, user, caps and usage."""
        return await self._run_v1(account_view)

    async def get_agent(self, email: str) -> Agent:
        """One of the caller's agents."""
        return _agent(await self._run(agents.get_agent, email))

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
        fields = _present(
            slug=slug, email=email, name=name, webhook_url=webhook_url, agent_mode=agent_mode
        )

        async def register(gateway: Gateway, caller: Caller) -> AgentEntry:
            request = parse_request(CreateAgent, fields)
            return await agents.register_agent(gateway, caller, request, self._remote_addr)

        return _agent(await self._run(register))

    async def update_agent(self, email: str, *, name: str | None = None) -> Agent:
        """Rename one of the caller's agents."""
        fields = _present(name=name)

        async def change(gateway: Gateway, caller: Caller) -> AgentEntry:
            request = parse_request(UpdateAgent, fields)
            return await agents.change_agent(gateway, caller, email, request)

        return _agent(await self._run(change))

    async def list_agent_page(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the caller's agents (or their trash), newest first."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return await agent_listing(gateway, caller, validated(AgentsQuery, query, "query"))

        return await self._run_v1(page)

    async def get_v1_message(self, email: str, message_id: str) -> dict[str, Any]:
        """One message of an agent, received or sent, as `/v1` shows it (with its reading for
        mail received); marks mail received read."""

        async def read(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            opened = await mailbox.open_message(gateway, caller, email, message_id)
            return await message_with_reading(gateway, caller, opened)

        return await self._run_v1(read)

    async def get_attachment(
        self, email: str, message_id: str, index: int, inline: bool = False
    ) -> dict[str, Any]:
        """One attachment of an agent's message as `/v1`'s getAttachment answers it: a
        download link made as that route makes it, and the bytes when `inline`."""

        async def fetch(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return await attachment_answer(gateway, caller, email, message_id, index, inline=inline)

        return await self._run_v1(fetch)

    async def trash_agent(self, email: str) -> dict[str, Any]:
        """Move one of the caller's agents to the trash with its messages; `/v1`'s receipt
        (nothing removed for good: `messages_deleted` is zero)."""
        trashed = await self._run_v1(agents.trash_agent, email)
        return {"deleted": True, "email": trashed.email, "messages_deleted": 0}

    async def get_messages(
        self,
        status: str = "unread",
        page_size: int = 50,
        token: str | None = None,
        agent_email: str | None = None,
    ) -> MessageList:
        """One page of an agent's inbox, oldest first."""

        async def page(gateway: Gateway, caller: Caller) -> MessageList:
            shown = messages.status_filter(status)
            listing = messages.agent_listing("inbox", agent_email or "", shown)
            after = messages.decode_page_token(token, listing) if token else None
            found = await messages.inbox_page(
                gateway, caller, agent_email or "", shown, page_size, after
            )
            following = found.next_after
            return MessageList(
                messages=[summary_from_json(message_summary_view(m)) for m in found.messages],
                next_token=(
                    messages.encode_page_token(following, listing)
                    if following is not None
                    else None
                ),
            )

        return await self._run(page)

    async def get_message(
        self, message_id: str, agent_email: str | None = None
    ) -> AsyncInboundEmail:
        """One inbound message in full, with its reading; marks it read."""

        async def read(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            found = await messages.read_message(gateway, caller, agent_email or "", message_id)
            body = await parsed_body(found.raw_message)
            return {**message_full_view(found, body), **await trust.reading_of(gateway, found)}

        return AsyncInboundEmail(await self._run(read), self.reply, trusted=True)

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
        """A new message from an agent, as `POST /api/v1/send` makes it: once per
        `idempotency_key`, which works as that route's Idempotency-Key."""
        fields = _present(
            to=to,
            subject=subject,
            body=body,
            html_body=html_body,
            cc=cc,
            bcc=bcc,
            conversation_id=conversation_id,
            attachments=_wire(attachments),
        )
        if agent_email:
            fields["from"] = agent_email

        async def submit(gateway: Gateway, caller: Caller) -> tuple[dict[str, Any], int]:
            request = parse_request(SendBody, fields)
            return submission_answer(await sending.send(gateway, caller, request))

        answer = await self._write_once(
            "POST /api/v1/send", fields, idempotency_key, submit, v1=False
        )
        return _send_result(answer)

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
        fields = _present(
            body=body,
            html_body=html_body,
            reply_all=reply_all,
            cc=cc,
            bcc=bcc,
            conversation_id=conversation_id,
            attachments=_wire(attachments),
        )

        async def submit(gateway: Gateway, caller: Caller) -> Submission:
            request = parse_request(ReplyBody, fields)
            return await sending.reply(gateway, caller, agent_email or "", message_id, request)

        return _send_result(submission_view(await self._run(submit)))

    async def list_pending_messages(self) -> ListPendingMessagesResponse:
        """The caller's outbound messages held for approval, as `GET /api/v1/messages` lists
        them (soonest deadline first, at most OUTBOUND_LIST_LIMIT) but read as summaries:
        each body cut in the database one character past what an answer keeps of it
        (MAX_BODY_BYTES, so `truncated` comes out as from the whole body), and each
        attachment's decoded `size` in place of its data."""
        held = await self._run(
            reviews.outbound_summaries,
            PENDING_APPROVAL,
            None,
            OUTBOUND_LIST_LIMIT,
            None,
            by_deadline=True,
            body_chars=MAX_BODY_BYTES + 1,
        )
        return ListPendingMessagesResponse(
            messages=[
                PendingMessageDetail.model_validate(outbound_content_view(summary))
                for summary in held
            ]
        )

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
        fields = _present(
            subject=subject, body_text=body_text, body_html=body_html, to=to, cc=cc, bcc=bcc
        )

        async def approve(gateway: Gateway, caller: Caller) -> OutboundMessage:
            request = parse_request(ApproveBody, fields)
            return await reviews.approve(gateway, caller, message_id, request)

        return _detail(await self._run(approve))

    async def reject_message(self, message_id: str, reason: str = "") -> PendingMessageDetail:
        """Reject a held message, keeping `reason` with it."""
        fields = {"reason": reason} if reason else {}

        async def reject(gateway: Gateway, caller: Caller) -> OutboundMessage:
            request = parse_request(RejectBody, fields)
            return await reviews.reject(gateway, caller, message_id, request.reason)

        return _detail(await self._run(reject))

    async def list_domains(self) -> ListDomainsResponse:
        """The caller's custom domains."""
        found = await self._run(domains.list_domains)
        return ListDomainsResponse(domains=[self._domain(domain) for domain in found])

    async def register_domain(self, domain: str) -> Domain:
        """Add a domain; the answer names the DNS records to publish."""

        async def register(gateway: Gateway, caller: Caller) -> StoredDomain:
            request = parse_request(CreateDomain, {"domain": domain})
            return await domains.register_domain(gateway, caller, request.domain)

        return self._domain(await self._run(register))

    async def verify_domain(self, domain: str) -> Domain:
        """Check a domain's DNS records."""
        return self._domain(await self._run(domains.verify_domain, domain))

    async def delete_domain(self, domain: str) -> None:
        """Remove a domain no agent uses."""
        await self._run(domains.remove_domain, domain)

    async def list_api_keys(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the caller's API keys not revoked, newest first, as `/v1` lists them."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[ApiKey]:
                return await keys.api_key_page(gateway, caller, limit, after)

            checked = validated(PageQuery, query, "query")
            return await keyset_page(
                "api-keys", checked, fetch, _key_position, v1_api_key_view, gateway
            )

        return await self._run_v1(page)

    async def delete_api_key(self, key_id: str) -> None:
        """Revoke one of the caller's API keys."""
        await self._run(keys.revoke_api_key, key_id)

    async def trash_message(self, email: str, message_id: str) -> dict[str, Any]:
        """Move an agent's message to the trash."""
        await self._run_v1(mailbox.trash, email, message_id)
        return {"deleted": True, "id": message_id}

    async def restore_message(self, email: str, message_id: str) -> dict[str, Any]:
        """Bring an agent's message back from the trash; the message as `/v1` shows it, with
        its reading for mail received."""

        async def restore(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            opened = await mailbox.restore(gateway, caller, email, message_id)
            return await message_with_reading(gateway, caller, opened)

        return await self._run_v1(restore)

    async def restore_agent(self, email: str) -> dict[str, Any]:
        """Bring one of the caller's agents back from the trash."""
        return v1_agent_view(await self._run_v1(agents.restore_agent, email))

    async def get_conversation(
        self, email: str, conversation_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """One conversation of an agent with its messages (a page of them)."""

        async def detail(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            checked = validated(ConversationQuery, query, "query")
            return await conversation_detail(gateway, caller, email, conversation_id, checked)

        return await self._run_v1(detail)

    async def list_conversations(self, email: str, query: dict[str, Any]) -> dict[str, Any]:
        """One page of an agent's conversations, most recently active first."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            checked = validated(ListConversationsQuery, query, "query")
            return await conversation_listing(gateway, caller, email, checked)

        return await self._run_v1(page)

    async def update_message_labels(
        self, email: str, message_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Add and remove labels on an agent's message; the labels after."""

        async def change(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(UpdateMessageBody, changes, "body")
            labels = await mailbox.change_labels(
                gateway, caller, email, message_id, body.add_labels, body.remove_labels
            )
            return update_result_view(message_id, labels)

        return await self._run_v1(change)

    async def list_events(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the caller's events, newest first, filtered."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return await event_listing(gateway, caller, validated(EventQuery, query, "query"))

        return await self._run_v1(page)

    async def get_event(self, event_id: str) -> dict[str, Any]:
        """One of the caller's events with its delivery counts."""
        return event_view(await self._run_v1(events.get_event, event_id, time.time()))

    async def redeliver_event(self, event_id: str, webhook_id: str | None) -> dict[str, Any]:
        """Queue one of the caller's events again, to one webhook or every one it went to."""
        return await self._run_v1(redelivery, event_id, webhook_id)

    async def list_webhooks(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the caller's webhooks, oldest first."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return await webhook_listing(gateway, caller, validated(PageQuery, query, "query"))

        return await self._run_v1(page)

    async def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        """One of the caller's webhooks (no secret)."""
        return webhook_view(await self._run_v1(webhooks.read_webhook, webhook_id))

    async def create_webhook(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A new webhook; its signing secret is in this answer only."""

        async def create(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(CreateWebhook, fields, "body")
            issued = await webhooks.create_webhook(gateway, caller, body)
            return {**webhook_view(issued.webhook), "signing_secret": issued.secret}

        return await self._run_v1(create)

    async def update_webhook(self, webhook_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change a webhook; the webhook after."""

        async def update(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(UpdateWebhook, fields, "body")
            changed = await webhooks.update_webhook(gateway, caller, webhook_id, body, time.time())
            return webhook_view(changed)

        return await self._run_v1(update)

    async def delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Delete a webhook for good."""
        await self._run_v1(webhooks.delete_webhook, webhook_id)
        return {"deleted": True, "id": webhook_id}

    async def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """A new signing secret for a webhook; the previous one signs for 24 h more."""
        secret, until = await self._run_v1(webhooks.rotate_secret, webhook_id, time.time())
        return {"signing_secret": secret, "previous_secret_expires_at": format_timestamp(until)}

    async def test_webhook(self, webhook_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Queue a synthetic event to a webhook; the delivery's id."""

        async def test(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(TestWebhook, fields, "body")
            delivery_id = await webhooks.test_webhook(
                gateway, caller, webhook_id, body.type, body.data, time.time()
            )
            return {"delivery_id": delivery_id}

        return await self._run_v1(test)

    async def list_webhook_deliveries(
        self, webhook_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """One page of a webhook's deliveries, newest first."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            checked = validated(DeliveryQuery, query, "query")
            return await delivery_listing(gateway, caller, webhook_id, checked)

        return await self._run_v1(page)

    async def create_api_key(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A new API key; the key is in this answer only."""

        async def create(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(CreateScopedApiKey, fields, "body")
            issued = await keys.new_scoped_api_key(gateway, caller, body)
            return {**v1_api_key_view(issued.key), "key": issued.plaintext}

        return await self._run_v1(create)

    async def get_protection(self, email: str) -> dict[str, Any]:
        """An agent's protection config."""
        return protection_view(await self._run_v1(protection.protected_agent, email))

    async def put_protection(self, email: str, config: dict[str, Any]) -> dict[str, Any]:
        """Replace an agent's protection config; the config as it stands now."""

        async def replace(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(ProtectionConfig, config, "body")
            return protection_view(
                await protection.replace_protection(gateway, caller, email, body)
            )

        return await self._run_v1(replace)

    async def send_message(
        self, email: str, fields: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """A new message from the agent at `email`; the send result as `/v1` answers it (not
        waiting for the hand-off: `accepted`, or `pending_review` when held)."""

        async def send(gateway: Gateway, caller: Caller) -> tuple[dict[str, Any], int]:
            body = validated(SendMessageBody, fields, "body")
            # as `/v1` reads it from the JSON the remote port sends
            body = with_numbers_as_written(body, "template_data", json.dumps(fields).encode())
            return send_result_view(await sending.send_message(gateway, caller, email, body))

        route = f"POST /v1/agents/{email}/messages"
        return await self._write_once(route, fields, idempotency_key, send)

    async def reply_to_message(
        self,
        email: str,
        message_id: str,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """A reply threaded onto a message of the agent at `email`; the send result as `/v1`
        answers it."""

        async def reply(gateway: Gateway, caller: Caller) -> tuple[dict[str, Any], int]:
            body = validated(ReplyMessageBody, fields, "body")
            return send_result_view(
                await sending.reply_to_message(gateway, caller, email, message_id, body)
            )

        route = f"POST /v1/agents/{email}/messages/{message_id}/reply"
        return await self._write_once(route, fields, idempotency_key, reply)

    async def forward_message(
        self,
        email: str,
        message_id: str,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Forward an agent's message; the send result as `/v1` answers it."""

        async def forward(gateway: Gateway, caller: Caller) -> tuple[dict[str, Any], int]:
            body = validated(ForwardMessageBody, fields, "body")
            return send_result_view(
                await sending.forward_message(gateway, caller, email, message_id, body)
            )

        route = f"POST /v1/agents/{email}/messages/{message_id}/forward"
        return await self._write_once(route, fields, idempotency_key, forward)

    async def list_agent_messages(self, email: str, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the agent's messages, filtered as listMessages filters."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            checked = validated(ListMessagesQuery, query, "query")
            return await message_listing(gateway, caller, email, checked)

        return await self._run_v1(page)

    async def list_templates(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the account's templates, newest first."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return await template_listing(gateway, caller, validated(PageQuery, query, "query"))

        return await self._run_v1(page)

    async def get_template(self, template_id: str) -> dict[str, Any]:
        """One of the account's templates with its sources."""
        return template_view(await self._run_v1(templates.get_template, template_id))

    async def create_template(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A new template of the account."""

        async def create(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(CreateTemplate, fields, "body")
            return template_view(await templates.create_template(gateway, caller, body))

        return await self._run_v1(create)

    async def update_template(self, template_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A template of the account, changed."""

        async def update(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(UpdateTemplate, fields, "body")
            changed = await templates.update_template(gateway, caller, template_id, body)
            return template_view(changed)

        return await self._run_v1(update)

    async def delete_template(self, template_id: str) -> dict[str, Any]:
        """A template of the account deleted for good."""
        await self._run_v1(templates.delete_template, template_id)
        return {"deleted": True, "id": template_id}

    async def validate_template(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A dry run of template source."""

        async def validate(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(ValidateTemplate, fields, "body")
            # as `/v1` reads it from the JSON the remote port sends
            body = with_numbers_as_written(body, "test_data", json.dumps(fields).encode())
            return templates.validate_source(caller, body)

        return await self._run_v1(validate)

    async def list_starter_templates(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the starter catalog."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return await starter_listing(gateway, caller, validated(PageQuery, query, "query"))

        return await self._run_v1(page)

    async def get_starter_template(self, alias: str) -> dict[str, Any]:
        """One starter with its sources."""

        async def read(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return starter_detail_view(templates.starter_template(caller, alias))

        return await self._run_v1(read)

    async def list_reviews(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the account's review queue, newest first."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            return await review_listing(gateway, caller, validated(PageQuery, query, "query"))

        return await self._run_v1(page)

    async def get_review(self, message_id: str) -> dict[str, Any]:
        """One reviewed message of the account in full."""
        found = await self._run_v1(review_queue.review_detail, message_id)
        return await review_detail_view(found)

    async def reject_review(self, message_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Reject a held message of either direction: `/v1`'s reject result."""

        async def reject(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            body = validated(RejectReview, fields, "body")
            return reject_result_view(await review_queue.reject(gateway, caller, message_id, body))

        return await self._run_v1(reject)

    async def approve_review(
        self, message_id: str, fields: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Approve a held message, with the edits in `fields`; the send result as `/v1`
        answers it (`accepted` for an outbound draft queued to send)."""

        async def approve(gateway: Gateway, caller: Caller) -> tuple[dict[str, Any], int]:
            body = validated(ApproveReview, fields, "body")
            return review_result_view(await review_queue.approve(gateway, caller, message_id, body))

        route = f"POST /v1/reviews/{message_id}/approve"
        return await self._write_once(route, fields, idempotency_key, approve)

    async def _write_once(
        self,
        route: str,
        fields: dict[str, Any],
        idempotency_key: str | None,
        write_view: Callable[[Gateway, Caller], Awaitable[tuple[dict[str, Any], int]]],
        *,
        v1: bool = True,
    ) -> dict[str, Any]:
        """Run the write `route` of a message (`/v1`'s, or `/api/v1`'s when not `v1`, refused
        as that face refuses) and answer its view. An `idempotency_key` works as the route's
        Idempotency-Key, with the fingerprint the route takes of the same request (its method
        and path, and the body as the SDK sends it), so a repeat over either port gets the
        first answer again instead of sending twice."""
        raw = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        fingerprint = f"{route}\n".encode() + raw.encode()

        async def once(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            async def write() -> Answer:
                view, status = await write_view(gateway, caller)
                return Answer(status, json.dumps(view).encode())

            answer = await run_once(gateway, caller, idempotency_key, fingerprint, write)
            found = json.loads(answer.body)
            return found if isinstance(found, dict) else {}

        return await self._invoke(once, v1=v1)

    async def get_message_lifecycle(
        self, email: str, message_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """One page of a message's lifecycle transitions."""

        async def page(gateway: Gateway, caller: Caller) -> dict[str, Any]:
            checked = validated(LifecycleQuery, query, "query")
            return await lifecycle_listing(gateway, caller, email, message_id, checked)

        return await self._run_v1(page)
