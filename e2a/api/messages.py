"""Inbound messages of an agent: keyset-paginated list and full read (which marks read)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from quart import Blueprint, request

from e2a.api.agents import enforce_rate_limit, owned_agent
from e2a.api.auth import gateway, requires_user
from e2a.api.errors import ApiError, not_found
from e2a.api.views import message_full_view, message_summary_view
from e2a.storage.base import InboundMessage, MessagePage, StatusFilter, User

blueprint = Blueprint("messages", __name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
POLL_WINDOW_SECONDS = 60
MAX_SEQ = 2**63 - 1
"""The largest position a page token can hold: a signed 64-bit integer, as both databases
store it."""
MAX_SEQ_DIGITS = len(str(MAX_SEQ))
_STATUSES: dict[str, StatusFilter] = {"unread": "unread", "read": "read", "all": "all"}


def encode_page_token(seq: int) -> str:
    """An opaque page token for the position after `seq`."""
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The position encoded in a page token; 400 when it was not made by us."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, _, seq = text.partition(":")
        if version != "v1" or not (seq.isascii() and seq.isdigit()) or len(seq) > MAX_SEQ_DIGITS:
            raise ValueError(text)
        if int(seq) > MAX_SEQ:
            raise ValueError(text)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_token", "token is not a page token from this API; start without it"
        ) from None


async def _count_poll(user: User) -> None:
    """Count one message poll (list or read) against the caller; 429 when over the limit."""
    await enforce_rate_limit(
        f"message_poll:user:{user.id}",
        POLL_WINDOW_SECONDS,
        gateway().settings.limits.message_polls_per_user_per_minute,
        "message reads per minute for this account",
    )


def _page_size() -> int:
    raw = request.args.get("page_size", str(DEFAULT_PAGE_SIZE))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ApiError(
            400, "invalid_request", f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}"
        )
    return int(raw)


async def inbox_page(
    user: User, email: str, status: StatusFilter, page_size: int, after: int | None
) -> MessagePage:
    """A page of the caller's agent's inbound mail (counted as one poll)."""
    await _count_poll(user)
    agent = await owned_agent(user, email)
    return await gateway().storage.list_inbound(user.id, agent.email, status, page_size, after)


async def read_message(user: User, email: str, message_id: str) -> InboundMessage:
    """One message of the caller's agent, marked read (counted as one poll); 404 otherwise."""
    await _count_poll(user)
    agent = await owned_agent(user, email)
    message = await gateway().storage.read_inbound(user.id, agent.email, message_id)
    if message is None:
        raise not_found("message")
    return message


@blueprint.get("/agents/<email>/messages")
@requires_user
async def list_messages(user: User, email: str) -> dict[str, Any]:
    """GET /agents/{email}/messages?status=&page_size=&token=."""
    status = _STATUSES.get(request.args.get("status", "unread"))
    if status is None:
        raise ApiError(400, "invalid_request", "status must be one of unread, read, all")
    token = request.args.get("token")
    page = await inbox_page(
        user, email, status, _page_size(), decode_page_token(token) if token else None
    )
    return {
        "messages": [message_summary_view(message) for message in page.messages],
        "next_token": encode_page_token(page.next_after) if page.next_after is not None else None,
    }


@blueprint.get("/agents/<email>/messages/<message_id>")
@requires_user
async def get_message(user: User, email: str, message_id: str) -> dict[str, Any]:
    """GET /agents/{email}/messages/{id}: the full message; marks it read."""
    return message_full_view(await read_message(user, email, message_id))
