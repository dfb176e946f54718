"""Live inbox: a server-sent event stream of the mail arriving for one agent.

It first sends what arrived after the browser's position — the last event it received before
reconnecting (its `Last-Event-ID`), else the last message the page shows — so nothing
committed meanwhile is missed, then what the hub announces. A stream lasts a few minutes and
then ends; the browser's EventSource reconnects by itself. It ends at once when the agent or
account is deleted, the session's API key revoked or the session signed out, and when the key
or the session expires.

Events read from storage carry their inbox position as their `id`. The hub's announcements do
not know it (storing mail reads back no positions, to keep that path lean), so after sending
live mail the stream reads the inbox from its last position once quiet, and before it ends,
and moves the browser's position past what it was shown.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from e2a_gateway.bidi import in_real_order
from e2a_gateway.dashboard.auth import Session
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub import Listener
from e2a_gateway.hub.access import lost_access
from e2a_gateway.hub.frames import notification_frame
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import OperationError
from e2a_gateway.operations.messages import encode_page_token, inbox_page
from e2a_gateway.storage.base import Agent, StatusFilter
from e2a_gateway.web.context import current_gateway

STREAM_SECONDS = 300.0
KEEPALIVE_SECONDS = 15.0
RECONNECT_MILLISECONDS = 3000
CATCH_UP_PAGE_SIZE = 100
MAX_CATCH_UP = 1000
"""At most this many messages are sent from storage in one catch-up; when more wait, the page
is told to reload instead."""

RELOAD = b"event: reload\ndata: \n\n"
"""Tells the page that more mail waits than a stream sends: it reloads."""


def event(frame: dict[str, Any], position: int | None = None) -> bytes:
    """One `message` event carrying a notification frame as JSON, with the message's inbox
    `position` (as a page token) for its id when known. The page shows its text as the
    dashboard's pages do: bidirectional embeddings, overrides and isolates as U+FFFD."""
    shown = {
        name: in_real_order(value) if isinstance(value, str) else value
        for name, value in frame.items()
    }
    return f"event: message\n{_id_line(position)}data: {json.dumps(shown)}\n\n".encode()


def position_event(position: int) -> bytes:
    """A `position` event: moves the browser's Last-Event-ID to `position` (past messages it
    was shown live) and shows nothing."""
    return f"event: position\n{_id_line(position)}data: \n\n".encode()


def _id_line(position: int | None) -> str:
    return "" if position is None else f"id: {encode_page_token(position)}\n"


class CatchUp:
    """A stream's sending from storage: the messages after its position not sent yet, each with
    its position; and which messages the stream has sent, live or from storage."""

    def __init__(
        self, gateway: Gateway, caller: Caller, agent: Agent, shown: StatusFilter, after: int | None
    ) -> None:
        self._gateway = gateway
        self._caller = caller
        self._agent = agent
        self._shown = shown
        self._position = after
        self._sent: set[str] = set()
        self.ahead = False
        """Whether messages were sent live (without a position) since the last catch-up: the
        browser's position is behind what it was shown."""

    def live(self, frame: dict[str, Any]) -> bytes | None:
        """The event for a frame the hub announced; None when the message was already sent."""
        if frame["message_id"] in self._sent:
            return None
        self._sent.add(frame["message_id"])
        self.ahead = True
        return event(frame)

    async def read(self) -> list[bytes]:
        """The events of the mail after the position, read page after page until none is left:
        the messages not sent yet, then a `position` event if the last one read had been sent
        live; only RELOAD when more than MAX_CATCH_UP unsent ones wait. OperationError when the
        agent is gone or the caller polls too much."""
        found: list[tuple[int, dict[str, Any] | None]] = []
        unsent = 0
        after = self._position
        while True:
            page = await inbox_page(
                self._gateway,
                self._caller,
                self._agent.email,
                self._shown,
                CATCH_UP_PAGE_SIZE,
                after,
            )
            for message in page.messages:
                fresh = message.id not in self._sent
                unsent += fresh
                found.append((message.seq, notification_frame(message) if fresh else None))
            if unsent > MAX_CATCH_UP:
                return [RELOAD]
            if page.next_after is None:
                break
            after = page.next_after
        chunks = []
        for seq, frame in found:
            if frame is not None:
                self._sent.add(frame["message_id"])
                chunks.append(event(frame, seq))
        if found:
            last_seq, last_frame = found[-1]
            self._position = last_seq
            if last_frame is None:
                chunks.append(position_event(last_seq))
        self.ahead = False
        return chunks


async def inbox_events(
    session: Session, agent: Agent, shown: StatusFilter, after_seq: int | None
) -> AsyncIterator[bytes]:
    """The event stream for `agent`'s inbox page showing `shown` mail: catch-up after
    `after_seq`, then live mail (always unread, so it belongs on either page), with a comment
    line every KEEPALIVE_SECONDS so proxies keep the connection open."""
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
    gateway = current_gateway()
    caller = session.caller
    listener = Listener(
        agent.id,
        caller.user_id,
        caller.key_hash,
        "dashboard",
        caller.expires_at,
        session.session_id,
        session.expires_at,
    )
    with gateway.hub.subscribe(listener) as live:
        if await lost_access(gateway.storage, listener, agent.email) is not None:
            return  # revoked while the stream opened: the reconnection is refused
        catch_up = CatchUp(gateway, caller, agent, shown, after_seq)
        deadline = trio.current_time() + STREAM_SECONDS
        due = True  # catch up first, then after live mail once quiet (and before the end)
        while True:
            if due:
                try:
                    chunks = await catch_up.read()
                except OperationError:
                    return  # the agent went, or too many polls: the reconnection says which
                for chunk in chunks:
                    if live.revoked:
                        return
                    yield chunk
                if chunks == [RELOAD]:
                    return
                due = False
            if live.revoked or trio.current_time() >= deadline:
                return
            frame: dict[str, Any] | None = None
            quiet_until = min(deadline, trio.current_time() + KEEPALIVE_SECONDS)
            with trio.move_on_at(quiet_until) as waiting:
                frame = await live.receive()
            if frame is None and not waiting.cancelled_caught:
                return  # ended: fell behind (the browser reconnects and catches up) or revoked
            if frame is None:
                yield b": keepalive\n\n"
                due = catch_up.ahead
            elif (sent := catch_up.live(frame)) is not None:
                yield sent
