"""A request that presents more than one API key is refused, never answered as the first key's
owner: over real HTTP and WebSocket handshakes against a running gateway, on `/api/v1`, `/v1`,
both WebSockets and MCP over HTTP."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request

from e2a_gateway.app import RunningGateway
from tests.conftest import Account, agent_path
from tests.delivery_support import create_agent
from tests.mcp_support import INITIALIZE

WAIT = 10.0
ONE_KEY = "send exactly one API key"


@pytest.fixture
async def alice(make_account: Any) -> Account:
    account: Account = await make_account("alice@example.com")
    return account


@pytest.fixture
async def bob(make_account: Any) -> Account:
    account: Account = await make_account("bob@example.com")
    return account


def twice(first: str, second: str) -> list[tuple[str, str]]:
    """Two `Authorization: Bearer` headers, in this order."""
    return [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]


def pairs(alice: Account, bob: Account) -> list[list[tuple[str, str]]]:
    """Two different keys, either way round, and the same key twice: all ambiguous."""
    return [twice(alice.key, bob.key), twice(bob.key, alice.key), twice(alice.key, alice.key)]


async def test_two_authorization_headers_are_refused_on_api_v1(
    anonymous: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    for headers in pairs(alice, bob):
        response = await anonymous.get("/api/v1/users/me/api-keys", headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert set(response.json()) == {"error"}
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        assert error["code"] == "unauthorized"
        assert ONE_KEY in error["message"]
        assert response.headers["X-Request-Id"].startswith("req_")


async def test_two_authorization_headers_are_refused_on_v1(
    anonymous: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    for headers in pairs(alice, bob):
        response = await anonymous.get("/v1/account/api-keys", headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "unauthorized"
        assert ONE_KEY in error["message"]
        assert error["request_id"] == response.headers["X-Request-Id"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_one_authorization_header_still_works(alice: Account) -> None:
    assert (await alice.http.get("/api/v1/users/me/api-keys")).status_code == 200
    assert (await alice.http.get("/v1/account/api-keys")).status_code == 200


async def handshake(
    running: RunningGateway, target: str, headers: list[tuple[str, str]]
) -> tuple[int, bytes]:
    """A bare WebSocket handshake: the status it is answered with (101 accepted) and, when
    refused, the refusal's body."""
    port = urlsplit(running.addresses.http_url).port
    assert port is not None
    connection = WSConnection(ConnectionType.CLIENT)
    status, body = 0, b""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        request = Request(host="127.0.0.1", target=target, extra_headers=headers)
        await stream.send_all(connection.send(request))
        with trio.fail_after(WAIT):
            while data := await stream.receive_some(65536):
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, AcceptConnection):
                        return 101, b""
                    if isinstance(event, RejectData):
                        body += event.data
                        if event.body_finished:
                            return status, body
                    elif isinstance(event, RejectConnection):
                        status = event.status_code
                        if not event.has_body:
                            return status, body
    raise AssertionError("the connection ended before the handshake was answered")


async def test_two_authorization_headers_are_refused_before_either_websocket_upgrade(
    running: RunningGateway, anonymous: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    agent = await create_agent(alice, "local-bot")
    for prefix in ("/api/v1", "/v1"):
        target = f"{prefix}/agents/{quote(agent, safe='')}/ws"
        for headers in pairs(alice, bob):
            status, body = await handshake(running, target, headers)
            assert status == 401, (target, headers)
            assert json.loads(body)["error"]["code"] == "unauthorized"
            assert ONE_KEY in json.loads(body)["error"]["message"]
            plain = await anonymous.get(target, headers=headers)
            assert plain.status_code == 401, (target, plain.text)
            assert plain.json()["error"]["code"] == "unauthorized"
        one = [("Authorization", f"Bearer {alice.key}")]
        assert (await handshake(running, target, one))[0] == 101


async def test_a_token_and_a_different_header_key_are_refused_on_the_api_v1_websocket(
    anonymous: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    """`?token=` and an `Authorization` header naming two different keys: neither wins."""
    agent = await create_agent(alice, "local-bot")
    path = agent_path(agent, "/ws")
    for token, header in ((alice.key, bob.key), (bob.key, alice.key)):
        plain = await anonymous.get(
            path, params={"token": token}, headers={"Authorization": f"Bearer {header}"}
        )
        assert plain.status_code == 401, plain.text
        assert plain.json()["error"]["code"] == "unauthorized"
        assert ONE_KEY in plain.json()["error"]["message"]
    # The same key both ways names one caller: the owner is told to upgrade.
    same = await anonymous.get(
        path, params={"token": alice.key}, headers={"Authorization": f"Bearer {alice.key}"}
    )
    assert same.status_code == 426, same.text


async def test_two_authorization_headers_are_refused_by_mcp(
    anonymous: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    accept = [("Accept", "application/json, text/event-stream")]
    for headers in pairs(alice, bob):
        response = await anonymous.post("/mcp", json=INITIALIZE, headers=accept + headers)
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert error["data"] == {"code": "unauthorized"}
        assert ONE_KEY in error["message"]
        assert response.headers["www-authenticate"].startswith('Bearer realm="e2a"')
