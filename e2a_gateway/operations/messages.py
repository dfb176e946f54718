"""Inbound mail of the caller's agents: keyset-paginated pages, one message in full (which marks
it read), acknowledgements, and the webhook attempts made for a message.

A page or a read counts as one poll against the caller; live delivery (WebSocket drain) reads
unread pages without counting, since it is not polling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.agents import agent_address, owned_agent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Invalid, NotFound
from e2a_gateway.operations.rate_limits import count_poll
from e2a_gateway.storage.base import (
    Agent,
    InboundMessage,
    InboxPage,
    MessagePage,
    StatusFilter,
    WebhookAttempt,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_SEQ = 2**63 - 1
"""The largest position a page token can hold: a signed 64-bit integer, as both databases
store it."""
MAX_SEQ_DIGITS = len(str(MAX_SEQ))
_STATUSES: dict[str, StatusFilter] = {"unread": "unread", "read": "read", "all": "all"}


def status_filter(text: str) -> StatusFilter:
    """Which messages a page shows, from its name; Invalid for any other name."""
    found = _STATUSES.get(text)
    if found is None:
        raise Invalid("invalid_request", "status must be one of unread, read, all")
    return found


def encode_page_token(seq: int, listing: str | None = None) -> str:
    """An opaque page token for the position after `seq`; with `listing` (a listing's name,
    `agent_listing`), one that continues that listing alone."""
    text = f"v1:{seq}" if listing is None else f"v2:{_listing_tag(listing)}:{seq}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_page_token(token: str, listing: str | None = None) -> int:
    """The position encoded in a page token; Invalid when it was not made by us, or, given
    `listing`, when it was made for another listing (a token without one, made before
    listings were named in tokens, continues any)."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, _, rest = text.partition(":")
        if version == "v1":
            tag, seq = None, rest
        elif version == "v2" and listing is not None:
            tag, _, seq = rest.partition(":")
        else:
            raise ValueError(text)
        if not (seq.isascii() and seq.isdigit()) or len(seq) > MAX_SEQ_DIGITS:
            raise ValueError(text)
        if int(seq) > MAX_SEQ:
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid(
            "invalid_token", "token is not a page token from this API; start without it"
        ) from None
    if tag is not None and listing is not None and tag != _listing_tag(listing):
        raise Invalid(
            "invalid_token",
            "this token belongs to another listing (another agent, status or list); start "
            "without it",
        )
    return int(seq)


def agent_listing(kind: str, email: str, status: StatusFilter | None = None) -> str:
    """The name of a listing `kind` (`inbox`, `dead-letters`) of the agent at `email` (however
    its address is written) by `status`, which its page tokens continue alone."""
    return f"{kind} {agent_address(email)} {status or ''}"


def _listing_tag(listing: str) -> str:
    """A listing's name as its page tokens carry it (short; it need not be secret)."""
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


async def inbox_page(
    gateway: Gateway,
    caller: Caller,
    email: str,
    status: StatusFilter,
    page_size: int,
    after: int | None,
) -> InboxPage:
    """A page of the caller's agent's inbound mail after position `after` (one poll); the
    agent and the page are read together. NotFound when the agent is not the caller's."""
    count_poll(gateway, caller)
    page = await gateway.storage.inbox_page(
        caller.user_id, agent_address(email), status, page_size, after
    )
    if page is None:
        raise NotFound.of("agent")
    caller.require_agent(page.agent)
    return page


async def read_message(
    gateway: Gateway, caller: Caller, email: str, message_id: str, *, mark_read: bool = True
) -> InboundMessage:
    """One message of the caller's agent, marked read unless not `mark_read` (one poll);
    NotFound otherwise."""
    count_poll(gateway, caller)
    agent = await owned_agent(gateway, caller, email)
    message = await gateway.storage.read_inbound(
        caller.user_id, agent.email, message_id, mark_read=mark_read
    )
    if message is None:
        raise NotFound.of("message")
    return message


async def unread_page(
    gateway: Gateway, caller: Caller, agent: Agent, page_size: int, after: int | None
) -> MessagePage:
    """A page of the unread mail of `agent` (the caller's, already checked), for live delivery:
    not counted as a poll, and nothing is marked read."""
    return await gateway.storage.list_inbound(
        caller.user_id, agent.email, "unread", page_size, after
    )


async def announced(
    gateway: Gateway, caller: Caller, agent: Agent, message_id: str
) -> InboundMessage | None:
    """The message of the caller's `agent` that a live notice announced, as the inbox shows it
    now, left unread; None once it is gone from the inbox (moved to the trash, or deleted, since
    it was stored): its notice is then not passed on, as a drain would not send it."""
    return await gateway.storage.read_inbound(
        caller.user_id, agent.email, message_id, mark_read=False
    )


async def acknowledge(gateway: Gateway, caller: Caller, agent: Agent, message_id: str) -> bool:
    """Mark one message of the caller's `agent` read; False when there is no such message."""
    return await gateway.storage.mark_read(caller.user_id, agent.email, message_id)


async def webhook_attempts(gateway: Gateway, message: InboundMessage) -> list[WebhookAttempt]:
    """Every webhook attempt made for `message` (one the caller has read), in order."""
    return await gateway.storage.webhook_attempts(message.user_id, message.id)
