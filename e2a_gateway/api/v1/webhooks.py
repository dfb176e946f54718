"""Webhook subscribers on `/v1`: create (the secret in this answer only), list, get, patch,
delete `?confirm=DELETE`, rotate-secret, test, and the per-webhook delivery log."""

from __future__ import annotations

import time
from typing import Any, Literal

from quart import Blueprint

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.account import Confirmation
from e2a_gateway.api.v1.bodies import read_json, read_query
from e2a_gateway.api.v1.idempotent import idempotent_making
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.rate_headers import rate_limited
from e2a_gateway.api.v1.views import present
from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import webhooks
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.webhooks import CreateWebhook, EventType, OmitNotNull, UpdateWebhook
from e2a_gateway.storage.base import SubscriberDelivery, Webhook
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_webhooks", __name__)


class TestWebhook(OmitNotNull):
    """`POST /v1/webhooks/{id}/test`: the synthetic event's type and data."""

    type: EventType | None = None
    data: dict[str, Any] | None = None


class DeliveryQuery(PageQuery):
    """`?status=` of the delivery log."""

    status: Literal["pending", "delivered", "failed"] | None = None


def _timestamp(epoch: float | None) -> str | None:
    return None if epoch is None else format_timestamp(epoch)


def webhook_view(webhook: Webhook) -> dict[str, Any]:
    """WebhookView (never its secret); `filters` names only the lists that are not empty, as
    e2a's does (`{}` for a webhook of every agent and conversation); `auto_disabled_at` from the
    auto-disable sweep turning it off until it is enabled again."""
    filters = {
        "agent_emails": webhook.agent_emails,
        "conversation_ids": webhook.conversation_ids,
    }
    return {
        "id": webhook.id,
        "url": webhook.url,
        "description": webhook.description,
        "events": webhook.events,
        "filters": {name: values for name, values in filters.items() if values},
        "enabled": webhook.enabled,
        **present(auto_disabled_at=_timestamp(webhook.auto_disabled_at)),
        "created_at": webhook.created_at,
        **present(last_delivered_at=webhook.last_delivered_at),
    }


def delivery_view(delivery: SubscriberDelivery) -> dict[str, Any]:
    """WebhookDeliveryView, with the last attempt's latency (`last_latency_ms`)."""
    pending = delivery.status == "pending"
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_retry_at": _timestamp(
            delivery.run_at if pending else delivery.last_attempt_at or delivery.created_epoch
        ),
        "created_at": format_timestamp(delivery.created_epoch),
        **present(
            last_attempt_at=_timestamp(delivery.last_attempt_at),
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            last_latency_ms=delivery.last_latency_ms,
        ),
    }


@blueprint.get("/webhooks")
@rate_limited
@requires_caller
async def list_webhooks(caller: Caller) -> dict[str, Any]:
    """listWebhooks: newest first, as e2a's."""
    return await webhook_listing(current_gateway(), caller, read_query(PageQuery))


async def webhook_listing(gateway: Gateway, caller: Caller, query: PageQuery) -> dict[str, Any]:
    """One page of the caller's webhooks (listWebhooks' answer), for `/v1` and the MCP tools."""

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[Webhook]:
        return await webhooks.webhook_page(gateway, caller, limit, int(after[0]) if after else None)

    # the view names the order: a cursor of the oldest-first listing of before is refused
    return await keyset_page(
        "webhooks:newest", query, fetch, lambda item: (item.seq,), webhook_view, gateway
    )


async def made_webhook(caller: Caller, webhook_id: str) -> tuple[dict[str, Any], int]:
    """createWebhook's answer for the webhook its first request made and never answered."""
    return _issued_view(await webhooks.made_webhook(current_gateway(), caller, webhook_id))


@blueprint.post("/webhooks")
@requires_caller
@idempotent_making(made_webhook)
async def create_webhook(caller: Caller) -> tuple[dict[str, Any], int]:
    """createWebhook: the `whsec_` signing secret is in this answer only (and its replays)."""
    body = await read_json(CreateWebhook)
    return _issued_view(await webhooks.create_webhook(current_gateway(), caller, body))


