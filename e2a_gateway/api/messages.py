"""Inbound messages of an agent: keyset-paginated list and full read (which marks read, unless
asked not to)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.requests import mark_read, page_size
from e2a_gateway.operations import mailbox, messages, trust
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.messages import (
    agent_listing,
    decode_page_token,
    encode_page_token,
)
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.views import message_full_view, message_summary_view

blueprint = Blueprint("messages", __name__)


@blueprint.get("/agents/<email>/messages")
@requires_caller
async def list_messages(caller: Caller, email: str) -> dict[str, Any]:
    """GET /agents/{email}/messages?status=&page_size=&token=."""
    status = messages.status_filter(request.args.get("status", "unread"))
    token = request.args.get("token")
    listing = agent_listing("inbox", email, status)
    page = await messages.inbox_page(
        current_gateway(),
        caller,
        email,
        status,
        page_size(),
        decode_page_token(token, listing) if token else None,
    )
    following = page.next_after
    return {
        "messages": [message_summary_view(message) for message in page.messages],
        "next_token": encode_page_token(following, listing) if following is not None else None,
    }


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
