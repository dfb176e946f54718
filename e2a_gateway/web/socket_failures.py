"""How an agent's WebSocket ends when its service fails once it is open (the database gone, a
bug): closed with 1011 `internal_error`, e2a's code and reason token for "reconnect with
backoff".

Left alone, Quart closes an accepted WebSocket whose handler raised with 1000, a normal
closure, on which e2a's SDK stops listening for good and silently. The failure still goes on
to be logged and counted (`error`) as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from quart import websocket

CLOSE_INTERNAL_ERROR = 1011
INTERNAL_ERROR = "internal_error"
CLOSE_SECONDS = 1.0
"""How long a failed service waits for its close frame to be written."""


@asynccontextmanager
async def internal_error_when_failing() -> AsyncIterator[None]:
    """Serve the accepted WebSocket inside; if that raises, close the connection with 1011
    `internal_error` (a client that has gone already cannot be told), then let the error go
    on."""
    try:
        yield
    except Exception:
        with trio.move_on_after(CLOSE_SECONDS), contextlib.suppress(Exception):
            await websocket.close(CLOSE_INTERNAL_ERROR, INTERNAL_ERROR)
        raise
