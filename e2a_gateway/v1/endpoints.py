"""What each SDK call sends and how its answer is read, shared by the sync and async clients.

Each function returns a `Call`: method, path, body, query and a reader for the response.
The clients only perform the I/O, so both speak exactly the same protocol. No I/O here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from e2a_gateway.v1.errors import E2AApiError, E2AConnectionError
from e2a_gateway.v1.inbound import Attachment, MessageList, SendResult, summary_from_json
from e2a_gateway.v1.models import (
    Agent,
    DeploymentInfo,
    Domain,
    ListAgentsResponse,
    ListApiKeysResponse,
    ListDomainsResponse,
    ListPendingMessagesResponse,
    PendingMessageDetail,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_BASE_URL = "https://e2a.dev"
API = "/api/v1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request of the API and the function that reads its 2xx answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    @property
    def repeatable(self) -> bool:
        """Whether making the request twice does no more than making it once: a read, a PUT or
        DELETE, or a write carrying an Idempotency-Key (the gateway answers a repeat with the
        first answer)."""
        return self.method in REPEATABLE_METHODS or IDEMPOTENCY_HEADER in (self.headers or {})


def check(response: httpx.Response) -> httpx.Response:
    """`response` when it is a success, else raise `E2AApiError`: for an error status, and
    for a redirect, which the client does not follow (a request sent again elsewhere could
    write twice) and which is no answer of the API (a delete would look done)."""
    if response.status_code >= 400:
        raise E2AApiError.from_response(response)
    if response.is_redirect:
        where = response.headers.get("location", "")
        raise E2AApiError(
            response.status_code,
            f"{response.request.method} {response.url} was redirected to {where}: "
            "set the base URL to the address the gateway answers at itself",
            "redirected",
        )
    return response


def answer(call: Call[T], response: httpx.Response) -> T:
    """What `call`'s answer says; `E2AApiError` for an error status, and for a success whose
    body is not the JSON the API sends (a web server that is not an e2a gateway, such as a
    proxy's default page or a single-page app answering every path)."""
    check(response)
    try:
        return call.read(response)
    except ValueError as exc:  # not JSON (json.JSONDecodeError), or not its shape (pydantic)
        kind = response.headers.get("content-type", "no Content-Type").split(";")[0]
        raise E2AApiError(
            response.status_code,
            f"{call.method} {response.url} answered {kind}, not the e2a API's JSON "
            f"({type(exc).__name__}): is {response.url.copy_with(path='/', query=None)} "
            "an e2a gateway?",
            "invalid_answer",
        ) from exc


def settle(call: Call[T], outcome: httpx.Response | E2AConnectionError) -> T:
    """What `call` came to: its answer read (`answer`), or, when there was none, the
    `E2AConnectionError` saying so raised."""
    if isinstance(outcome, E2AConnectionError):
        raise outcome
    return answer(call, outcome)


def resolve_api_key(api_key: str | None) -> str:
    """`api_key`, else `E2A_API_KEY`; a ValueError saying how to provide one."""
    key = api_key or os.environ.get("E2A_API_KEY", "")
    if not key:
        raise ValueError("api_key is required: pass api_key=… or set E2A_API_KEY")
    return key


def resolve_base_url(base_url: str | None) -> str:
    """`base_url`, else `E2A_BASE_URL`, else `E2A_URL`, else the hosted service."""
    url = base_url or os.environ.get("E2A_BASE_URL") or os.environ.get("E2A_URL")
    return (url or DEFAULT_BASE_URL).rstrip("/")


def path_segment(value: str) -> str:
    """`value` as one segment of a request path: every reserved character escaped (`/` too),
    and a segment of only dots (`.`, `..`) escaped as well, which an HTTP client would
    otherwise resolve as a step to the parent path (RFC 3986 §5.2.4), another route."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted and not quoted.strip(".") else quoted


def _agent(email: str, suffix: str = "") -> str:
    return f"{API}/agents/{path_segment(email)}{suffix}"


def _json(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    return body if isinstance(body, dict) else {}


def _nothing(response: httpx.Response) -> None:
    return None


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    def read(response: httpx.Response) -> M:
        return model.model_validate(response.json())

    return read


def as_model(call: Call[Any], model: type[M]) -> Call[M]:
    """The same request, its answer read as `model` (for the raw API's typed answers)."""
    return Call(
        call.method,
        call.path,
        _model(model),
        json=call.json,
        params=call.params,
        headers=call.headers,
    )


def keyed(call: Call[T], idempotency_key: str | None) -> Call[T]:
    """`call` with an Idempotency-Key: `idempotency_key`, else a new random one, so the
    gateway answers a repeat of it (a retry) with the first answer instead of writing twice.
    A key of your own (the id of the job a send is for, say) makes your own retries safe too."""
    key = uuid.uuid4().hex if idempotency_key is None else idempotency_key
    return replace(call, headers={**(call.headers or {}), IDEMPOTENCY_HEADER: key})


def _send_result(response: httpx.Response) -> SendResult:
    body = _json(response)
    return SendResult(
        status=str(body.get("status") or ""),
        message_id=str(body.get("message_id") or ""),
        method=str(body.get("method") or ""),
        approval_expires_at=body.get("approval_expires_at"),
    )


def _message_list(response: httpx.Response) -> MessageList:
    body = _json(response)
    messages = [summary_from_json(item) for item in body.get("messages") or []]
    return MessageList(messages=messages, next_token=body.get("next_token"))


def _present(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _attachments(attachments: list[Attachment] | None) -> list[dict[str, str]] | None:
    return [item.to_wire() for item in attachments] if attachments else None


def list_agents() -> Call[ListAgentsResponse]:
    """`GET /agents`."""
    return Call("GET", f"{API}/agents", _model(ListAgentsResponse))


def register_agent(
    slug: str | None,
    email: str | None,
    name: str | None,
    webhook_url: str | None,
    agent_mode: str | None,
) -> Call[Agent]:
    """`POST /agents`."""
    body = _present(
        slug=slug, email=email, name=name, webhook_url=webhook_url, agent_mode=agent_mode
    )
    return Call("POST", f"{API}/agents", _model(Agent), json=body)


def get_agent(email: str) -> Call[Agent]:
    """`GET /agents/{email}`."""
    return Call("GET", _agent(email), _model(Agent))


def update_agent(email: str, changes: dict[str, Any]) -> Call[Agent]:
    """`PUT /agents/{email}` with only the fields given."""
    return Call("PUT", _agent(email), _model(Agent), json=_present(**changes))


def delete_agent(email: str) -> Call[None]:
    """`DELETE /agents/{email}`."""
    return Call("DELETE", _agent(email), _nothing)


def list_domains() -> Call[ListDomainsResponse]:
    """`GET /domains`."""
    return Call("GET", f"{API}/domains", _model(ListDomainsResponse))


def register_domain(domain: str) -> Call[Domain]:
    """`POST /domains`."""
    return Call("POST", f"{API}/domains", _model(Domain), json={"domain": domain})


def verify_domain(domain: str) -> Call[Domain]:
    """`POST /domains/{domain}/verify`."""
    return Call("POST", f"{API}/domains/{path_segment(domain)}/verify", _model(Domain))


def delete_domain(domain: str) -> Call[None]:
    """`DELETE /domains/{domain}`."""
    return Call("DELETE", f"{API}/domains/{path_segment(domain)}", _nothing)


def list_messages(
    agent_email: str, status: str, page_size: int, token: str | None
) -> Call[MessageList]:
    """`GET /agents/{email}/messages`."""
    params = {"status": status, "page_size": str(page_size)}
    if token:
        params["token"] = token
    return Call("GET", _agent(agent_email, "/messages"), _message_list, params=params)


def get_message(
    agent_email: str, message_id: str, *, mark_read: bool = True
) -> Call[dict[str, Any]]:
    """`GET /agents/{email}/messages/{id}` (marks it read, unless not `mark_read`)."""
    params = None if mark_read else {"mark_read": "false"}
    path = _agent(agent_email, f"/messages/{path_segment(message_id)}")
    return Call("GET", path, _json, params=params)


def reply(
    agent_email: str,
    message_id: str,
    body: str,
    *,
    html_body: str | None = None,
    reply_all: bool | None = None,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    conversation_id: str | None = None,
    attachments: list[Attachment] | None = None,
    idempotency_key: str | None = None,
) -> Call[SendResult]:
    """`POST /agents/{email}/messages/{id}/reply`, with an Idempotency-Key (`keyed`)."""
    payload = _present(
        body=body,
        html_body=html_body,
        reply_all=reply_all,
        cc=cc,
        bcc=bcc,
        conversation_id=conversation_id,
        attachments=_attachments(attachments),
    )
    return reply_payload(agent_email, message_id, payload, idempotency_key)


def reply_payload(
    agent_email: str, message_id: str, payload: dict[str, Any], idempotency_key: str | None
) -> Call[SendResult]:
    """`POST /agents/{email}/messages/{id}/reply` with a ready JSON body, keyed (`keyed`)."""
    path = _agent(agent_email, f"/messages/{path_segment(message_id)}/reply")
    return keyed(Call("POST", path, _send_result, json=payload), idempotency_key)


def send(
    sender: str | None,
    to: list[str],
    subject: str,
    body: str,
    *,
    html_body: str | None = None,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    conversation_id: str | None = None,
    attachments: list[Attachment] | None = None,
    idempotency_key: str | None = None,
) -> Call[SendResult]:
    """`POST /send`, with an Idempotency-Key (`keyed`); `sender` may be None when the caller
    has exactly one agent."""
    payload = _present(
        to=to,
        subject=subject,
        body=body,
        html_body=html_body,
        cc=cc,
        bcc=bcc,
        conversation_id=conversation_id,
        attachments=_attachments(attachments),
    )
    if sender:
        payload["from"] = sender
    return send_payload(payload, idempotency_key)


def send_payload(payload: dict[str, Any], idempotency_key: str | None) -> Call[SendResult]:
    """`POST /send` with a ready JSON body, keyed (`keyed`)."""
    return keyed(Call("POST", f"{API}/send", _send_result, json=payload), idempotency_key)


def send_test_email(agent_email: str) -> Call[dict[str, Any]]:
    """`POST /agents/{email}/test`: a test message to the agent itself."""
    return Call("POST", _agent(agent_email, "/test"), _json)


def list_pending_messages() -> Call[ListPendingMessagesResponse]:
    """`GET /messages?status=pending_approval`."""
    params = {"status": "pending_approval"}
    return Call("GET", f"{API}/messages", _model(ListPendingMessagesResponse), params=params)


def get_pending_message(message_id: str) -> Call[PendingMessageDetail]:
    """`GET /messages/{id}`."""
    return Call("GET", f"{API}/messages/{path_segment(message_id)}", _model(PendingMessageDetail))


def approve_message(
    message_id: str, overrides: dict[str, Any], idempotency_key: str | None = None
) -> Call[PendingMessageDetail]:
    """`POST /messages/{id}/approve`, with edits when `overrides` has any, and an
    Idempotency-Key (`keyed`)."""
    path = f"{API}/messages/{path_segment(message_id)}/approve"
    call = Call("POST", path, _model(PendingMessageDetail), json=_present(**overrides))
    return keyed(call, idempotency_key)


def reject_message(message_id: str, reason: str) -> Call[PendingMessageDetail]:
    """`POST /messages/{id}/reject`."""
    path = f"{API}/messages/{path_segment(message_id)}/reject"
    body = {"reason": reason} if reason else {}
    return Call("POST", path, _model(PendingMessageDetail), json=body)


def list_api_keys() -> Call[ListApiKeysResponse]:
    """`GET /users/me/api-keys` (prefixes only)."""
    return Call("GET", f"{API}/users/me/api-keys", _model(ListApiKeysResponse))


def delete_api_key(key_id: str) -> Call[None]:
    """`DELETE /users/me/api-keys/{id}`: revoke a key for good."""
    return Call("DELETE", f"{API}/users/me/api-keys/{path_segment(key_id)}", _nothing)


def get_info() -> Call[DeploymentInfo]:
    """`GET /info` (no key needed)."""
    return Call("GET", f"{API}/info", _model(DeploymentInfo))
