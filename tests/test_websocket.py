"""The agents' WebSocket over real sockets (trio-websocket as the client) on a running gateway:
refusals before the upgrade, drain of unread mail, live notifications, acks, at-least-once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage

from e2a.api.websocket import DRAIN_PAGE_SIZE
from e2a.app import WEBSOCKET_PING_SECONDS, RunningGateway, bind_tcp, serve_http
from e2a.config import Settings
from e2a.gateway import open_gateway
from e2a.hub import SUBSCRIBER_BUFFER, Hub
from e2a.mailauth.resolver import FixtureResolver
from tests.conftest import Account, agent_path
from tests.delivery_support import (
    SENDER,
    accept,
    create_agent,
    mail,
    open_account,
    smtp_send,
    store_with_conversation,
    wait_until,
)

WAIT = 10.0
FRAME_KEYS = {"message_id", "from", "recipient", "subject", "received_at"}


def ws_url(running: RunningGateway, agent: str, key: str | None) -> str:
    base = running.addresses.http_url.replace("http://", "ws://")
    query = f"?token={key}" if key is not None else ""
    return f"{base}/api/v1/agents/{quote(agent, safe='')}/ws{query}"


@pytest.fixture
async def alice(make_account: Any) -> Account:
    account: Account = await make_account("alice@example.com")
    return account


@pytest.fixture
async def agent(alice: Account) -> str:
    return await create_agent(alice, "local-bot")


async def next_frames(ws: WebSocketConnection, count: int) -> list[dict[str, Any]]:
    """The next `count` JSON frames (at most WAIT seconds for all of them)."""
    frames = []
    with trio.fail_after(WAIT):
        for _ in range(count):
            frames.append(json.loads(await ws.get_message()))
    return frames


async def assert_silent(ws: WebSocketConnection, seconds: float = 0.3) -> None:
    """Nothing more arrives for a while."""
    with trio.move_on_after(seconds):
        frame = await ws.get_message()
        raise AssertionError(f"unexpected frame {frame!r}")


async def unread_ids(account: Account, agent: str) -> list[str]:
    listing = await account.http.get(agent_path(agent, "/messages?page_size=100"))
    ids = [message["message_id"] for message in listing.json()["messages"]]
    while token := listing.json()["next_token"]:
        listing = await account.http.get(
            agent_path(agent, f"/messages?page_size=100&token={token}")
        )
        ids += [message["message_id"] for message in listing.json()["messages"]]
    return ids


@pytest.fixture
async def connected(running: RunningGateway, alice: Account, agent: str) -> AsyncIterator[Any]:
    """Factory: `async with connected() as ws` opens a WebSocket for alice's local agent."""

    def connect(key: str | None = alice.key) -> Any:
        return open_websocket_url(ws_url(running, agent, key), connect_timeout=WAIT)

    yield connect


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("no key", 401, "unauthorized"),
        ("wrong key", 401, "unauthorized"),
        ("other user's agent", 404, "not_found"),
        ("no such agent", 404, "not_found"),
        ("cloud agent", 400, "not_local_agent"),
    ],
)
async def test_refused_before_the_upgrade_and_a_plain_get_says_why(
    running: RunningGateway,
    alice: Account,
    agent: str,
    make_account: Any,
    who: str,
    status: int,
    code: str,
) -> None:
    mallory: Account = await make_account("mallory@example.com")
    cloud = await create_agent(alice, "cloudy", "https://hooks.example.com/x")
    target, key = {
        "no key": (agent, None),
        "wrong key": (agent, "e2a_" + "0" * 64),
        "other user's agent": (agent, mallory.key),
        "no such agent": ("nobody@agents.test", alice.key),
        "cloud agent": (cloud, alice.key),
    }[who]

    with trio.fail_after(WAIT), pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(ws_url(running, target, key)):
            pass
    assert refused.value.status_code == status
    assert json.loads(refused.value.body or b"")["error"]["code"] == code

    url = ws_url(running, target, key).replace("ws://", "http://")
    plain = await alice.http.get(url, headers={"Authorization": ""})
    assert plain.status_code == status
    assert plain.json()["error"]["code"] == code


async def test_a_plain_get_by_the_owner_is_told_to_upgrade(alice: Account, agent: str) -> None:
    plain = await alice.http.get(agent_path(agent, "/ws"))
    assert plain.status_code == 426
    assert plain.json()["error"]["code"] == "upgrade_required"


