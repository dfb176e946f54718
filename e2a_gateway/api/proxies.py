"""The client's address and scheme behind reverse proxies: `X-Forwarded-For` is believed only
when the request comes from a proxy listed in `http.trusted_proxies`, and only as far back as the
chain of trusted proxies goes; anyone else's header is ignored (it is theirs to forge). So is
`X-Forwarded-Proto`: a trusted proxy that says the client used https (the value it set, the
last) makes the request's scheme https.

Every route, the per-address limits among them, then sees the client's address as
`request.remote_addr`, and the dashboard marks its cookies Secure (and names them `__Host-…`)
by `request.scheme`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from e2a_gateway.networks import IpNetwork, client_address, is_trusted_proxy

_FORWARDING_HEADERS = frozenset({"x-forwarded-for", "forwarded", "x-real-ip", "via"})
"""Header fields a reverse proxy adds to the requests it forwards, naming its client or itself."""

_SECURE_SCHEMES = {"http": "https", "websocket": "wss"}
"""The scope's scheme, by scope type, for a request a trusted proxy received over TLS."""


class TrustedProxies:
    """ASGI middleware: the scope's `client` becomes the address `client_address` finds, and
    its `scheme` the secure one when a trusted proxy says https."""

    def __init__(self, app: ASGIFramework, trusted: Sequence[IpNetwork]) -> None:
        self._app = app
        self._trusted = list(trusted)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "lifespan" and self._trusted and scope["client"] is not None:
            peer = scope["client"][0]
            forwarded = [
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name.lower() == b"x-forwarded-for"
            ]
            client = client_address(peer, forwarded, self._trusted)
            if client != peer:
                scope = scope.copy()
                scope["client"] = (client, 0)
            if _says_https(scope["headers"]) and is_trusted_proxy(peer, self._trusted):
                scope = scope.copy()
                scope["scheme"] = _SECURE_SCHEMES[scope["type"]]
        await self._app(scope, receive, send)


def _says_https(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the last `X-Forwarded-Proto` value — the one the nearest proxy set — is https."""
    values = [
        entry.strip().lower()
        for name, value in headers
        if name.lower() == b"x-forwarded-proto"
        for entry in value.decode("latin-1").split(",")
    ]
    return bool(values) and values[-1] == "https"


def forwarded_by_a_proxy(header_names: Iterable[str]) -> bool:
    """Whether a request with header fields named `header_names` says a proxy forwarded it
    (`X-Forwarded-For`, `Forwarded`, `X-Real-IP` or `Via`): its client is then elsewhere,
    whatever the peer of the connection is, listed in `http.trusted_proxies` or not."""
    return any(name.lower() in _FORWARDING_HEADERS for name in header_names)
