"""WebSocket notifications for local agents: `AsyncE2AClient.listen()`.

Connects to `/api/v1/agents/{email}/ws`, yields one `WSNotification` per message (unread
ones first, then live ones), optionally acks, and reconnects with exponential backoff.
Runs under trio with `trio-websocket`, imported only when listening starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from e2a.v1.errors import E2AApiError

log = logging.getLogger("e2a.v1.listen")

FIRST_BACKOFF_SECONDS = 1.0


@dataclass
class WSNotification:
    """A new message for the agent: its metadata only; fetch the body with `get_message`."""

    message_id: str
    from_: str
    recipient: str
    subject: str
    received_at: str
    conversation_id: str | None = None

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
        )


def websocket_url(base_url: str, agent_email: str, api_key: str) -> str:
    """`ws(s)://host/api/v1/agents/<email>/ws?token=<key>` for an HTTP(S) base URL."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/api/v1/agents/{quote(agent_email, safe='')}/ws"
    return urlunsplit((scheme, parts.netloc, path, urlencode({"token": api_key}), ""))


def backoff_delays(max_backoff: float) -> Iterator[float]:
    """1 s, 2 s, 4 s… capped at `max_backoff`."""
    delay = FIRST_BACKOFF_SECONDS
    while True:
        yield min(delay, max_backoff)
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


def _require_trio() -> None:
    try:
        import trio

        trio.lowlevel.current_task()
    except (ImportError, RuntimeError):
        raise RuntimeError(
            "listen() runs under trio with trio-websocket (pip install trio-websocket); "
            "under asyncio poll with get_messages() instead"
        ) from None


async def listen(
    url: str, *, reconnect: bool = True, max_backoff: float = 30.0, ack: bool = False
) -> AsyncGenerator[WSNotification, None]:
    """Yield notifications from `url`, reconnecting after a dropped connection.

    With `ack`, a notification is acknowledged (marked read) when the caller asks for the
    next one, i.e. once it has been handled. A refused handshake (bad key, unknown or cloud
    agent) raises `E2AApiError` and is never retried.
    """
    _require_trio()
    import trio
    from trio_websocket import (
        ConnectionClosed,
        ConnectionRejected,
        HandshakeError,
        open_websocket_url,
    )

    delays = backoff_delays(max_backoff)
    while True:
        try:
            async with open_websocket_url(url) as connection:
                delays = backoff_delays(max_backoff)
                while True:
                    notification = _parse_frame(await connection.get_message())
                    if notification is None:
                        continue
                    yield notification
                    if ack:
                        frame = {"type": "ack", "message_id": notification.message_id}
                        await connection.send_message(json.dumps(frame))
        except ConnectionRejected as rejected:
            body = (rejected.body or b"").decode("utf-8", "replace")
            raise E2AApiError.from_body(rejected.status_code, body) from None
        except (ConnectionClosed, HandshakeError, OSError) as exc:
            log.warning("e2a WebSocket disconnected: %s", exc)
        if not reconnect:
            return
        await trio.sleep(next(delays))
