"""Request bodies are read as sent: one with a content coding (`Content-Encoding: gzip`,
`deflate`, `br`, …) is refused in front of every route — REST, dashboard and the MCP endpoint
alike — with 415 `unsupported_media_type` and `Accept-Encoding: identity` (RFC 9110 section
15.5.16), before a byte of it is read. The gateway never inflates a body, so a compressed one
cannot grow past `http.max_request_bytes` once inside (a decompression bomb), and its client is
told what to change rather than that its bytes are not JSON.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from e2a_gateway.http_refusals import send_refusal


class IdentityBodiesOnly:
    """ASGI middleware: HTTP requests whose body has a content coding get 415."""

    def __init__(self, app: ASGIFramework) -> None:
        self._app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or (coding := content_coding(scope["headers"])) is None:
            await self._app(scope, receive, send)
            return
        message = (
            f"request bodies are read as sent, without a content coding: Content-Encoding: "
            f"{coding} is not supported; send the body uncompressed"
        )
        await send_refusal(
            send,
            scope,
            415,
            "unsupported_media_type",
            message,
            extra_headers=[(b"accept-encoding", b"identity")],
        )


def content_coding(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's Content-Encoding, as sent (trimmed), when it names a coding other than
    `identity`; None when it names none."""
    values = [value for name, value in headers if name.lower() == b"content-encoding"]
    text = ", ".join(value.decode("latin-1").strip() for value in values)
    codings = {token.strip().lower() for token in text.split(",")} - {"", "identity"}
    return text[:100] if codings else None
