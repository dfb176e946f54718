"""Every frame a WebSocket client sent before it left is read: its acks count.

Quart-Trio cancels a WebSocket's handler as soon as its client leaves (a close frame, or the
connection dropped), and with it the frames the client sent just before, still queued for the
handler (up to ten) or being worked on: a client that acked a batch and closed found some of
that mail unread, sent again on its next connection. Here the client's leaving ends the
queue instead: the handler reads what is left, then `next_frame` says the client left and
the handler ends its service. Meanwhile nothing more is sent (`client_left`: the frames would
go to nobody), nor once the HTTP server has closed the connection for a ping left unanswered
(its close frame may wait behind pongs the client does not read, and a frame sent meanwhile
would fail as an unhandled error). A handler that does not end within LEAVING_SECONDS is
cancelled, as before.
"""

from __future__ import annotations

import trio
from hypercorn.typing import ASGIReceiveCallable
from quart import websocket
from quart_trio.asgi import TrioASGIWebsocketConnection

from e2a_gateway.http_server import PING_TIMEOUT

LEAVING_SECONDS = 5.0
"""How long a handler has, once its client left, to read what it sent and end."""
CLIENT_LEFT = "e2a.client_left"
"""The key added to a WebSocket's ASGI `extensions` once its client has left."""


class ReadToTheEndConnection(TrioASGIWebsocketConnection):
    """Quart-Trio's WebSocket connection, whose handler reads every frame of a client that
    left before it is ended (without Quart's `websocket_received` signal, which e2a does not
    use)."""

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, receive: ASGIReceiveCallable
    ) -> None:
        """Queue the client's frames for the handler; once the client left, close the queue
        and give the handler LEAVING_SECONDS to read it and end, then cancel it."""
        while True:
            event = await receive()
            if event["type"] == "websocket.receive":
                await self.send_channel.send(event.get("bytes") or event.get("text") or b"")
            elif event["type"] == "websocket.disconnect":
                break
        extensions = self.scope.get("extensions")
        if extensions is not None:
            extensions[CLIENT_LEFT] = {}
        self.send_channel.close()
        await trio.sleep(LEAVING_SECONDS)
        nursery.cancel_scope.cancel()


async def next_frame() -> str | bytes | None:
    """The next frame the current WebSocket's client sent; None once it has left and every
    frame it sent before has been read."""
    try:
        return await websocket.receive()
    except trio.EndOfChannel:
        return None


def client_left() -> bool:
    """Whether the current WebSocket's client has left (what it sent may still be unread), or
    the HTTP server took it for gone (no pong in time) and closed the connection."""
    extensions = websocket.scope.get("extensions") or {}
    return CLIENT_LEFT in extensions or PING_TIMEOUT in extensions
