"""The bounds on every HTTP request body, its size (`http.max_request_bytes`) and the time it
takes to arrive (`http.request_body_seconds`), enforced in front of every route — REST,
dashboard and the MCP endpoint alike — before the app reads a byte too many or waits too long.

A declared Content-Length over the bound is answered at once; a chunked body is counted as it
arrives, and once it passes the bound the app is told the client left and the answer is sent
here. Either way: 413 `payload_too_large` in the API's JSON error shape, and the connection is
closed (the rest of the body is never read). Under `/v1` the answer is e2a's envelope, with a
request id (`X-Request-Id`) and the sizes in `details`.

A body not whole `request_body_seconds` after the app first asks for it (a client dribbling a
byte at a time, which the idle timeout never ends) is answered the same way: the app is told
the client left, and 408 `request_timeout` is sent here, the connection closed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
)

from e2a_gateway.http_refusals import send_refusal


@dataclass
class _Progress:
    received: int = 0
    over: bool = False
    late: bool = False
    complete: bool = False
    deadline: float = math.inf
    answered: bool = False


class BodyLimit:
    """ASGI middleware: requests whose body exceeds `max_bytes` get 413 and never reach more
    of `app` than the bytes up to the bound; those whose body is not whole `body_seconds`
    after the app first asks for it get 408."""

    def __init__(self, app: ASGIFramework, max_bytes: int, body_seconds: float) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._body_seconds = body_seconds

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared is not None and declared > self._max_bytes:
            await self._refuse(send, scope, declared)
            return
        progress = _Progress()

        async def bounded_receive() -> ASGIReceiveEvent:
            if progress.over or progress.late:
                return {"type": "http.disconnect"}
            if progress.complete:
                return await receive()
            if progress.deadline == math.inf:
                progress.deadline = trio.current_time() + self._body_seconds
            message: ASGIReceiveEvent = {"type": "http.disconnect"}
            with trio.move_on_at(progress.deadline) as waited:
                message = await receive()
            if waited.cancelled_caught:
                progress.late = True
                return message
            if message["type"] == "http.request":
                progress.complete = not message.get("more_body", False)
                progress.received += len(message.get("body", b""))
                if progress.received > self._max_bytes:
                    progress.over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: ASGISendEvent) -> None:
            if (progress.over or progress.late) and not progress.answered:
                return  # the app was told the client left; the refusal is sent below
            if message["type"] == "http.response.start":
                progress.answered = True
            await send(message)

        await self._app(scope, bounded_receive, guarded_send)
        if progress.over and not progress.answered:
            await self._refuse(send, scope, progress.received)
        elif progress.late and not progress.answered:
            await self._refuse_late(send, scope, progress.received)

    async def _refuse_late(self, send: ASGISendCallable, scope: HTTPScope, received: int) -> None:
        message = (
            f"request body too slow: it must arrive whole within {self._body_seconds:g} seconds "
            f"(http.request_body_seconds); {received} bytes came. Send it at once, or retry on "
            "a faster connection"
        )
        details = {
            "scope": "request_body_time",
            "actual_bytes": received,
            "max_seconds": self._body_seconds,
        }
        await send_refusal(send, scope, 408, "request_timeout", message, details)

    async def _refuse(self, send: ASGISendCallable, scope: HTTPScope, received: int) -> None:
        message = (
            f"request body too large: at most {self._max_bytes} bytes (http.max_request_bytes)"
        )
        details = {"scope": "request_body", "actual_bytes": received, "max_bytes": self._max_bytes}
        await send_refusal(send, scope, 413, "payload_too_large", message, details)


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, or None when it has none (chunked) or none readable (the
    HTTP server refuses those itself)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() else None
    return None
