"""Live inbox: a server-sent event stream of the mail arriving for one agent.

It first sends what arrived after the last message the page shows (so nothing committed
between rendering and connecting is missed), then what the hub announces. A stream lasts a
few minutes and then ends; the browser's EventSource reconnects by itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from e2a.api.auth import gateway
from e2a.api.messages import inbox_page
from e2a.hub.frames import notification_frame
from e2a.storage.base import Agent, StatusFilter, User

STREAM_SECONDS = 300.0
KEEPALIVE_SECONDS = 15.0
RECONNECT_MILLISECONDS = 3000
CATCH_UP_PAGE_SIZE = 100


def event(frame: dict[str, Any]) -> bytes:
    """One `message` event carrying a notification frame as JSON."""
    return f"event: message\ndata: {json.dumps(frame)}\n\n".encode()


async def inbox_events(
    user: User, agent: Agent, shown: StatusFilter, after_seq: int | None
) -> AsyncIterator[bytes]:
    """The event stream for `agent`'s inbox page showing `shown` mail: catch-up after
    `after_seq`, then live mail (always unread, so it belongs on either page), with a comment
    line every KEEPALIVE_SECONDS so proxies keep the connection open."""
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
    with gateway().hub.subscribe(agent.email) as live:
        page = await inbox_page(user, agent.email, shown, CATCH_UP_PAGE_SIZE, after_seq)
        sent = {message.id for message in page.messages}
        for message in page.messages:
            yield event(notification_frame(message))
        deadline = trio.current_time() + STREAM_SECONDS
        while trio.current_time() < deadline:
            frame: dict[str, Any] | None = None
            ended = False
            with trio.move_on_after(KEEPALIVE_SECONDS):
                try:
                    frame = await live.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    ended = True  # fell behind: the browser reconnects and catches up
            if ended:
                return
            if frame is None:
                yield b": keepalive\n\n"
            elif frame["message_id"] not in sent:
                yield event(frame)
