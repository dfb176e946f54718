"""Keep-alive connections for webhook POSTs, lent out one per attempt.

Each connection is an httpx transport limited to a single connection, so an attempt talks to
httpx's transport directly: no client-level request building, cookie jar or redirect logic
(webhooks follow no redirects and keep no cookies), and no pool that rescans every idle
connection on each request. Per origin — scheme, the address the SSRF check pinned, port and
host name (which TLS verifies and SNI names) — idle connections wait for the next attempt, at
most `per_origin` of them and `max_idle` in all; the least recently used go first.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict

import certifi
import httpx
import trio

Origin = tuple[str, str, int | None, str]
"""(scheme, pinned address, port, host name)."""


class WebhookConnections:
    """Connections to webhook receivers. Use as `async with WebhookConnections() as c:`;
    `borrow` one for an attempt, then `give_back` it (kept for reuse) or `discard` it (after an
    error or timeout, when its state is unknown)."""

    def __init__(self, *, per_origin: int = 8, max_idle: int = 64) -> None:
        self._per_origin = per_origin
        self._max_idle = max_idle
        self._tls = ssl.create_default_context(cafile=certifi.where())
        self._idle: OrderedDict[Origin, list[httpx.AsyncHTTPTransport]] = OrderedDict()
        self._idle_count = 0

    @property
    def idle(self) -> int:
        """How many connections wait for reuse."""
        return self._idle_count

    async def __aenter__(self) -> WebhookConnections:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def borrow(self, origin: Origin) -> httpx.AsyncHTTPTransport:
        """An idle connection to `origin`, or a new one (it connects on first use)."""
        idle = self._idle.get(origin)
        if idle:
            self._idle_count -= 1
            transport = idle.pop()
            if not idle:
                del self._idle[origin]
            return transport
        return httpx.AsyncHTTPTransport(
            verify=self._tls,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def give_back(self, origin: Origin, transport: httpx.AsyncHTTPTransport) -> None:
        """Keep `transport` for the next attempt to `origin`, unless that would keep too many.

        The idle lists are settled before any connection is closed: closing lets other
        attempts borrow and give back meanwhile, and they must find the lists whole."""
        idle = self._idle.setdefault(origin, [])
        self._idle.move_to_end(origin)
        if len(idle) >= self._per_origin:
            await self.discard(transport)
            return
        idle.append(transport)
        self._idle_count += 1
        evicted: list[httpx.AsyncHTTPTransport] = []
        while self._idle_count > self._max_idle:
            oldest_origin, oldest = next(iter(self._idle.items()))
            evicted.append(oldest.pop(0))
            self._idle_count -= 1
            if not oldest:
                del self._idle[oldest_origin]
        with trio.CancelScope(shield=True):
            for old in evicted:
                await self.discard(old)

    async def discard(self, transport: httpx.AsyncHTTPTransport) -> None:
        """Close a connection that must not be reused."""
        await transport.aclose()

    async def aclose(self) -> None:
        """Close every idle connection (even when the caller is being cancelled)."""
        idle, self._idle, self._idle_count = self._idle, OrderedDict(), 0
        with trio.CancelScope(shield=True):
            for transports in idle.values():
                for transport in transports:
                    await transport.aclose()