async def test_the_bearer_header_works_too(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    first = await accept(running.gateway, [agent], mail("Hello"))
    headers = [(b"Authorization", f"Bearer {alice.key}".encode())]
    url = ws_url(running, agent, None)
    async with open_websocket_url(url, extra_headers=headers, connect_timeout=WAIT) as ws:
        (frame,) = await next_frames(ws, 1)
    assert frame["message_id"] == first


async def test_connect_drains_every_unread_message_oldest_first_then_goes_live(
    running: RunningGateway, alice: Account, agent: str, connected: Any
) -> None:
    count = DRAIN_PAGE_SIZE + 30
    stored = [await accept(running.gateway, [agent], mail(f"Order {n}")) for n in range(count)]
    read_one = stored.pop(5)
    assert (await alice.http.get(agent_path(agent, f"/messages/{read_one}"))).status_code == 200

    async with connected() as ws:
        drained = await next_frames(ws, len(stored))
        assert [frame["message_id"] for frame in drained] == stored
        await assert_silent(ws)

        await smtp_send(running.addresses.smtp_port, [agent], mail("Live one"))
        (live,) = await next_frames(ws, 1)
    assert live["subject"] == "Live one" and live["message_id"] not in stored
    assert set(live) == FRAME_KEYS
    assert live["from"] == SENDER and live["recipient"] == agent
    assert live["received_at"].endswith("Z")


async def test_frames_carry_a_conversation_id_only_when_there_is_one(
    running: RunningGateway, agent: str, connected: Any
) -> None:
    threaded = await store_with_conversation(running.gateway, agent, "conv-7")
    plain = await accept(running.gateway, [agent], mail("No thread"))
    async with connected() as ws:
        first, second = await next_frames(ws, 2)
    assert first == {
        "message_id": threaded,
        "conversation_id": "conv-7",
        "from": SENDER,
        "recipient": agent,
        "subject": "Threaded",
        "received_at": first["received_at"],
    }
    assert set(second) == FRAME_KEYS and second["message_id"] == plain


async def test_two_connections_both_receive_every_notification(
    running: RunningGateway, agent: str, connected: Any
) -> None:
    async with connected() as one, connected() as two:
        await wait_until(lambda: running.gateway.hub.subscriber_count(agent) == 2)
        await smtp_send(running.addresses.smtp_port, [agent], mail("For both"))
        (first,) = await next_frames(one, 1)
        (second,) = await next_frames(two, 1)
    assert first == second and first["subject"] == "For both"
    await wait_until(lambda: running.gateway.hub.subscriber_count(agent) == 0)


async def test_a_disconnect_mid_drain_loses_nothing(
    running: RunningGateway, alice: Account, agent: str, connected: Any
) -> None:
    stored = [await accept(running.gateway, [agent], mail(f"Item {n}")) for n in range(150)]
    async with connected() as ws:
        partial = await next_frames(ws, 10)
    assert [frame["message_id"] for frame in partial] == stored[:10]
    assert await unread_ids(alice, agent) == stored

    async with connected() as ws:
        again = await next_frames(ws, len(stored))
        await assert_silent(ws)
    assert [frame["message_id"] for frame in again] == stored


async def test_a_live_notification_of_a_message_already_drained_is_not_sent_again(
    running: RunningGateway, agent: str, connected: Any
) -> None:
    """The subscription opens before the drain, so mail committed meanwhile is both in the
    drain and in the live queue: the client gets it once."""
    earlier = await accept(running.gateway, [agent], mail("Stored before connecting"))
    async with connected() as ws:
        (drained,) = await next_frames(ws, 1)
        assert drained["message_id"] == earlier
        running.gateway.hub.publish(agent, dict(drained))  # its live notice, late
        await smtp_send(running.addresses.smtp_port, [agent], mail("Next one"))
        (following,) = await next_frames(ws, 1)
        await assert_silent(ws)
    assert following["subject"] == "Next one"


async def test_keep_alive_is_websocket_pings_never_json_frames(
    settings: Settings, resolver: FixtureResolver
) -> None:
    assert WEBSOCKET_PING_SECONDS == 30.0  # the contract's interval; shortened below
    sock = bind_tcp("127.0.0.1", 0, "http.listen", "127.0.0.1:0")
    port = sock.getsockname()[1]
    async with open_gateway(settings, resolver) as gateway, trio.open_nursery() as nursery:
        await nursery.start(partial(serve_http, gateway, sock, ping_seconds=0.1))
        account = await open_account(gateway, f"http://127.0.0.1:{port}", "pings@example.com")
        async with account.http:
            agent = await create_agent(account, "pinged")
        pings, texts = await _watch_raw_websocket(port, agent, account.key, seconds=0.8)
        nursery.cancel_scope.cancel()
    assert pings >= 4
    assert texts == []


async def _watch_raw_websocket(
    port: int, agent: str, key: str, seconds: float
) -> tuple[int, list[str]]:
    """Connect with a bare wsproto client, answer pings, and report for `seconds` how many
    pings came and which text frames."""
    connection = WSConnection(ConnectionType.CLIENT)
    pings, texts = 0, []
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        target = f"/api/v1/agents/{quote(agent)}/ws"
        auth = [(b"authorization", f"Bearer {key}".encode())]
        await stream.send_all(
            connection.send(Request(host="127.0.0.1", target=target, extra_headers=auth))
        )
        accepted = False
        with trio.move_on_after(seconds), trio.fail_after(WAIT):
            while True:
                data = await stream.receive_some(65536)
                assert data, "the server closed the connection"
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, AcceptConnection):
                        accepted = True
                    elif isinstance(event, Ping):
                        pings += 1
                        await stream.send_all(connection.send(event.response()))
                    elif isinstance(event, TextMessage):
                        texts.append(event.data)
    assert accepted
    return pings, texts


