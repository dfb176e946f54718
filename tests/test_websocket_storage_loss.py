"""An agent's WebSocket whose service fails once it is open (the database gone, say) is closed
with 1011 `internal_error`, e2a's code for "reconnect with backoff": not with 1000, a normal
closure, on which e2a's SDK stops listening for good. On PostgreSQL, whose connections can be
refused while the gateway runs."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import make_settings
from tests.databases import fresh_postgres_database
from tests.delivery_support import agent_id, create_agent, open_account, wait_until

pytestmark = pytest.mark.backend_independent

WAIT = 10.0


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test cluster (skips without E2A_TEST_POSTGRES_URL)."""
    with fresh_postgres_database() as url:
        yield url


def take_connections(url: str, allowed: bool) -> None:
    """Let the database take new connections or not; refusing, end the ones open now."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url.replace(f"/{name}", "/postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


@pytest.mark.parametrize("surface", ["/api/v1", "/v1"])
async def test_a_socket_that_loses_its_database_is_closed_1011_internal_error(
    tmp_path: Path,
    database: str,
    nursery: trio.Nursery,
    surface: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path, database={"url": database})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    gateway = running.gateway
    # A `/v1` socket serves once the other replicas are told of its claim: the database is
    # taken away only then (before, the socket closes 1013 "try again later", as it should).
    announced = trio.Event()
    announce = gateway.storage.announce

    async def announcing(news: Any) -> None:
        await announce(news)
        announced.set()

    monkeypatch.setattr(gateway.storage, "announce", announcing)
    account = await open_account(gateway, running.addresses.http_url, "owner@example.com")
    agent = await create_agent(account, "bot")
    await account.http.aclose()
    subscribed = await agent_id(gateway, agent)
    base = running.addresses.http_url.replace("http://", "ws://")
    url = f"{base}{surface}/agents/{quote(agent, safe='')}/ws"
    bearer = [("Authorization", f"Bearer {account.key}")]
    try:
        with trio.fail_after(WAIT):
            async with open_websocket_url(url, extra_headers=bearer) as ws:
                await wait_until(lambda: gateway.hub.subscriber_count(subscribed) == 1)
                if surface == "/v1":
                    await announced.wait()
                await trio.to_thread.run_sync(take_connections, database, False)
                notice = {"message_id": "msg_lost", "from": "a@example.org", "recipient": agent}
                gateway.hub.publish(subscribed, notice)  # the socket reads the message: fails
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
    finally:
        await trio.to_thread.run_sync(take_connections, database, True)
    reason = closed.value.reason
    assert (reason.code, reason.reason) == (1011, "internal_error")
