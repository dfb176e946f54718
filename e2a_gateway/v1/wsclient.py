"""A minimal WebSocket client over httpx, for asyncio and trio alike.

httpx performs the HTTP/1.1 upgrade and hands over the raw connection; `wsproto` frames the
messages. Everything runs in the caller's task: no background task group, so an async
generator may yield between frames and be closed from anywhere (a `break` out of
`async for` included) on either event loop. Pings from the server are answered whenever the
caller waits for the next message. No I/O happens at import time.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from types import TracebackType

import httpcore
import httpx
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from e2a_gateway.v1.errors import E2AApiError

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_CHUNK_BYTES = 65536
MAX_MESSAGE_BYTES = 1024 * 1024
"""Notification frames are a few hundred bytes; anything far larger is refused."""
RETRYABLE_STATUSES = frozenset({408, 429})
STREAM_ERRORS = (httpcore.NetworkError, httpcore.TimeoutException, OSError)


class WebSocketClosed(Exception):
    """The connection ended: closed by the server (`code` and `reason` from its close frame),
    dropped, or broke the protocol (`code` None)."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class WebSocketRejected(Exception):
    """The server answered the upgrade with an HTTP status worth retrying (5xx, 408, 429)."""


def _accept_token(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest()).decode()


class WebSocket:
    """One open WebSocket connection; use `connect_websocket` to open it."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, idle_seconds: float) -> None:
        self._stream = stream
        self._protocol = Connection(ConnectionType.CLIENT)
        self._idle_seconds = idle_seconds

    async def _write(self, data: bytes) -> None:
        try:
            await self._stream.write(data, timeout=self._idle_seconds)
        except STREAM_ERRORS as exc:
            raise WebSocketClosed(f"write failed: {exc!r}") from exc

    async def receive_text(self) -> str:
        """The next text or binary message (binary decoded as UTF-8), answering pings while
        waiting. Raises `WebSocketClosed` when the connection ends or is silent for longer
        than `idle_seconds` (the server pings every 30 s, so silence means it is gone)."""
        parts: list[str] = []
        size = 0
        while True:
            for event in self._protocol.events():
                if isinstance(event, Ping):
                    await self._write(self._protocol.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                        await self._write(self._protocol.send(event.response()))
                    raise WebSocketClosed(
                        f"closed by the server ({event.code} {event.reason})",
                        int(event.code),
                        event.reason or "",
                    )
                elif isinstance(event, TextMessage | BytesMessage):
                    data = event.data
                    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
                    size += len(text)
                    if size > MAX_MESSAGE_BYTES:
                        raise WebSocketClosed(f"a message over {MAX_MESSAGE_BYTES} bytes")
                    parts.append(text)
                    if event.message_finished:
                        return "".join(parts)
            try:
                data = await self._stream.read(READ_CHUNK_BYTES, timeout=self._idle_seconds)
            except STREAM_ERRORS as exc:
                raise WebSocketClosed(f"read failed: {exc!r}") from exc
            if not data:
                raise WebSocketClosed("the connection was dropped")
            try:
                self._protocol.receive_data(data)
            except RemoteProtocolError as exc:
                raise WebSocketClosed(f"protocol error: {exc}") from exc

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        try:
            data = self._protocol.send(TextMessage(data=text))
        except LocalProtocolError as exc:
            raise WebSocketClosed(f"cannot send: {exc}") from exc
        await self._write(data)

    async def aclose(self) -> None:
        """Say goodbye (close code 1000) if the connection is still open, then close it."""
        if self._protocol.state is ConnectionState.OPEN:
            with suppress(WebSocketClosed):
                await self._write(self._protocol.send(CloseConnection(code=1000)))
        with suppress(*STREAM_ERRORS):  # already broken: nothing left to release
            await self._stream.aclose()

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def connect_websocket(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    handshake_seconds: float = 30.0,
    idle_seconds: float = 75.0,
) -> AsyncIterator[WebSocket]:
    """Open a WebSocket to `url` (`ws://` or `wss://`), sending `headers` (an
    `Authorization` one, say) with the upgrade request.

    A refusal the caller cannot fix by waiting (401, 404, 400…) raises `E2AApiError` from
    the server's answer; 5xx, 408 and 429 raise `WebSocketRejected`; network failures
    raise `httpx.HTTPError`. `handshake_seconds` bounds the upgrade, `idle_seconds` every
    read and write.
    """
    key = base64.b64encode(os.urandom(16))
    upgrade = {
        **(headers or {}),
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key.decode(),
    }
    async with (
        httpx.AsyncClient(timeout=handshake_seconds) as http,
        http.stream("GET", url, headers=upgrade) as response,
    ):
        if response.status_code != 101:
            body = (await response.aread()).decode("utf-8", "replace")
            if response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES:
                raise WebSocketRejected(f"HTTP {response.status_code}: {body[:200]}")
            raise E2AApiError.from_response(response)
        if response.headers.get("sec-websocket-accept") != _accept_token(key):
            raise WebSocketRejected("the server answered the upgrade with a wrong accept key")
        async with WebSocket(response.extensions["network_stream"], idle_seconds) as socket:
            yield socket
