"""How `AsyncE2AClient.listen()` reconnects, against a local WebSocket server (wsproto over a
real socket on 127.0.0.1) that accepts each connection and closes it at once with a chosen
code: it backs off (doubling, jittered) however often the handshake succeeds, and a close code
that says the client is refused for good is raised, never retried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from e2a_gateway.app import RunningGateway
from e2a_gateway.v1 import notifications
from e2a_gateway.v1.errors import E2AApiError
from e2a_gateway.v1.notifications import listen, websocket_url
from tests.conftest import Account
from tests.delivery_support import accept, create_agent, mail

FIRST_BACKOFF = 0.05
"""The first pause between reconnections in these tests (the SDK's is 1 s)."""


@dataclass
class ClosingServer:
    """A WebSocket server that closes every connection it accepts with `code` and `reason`;
    `handshakes` counts them."""

    url: str
    handshakes: int = 0


@asynccontextmanager
async def closing_server(code: int, reason: str) -> AsyncIterator[ClosingServer]:
    """Serve on 127.0.0.1, closing each accepted WebSocket at once with `code` and `reason`."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server = ClosingServer(f"ws://127.0.0.1:{port}/api/v1/agents/bot%40agents.test/ws")

    async def serve(stream: trio.SocketStream) -> None:
        connection = WSConnection(ConnectionType.SERVER)
        async with stream:
            while data := await stream.receive_some(65536):
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, Request):
                        server.handshakes += 1
                        await stream.send_all(connection.send(AcceptConnection()))
                        await stream.send_all(
                            connection.send(CloseConnection(code=code, reason=reason))
                        )
                    elif isinstance(event, CloseConnection):
                        return

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve, listeners)
        yield server
        nursery.cancel_scope.cancel()


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifications, "FIRST_BACKOFF_SECONDS", FIRST_BACKOFF)


async def test_a_server_that_accepts_then_closes_is_reconnected_to_with_growing_pauses(
    quick_backoff: None,
) -> None:
    """A handshake that succeeds is no sign the next connection will last (a gateway whose
    database fails closes each one with 1011 at once): the pauses keep doubling until a
    connection delivers something, rather than starting again from the first after each
    handshake, which made the client reconnect every FIRST_BACKOFF for ever."""
    async with closing_server(1011, "internal_error") as server:
        with trio.move_on_after(1.5):
            async with aclosing(listen(server.url, api_key="e2a_test")) as stream:
                async for _ in stream:
                    raise AssertionError("the server sends no notification")
    # pauses of 0.025-0.05, 0.05-0.1, 0.1-0.2, 0.2-0.4, 0.4-0.8 s: at most 6 handshakes in
    # 1.5 s (about 40 when every pause is the first)
    assert 3 <= server.handshakes <= 7


@pytest.mark.parametrize(("code", "status"), [(4401, 401), (4403, 403), (4404, 404)])
async def test_a_close_code_that_refuses_for_good_is_raised_not_retried(
    quick_backoff: None, code: int, status: int
) -> None:
    """4400-4499 are the HTTP refusals of a handshake, said as close codes (`4000 + status`)
    by servers that accept first (a gateway behind some proxies, e2a's own conventions): no
    reconnection can succeed, so `listen` raises E2AApiError with that status and the
    server's reason, after one connection."""
    async with closing_server(code, "unknown or revoked API key") as server:
        with trio.fail_after(5), pytest.raises(E2AApiError) as refused:
            async with aclosing(listen(server.url, api_key="e2a_test")) as stream:
                async for _ in stream:
                    raise AssertionError("the server sends no notification")
    assert server.handshakes == 1
    assert refused.value.status_code == status
    assert "unknown or revoked API key" in refused.value.message


async def test_a_key_revoked_while_listening_ends_the_listen_with_its_401(
    running: RunningGateway, make_account: Any
) -> None:
    """The gateway closes the socket of a revoked key with 1008 at once; `listen` reconnects
    once, is refused with 401 before the upgrade, and raises that: it stops, it does not loop."""
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "ear")
    created = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "laptop"})
    laptop_key, laptop_id = created.json()["key"], created.json()["id"]
    await accept(running.gateway, [agent], mail("Before"))
    url = websocket_url(running.addresses.http_url, agent)
    subjects = []
    with trio.fail_after(10), pytest.raises(E2AApiError) as refused:
        async with aclosing(listen(url, api_key=laptop_key)) as stream:
            async for notification in stream:
                subjects.append(notification.subject)
                revoked = await alice.http.delete(f"/api/v1/users/me/api-keys/{laptop_id}")
                assert revoked.status_code == 204
    assert subjects == ["Before"]
    assert (refused.value.status_code, refused.value.code) == (401, "unauthorized")