async def test_live_notifications_missed_while_away_come_on_the_next_connection(
    running: RunningGateway, agent: str, connected: Any
) -> None:
    async with connected() as ws:
        await wait_until(lambda: running.gateway.hub.subscriber_count(agent) == 1)
        live = await accept(running.gateway, [agent], mail("Seen live"))
        (frame,) = await next_frames(ws, 1)
    assert frame["message_id"] == live
    while_away = await accept(running.gateway, [agent], mail("While away"))

    async with connected() as ws:
        frames = await next_frames(ws, 2)
    assert [frame["message_id"] for frame in frames] == [live, while_away]


async def test_an_ack_marks_read_and_stops_redelivery(
    running: RunningGateway, alice: Account, agent: str, connected: Any, make_account: Any
) -> None:
    first = await accept(running.gateway, [agent], mail("One"))
    second = await accept(running.gateway, [agent], mail("Two"))
    bob: Account = await make_account("bob@example.com")
    bobs_agent = await create_agent(bob, "bobs-bot")
    bobs_message = await accept(running.gateway, [bobs_agent], mail("Bob's"))

    async with connected() as ws:
        await next_frames(ws, 2)
        await ws.send_message("not json")
        await ws.send_message(json.dumps({"type": "ack", "message_id": bobs_message}))
        await ws.send_message(json.dumps({"type": "ack", "message_id": first}))
        await ws.send_message(b"\x00binary")

        async def only_second_unread() -> bool:
            return await unread_ids(alice, agent) == [second]

        await wait_until(only_second_unread)
        await smtp_send(running.addresses.smtp_port, [agent], mail("Still open"))
        (live,) = await next_frames(ws, 1)

    assert live["subject"] == "Still open"
    async with connected() as ws:
        frames = await next_frames(ws, 2)
    assert [frame["message_id"] for frame in frames] == [second, live["message_id"]]
    bobs_unread = (await bob.http.get(agent_path(bobs_agent, "/messages"))).json()["messages"]
    assert [message["message_id"] for message in bobs_unread] == [bobs_message]


async def test_a_hub_subscriber_that_falls_behind_is_closed_not_blocking() -> None:
    hub = Hub()
    with hub.subscribe("slow@agents.test") as slow, hub.subscribe("slow@agents.test") as fast:
        for n in range(SUBSCRIBER_BUFFER + 1):
            hub.publish("slow@agents.test", {"message_id": f"msg_{n}"})
            if n < SUBSCRIBER_BUFFER:
                assert (await fast.receive())["message_id"] == f"msg_{n}"
        received = [frame["message_id"] async for frame in slow]
        assert received == [f"msg_{n}" for n in range(SUBSCRIBER_BUFFER)]
        assert hub.subscriber_count("slow@agents.test") == 1
        assert (await fast.receive())["message_id"] == f"msg_{SUBSCRIBER_BUFFER}"
    assert hub.subscriber_count("slow@agents.test") == 0


async def test_the_job_signal_is_set_by_the_next_jobs_added() -> None:
    hub = Hub()
    signal = hub.job_signal()
    assert not signal.is_set()
    hub.jobs_added()
    assert signal.is_set()
    assert not hub.job_signal().is_set()
