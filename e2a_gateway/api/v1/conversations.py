"""An agent's conversations on `/v1` (`/v1/agents/{email}/conversations…`): threads of its
live mail sharing a `conversation_id`, most recently active first, and one with its messages
(operations.mailbox)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict
from quart import Blueprint
from werkzeug.routing import PathConverter

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.bodies import read_query
from e2a_gateway.api.v1.errors import V1Error
from e2a_gateway.api.v1.message_views import conversation_detail_view, conversation_summary_view
from e2a_gateway.api.v1.messages import NoQuery, StrictQuery
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.rate_headers import rate_limited
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import mailbox
from e2a_gateway.operations.caller import Caller
from e2a_gateway.storage.base import ConversationSummary
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

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[ConversationSummary]:
        before = None
        if after is not None:
            if len(after) != 1 or not isinstance(after[0], int) or isinstance(after[0], bool):
                raise V1Error(400, "invalid_cursor", "this cursor does not belong here")
            before = after[0]
        return await mailbox.conversation_page(
            gateway, caller, email, query.since, query.until, limit, before
        )

    return await keyset_page(
        view, query, fetch, lambda row: (row.last_seq,), conversation_summary_view, gateway
    )


@blueprint.get("/agents/<email>/conversations/<conversation_id:conversation_id>")
@rate_limited
@requires_caller
async def get_conversation(caller: Caller, email: str, conversation_id: str) -> dict[str, Any]:
    """getConversation: one thread with its participants, labels and messages."""
    read_query(NoQuery)
    summary, messages = await mailbox.conversation(
        current_gateway(), caller, email, conversation_id
    )
    return conversation_detail_view(summary, messages)
