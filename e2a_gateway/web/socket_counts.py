"""Counting agents' WebSockets for `/metrics`, under e2a's names: connections open now and
accepted, how each ended, the unread messages pushed as one connects, and pushes that failed.

`counted_socket` wraps the service of an accepted connection. A handler that closes the
connection itself says why first (`SocketEnding.closing`); otherwise the way the service ended
tells: the HTTP server closed it for a missing pong (`ping_timeout`) or dropped it because its
client took none of its frames for the idle timeout (`behind`), each marked in the
connection's ASGI extensions, it was cancelled while the gateway stops (`shutdown`), it ended
or was cancelled otherwise (the client left: its handler ends once it has read what the client
sent, `e2a_gateway.web.socket_reading`), or an exception ended it (`error`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from quart import websocket

from e2a_gateway.gateway import Gateway
from e2a_gateway.http_server import PING_TIMEOUT, STALLED
from e2a_gateway.hub import Ended
from e2a_gateway.web.socket_reading import client_left
from e2a_gateway.web.socket_shutdown import being_cancelled

CLIENT_CLOSE = "client_close"
ERROR = "error"
SHUTDOWN = "shutdown"
REPLACED = "replaced"
PING_TIMEOUT_REASON = "ping_timeout"
REVOKED = "revoked"
BEHIND = "behind"
BAD_ACKS = "bad_acks"


def ended_reason(ended: Ended) -> str:
    """The reason counted for a subscription the hub ended: `behind` when its client fell too
    far behind, else `revoked` (its key, agent or account went)."""
    return BEHIND if ended is Ended.BEHIND else REVOKED


class SocketEnding:
    """Why the connection being served ends, once its handler knows."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def closing(self, reason: str) -> None:
        """The handler is closing the connection for `reason` (the first reason given holds)."""
        if self.reason is None:
            self.reason = reason


@asynccontextmanager
async def counted_socket(gateway: Gateway) -> AsyncIterator[SocketEnding]:
    """Count an accepted WebSocket as open for the duration of the block, then as ended for
    the reason its handler gave, or the one its ending shows."""
    metrics = gateway.metrics
    metrics.socket_opened()
    ending = SocketEnding()
    failed = False
    try:
        yield ending
    except BaseException:
        failed = True
        raise
    finally:
        reason = ending.reason
        extensions = websocket.scope.get("extensions") or {}
        if reason is None and PING_TIMEOUT in extensions:
            reason = PING_TIMEOUT_REASON
        elif reason is None and STALLED in extensions:
            reason = BEHIND  # it stopped reading: dropped, its frames untaken
        elif reason is None and being_cancelled():
            # Cancelled: by the gateway's stop, or by Quart-Trio as the client left. One
            # checkpoint lets the gateway's own cancellation mark it stopping.
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()
            reason = SHUTDOWN if gateway.stopping else CLIENT_CLOSE
        elif reason is None:
            reason = ERROR if failed else CLIENT_CLOSE
        metrics.socket_closed(reason)


async def push(gateway: Gateway, text: str) -> None:
    """Send one frame on the current WebSocket, counting a send that fails. Once its client
    has left nothing is sent: the service waits here until it is ended, as soon as what the
    client sent before leaving has been read (`e2a_gateway.web.socket_reading`)."""
    if client_left():
        await trio.sleep_forever()
    try:
        await websocket.send(text)
    except Exception:
        gateway.metrics.ws_send_failures.inc()
        raise
