"""Live inbox: a server-sent event stream of the mail arriving for one agent.

It first sends what arrived after the last message the page shows (so nothing committed
between rendering and connecting is missed), then what the hub announces. A stream lasts a
few minutes and then ends; the browser's EventSource reconnects by itself. It ends at once
when the agent or account is deleted or the session's API key revoked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from e2a_gateway.dashboard.auth import Session
from e2a_gateway.hub import Listener
from e2a_gateway.hub.access import lost_access
from e2a_gateway.hub.frames import notification_frame
from e2a_gateway.operations.errors import OperationError
from e2a_gateway.operations.messages import inbox_page
from e2a_gateway.storage.base import Agent, StatusFilter
from e2a_gateway.web.context import current_gateway

STREAM_SECONDS = 300.0
KEEPALIVE_SECONDS = 15.0
RECONNECT_MILLISECONDS = 3000
CATCH_UP_PAGE_SIZE = 100


def event(frame: dict[str, Any]) -> bytes:
    """One `message` event carrying a notification frame as JSON."""
    return f"event: message\ndata: {json.dumps(frame)}\n\n".encode()


async def inbox_events(
    session: Session, agent: Agent, shown: StatusFilter, after_seq: int | None
) -> AsyncIterator[bytes]:
    """The event stream for `agent`'s inbox page showing `shown` mail: catch-up after
    `after_seq`, then live mail (always unread, so it belongs on either page), with a comment
    line every KEEPALIVE_SECONDS so proxies keep the connection open."""
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
    gateway = current_gateway()
    caller = session.caller
    listener = Listener(agent.id, caller.user_id, caller.key_hash, "dashboard", caller.expires_at)
    with gateway.hub.subscribe(listener) as live:
        if await lost_access(gateway.storage, listener, agent.email) is not None:
            return  # revoked while the stream opened: the reconnection is refused
        try:
            page = await inbox_page(
                gateway, caller, agent.email, shown, CATCH_UP_PAGE_SIZE, after_seq
            )
        except OperationError:
            return  # the agent went meanwhile, or too many polls: the reconnection says which
        sent = {message.id for message in page.messages}
        for message in page.messages:
            if live.revoked:
                return
            yield event(notification_frame(message))
        deadline = trio.current_time() + STREAM_SECONDS
        while trio.current_time() < deadline:
            frame: dict[str, Any] | None = None
            with trio.move_on_after(KEEPALIVE_SECONDS) as waiting:
                frame = await live.receive()
            if frame is None and not waiting.cancelled_caught:
                return  # ended: fell behind (the browser reconnects and catches up) or revoked
            if frame is None:
                yield b": keepalive\n\n"
            elif frame["message_id"] not in sent:
                yield event(frame)
