"""The raw API layer: one method per REST endpoint, request and answer as pydantic models.

`E2AApi` (sync) and `AsyncE2AApi` (asyncio or trio) are the published 2.x SDK's raw
clients; `E2AClient` and `AsyncE2AClient` are built on them (`client.api`). What each call
sends lives in `e2a_gateway.v1.endpoints`, when a refused call is made again
`e2a_gateway.v1.retries`; here is only the HTTP I/O.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import anyio
import httpx
from pydantic import BaseModel

from e2a_gateway.v1 import endpoints
from e2a_gateway.v1.errors import E2AConnectionError
from e2a_gateway.v1.models import (
    Agent,
    ApprovePendingMessageRequest,
    ApprovePendingMessageResponse,
    DeploymentInfo,
    Domain,
    ListAgentsResponse,
    ListApiKeysResponse,
    ListDomainsResponse,
    ListMessagesResponse,
    ListPendingMessagesResponse,
    MessageDetail,
    PendingMessageDetail,
    RegisterAgentRequest,
    RegisterAgentResponse,
    RegisterDomainRequest,
    RejectPendingMessageResponse,
    ReplyToMessageRequest,
    SendEmailRequest,
    SendEmailResponse,
    UpdateAgentRequest,
    VerifyDomainResponse,
)
from e2a_gateway.v1.retries import MAX_RETRIES, retry_delay

T = TypeVar("T")


def _body(model: BaseModel | None) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True) if model is not None else {}


def _register_agent(body: RegisterAgentRequest) -> endpoints.Call[Agent]:
    return endpoints.register_agent(
        body.slug, body.email, body.name, body.webhook_url, body.agent_mode
    )


def _list_messages(
    agent_email: str, status: str, page_size: int, token: str | None
) -> endpoints.Call[ListMessagesResponse]:
    call = endpoints.list_messages(agent_email, status, page_size, token)
    return endpoints.as_model(call, ListMessagesResponse)


def _reply(
    agent_email: str, message_id: str, body: ReplyToMessageRequest, idempotency_key: str | None
) -> endpoints.Call[SendEmailResponse]:
    call = endpoints.reply_payload(agent_email, message_id, _body(body), idempotency_key)
    return endpoints.as_model(call, SendEmailResponse)


def _send(body: SendEmailRequest, idempotency_key: str | None) -> endpoints.Call[SendEmailResponse]:
    return endpoints.as_model(
        endpoints.send_payload(_body(body), idempotency_key), SendEmailResponse
    )


class E2AApi:
    """Raw typed client for the e2a REST API (`/api/v1`): each method is one endpoint.

    Args:
        api_key: API key; defaults to `E2A_API_KEY`.
        base_url: the gateway; defaults to `E2A_BASE_URL`, then `E2A_URL`, then e2a.dev.
        timeout: seconds per request.
        max_retries: how many times a call refused with a `retryable` error, or given no
            answer, is made again, after the wait its `Retry-After` asks (else a short
            pause), when a repeat cannot make it twice (`e2a_gateway.v1.retries`); 0: never.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 30,
        *,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.api_key = endpoints.resolve_api_key(api_key)
        self.base_url = endpoints.resolve_base_url(base_url)
        self.max_retries = max_retries
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=timeout,
        )

    def call(self, call: endpoints.Call[T]) -> T:
        """Perform one request, again after a refusal or no answer `retries.retry_delay`
        allows; raise `E2AApiError` unless the answer is a success (`E2AConnectionError`
        when there was none)."""
        retries_made = 0
        while True:
            outcome: httpx.Response | E2AConnectionError
            try:
                outcome = self._client.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
            except httpx.TransportError as exc:
                outcome = E2AConnectionError.wrapping(exc, self.base_url)
            delay = retry_delay(call, outcome, retries_made, self.max_retries)
            if delay is None:
                return endpoints.settle(call, outcome)
            time.sleep(delay)
            retries_made += 1

    def list_agents(self) -> ListAgentsResponse:
        """`GET /agents`."""
        return self.call(endpoints.list_agents())

    def register_agent(self, body: RegisterAgentRequest) -> RegisterAgentResponse:
        """`POST /agents`."""
        return self.call(_register_agent(body))

    def get_agent(self, email: str) -> Agent:
        """`GET /agents/{email}`."""
        return self.call(endpoints.get_agent(email))

    def delete_agent(self, email: str) -> None:
        """`DELETE /agents/{email}`."""
        self.call(endpoints.delete_agent(email))

    def update_agent(self, email: str, body: UpdateAgentRequest) -> Agent:
        """`PUT /agents/{email}`: only the fields set on `body` change."""
        return self.call(endpoints.update_agent(email, _body(body)))

    def send_test_email(self, email: str) -> dict[str, Any]:
        """`POST /agents/{email}/test`: a test message to the agent itself."""
        return self.call(endpoints.send_test_email(email))

    def list_domains(self) -> ListDomainsResponse:
        """`GET /domains`."""
        return self.call(endpoints.list_domains())

    def register_domain(self, body: RegisterDomainRequest) -> Domain:
        """`POST /domains`."""
        return self.call(endpoints.register_domain(body.domain or ""))

    def verify_domain(self, domain: str) -> VerifyDomainResponse:
        """`POST /domains/{domain}/verify`."""
        return self.call(endpoints.verify_domain(domain))

    def delete_domain(self, domain: str) -> None:
        """`DELETE /domains/{domain}`."""
        self.call(endpoints.delete_domain(domain))

    def list_messages(
        self,
        agent_email: str,
        status: str = "unread",
        page_size: int = 50,
        token: str | None = None,
    ) -> ListMessagesResponse:
        """`GET /agents/{email}/messages`."""
        return self.call(_list_messages(agent_email, status, page_size, token))

    def get_message(
        self, agent_email: str, message_id: str, *, mark_read: bool = True
    ) -> MessageDetail:
        """`GET /agents/{email}/messages/{id}` (marks it read, unless not `mark_read`)."""
        call = endpoints.get_message(agent_email, message_id, mark_read=mark_read)
        return self.call(endpoints.as_model(call, MessageDetail))

    def reply_to_message(
        self,
        agent_email: str,
        message_id: str,
        body: ReplyToMessageRequest,
        *,
        idempotency_key: str | None = None,
    ) -> SendEmailResponse:
        """`POST /agents/{email}/messages/{id}/reply`; a repeat with the same
        `idempotency_key` answers the first reply (without one, the SDK makes one per call)."""
        return self.call(_reply(agent_email, message_id, body, idempotency_key))

    def send_email(
        self, body: SendEmailRequest, *, idempotency_key: str | None = None
    ) -> SendEmailResponse:
        """`POST /send`; a repeat with the same `idempotency_key` answers the first send
        (without one, the SDK makes one per call)."""
        return self.call(_send(body, idempotency_key))

    def list_pending_messages(self) -> ListPendingMessagesResponse:
        """`GET /messages?status=pending_approval`."""
        return self.call(endpoints.list_pending_messages())

    def get_pending_message(self, message_id: str) -> PendingMessageDetail:
        """`GET /messages/{id}`."""
        return self.call(endpoints.get_pending_message(message_id))

    def approve_message(
        self,
        message_id: str,
        overrides: ApprovePendingMessageRequest | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ApprovePendingMessageResponse:
        """`POST /messages/{id}/approve`, with edits when `overrides` sets any; a repeat with
        the same `idempotency_key` answers the first approval instead of a 409."""
        call = endpoints.approve_message(message_id, _body(overrides), idempotency_key)
        return self.call(call)

    def reject_message(self, message_id: str, reason: str = "") -> RejectPendingMessageResponse:
        """`POST /messages/{id}/reject`."""
        return self.call(endpoints.reject_message(message_id, reason))

    def list_api_keys(self) -> ListApiKeysResponse:
        """`GET /users/me/api-keys`: the caller's keys, prefixes only."""
        return self.call(endpoints.list_api_keys())

    def delete_api_key(self, key_id: str) -> None:
        """`DELETE /users/me/api-keys/{id}`: revoke one of the caller's keys."""
        self.call(endpoints.delete_api_key(key_id))

    def get_info(self) -> DeploymentInfo:
        """`GET /info` (needs no key)."""
        return self.call(endpoints.get_info())

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> E2AApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncE2AApi:
    """The asynchronous twin of `E2AApi` (every call awaited), under asyncio or trio."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 30,
        *,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.api_key = endpoints.resolve_api_key(api_key)
        self.base_url = endpoints.resolve_base_url(base_url)
        self.max_retries = max_retries
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=timeout,
        )

    async def call(self, call: endpoints.Call[T]) -> T:
        """Perform one request, again after a refusal or no answer `retries.retry_delay`
        allows; raise `E2AApiError` unless the answer is a success (`E2AConnectionError`
        when there was none)."""
        retries_made = 0
        while True:
            outcome: httpx.Response | E2AConnectionError
            try:
                outcome = await self._client.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
            except httpx.TransportError as exc:
                outcome = E2AConnectionError.wrapping(exc, self.base_url)
            delay = retry_delay(call, outcome, retries_made, self.max_retries)
            if delay is None:
                return endpoints.settle(call, outcome)
            await anyio.sleep(delay)
            retries_made += 1

    async def list_agents(self) -> ListAgentsResponse:
        """`GET /agents`."""
        return await self.call(endpoints.list_agents())

    async def register_agent(self, body: RegisterAgentRequest) -> RegisterAgentResponse:
        """`POST /agents`."""
        return await self.call(_register_agent(body))

    async def get_agent(self, email: str) -> Agent:
        """`GET /agents/{email}`."""
        return await self.call(endpoints.get_agent(email))

    async def delete_agent(self, email: str) -> None:
        """`DELETE /agents/{email}`."""
        await self.call(endpoints.delete_agent(email))

    async def update_agent(self, email: str, body: UpdateAgentRequest) -> Agent:
        """`PUT /agents/{email}`: only the fields set on `body` change."""
        return await self.call(endpoints.update_agent(email, _body(body)))

    async def send_test_email(self, email: str) -> dict[str, Any]:
        """`POST /agents/{email}/test`: a test message to the agent itself."""
        return await self.call(endpoints.send_test_email(email))

    async def list_domains(self) -> ListDomainsResponse:
        """`GET /domains`."""
        return await self.call(endpoints.list_domains())

    async def register_domain(self, body: RegisterDomainRequest) -> Domain:
        """`POST /domains`."""
        return await self.call(endpoints.register_domain(body.domain or ""))

    async def verify_domain(self, domain: str) -> VerifyDomainResponse:
        """`POST /domains/{domain}/verify`."""
        return await self.call(endpoints.verify_domain(domain))

    async def delete_domain(self, domain: str) -> None:
        """`DELETE /domains/{domain}`."""
        await self.call(endpoints.delete_domain(domain))

    async def list_messages(
        self,
        agent_email: str,
        status: str = "unread",
        page_size: int = 50,
        token: str | None = None,
    ) -> ListMessagesResponse:
        """`GET /agents/{email}/messages`."""
        return await self.call(_list_messages(agent_email, status, page_size, token))

    async def get_message(
        self, agent_email: str, message_id: str, *, mark_read: bool = True
    ) -> MessageDetail:
        """`GET /agents/{email}/messages/{id}` (marks it read, unless not `mark_read`)."""
        call = endpoints.get_message(agent_email, message_id, mark_read=mark_read)
        return await self.call(endpoints.as_model(call, MessageDetail))

    async def reply_to_message(
        self,
        agent_email: str,
        message_id: str,
        body: ReplyToMessageRequest,
        *,
        idempotency_key: str | None = None,
    ) -> SendEmailResponse:
        """`POST /agents/{email}/messages/{id}/reply`; a repeat with the same
        `idempotency_key` answers the first reply (without one, the SDK makes one per call)."""
        return await self.call(_reply(agent_email, message_id, body, idempotency_key))

    async def send_email(
        self, body: SendEmailRequest, *, idempotency_key: str | None = None
    ) -> SendEmailResponse:
        """`POST /send`; a repeat with the same `idempotency_key` answers the first send
        (without one, the SDK makes one per call)."""
        return await self.call(_send(body, idempotency_key))

    async def list_pending_messages(self) -> ListPendingMessagesResponse:
        """`GET /messages?status=pending_approval`."""
        return await self.call(endpoints.list_pending_messages())

    async def get_pending_message(self, message_id: str) -> PendingMessageDetail:
        """`GET /messages/{id}`."""
        return await self.call(endpoints.get_pending_message(message_id))

    async def approve_message(
        self,
        message_id: str,
        overrides: ApprovePendingMessageRequest | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ApprovePendingMessageResponse:
        """`POST /messages/{id}/approve`, with edits when `overrides` sets any; a repeat with
        the same `idempotency_key` answers the first approval instead of a 409."""
        call = endpoints.approve_message(message_id, _body(overrides), idempotency_key)
        return await self.call(call)

    async def reject_message(
        self, message_id: str, reason: str = ""
    ) -> RejectPendingMessageResponse:
        """`POST /messages/{id}/reject`."""
        return await self.call(endpoints.reject_message(message_id, reason))

    async def list_api_keys(self) -> ListApiKeysResponse:
        """`GET /users/me/api-keys`: the caller's keys, prefixes only."""
        return await self.call(endpoints.list_api_keys())

    async def delete_api_key(self, key_id: str) -> None:
        """`DELETE /users/me/api-keys/{id}`: revoke one of the caller's keys."""
        await self.call(endpoints.delete_api_key(key_id))

    async def get_info(self) -> DeploymentInfo:
        """`GET /info` (needs no key)."""
        return await self.call(endpoints.get_info())

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncE2AApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
