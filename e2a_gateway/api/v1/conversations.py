"""An agent's conversations on `/v1` (`/v1/agents/{email}/conversations…`): threads of its
live mail sharing a `conversation_id`, most recently active first, and one with its messages,
whole or a page at a time (operations.mailbox)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from quart import Blueprint
from werkzeug.routing import PathConverter

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.bodies import read_query
from e2a_gateway.api.v1.errors import V1Error
from e2a_gateway.api.v1.message_views import (
    conversation_detail_view,
    conversation_summary_view,
    message_summary_view,
)
from e2a_gateway.api.v1.messages import StrictQuery
from e2a_gateway.api.v1.pages import MAX_CURSOR_LENGTH, PageQuery, Position, keyset_page
from e2a_gateway.api.v1.rate_headers import rate_limited
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import mailbox
from e2a_gateway.operations.caller import Caller
from e2a_gateway.storage.base import ConversationSummary, FiledMessage
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_conversations", __name__)


class ConversationIdConverter(PathConverter):
    """A conversation id in a path: the rest of it, `/` included, as `path` takes it, and line
    feeds too, which `path` leaves unmatched (a 404): an id holding one is refused with 400
    `invalid_request`, as one holding a carriage return is, and as e2a refuses both."""

    regex = "[^/](?s:.)*?"


CONVERTERS = {"conversation_id": ConversationIdConverter}
"""The path converters the routes here use, for `register_v1` to add before the routes."""


class ListConversationsQuery(StrictQuery, PageQuery):
    """listConversations: the window of last activity (checked by `mailbox.time_window`: 400
    `invalid_filter`), cursor and limit."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    since: str | None = None
    until: str | None = None


class ConversationQuery(StrictQuery):
    """getConversation: every message by default, as e2a answers it; with `limit` (1-100) or a
    `cursor`, one page of them (`limit` default 50, as getMessageLifecycle's)."""

    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    limit: int | None = Field(default=None, ge=1, le=100)


CONVERSATION_PAGE = 50
"""The messages on a page of getConversation asked for with a cursor and no limit."""


def _seq_after(after: Position | None) -> int | None:
    """The message position a cursor of these listings continues after; None on the first
    page (400 `invalid_cursor` for one that holds no such position)."""
    if after is None:
        return None
    if len(after) != 1 or not isinstance(after[0], int) or isinstance(after[0], bool):
        raise V1Error(400, "invalid_cursor", "this cursor does not belong here")
    return after[0]


@blueprint.get("/agents/<email>/conversations")
@rate_limited
@requires_caller
async def list_conversations(caller: Caller, email: str) -> dict[str, Any]:
    """listConversations: the agent's threads, most recently active first."""
    query = read_query(ListConversationsQuery)
    return await conversation_listing(current_gateway(), caller, email, query)


async def conversation_listing(
    gateway: Gateway, caller: Caller, email: str, query: ListConversationsQuery
) -> dict[str, Any]:
    """One page of the agent's threads (listConversations' answer), for `/v1` and the MCP
    tools alike."""
    view = f"conversations {email.lower()} {query.since} {query.until}"

    async def fetch(limit: int, after: Position | None) -> list[ConversationSummary]:
        return await mailbox.conversation_page(
            gateway, caller, email, query.since, query.until, limit, _seq_after(after)
        )

    return await keyset_page(
        view, query, fetch, lambda row: (row.last_seq,), conversation_summary_view, gateway
    )


@blueprint.get("/agents/<email>/conversations/<conversation_id:conversation_id>")
@rate_limited
@requires_caller
async def get_conversation(caller: Caller, email: str, conversation_id: str) -> dict[str, Any]:
    """getConversation: one thread with its participants, labels and messages."""
    query = read_query(ConversationQuery)
    return await conversation_detail(current_gateway(), caller, email, conversation_id, query)


async def conversation_detail(
    gateway: Gateway, caller: Caller, email: str, conversation_id: str, query: ConversationQuery
) -> dict[str, Any]:
    """One thread (getConversation's answer), for `/v1` and the MCP tools alike: its summary,
    participants and labels (of all its messages), and its messages oldest first — every one,
    or, asked with `limit` or `cursor`, one page of them with `next_cursor` (null on the last,
    and when not paged)."""
    summary, messages = await mailbox.conversation(gateway, caller, email, conversation_id)
    if query.limit is None and query.cursor is None:
        return {**conversation_detail_view(summary, messages), "next_cursor": None}

    async def fetch(limit: int, after: Position | None) -> list[FiledMessage]:
        seq = _seq_after(after)
        return [m for m in messages if seq is None or m.seq > seq][:limit]

    page = await keyset_page(
        f"conversation {email.lower()} {conversation_id}",
        PageQuery(cursor=query.cursor, limit=query.limit or CONVERSATION_PAGE),
        fetch,
        lambda message: (message.seq,),
        message_summary_view,
        gateway,
    )
    detail = conversation_detail_view(summary, messages, listed=page["items"])
    return {**detail, "next_cursor": page["next_cursor"]}