def _issued_view(issued: webhooks.IssuedWebhook) -> tuple[dict[str, Any], int]:
    """A webhook just made, with its signing secret: 201."""
    return {**webhook_view(issued.webhook), "signing_secret": issued.secret}, 201


@blueprint.get("/webhooks/<webhook_id>")
@rate_limited
@requires_caller
async def get_webhook(caller: Caller, webhook_id: str) -> dict[str, Any]:
    """getWebhook."""
    return webhook_view(await webhooks.read_webhook(current_gateway(), caller, webhook_id))


@blueprint.patch("/webhooks/<webhook_id>")
@requires_caller
async def update_webhook(caller: Caller, webhook_id: str) -> dict[str, Any]:
    """updateWebhook: `url`, `events`, `filters` replace when present; enabling is refused
    (409 `webhook_cooldown`) for 5 minutes after an auto-disable."""
    body = await read_json(UpdateWebhook)
    updated = await webhooks.update_webhook(
        current_gateway(), caller, webhook_id, body, time.time()
    )
    return webhook_view(updated)


@blueprint.delete("/webhooks/<webhook_id>")
@requires_caller
async def delete_webhook(caller: Caller, webhook_id: str) -> dict[str, Any]:
    """deleteWebhook (`?confirm=DELETE`)."""
    read_query(Confirmation)
    await webhooks.delete_webhook(current_gateway(), caller, webhook_id)
    return {"deleted": True, "id": webhook_id}


async def rotated_secret(caller: Caller, webhook_id: str) -> dict[str, Any]:
    """rotateWebhookSecret's answer for the rotation its first request made and never
    answered."""
    secret, until = await webhooks.rotated_secret(current_gateway(), caller, webhook_id)
    return _rotation_view(secret, until)


@blueprint.post("/webhooks/<webhook_id>/rotate-secret")
@requires_caller
@idempotent_making(rotated_secret)
async def rotate_secret(caller: Caller, webhook_id: str) -> dict[str, Any]:
    """rotateWebhookSecret: the new secret (shown once); the previous one signs too for 24 h."""
    secret, until = await webhooks.rotate_secret(current_gateway(), caller, webhook_id, time.time())
    return _rotation_view(secret, until)


def _rotation_view(secret: str, until: float) -> dict[str, Any]:
    """A rotation's answer: the new secret and when the previous one stops signing."""
    return {"signing_secret": secret, "previous_secret_expires_at": format_timestamp(until)}


@blueprint.post("/webhooks/<webhook_id>/test")
@requires_caller
async def test_webhook(caller: Caller, webhook_id: str) -> dict[str, Any]:
    """testWebhook: a synthetic event queued to this webhook (not logged)."""
    body = await read_json(TestWebhook, allow_empty=True)
    delivery_id = await webhooks.test_webhook(
        current_gateway(), caller, webhook_id, body.type, body.data, time.time()
    )
    return {"delivery_id": delivery_id}


@blueprint.get("/webhooks/<webhook_id>/deliveries")
@rate_limited
@requires_caller
async def list_deliveries(caller: Caller, webhook_id: str) -> dict[str, Any]:
    """listWebhookDeliveries: newest first, optionally one status."""
    return await delivery_listing(current_gateway(), caller, webhook_id, read_query(DeliveryQuery))


async def delivery_listing(
    gateway: Gateway, caller: Caller, webhook_id: str, query: DeliveryQuery
) -> dict[str, Any]:
    """One page of a webhook's deliveries (listWebhookDeliveries' answer), for `/v1` and the
    MCP tools."""

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[SubscriberDelivery]:
        before = int(after[0]) if after else None
        return await webhooks.delivery_page(
            gateway, caller, webhook_id, query.status, limit, before
        )

    view = f"deliveries:{webhook_id}:{query.status}"
    return await keyset_page(view, query, fetch, lambda item: (item.seq,), delivery_view, gateway)
