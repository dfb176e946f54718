"""How an agent's WebSocket ends when the gateway stops: closed with 1001 `shutting_down`.

A stopping gateway cancels every request task, its WebSockets' included; left alone, the
client would hear 1011 (internal error) from the HTTP server as the handler died. e2a's
close-code contract says 1001 and the reason token `shutting_down`: a deploy or a restart,
reconnect with backoff. `going_away_when_cancelled` wraps a socket's service and says so on
its way out, shielded and briefly; a client that has already left hears nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from quart import websocket

CLOSE_GOING_AWAY = 1001
SHUTTING_DOWN = "shutting_down"
CLOSE_SECONDS = 1.0
"""How long a stopping gateway waits for a close frame to be written."""


@asynccontextmanager
async def going_away_when_cancelled() -> AsyncIterator[None]:
    """Serve the accepted WebSocket inside; if its task is cancelled (the gateway is
    stopping), close it with 1001 `shutting_down` before the cancellation goes on."""
    try:
        yield
    finally:
        if being_cancelled():
            # Shielded and brief; a client that has gone already cannot be told.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(CLOSE_SECONDS),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await websocket.close(CLOSE_GOING_AWAY, SHUTTING_DOWN)


def being_cancelled() -> bool:
    """Whether the current task is being cancelled (its effective deadline has passed for
    good): what a `finally` of a socket's service asks to tell a stop from a normal end."""
    return trio.current_effective_deadline() == -math.inf
