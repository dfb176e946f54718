"""The MCP tools of the events log (`/v1/events`) under e2a's names and arguments: list and
read the caller's events with their delivery counts, and queue one to its webhooks again."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from e2a_gateway.mcp.answers import listed
from e2a_gateway.mcp.bounds import bounded_row
from e2a_gateway.mcp.mailbox_tools import present
from e2a_gateway.mcp.toolkit import Arguments, PageArguments, ToolCaller, ToolSpec


class ListEventsArguments(PageArguments):
    """Arguments of list_events: listEvents' filters."""

    type: str | None = Field(
        default=None, description="One event type, e.g. email.received or email.sent."
    )
    agent_email: str | None = Field(default=None, description="Only this agent's events.")
    conversation_id: str | None = Field(default=None, description="Only this conversation's.")
    message_id: str | None = Field(default=None, description="Only this message's.")
    since: str | None = Field(default=None, description="RFC 3339: created at or after it.")
    until: str | None = Field(default=None, description="RFC 3339: created before it.")


class EventArguments(Arguments):
    """Arguments of get_event."""

    event_id: str = Field(min_length=1, description="The event's id (evt_…).")


class RedeliverArguments(EventArguments):
    """Arguments of redeliver_event."""

    webhook_id: str | None = Field(
        default=None,
        description="One webhook the event went to; absent: every webhook it went to.",
    )


async def list_events(caller: ToolCaller, arguments: ListEventsArguments) -> dict[str, Any]:
    """One page of the caller's events, newest first."""
    query = present(
        arguments,
        "type",
        "agent_email",
        "conversation_id",
        "message_id",
        "since",
        "until",
        "cursor",
        "limit",
    )
    page = await caller.port.list_events(query)
    rows = [bounded_row(item) for item in page["items"]]
    return listed("events", rows, page.get("next_cursor"))


async def get_event(caller: ToolCaller, arguments: EventArguments) -> dict[str, Any]:
    """One event with its delivery counts."""
    return await caller.port.get_event(arguments.event_id)


async def redeliver_event(caller: ToolCaller, arguments: RedeliverArguments) -> dict[str, Any]:
    """Queue an event again: the deliveries queued."""
    return await caller.port.redeliver_event(arguments.event_id, arguments.webhook_id)


EVENT_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "list_events",
        "List webhook events",
        "The events log, newest first (30 days kept): each event's data and how many of its "
        "webhooks delivered, are pending or failed. Pass next_cursor back as `cursor` while it "
        "is present.",
        ListEventsArguments,
        list_events,
    ),
    ToolSpec(
        "get_event",
        "Get one webhook event",
        "One event: its payload and delivery_status. Past the 30-day retention it is gone "
        "(status 410).",
        EventArguments,
        get_event,
    ),
    ToolSpec(
        "redeliver_event",
        "Replay a webhook event",
        "Queue an event again to one webhook (webhook_id) or to every webhook it went to. The "
        "replay keeps the event's id: receivers that deduplicate on it will drop it. For "
        "recovering from an outage, not for sending twice.",
        RedeliverArguments,
        redeliver_event,
        read_only=False,
    ),
)
