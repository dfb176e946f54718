"""The tools' port over HTTP: the SDK client, bound to the caller's API key, against a remote
gateway (`e2a mcp` on stdio). Imports no server module."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import unquote

import anyio
import httpx

from e2a_gateway.v1 import (
    AsyncE2AClient,
    DeploymentInfo,
    E2AApiError,
    fetch_info,
)
from e2a_gateway.v1.api import AsyncE2AApi
from e2a_gateway.v1.endpoints import Call, path_segment

T = TypeVar("T")

HELD_NOT_FOUND = "no held message with this id in your account"
NOT_FOUND = {
    "agents": "agent not found",
    "messages": "message not found",
    "conversations": "conversation not found",
    "events": "event not found",
    "webhooks": "webhook not found",
    "templates": "template not found",
    "api-keys": "API key not found",
    "domains": "domain not found",
    "reviews": HELD_NOT_FOUND,
}
"""The gateway's answer for an unknown object, by the path's collection of it."""


def _json(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    return body if isinstance(body, dict) else {}


def _query_value(value: Any) -> Any:
    """A query parameter as `/v1` reads it: a list comma-separated, a boolean in lowercase."""
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _v1_path(*segments: str) -> str:
    """`/v1/{segment}/…`, each segment escaped (an address or an id may hold any character,
    or be `..`)."""
    return "/v1/" + "/".join(path_segment(part) for part in segments)


def unroutable(path: str) -> E2AApiError | None:
    """The refusal for a request path whose object's id holds `/` (escaped `%2F`), else None.
    The gateway decodes `%2F` before it routes, so no route takes such a path ("no such
    endpoint"); no object has such an id, so the answer is the gateway's for an unknown one,
    as `/mcp`, which looks the id up, answers."""
    segments = path.split("/")
    for index, segment in enumerate(segments[1:], start=1):
        value = unquote(segment)
        if "/" not in value:
            continue
        collection = segments[index - 1]
        if collection == "starter-templates":
            message = f"no starter template {value!r}: GET /v1/starter-templates lists them"
            return E2AApiError(404, message, "starter_template_not_found")
        if collection == "messages" and segments[index - 2] == "v1":
            return E2AApiError(404, HELD_NOT_FOUND, "not_found")  # /api/v1's held mail
        return E2AApiError(404, NOT_FOUND.get(collection, "not found"), "not_found")
    return None


class RoutedApi(AsyncE2AApi):
    """The raw API client, answering itself a request no gateway route can take."""

    async def call(self, call: Call[T]) -> T:
        """Perform one request, unless its path names an id no object has (`unroutable`)."""
        refused = unroutable(call.path)
        if refused is not None:
            raise refused
        return await super().call(call)


def _once(idempotency_key: str | None) -> dict[str, str] | None:
    """The Idempotency-Key header of a write, when a key is given."""
    return None if idempotency_key is None else {"Idempotency-Key": idempotency_key}


class SdkPort(AsyncE2AClient):
    """`GatewayPort` as the SDK client, with what the tools ask that it lacks."""

    api_class = RoutedApi

    def __init__(
        self,
        api_key: str | None = None,
        agent_email: str | None = None,
        base_url: str | None = None,
        timeout: float = 30,
    ) -> None:
        """The SDK client making each call once: a tool answers a refusal (429, 503) at once,
        with the wait its `Retry-After` asks (`retry_after_seconds`), and the model decides,
        rather than holding the tool call for as long as the gateway asks."""
        super().__init__(api_key, agent_email, base_url, timeout, max_retries=0)

    @property
    def gateway_url(self) -> str:
        """The base URL the client calls."""
        return self.base_url

    async def get_info(self) -> DeploymentInfo:
        """`GET /info`, through the SDK's sync twin in a worker thread: building an HTTP client
        loads the CA bundle, CPU work the event loop should not wait for."""
        return await anyio.to_thread.run_sync(fetch_info, self.base_url)

    async def delete_api_key(self, key_id: str) -> None:
        """`DELETE /users/me/api-keys/{id}`, through the raw API client."""
        await self.api.delete_api_key(key_id)

    async def _v1(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call to the gateway's `/v1` face, which the SDK (written for `/api/v1`) lacks."""
        params = {name: str(value) for name, value in (query or {}).items()}
        call = Call(method, path, _json, json=body, params=params or None, headers=headers)
        return await self.api.call(call)

    async def get_account(self) -> dict[str, Any]:
        """`GET /v1/account`."""
        return await self._v1("GET", "/v1/account")

    async def trash_message(self, email: str, message_id: str) -> dict[str, Any]:
        """`DELETE /v1/agents/{email}/messages/{id}`: to the trash."""
        return await self._v1("DELETE", _v1_path("agents", email, "messages", message_id))

    async def restore_message(self, email: str, message_id: str) -> dict[str, Any]:
        """`POST /v1/agents/{email}/messages/{id}/restore`."""
        return await self._v1("POST", _v1_path("agents", email, "messages", message_id, "restore"))

    async def list_agent_page(self, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/agents`."""
        params = {name: _query_value(value) for name, value in query.items()}
        return await self._v1("GET", "/v1/agents", query=params)

    async def get_v1_message(self, email: str, message_id: str) -> dict[str, Any]:
        """`GET /v1/agents/{email}/messages/{id}`."""
        return await self._v1("GET", _v1_path("agents", email, "messages", message_id))

    async def get_attachment(
        self, email: str, message_id: str, index: int, inline: bool = False
    ) -> dict[str, Any]:
        """`GET /v1/agents/{email}/messages/{id}/attachments/{index}`, `?inline=true` when
        asked."""
        path = _v1_path("agents", email, "messages", message_id, "attachments", str(index))
        return await self._v1("GET", path, query={"inline": "true"} if inline else None)

    async def trash_agent(self, email: str) -> dict[str, Any]:
        """`DELETE /v1/agents/{email}?confirm=DELETE`: to the trash."""
        return await self._v1("DELETE", _v1_path("agents", email), query={"confirm": "DELETE"})

    async def restore_agent(self, email: str) -> dict[str, Any]:
        """`POST /v1/agents/{email}/restore`."""
        return await self._v1("POST", _v1_path("agents", email, "restore"))

    async def get_conversation(
        self, email: str, conversation_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """`GET /v1/agents/{email}/conversations/{id}`."""
        path = _v1_path("agents", email, "conversations", conversation_id)
        return await self._v1("GET", path, query=query)

    async def list_conversations(self, email: str, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/agents/{email}/conversations`."""
        return await self._v1("GET", _v1_path("agents", email, "conversations"), query=query)

    async def update_message_labels(
        self, email: str, message_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """`PATCH /v1/agents/{email}/messages/{id}`."""
        path = _v1_path("agents", email, "messages", message_id)
        return await self._v1("PATCH", path, body=changes)

    async def list_events(self, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/events`."""
        return await self._v1("GET", "/v1/events", query=query)

    async def get_event(self, event_id: str) -> dict[str, Any]:
        """`GET /v1/events/{id}`."""
        return await self._v1("GET", _v1_path("events", event_id))

    async def redeliver_event(self, event_id: str, webhook_id: str | None) -> dict[str, Any]:
        """`POST /v1/events/{id}/redeliver`."""
        body = {} if webhook_id is None else {"webhook_id": webhook_id}
        path = _v1_path("events", event_id, "redeliver")
        return await self._v1("POST", path, body=body)

    async def list_webhooks(self, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/webhooks`."""
        return await self._v1("GET", "/v1/webhooks", query=query)

    async def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        """`GET /v1/webhooks/{id}`."""
        return await self._v1("GET", _v1_path("webhooks", webhook_id))

    async def create_webhook(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/webhooks`."""
        return await self._v1("POST", "/v1/webhooks", body=fields)

    async def update_webhook(self, webhook_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`PATCH /v1/webhooks/{id}`."""
        return await self._v1("PATCH", _v1_path("webhooks", webhook_id), body=fields)

    async def delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        """`DELETE /v1/webhooks/{id}?confirm=DELETE`."""
        path = _v1_path("webhooks", webhook_id)
        return await self._v1("DELETE", path, query={"confirm": "DELETE"})

    async def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """`POST /v1/webhooks/{id}/rotate-secret`."""
        return await self._v1("POST", _v1_path("webhooks", webhook_id, "rotate-secret"))

    async def test_webhook(self, webhook_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/webhooks/{id}/test`."""
        return await self._v1("POST", _v1_path("webhooks", webhook_id, "test"), body=fields)

    async def list_webhook_deliveries(
        self, webhook_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """`GET /v1/webhooks/{id}/deliveries`."""
        return await self._v1("GET", _v1_path("webhooks", webhook_id, "deliveries"), query=query)

    async def list_api_keys(self, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/account/api-keys`."""
        return await self._v1("GET", "/v1/account/api-keys", query=query)

    async def create_api_key(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/account/api-keys`."""
        return await self._v1("POST", "/v1/account/api-keys", body=fields)

    async def get_protection(self, email: str) -> dict[str, Any]:
        """`GET /v1/agents/{email}/protection`."""
        return await self._v1("GET", _v1_path("agents", email, "protection"))

    async def put_protection(self, email: str, config: dict[str, Any]) -> dict[str, Any]:
        """`PUT /v1/agents/{email}/protection`."""
        return await self._v1("PUT", _v1_path("agents", email, "protection"), body=config)

    async def send_message(
        self, email: str, fields: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """`POST /v1/agents/{email}/messages`, with the Idempotency-Key given."""
        path = _v1_path("agents", email, "messages")
        return await self._v1("POST", path, body=fields, headers=_once(idempotency_key))

    async def reply_to_message(
        self,
        email: str,
        message_id: str,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/agents/{email}/messages/{id}/reply`, with the Idempotency-Key given."""
        path = _v1_path("agents", email, "messages", message_id, "reply")
        return await self._v1("POST", path, body=fields, headers=_once(idempotency_key))

    async def approve_review(
        self, message_id: str, fields: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """`POST /v1/reviews/{id}/approve`, with the Idempotency-Key given."""
        path = _v1_path("reviews", message_id, "approve")
        return await self._v1("POST", path, body=fields, headers=_once(idempotency_key))

    async def list_agent_messages(self, email: str, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/agents/{email}/messages` (labels comma-separated, as e2a takes them)."""
        params = {name: _query_value(value) for name, value in query.items()}
        return await self._v1("GET", _v1_path("agents", email, "messages"), query=params)

    async def list_templates(self, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/templates`."""
        return await self._v1("GET", "/v1/templates", query=query)

    async def get_template(self, template_id: str) -> dict[str, Any]:
        """`GET /v1/templates/{id}`."""
        return await self._v1("GET", _v1_path("templates", template_id))

    async def create_template(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/templates`."""
        return await self._v1("POST", "/v1/templates", body=fields)

    async def update_template(self, template_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`PATCH /v1/templates/{id}`."""
        return await self._v1("PATCH", _v1_path("templates", template_id), body=fields)

    async def delete_template(self, template_id: str) -> dict[str, Any]:
        """`DELETE /v1/templates/{id}?confirm=DELETE`."""
        path = _v1_path("templates", template_id)
        return await self._v1("DELETE", path, query={"confirm": "DELETE"})

    async def validate_template(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/templates/validate`."""
        return await self._v1("POST", "/v1/templates/validate", body=fields)

    async def list_starter_templates(self, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/starter-templates`."""
        return await self._v1("GET", "/v1/starter-templates", query=query)

    async def get_starter_template(self, alias: str) -> dict[str, Any]:
        """`GET /v1/starter-templates/{alias}`."""
        return await self._v1("GET", _v1_path("starter-templates", alias))

    async def list_reviews(self, query: dict[str, Any]) -> dict[str, Any]:
        """`GET /v1/reviews`."""
        return await self._v1("GET", "/v1/reviews", query=query)

    async def get_review(self, message_id: str) -> dict[str, Any]:
        """`GET /v1/reviews/{id}`."""
        return await self._v1("GET", _v1_path("reviews", message_id))

    async def reject_review(self, message_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/reviews/{id}/reject`."""
        return await self._v1("POST", _v1_path("reviews", message_id, "reject"), body=fields)

    async def forward_message(
        self,
        email: str,
        message_id: str,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/agents/{email}/messages/{id}/forward`, with the Idempotency-Key given."""
        path = _v1_path("agents", email, "messages", message_id, "forward")
        return await self._v1("POST", path, body=fields, headers=_once(idempotency_key))

    async def get_message_lifecycle(
        self, email: str, message_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        """`GET /v1/agents/{email}/messages/{id}/lifecycle`."""
        path = _v1_path("agents", email, "messages", message_id, "lifecycle")
        return await self._v1("GET", path, query=query)
