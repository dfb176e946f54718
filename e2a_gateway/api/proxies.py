"""The client's address behind reverse proxies: `X-Forwarded-For` is believed only when the
request comes from a proxy listed in `http.trusted_proxies`, and only as far back as the chain
of trusted proxies goes; anyone else's header is ignored (it is theirs to forge).

Every route, the per-address limits among them, then sees the client's address as
`request.remote_addr`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from e2a_gateway.config import IpNetwork


def _address(text: str) -> str | None:
    """`text` as a canonical IP address, also when written `a.b.c.d:port` or `[v6]:port` as
    some proxies do, and an IPv4 address as itself when written in IPv6 (`::ffff:a.b.c.d`, as
    a dual-stack listener sees IPv4 peers); None when it is no address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _trusted(address: str, networks: Sequence[IpNetwork]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in networks)


def is_trusted_proxy(peer: str, trusted: Sequence[IpNetwork]) -> bool:
    """Whether the connection's peer address `peer` is one of the `trusted` proxies."""
    address = _address(peer)
    return address is not None and _trusted(address, trusted)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence[IpNetwork]) -> str:
    """The address of the client: `peer` unless it is a trusted proxy, in which case the
    address that proxy reports (the last `X-Forwarded-For` entry), and so on while the hop
    reached is trusted too. An entry that is no address ends the walk at the proxy before it."""
    address = _address(peer)
    if address is None:
        return peer
    hops = [entry for header in forwarded_for for entry in header.split(",")]
    while hops and _trusted(address, trusted):
        reported = _address(hops.pop())
        if reported is None:
            break
        address = reported
    return address


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
