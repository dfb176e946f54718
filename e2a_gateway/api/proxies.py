"""The client's address behind reverse proxies: `X-Forwarded-For` is believed only when the
request comes from a proxy listed in `http.trusted_proxies`, and only as far back as the chain
of trusted proxies goes; anyone else's header is ignored (it is theirs to forge).

Every route, the per-address limits among them, then sees the client's address as
`request.remote_addr`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from e2a_gateway.networks import IpNetwork, client_address


class TrustedProxies:
    """ASGI middleware: the scope's `client` becomes the address `client_address` finds."""

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
        await self._app(scope, receive, send)
