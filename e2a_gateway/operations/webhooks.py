"""`/v1` webhook subscribers of an account: created with a `whsec_` secret shown once, listed,
changed, deleted, their secret rotated (the old one keeps signing for 24 hours), tested, and
their deliveries read. Only account keys manage them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import EVENT_TYPES, envelope
from e2a_gateway.gateway import Gateway
from e2a_gateway.ids import new_id
from e2a_gateway.operations.agents import checked_webhook_url
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Invalid, NotFound
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.signing.credentials import new_secret_seed
from e2a_gateway.signing.webhook_signatures import webhook_secret
from e2a_gateway.storage.base import LimitReached, SubscriberDelivery, Webhook, WebhookChanges

MAX_WEBHOOKS = 20
"""Webhooks per account (e2a's `webhook_limit_reached`)."""
ROTATION_GRACE_SECONDS = 24 * 3600.0
"""After a rotation, the previous secret signs too for this long."""
MAX_FILTER_ITEMS = 100


class OmitNotNull(RequestBody):
    """A request whose optional fields are left out when unset: an explicit `null` is refused
    (e2a's schemas type them as strings, lists, objects, never null)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [name for name, value in data.items() if value is None]
            if nulls:
                raise ValueError(f"{', '.join(nulls)}: null is not allowed; leave the field out")
        return data


class WebhookFilters(OmitNotNull):
    """Only events of these agents / conversations (empty or absent: all); `labels` is
    accepted for e2a's clients and matches everything, the gateway having no labels."""

    agent_emails: list[str] | None = Field(default=None, max_length=MAX_FILTER_ITEMS)
    conversation_ids: list[str] | None = Field(default=None, max_length=MAX_FILTER_ITEMS)
    labels: list[str] | None = Field(default=None, max_length=MAX_FILTER_ITEMS)


class CreateWebhook(OmitNotNull):
    """POST /v1/webhooks."""

    url: str = Field(max_length=2048)
    events: list[str] = Field(max_length=len(EVENT_TYPES))
    description: str | None = Field(default=None, max_length=500)
    filters: WebhookFilters | None = None


class UpdateWebhook(OmitNotNull):
    """PATCH /v1/webhooks/{id}: `url`, `events` and `filters` replace when present."""

    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = Field(default=None, max_length=len(EVENT_TYPES))
    description: str | None = Field(default=None, max_length=500)
    filters: WebhookFilters | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class IssuedWebhook:
    """A webhook with its signing secret (shown once)."""

    webhook: Webhook
    secret: str


def _event_types(events: list[str]) -> list[str]:
    if not events:
        raise Invalid("invalid_event_type", "events: name at least one event type")
    unknown = [name for name in events if name not in EVENT_TYPES]
    if unknown:
        raise Invalid(
            "invalid_event_type",
            f"events: unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}",
        )
    return list(dict.fromkeys(events))


async def _url(gateway: Gateway, url: str) -> str:
    checked = await checked_webhook_url(gateway, url)
    if checked is None:
        raise Invalid("invalid_webhook_url", "url: give the https URL of your receiver")
    return checked


def _agents(filters: WebhookFilters | None) -> list[str]:
    return [address.lower() for address in (filters.agent_emails or [])] if filters else []


async def create_webhook(gateway: Gateway, caller: Caller, request: CreateWebhook) -> IssuedWebhook:
    """A new webhook of the caller's account, and its secret."""
    caller.require_account("manage webhooks")
    webhook = Webhook(
        id=new_id("wh"),
        user_id=caller.user_id,
        url=await _url(gateway, request.url),
        description=request.description or "",
        events=_event_types(request.events),
        agent_emails=_agents(request.filters),
        conversation_ids=list(request.filters.conversation_ids or []) if request.filters else [],
        enabled=True,
        seed=new_secret_seed(),
        created_at=format_timestamp(time.time()),
    )
    try:
        await gateway.storage.add_webhook(webhook, MAX_WEBHOOKS)
    except LimitReached:
        raise Invalid(
            "webhook_limit_reached",
            f"an account has at most {MAX_WEBHOOKS} webhooks; delete one first",
        ) from None
    return IssuedWebhook(webhook, webhook_secret(gateway.server_key, webhook.seed))


async def webhook_page(
    gateway: Gateway, caller: Caller, limit: int, after_seq: int | None
) -> list[Webhook]:
    """The caller's webhooks, oldest first."""
    caller.require_account("manage webhooks")
    return await gateway.storage.webhook_page(caller.user_id, limit, after_seq)


async def get_webhook(gateway: Gateway, caller: Caller, webhook_id: str) -> Webhook:
    """One of the caller's webhooks."""
    caller.require_account("manage webhooks")
    found = await gateway.storage.get_webhook(caller.user_id, webhook_id)
    if found is None:
        raise NotFound.of("webhook")
    return found


async def update_webhook(
    gateway: Gateway, caller: Caller, webhook_id: str, request: UpdateWebhook
) -> Webhook:
    """Change one of the caller's webhooks."""
    caller.require_account("manage webhooks")
    filters = request.filters
    changes = WebhookChanges(
        url=None if request.url is None else await _url(gateway, request.url),
        description=request.description,
        events=None if request.events is None else _event_types(request.events),
        agent_emails=None if filters is None else _agents(filters),
        conversation_ids=None if filters is None else list(filters.conversation_ids or []),
        enabled=request.enabled,
    )
    updated = await gateway.storage.update_webhook(caller.user_id, webhook_id, changes)
    if updated is None:
        raise NotFound.of("webhook")
    return updated


async def delete_webhook(gateway: Gateway, caller: Caller, webhook_id: str) -> None:
    """Delete one of the caller's webhooks and its deliveries."""
    caller.require_account("manage webhooks")
    if not await gateway.storage.delete_webhook(caller.user_id, webhook_id):
        raise NotFound.of("webhook")


async def rotate_secret(
    gateway: Gateway, caller: Caller, webhook_id: str, now: float
) -> tuple[str, float]:
    """A new secret for the webhook (shown once) and when the previous one stops signing."""
    caller.require_account("manage webhooks")
    seed = new_secret_seed()
    until = now + ROTATION_GRACE_SECONDS
    if await gateway.storage.rotate_webhook_seed(caller.user_id, webhook_id, seed, until) is None:
        raise NotFound.of("webhook")
    return webhook_secret(gateway.server_key, seed), until


async def test_webhook(
    gateway: Gateway,
    caller: Caller,
    webhook_id: str,
    event_type: str | None,
    data: dict[str, object] | None,
    now: float,
) -> str:
    """Queue a synthetic event (not logged) to the webhook; the delivery's id."""
    caller.require_account("manage webhooks")
    chosen = _event_types([event_type])[0] if event_type else "email.received"
    payload = data if data is not None else {"test": True}
    event_id = new_id("evt")
    body = envelope(chosen, event_id, now, payload)
    delivery_id = await gateway.storage.add_test_delivery(
        caller.user_id, webhook_id, event_id, chosen, body, now
    )
    if delivery_id is None:
        raise NotFound.of("webhook")
    return delivery_id


async def delivery_page(
    gateway: Gateway,
    caller: Caller,
    webhook_id: str,
    status: str | None,
    limit: int,
    before_seq: int | None,
) -> list[SubscriberDelivery]:
    """The webhook's deliveries, newest first."""
    caller.require_account("manage webhooks")
    found = await gateway.storage.delivery_page(
        caller.user_id, webhook_id, status, limit, before_seq
    )
    if found is None:
        raise NotFound.of("webhook")
    return found
