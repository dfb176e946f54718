"""The events log on `/v1`: listEvents (filters, cursor pages), getEvent (410 past retention),
redeliverEvent (202: queued, not yet delivered; repeated within 24 hours, the first answer)."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ConfigDict, Field
from quart import Blueprint

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.bodies import read_json, read_query
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.views import present
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import events
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.idempotency import Answer, run_once
from e2a_gateway.operations.mailbox import filter_time
from e2a_gateway.operations.webhooks import OmitNotNull
from e2a_gateway.storage.base import EventFilter, StoredEvent
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_events", __name__)


class EventQuery(PageQuery):
    """`GET /v1/events` parameters; any other is refused (422), so a misspelt filter never
    silently lists everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str | None = Field(default=None, max_length=100)
    agent_email: str | None = Field(default=None, max_length=320)
    conversation_id: str | None = Field(default=None, max_length=200)
    message_id: str | None = Field(default=None, max_length=200)
    since: str | None = Field(default=None, max_length=64)
    until: str | None = Field(default=None, max_length=64)


class RedeliverEvent(OmitNotNull):
    """`POST /v1/events/{id}/redeliver`: one webhook, or (absent) every one it went to."""

    webhook_id: str | None = Field(default=None, max_length=100)


def event_view(event: StoredEvent) -> dict[str, Any]:
    """EventView: the stored envelope's fields with the log's own: `status` is the fan-out's
    (e2a's `processed` once it matched a webhook, however its deliveries stand, else
    `no_match`; never `pending`, as the fan-out commits with the event) and the delivery
    counts."""
    document = json.loads(event.envelope)
    counts = event.deliveries
    return {
        **document,
        "status": "processed" if counts.matched_webhooks else "no_match",
        **present(
            agent_email=event.agent_email,
            conversation_id=event.conversation_id,
            message_id=event.message_id,
        ),
        "delivery_status": {
            "matched_webhooks": counts.matched_webhooks,
            "delivered": counts.delivered,
            "pending": counts.pending,
            "failed": counts.failed,
        },
    }


def _epoch(name: str, text: str | None) -> float | None:
    """The epoch of the filter time `name` (RFC 3339 with its offset, as every `/v1` listing
    takes it; 400 invalid_filter naming the filter otherwise, as e2a's listEvents answers)."""
    moment = filter_time(name, text, "invalid_filter")
    return None if moment is None else moment.timestamp()


@blueprint.get("/events")
@requires_caller
async def list_events(caller: Caller) -> dict[str, Any]:
    """listEvents: the caller's events, newest first, filtered."""
    return await event_listing(current_gateway(), caller, read_query(EventQuery))


async def event_listing(gateway: Gateway, caller: Caller, query: EventQuery) -> dict[str, Any]:
    """One page of the caller's events (listEvents' answer), for `/v1` and the MCP tools."""
    wanted = EventFilter(
        type=query.type,
        agent_email=query.agent_email.lower() if query.agent_email else None,
        conversation_id=query.conversation_id,
        message_id=query.message_id,
        since=_epoch("since", query.since),
        until=_epoch("until", query.until),
    )
    view = "events:" + json.dumps(
        [wanted.type, wanted.agent_email, wanted.conversation_id, wanted.message_id,
         wanted.since, wanted.until]
    )  # fmt: skip

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[StoredEvent]:
        # a cursor of (seq,) (before the copies of one message were folded) means ordinal 0
        before = (int(after[0]), int(after[1]) if len(after) > 1 else 0) if after else None
        return await events.event_page(gateway, caller, wanted, limit, before)

    return await keyset_page(
        view, query, fetch, lambda event: (event.seq, event.ordinal), event_view, gateway
    )


@blueprint.get("/events/<event_id>")
@requires_caller
async def get_event(caller: Caller, event_id: str) -> dict[str, Any]:
    """getEvent: one event with its delivery counts; 410 `gone` past the 30-day retention."""
    event = await events.get_event(current_gateway(), caller, event_id, time.time())
    return event_view(event)


@blueprint.post("/events/<event_id>/redeliver")
@requires_caller
async def redeliver_event(caller: Caller, event_id: str) -> tuple[dict[str, Any], int]:
    """redeliverEvent: queue the event again (202). The body is required, as e2a's document
    says (`{}`: to every webhook the event went to)."""
    body = await read_json(RedeliverEvent)
    return await redelivery(current_gateway(), caller, event_id, body.webhook_id), 202


async def redelivery(
    gateway: Gateway, caller: Caller, event_id: str, webhook_id: str | None
) -> dict[str, Any]:
    """Queue event `event_id` again (redeliverEvent's answer), for `/v1` and the MCP tools.
    Once per (event, webhook) within a day, as e2a does it: a repeat gets the first answer,
    the same delivery ids, and queues nothing more. An empty `webhook_id` names none, as e2a's
    (omitempty) reads it: every webhook the event matched."""
    webhook_id = webhook_id or None

    async def schedule() -> Answer:
        queued = await events.redeliver_event(gateway, caller, event_id, webhook_id, time.time())
        return Answer(202, json.dumps(_redelivery_view(event_id, webhook_id, queued)).encode())

    caller.require_account("redeliver events to webhooks")  # before an answer can replay
    key = f"replay:{event_id}:{webhook_id or ''}"
    answer = await run_once(gateway, caller, key, REDELIVERY, schedule, minted=True)
    document: dict[str, Any] = json.loads(answer.body)
    return document


REDELIVERY = b"POST /v1/events/redeliver"
"""The fingerprint of every redelivery: its key alone tells one from another (e2a's too)."""


def _redelivery_view(
    event_id: str, webhook_id: str | None, queued: list[tuple[str, str]]
) -> dict[str, Any]:
    """RedeliverView: one webhook's delivery `pending`, or every matched one's `scheduled`."""
    deliveries = [
        {"webhook_id": webhook, "delivery_id": delivery_id, "status": "pending"}
        for webhook, delivery_id in queued
    ]
    answer: dict[str, Any] = {"event_id": event_id, "deliveries": deliveries}
    if webhook_id is not None:
        answer.update(
            status="pending", webhook_id=webhook_id, delivery_id=deliveries[0]["delivery_id"]
        )
    else:
        answer["status"] = "scheduled"
    return answer
