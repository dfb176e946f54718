"""CORS for the REST API and `/mcp`, off unless `http.cors_allowed_origins` lists origins.

Starlette's CORS middleware answers preflights and labels the answers to a listed origin; a
request from any other origin, or without one, passes through untouched, with no CORS headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    "Mcp-Protocol-Version",
    "Mcp-Session-Id",
    "X-E2A-Agent-Email",
    "X-Request-Id",
)
"""Request headers a page may send: the API key, JSON bodies, the MCP transport's headers
(`Last-Event-ID` resumes an MCP event stream, `X-E2A-Agent-Email` names the default agent) and
its own request id, which `/v1` answers echo."""
EXPOSED_HEADERS = (
    "Content-Disposition",
    "Mcp-Session-Id",
    "Mcp-Protocol-Version",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    "WWW-Authenticate",
    "X-Request-Id",
)
"""Answer headers a page may read beyond the CORS-safelisted ones: the MCP session, how long to
wait and why a key was refused, `/v1`'s request id and `RateLimit-*` budget, and the file name
of a download (an attachment, the account export)."""
PREFLIGHT_MAX_AGE_SECONDS = 600


def with_cors(app: ASGIFramework, allowed_origins: list[str]) -> ASGIFramework:
    """`app` behind CORS for `allowed_origins` (exact origins, as browsers send them), or `app`
    itself when the list is empty. Starlette is loaded only then: it is not needed otherwise."""
    if not allowed_origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    cors = CORSMiddleware(
        cast(Any, app),  # Starlette declares its own ASGI types; the callable is the same
        allow_origins=allowed_origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
    )
    return OriginGate(app, cast(ASGIFramework, cors), frozenset(allowed_origins))


class OriginGate:
    """Send requests from an allowed origin through `cors`, every other one straight to `app`.

    Starlette answers a preflight from an origin it refuses with its allowed methods, headers
    and max-age anyway; behind this gate such an origin learns nothing and gets no CORS header.
    """

    def __init__(
        self, app: ASGIFramework, cors: ASGIFramework, allowed_origins: frozenset[str]
    ) -> None:
        self._app = app
        self._cors = cors
        self._allowed = allowed_origins

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and request_origin(scope["headers"]) in self._allowed:
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def request_origin(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The `Origin` header among a request's `headers`, or None without one."""
    for name, value in headers:
        if name.lower() == b"origin":
            return str(value.decode("latin-1"))
    return None
