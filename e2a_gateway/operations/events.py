"""The `/v1` events log as a caller sees it: their account's events, listed with filters,
read (410 once past the 30-day retention), and redelivered to the webhooks they matched. The
log is the account's, as e2a has it: an agent key reads none of it (it would show mail held
for review or blocked, which its agent may not see)."""

from __future__ import annotations

import time
from dataclasses import replace

from e2a_gateway.events import RETENTION_SECONDS
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Conflict, Gone, NotFound
from e2a_gateway.storage.base import EventFilter, StoredEvent


async def event_page(
    gateway: Gateway,
    caller: Caller,
    query: EventFilter,
    limit: int,
    before: tuple[int, int] | None,
) -> list[StoredEvent]:
    """Up to `limit` of the caller's events matching `query`, newest first, within the
    retention window, before the position `before` (an event's `seq` and `ordinal`)."""
    caller.require_account("read the events log")
    oldest = time.time() - RETENTION_SECONDS
    since = oldest if query.since is None else max(query.since, oldest)
    return await gateway.storage.list_events(
        caller.user_id, replace(query, since=since), limit, before
    )


async def get_event(gateway: Gateway, caller: Caller, event_id: str, now: float) -> StoredEvent:
    """One of the caller's events; NotFound when it is not theirs, Gone (`gone`) once it is
    older than the 30-day retention."""
    caller.require_account("read the events log")
    event = await gateway.storage.get_event(caller.user_id, event_id)
    if event is None:
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
