"""The `/v1` events log as a caller sees it: their account's events (an agent key: its agent's
only), listed with filters, read (410 once past the 30-day retention), and redelivered to
the webhooks they matched."""

from __future__ import annotations

import math
import time
from dataclasses import replace

from e2a_gateway.clock import parse_timestamp
from e2a_gateway.events import RETENTION_SECONDS
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Conflict, Gone, NotFound
from e2a_gateway.storage.base import EventFilter, StoredEvent


def _scoped(caller: Caller, query: EventFilter) -> EventFilter:
    """`query` limited to what the caller may see (an agent key: its agent's events)."""
    if caller.scope == "account":
        return query
    return replace(query, agent_emails=(caller.agent_email or "",))


async def _agent_made(gateway: Gateway, caller: Caller) -> float:
    """For an agent key, when its agent was made: the events of its address before then were
    an earlier agent's (deleted, the address registered again), which it may not see. 0 for
    an account key."""
    if caller.scope == "account" or caller.agent_email is None:
        return 0.0
    storage = gateway.storage
    agent = await storage.get_agent(caller.user_id, caller.agent_email) or await storage.get_agent(
        caller.user_id, caller.agent_email, trashed=True
    )
    return parse_timestamp(agent.created_at).timestamp() if agent is not None else math.inf


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
    oldest = max(time.time() - RETENTION_SECONDS, await _agent_made(gateway, caller))
    since = oldest if query.since is None else max(query.since, oldest)
    scoped = replace(_scoped(caller, query), since=since)
    return await gateway.storage.list_events(caller.user_id, scoped, limit, before)


async def get_event(gateway: Gateway, caller: Caller, event_id: str, now: float) -> StoredEvent:
    """One of the caller's events; NotFound when it is not theirs, Gone (`gone`) once it is
    older than the 30-day retention."""
    event = await gateway.storage.get_event(caller.user_id, event_id)
    if event is None or (
        caller.scope != "account"
        and (
            event.agent_email != caller.agent_email
            or event.created_epoch < await _agent_made(gateway, caller)
        )
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
