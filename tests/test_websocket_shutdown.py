"""A stopping gateway closes agents' WebSockets with 1001 `shutting_down`, e2a's close code for
a deploy or a restart (clients reconnect with backoff), on `/v1` and `/api/v1` alike; a client
that left first costs the stop nothing. Real gateways over real sockets, stopped by
cancellation as SIGTERM stops `e2a serve`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import make_settings

WAIT = 10.0


@dataclass
class Stoppable:
    """A running gateway, the key of its one account, and a way to stop it."""

    running: RunningGateway
    key: str
    scope: trio.CancelScope

    def url(self, path: str) -> str:
        return self.running.addresses.http_url.replace("http://", "ws://") + path


@asynccontextmanager
async def stoppable_gateway(tmp_path: Path) -> AsyncIterator[Stoppable]:
    """A gateway in a cancel scope of its own, with an account holding a local agent
    `bot@agents.test`; stopping it (`scope.cancel()`) is how a signal stops `e2a serve`."""
    settings = make_settings(tmp_path)
    async with trio.open_nursery() as nursery:
        started: list[RunningGateway] = []

        async def serve(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    start = partial(run_gateway, settings, resolver=FixtureResolver())
                    started.append(await inner.start(start))
                    task_status.started(scope)

        scope = await nursery.start(serve)
        running = started[0]
        gateway = running.gateway
        _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, "a@example.com")
        headers = {"Authorization": f"Bearer {issued.plaintext}"}
        async with httpx.AsyncClient(base_url=running.addresses.http_url, headers=headers) as http:
            made = await http.post("/api/v1/agents", json={"slug": "bot", "agent_mode": "local"})
            assert made.status_code == 201, made.text
        try:
            yield Stoppable(running, issued.plaintext, scope)
        finally:
            scope.cancel()


async def close_reason(socket: WebSocketConnection) -> tuple[int, str | None]:
    """The code and reason the server closes `socket` with (frames before it are skipped)."""
    with trio.fail_after(WAIT):
        while True:
            try:
                await socket.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code, closed.reason.reason


AGENT = quote("bot@agents.test", safe="")


def ended(gateway: Stoppable, reason: str) -> float | None:
    """How many of the gateway's WebSockets its metrics count as ended for `reason`."""
    registry = gateway.running.gateway.metrics.registry
    return registry.get_sample_value("e2a_ws_disconnects_total", {"reason": reason})


def still_open(gateway: Stoppable) -> float | None:
    return gateway.running.gateway.metrics.registry.get_sample_value("e2a_ws_connections_active")


async def test_a_v1_socket_hears_1001_shutting_down(tmp_path: Path) -> None:
    async with stoppable_gateway(tmp_path) as gateway:
        bearer = [(b"Authorization", f"Bearer {gateway.key}".encode())]
        url = gateway.url(f"/v1/agents/{AGENT}/ws")
        async with open_websocket_url(url, extra_headers=bearer) as socket:
            await trio.sleep(0.2)  # accepted and draining: nothing unread
            gateway.scope.cancel()
            assert await close_reason(socket) == (1001, "shutting_down")
        await trio.sleep(0.1)  # the gateway's tasks finish stopping
        assert (ended(gateway, "shutdown"), ended(gateway, "client_close")) == (1, 0)
        assert still_open(gateway) == 0


async def test_an_api_v1_socket_hears_1001_shutting_down(tmp_path: Path) -> None:
    async with stoppable_gateway(tmp_path) as gateway:
        url = gateway.url(f"/api/v1/agents/{AGENT}/ws?token={gateway.key}")
        async with open_websocket_url(url) as socket:
            await trio.sleep(0.2)
            gateway.scope.cancel()
            assert await close_reason(socket) == (1001, "shutting_down")
        await trio.sleep(0.1)
        assert (ended(gateway, "shutdown"), ended(gateway, "client_close")) == (1, 0)
        assert still_open(gateway) == 0


async def test_a_client_that_left_costs_the_stop_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="e2a")
    caplog.set_level(logging.WARNING, logger="hypercorn")
    with trio.fail_after(WAIT):  # the stop, at the end of the block, is bounded too
        async with stoppable_gateway(tmp_path) as gateway:
            bearer = [(b"Authorization", f"Bearer {gateway.key}".encode())]
            for path in (
                f"/v1/agents/{AGENT}/ws",
                f"/api/v1/agents/{AGENT}/ws?token={gateway.key}",
            ):
                async with open_websocket_url(gateway.url(path), extra_headers=bearer) as socket:
                    # The server pings as the socket opens; once our own ping is answered its
                    # ping has been answered too, so trio-websocket never tries to answer it
                    # while closing (it raises instead, a race on a slow machine).
                    await socket.ping()
                    await socket.aclose()
            await trio.sleep(0.2)  # the handlers see the clients gone
            assert (ended(gateway, "client_close"), ended(gateway, "shutdown")) == (2, 0)
    assert [record.getMessage() for record in caplog.records] == []
