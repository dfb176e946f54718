"""The `/v1` events log as a caller sees it: their account's events (an agent key: its agent's
only), listed with filters, read (410 once past the 30-day retention), and redelivered to
the webhooks they matched."""

from __future__ import annotations

import time
from dataclasses import replace

from e2a_gateway.events import RETENTION_SECONDS
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Conflict, Gone, NotFound
from e2a_gateway.storage.base import EventFilter, StoredEvent


async def _scoped(gateway: Gateway, caller: Caller, query: EventFilter) -> EventFilter | None:
    """`query` limited to what the caller may see: an agent key, its agent's events logged
    since the agent was made (those of its address before were an earlier agent's, deleted,
    the address registered again); None when its agent is gone."""
    if caller.scope == "account":
        return query
    email = caller.agent_email or ""
    start = await gateway.storage.agent_events_start(caller.user_id, email)
    if start is None:
        return None
    return replace(query, agent_emails=(email,), after_seq=start)


async def event_page(
    gateway: Gateway,
    caller: Caller,
    query: EventFilter,
    limit: int,
    before: tuple[int, int] | None,
) -> list[StoredEvent]:
    """Up to `limit` of the caller's events matching `query`, newest first, within the
    retention window (and, for an agent key, since its agent was made), before the position
    `before` (an event's `seq` and `ordinal`)."""
    scoped = await _scoped(gateway, caller, query)
    if scoped is None:
        return []
    oldest = time.time() - RETENTION_SECONDS
    since = oldest if query.since is None else max(query.since, oldest)
    return await gateway.storage.list_events(
        caller.user_id, replace(scoped, since=since), limit, before
    )


async def get_event(gateway: Gateway, caller: Caller, event_id: str, now: float) -> StoredEvent:
    """One of the caller's events; NotFound when it is not theirs, Gone (`gone`) once it is
    older than the 30-day retention."""
    event = await gateway.storage.get_event(caller.user_id, event_id)
    scoped = await _scoped(gateway, caller, EventFilter()) if event is not None else None
    if (
        event is None
        or scoped is None
        or (scoped.agent_emails is not None and event.agent_email not in scoped.agent_emails)
        or (scoped.after_seq is not None and event.seq <= scoped.after_seq)
    ):
        raise NotFound.of("event")
    if event.created_epoch < now - RETENTION_SECONDS:
        raise Gone("gone", "this event is older than the 30-day retention of the events log")
    return event


async def redeliver_event(
    gateway: Gateway, caller: Caller, event_id: str, webhook_id: str | None, now: float
) -> list[tuple[str, str]]:
    """Queue the event again to `webhook_id` (or every webhook it matched); the (webhook id,
    delivery id) pairs queued. Conflict when `webhook_id` is not one the event matched."""
    caller.require_account("redeliver events to webhooks")
    await get_event(gateway, caller, event_id, now)
    queued = await gateway.storage.redeliver_event(caller.user_id, event_id, webhook_id, now)
    if queued is None:
        raise NotFound.of("event")
    if webhook_id is not None and not queued:
        raise Conflict("conflict", "webhook was not among the originally-matched subscribers")
    return queued
