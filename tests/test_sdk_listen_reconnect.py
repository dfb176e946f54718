"""How `AsyncE2AClient.listen()` reconnects. Against a local WebSocket server (wsproto over a
real socket on 127.0.0.1) that accepts each connection and closes it at once with a chosen
code: it backs off (doubling, jittered) however often the handshake succeeds, and a close code
that says the client is refused for good is raised, never retried. Against a running gateway:
a key revoked while listening ends the listen with the gateway's 401, and a restart of the
gateway loses and repeats nothing."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.v1 import notifications
from e2a_gateway.v1.errors import E2AApiError
from e2a_gateway.v1.notifications import listen, websocket_url
from tests.conftest import Account, make_settings
from tests.delivery_support import accept, create_agent, mail, wait_until

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


async def _serve_until_cancelled(
    settings: Settings, task_status: trio.TaskStatus[tuple[trio.CancelScope, RunningGateway]]
) -> None:
    """Run a gateway in a cancel scope of its own; cancelling it stops the gateway as SIGTERM
    stops `e2a serve`."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            started = await nursery.start(
                partial(run_gateway, settings, resolver=FixtureResolver())
            )
            task_status.started((scope, started))


async def test_listen_picks_up_after_a_gateway_restart_without_losing_or_repeating_mail(
    tmp_path: Path, quick_backoff: None, nursery: trio.Nursery
) -> None:
    """A listener whose gateway stops (1001 `shutting_down`) reconnects once it is back (the
    refused connections meanwhile are retried with backoff): the message it was handling when
    the gateway stopped, whose ack was lost, is acknowledged rather than handed over again,
    and mail the restarted gateway accepted before the listener was back comes, in order."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    settings = make_settings(tmp_path, http={"listen": f"127.0.0.1:{port}"})
    scope, first = await nursery.start(_serve_until_cancelled, settings)
    gateway = first.gateway
    user, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "a@example.com")
    async with httpx.AsyncClient() as http:
        made = await http.post(
            f"{first.addresses.http_url}/api/v1/agents",
            json={"slug": "bot", "agent_mode": "local"},
            headers={"Authorization": f"Bearer {issued.plaintext}"},
        )
    assert made.status_code == 201, made.text
    agent = "bot@agents.test"
    ids = [await accept(gateway, [agent], mail(subject)) for subject in ("One", "Two")]
    url = websocket_url(first.addresses.http_url, agent)
    subjects: list[str] = []
    with trio.fail_after(20):
        async with aclosing(listen(url, api_key=issued.plaintext, ack=True)) as stream:
            async for notification in stream:
                subjects.append(notification.subject)
                if notification.subject == "Two":  # its ack goes when the next is asked for
                    scope.cancel()
                    await trio.sleep(0.3)  # stopped; the listener tries, and is refused
                    scope, second = await nursery.start(_serve_until_cancelled, settings)
                    ids.append(await accept(second.gateway, [agent], mail("Three")))
                if notification.subject == "Three":
                    break
    assert subjects == ["One", "Two", "Three"]

    async def statuses() -> list[str | None]:
        stored = [await second.gateway.storage.peek_inbound(user.id, agent, id_) for id_ in ids]
        return [message.status if message else None for message in stored]

    # "Two" acked on the new connection instead of handed over again (the gateway applies an
    # ack as it reads it, beside sending what is unread: not necessarily before "Three" went
    # out); "Three" not yet asked past
    expected = ["read", "read", "unread"]

    async def applied() -> bool:
        return await statuses() == expected

    with contextlib.suppress(trio.TooSlowError):
        await wait_until(applied, seconds=5)
    assert await statuses() == expected
    scope.cancel()
