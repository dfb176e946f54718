"""Inbound messages of an agent: keyset-paginated list (narrowed and ordered as the e2a 2.x
SDK asks) and full read (which marks read, unless asked not to)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.requests import mark_read, page_size
from e2a_gateway.operations import mailbox, messages, trust
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Invalid
from e2a_gateway.operations.messages import (
    agent_listing,
    decode_page_token,
    encode_page_token,
)
from e2a_gateway.storage.base import MessageFilters, StatusFilter
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.views import message_full_view, message_summary_view

blueprint = Blueprint("messages", __name__)


NARROWING = ("from", "subject_contains", "conversation_id", "since", "until")
"""The filters of an inbox listing the e2a 2.x SDK sends (`get_messages`)."""


@blueprint.get("/agents/<email>/messages")
@requires_caller
async def list_messages(caller: Caller, email: str) -> dict[str, Any]:
    """GET /agents/{email}/messages?status=&page_size=&token=, narrowed by `from`,
    `subject_contains`, `conversation_id`, `since` and `until`, oldest first unless
    `sort=desc`."""
    gateway = current_gateway()
    status = messages.status_filter(request.args.get("status", "unread"))
    size = page_size()
    token = request.args.get("token")
    filters = inbox_filters(status)
    if filters is None:
        listing = agent_listing("inbox", email, status)
        page = await messages.inbox_page(
            gateway,
            caller,
            email,
            status,
            size,
            decode_page_token(token, listing) if token else None,
        )
        shown = [message_summary_view(message) for message in page.messages]
        following = page.next_after
    else:
        listing = f"{agent_listing('inbox', email, status)} {filters!r}"
        after = decode_page_token(token, listing) if token else None
        rows = await mailbox.message_page(gateway, caller, email, filters, size + 1, after)
        shown = [message_summary_view(message) for message in rows[:size]]
        following = rows[size - 1].seq if len(rows) > size else None
    return {
        "messages": shown,
        "next_token": encode_page_token(following, listing) if following is not None else None,
    }


def inbox_filters(status: StatusFilter) -> MessageFilters | None:
    """The filters and order of this request's inbox listing (mailbox.listing_filters checks
    them: 400 `invalid_filter`), or None when it asks for none: the whole inbox, oldest first.
    Invalid for a `sort` other than `asc` or `desc`."""
    sort = request.args.get("sort") or "asc"
    if sort not in ("asc", "desc"):
        raise Invalid("invalid_request", "sort must be asc or desc")
    given = {name: request.args.get(name) or None for name in NARROWING}
    if sort == "asc" and not any(given.values()):
        return None
    return mailbox.listing_filters(
        direction="inbound",
        read_status=status,
        newest_first=sort == "desc",
        from_text=given["from"],
        subject_text=given["subject_contains"],
        conversation_id=given["conversation_id"],
        labels=[],
        since=given["since"],
        until=given["until"],
        deleted=False,
    )


@blueprint.get("/agents/<email>/messages/<message_id>")
@requires_caller
async def get_message(caller: Caller, email: str, message_id: str) -> dict[str, Any]:
    """GET /agents/{email}/messages/{id}: the full message with its reading; marks it read
    unless `?mark_read=false` (a client that marks it read once it has handled it)."""
    gateway = current_gateway()
    marking = mark_read()
    message = await messages.read_message(
        gateway, caller, email, message_id, mark_read=marking and request.method != "HEAD"
    )
    body = await mailbox.parsed_body(message.raw_message)
    return {**message_full_view(message, body), **await trust.reading_of(gateway, message)}
