"""WebSocket notifications for local agents: `AsyncE2AClient.listen()`.

Connects to `/api/v1/agents/{email}/ws`, yields one `WSNotification` per message (unread
ones first, then live ones), optionally acks, and reconnects with jittered exponential
backoff. Runs under asyncio and trio alike (httpx and wsproto, through anyio).
"""

from __future__ import annotations

import collections
import json
import logging
import random
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import httpx

from e2a_gateway.v1.errors import E2AApiError, error_class, is_retryable
from e2a_gateway.v1.models import Trust
from e2a_gateway.v1.wsclient import (
    WebSocket,
    WebSocketClosed,
    WebSocketRejected,
    connect_websocket,
)

log = logging.getLogger("e2a.v1.listen")

FIRST_BACKOFF_SECONDS = 1.0
STABLE_SECONDS = 30.0
"""A connection open this long (the server's ping interval) is a sound one: the pauses between
reconnections start again from the first after it, as after one that delivered a
notification."""
REFUSED_CLOSE_CODES = range(4400, 4500)
"""Close codes that carry an HTTP refusal of the connection (`4000 + status`, as 4401 for 401)."""


@dataclass
class WSNotification:
    """A new message for the agent: its metadata, its new text (`reply_text`, no quoted
    history or signature) and its trust map; fetch the whole body with `get_message`."""

    message_id: str
    from_: str
    recipient: str
    subject: str
    received_at: str
    conversation_id: str | None = None
    reply_text: str | None = None
    trust: Trust | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> WSNotification:
        """Read one JSON frame of the server."""
        return cls(
            message_id=str(payload.get("message_id") or ""),
            from_=str(payload.get("from") or ""),
            recipient=str(payload.get("recipient") or payload.get("to") or ""),
            subject=str(payload.get("subject") or ""),
            received_at=str(payload.get("received_at") or ""),
            conversation_id=payload.get("conversation_id"),
            reply_text=payload.get("reply_text"),
            trust=Trust.model_validate(payload["trust"]) if payload.get("trust") else None,
        )


def websocket_url(base_url: str, agent_email: str) -> str:
    """`ws(s)://host/api/v1/agents/<email>/ws` for an HTTP(S) base URL. The API key is not in
    it: `listen` sends it in a header (`bearer`), as a URL is written to logs (httpx's INFO line
    of each request, a reverse proxy's access log)."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/api/v1/agents/{quote(agent_email, safe='')}/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def bearer(api_key: str) -> dict[str, str]:
    """The handshake header that presents `api_key`."""
    return {"Authorization": f"Bearer {api_key}"}


def backoff_delays(max_backoff: float) -> Iterator[float]:
    """Delays between reconnections: 1 s, 2 s, 4 s… capped at `max_backoff`, each shortened
    by a random 0 to 50 % so that many clients dropped at once do not return at once."""
    delay = FIRST_BACKOFF_SECONDS
    while True:
        yield min(delay, max_backoff) * random.uniform(0.5, 1.0)
        delay *= 2


def _parse_frame(text: str | bytes) -> WSNotification | None:
    try:
        payload = json.loads(text)
    except ValueError:
        log.warning("ignoring a WebSocket frame that is not JSON")
        return None
    if not isinstance(payload, dict) or not payload.get("message_id"):
        log.warning("ignoring a WebSocket frame without message_id")
        return None
    return WSNotification.from_payload(payload)


HANDLED_REMEMBERED = 10_000
"""How many handled notifications `listen` remembers to acknowledge again, not yield again."""


class _Handled:
    """The ids of the last HANDLED_REMEMBERED notifications the caller handled (asked for the
    next one after). The client answers the server's pings only while the caller waits for the
    next notification, so a handler longer than the server's pong wait (10 s) loses the
    connection, and with it the ack: the next connection sends that message again, and `listen`
    acknowledges it instead of handing it over twice."""

    def __init__(self) -> None:
        self._order: collections.deque[str] = collections.deque()
        self._ids: set[str] = set()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def add(self, message_id: str) -> None:
        """Remember `message_id`, forgetting the oldest beyond HANDLED_REMEMBERED."""
        if message_id in self._ids:
            return
        self._order.append(message_id)
        self._ids.add(message_id)
        if len(self._order) > HANDLED_REMEMBERED:
            self._ids.discard(self._order.popleft())


def refusal_of(closed: WebSocketClosed) -> E2AApiError | None:
    """The error a close code of REFUSED_CLOSE_CODES stands for when no reconnection can clear
    it (4401, 4403, 4404…; not 4408 nor 4429, which waiting may clear); else None."""
    if closed.code is None or closed.code not in REFUSED_CLOSE_CODES:
        return None
    status = closed.code - 4000
    if is_retryable(None, status):
        return None
    message = closed.reason or f"the server refused the connection (close code {closed.code})"
    return error_class(status, None)(status, message)


async def _acknowledge(socket: WebSocket, message_id: str) -> None:
    await socket.send_text(json.dumps({"type": "ack", "message_id": message_id}))


async def listen(
    url: str,
    *,
    api_key: str | None = None,
    reconnect: bool = True,
    max_backoff: float = 30.0,
    ack: bool = False,
) -> AsyncGenerator[WSNotification, None]:
    """Yield notifications from `url`, reconnecting after a dropped connection; `api_key`, when
    given, is presented in an `Authorization: Bearer` header of each handshake.

    On every (re)connection the server first sends all unread messages, so nothing is lost
    while disconnected. With `ack`, a notification is acknowledged (marked read) when the
    caller asks for the next one, i.e. once it has been handled. A refused handshake (bad
    key, unknown or cloud agent), or a connection closed with a refusal's close code (4401,
    4403, 4404…), raises `E2AApiError` and is never retried. The pauses between reconnections
    start again from the first only after a connection that delivered a notification or
    stayed open STABLE_SECONDS: a server that accepts each connection and closes it at once
    is not hammered.
    """
    delays = backoff_delays(max_backoff)
    handled = _Handled()
    headers = None if api_key is None else bearer(api_key)
    while True:
        opened_at: float | None = None
        delivered = False
        try:
            async with connect_websocket(url, headers=headers) as socket:
                opened_at = anyio.current_time()
                while True:
                    notification = _parse_frame(await socket.receive_text())
                    if notification is None:
                        continue
                    delivered = True
                    if ack and notification.message_id in handled:
                        await _acknowledge(socket, notification.message_id)
                        continue
                    yield notification
                    if ack:
                        handled.add(notification.message_id)
                        await _acknowledge(socket, notification.message_id)
        except WebSocketClosed as exc:
            refused = refusal_of(exc)
            if refused is not None:
                raise refused from None
            log.warning("e2a WebSocket disconnected: %s", exc)
        except (WebSocketRejected, httpx.HTTPError) as exc:
            log.warning("e2a WebSocket disconnected: %s", exc)
        if not reconnect:
            return
        if delivered or (
            opened_at is not None and anyio.current_time() - opened_at >= STABLE_SECONDS
        ):
            delays = backoff_delays(max_backoff)
        await anyio.sleep(next(delays))
