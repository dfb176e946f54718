"""WebhookConnections: keep-alive connections lent to one attempt at a time, bounded per
origin and in all, never shared between host names."""

from __future__ import annotations

import httpx
import pytest
import trio

from e2a_gateway.workers.webhook_connections import Origin, WebhookConnections
from tests.http_receiver import HttpReceiver

pytestmark = pytest.mark.backend_independent


async def post(connections: WebhookConnections, origin: Origin, url: str) -> int:
    """One POST over a borrowed connection, given back afterwards; the status code."""
    connection = connections.borrow(origin)
    response = await connection.handle_async_request(httpx.Request("POST", url, content=b"{}"))
    try:
        async for _ in response.stream:  # type: ignore[union-attr]
            pass
    finally:
        await response.aclose()
    await connections.give_back(origin, connection)
    return response.status_code


async def test_attempts_one_after_another_reuse_one_connection() -> None:
    receiver = HttpReceiver()
    async with trio.open_nursery() as nursery, WebhookConnections() as connections:
        await nursery.start(receiver.serve)
        origin: Origin = ("http", "127.0.0.1", receiver.port, "hooks.example")
        statuses = [await post(connections, origin, receiver.url) for _ in range(5)]
        nursery.cancel_scope.cancel()
    assert statuses == [200] * 5
    assert receiver.connections == 1
    assert len(receiver.requests) == 5


async def test_concurrent_attempts_get_their_own_connections_and_few_are_kept() -> None:
    origin: Origin = ("http", "192.0.2.1", 80, "hooks.example")
    async with WebhookConnections(per_origin=2) as connections:
        borrowed = [connections.borrow(origin) for _ in range(3)]
        assert len({id(connection) for connection in borrowed}) == 3
        for connection in borrowed:
            await connections.give_back(origin, connection)
        assert connections.idle == 2
    assert connections.idle == 0


async def test_another_host_name_on_the_same_address_never_gets_the_connection() -> None:
    """A connection verified for one name (TLS, SNI) must not carry another's requests."""
    async with WebhookConnections() as connections:
        first: Origin = ("https", "192.0.2.7", 443, "a.example")
        second: Origin = ("https", "192.0.2.7", 443, "b.example")
        lent = connections.borrow(first)
        await connections.give_back(first, lent)
        assert connections.borrow(second) is not lent
        assert connections.borrow(first) is lent


async def test_the_least_recently_used_origin_is_closed_first_beyond_max_idle() -> None:
    async with WebhookConnections(max_idle=2) as connections:
        origins: list[Origin] = [("http", f"192.0.2.{n}", 80, "x.example") for n in range(3)]
        lent = [connections.borrow(origin) for origin in origins]
        for origin, connection in zip(origins, lent, strict=True):
            await connections.give_back(origin, connection)
        assert connections.idle == 2
        assert connections.borrow(origins[0]) is not lent[0]
        assert connections.borrow(origins[2]) is lent[2]


async def test_connections_given_back_together_beyond_max_idle_all_succeed() -> None:
    """Closing the evicted connection lets other attempts run meanwhile: two giving back at
    once must not both pick the same least recently used origin, nor fail."""
    receiver = HttpReceiver()
    async with trio.open_nursery() as nursery, WebhookConnections(max_idle=1) as connections:
        await nursery.start(receiver.serve)
        old: Origin = ("http", "127.0.0.1", receiver.port, "old.example")
        new: Origin = ("http", "127.0.0.1", receiver.port, "new.example")
        assert await post(connections, old, receiver.url) == 200
        assert connections.idle == 1
        statuses: list[int] = []

        async def attempt() -> None:
            statuses.append(await post(connections, new, receiver.url))

        async with trio.open_nursery() as attempts:
            for _ in range(3):
                attempts.start_soon(attempt)
        assert statuses == [200] * 3
        assert connections.idle == 1
        nursery.cancel_scope.cancel()
