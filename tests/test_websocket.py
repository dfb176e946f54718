"""The agents' WebSocket over real sockets (trio-websocket as the client) on a running gateway:
refusals before the upgrade, drain of unread mail, live notifications, acks, at-least-once,
closing when access ends (agent, key or account gone), and the cap per API key."""

from __future__ import annotations

import contextlib
import json
import logging
import smtplib
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from e2a_gateway.api import websocket as websocket_face
from e2a_gateway.api.v1 import socket as v1_socket_face
from e2a_gateway.api.websocket import DRAIN_PAGE_SIZE, MAX_READING_FRAME_BYTES
from e2a_gateway.app import (
    MAX_CLIENT_MESSAGE_BYTES,
    WEBSOCKET_PING_SECONDS,
    RunningGateway,
    bind_tcp,
    run_gateway,
    serve_http,
)
from e2a_gateway.clock import format_timestamp, parse_timestamp
from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway, open_gateway
from e2a_gateway.hub import (
    SUBSCRIBER_BUFFER,
    Channel,
    Ended,
    Hub,
    Listener,
    Revocation,
    TooManyListeners,
)
from e2a_gateway.hub.access import lost_access
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.v1.notifications import listen
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import (
    SENDER,
    accept,
    agent_id,
    create_agent,
    mail,
    open_account,
    smtp_send,
    store_with_conversation,
    wait_until,
)
from tests.test_v1_reviews import protect, protection, queue

WAIT = 10.0
ACKED_BACKLOG = 1500
ACKED_DRAIN_PING_SECONDS = 0.5
"""Pings often enough that a backlog of ACKED_BACKLOG takes several of them to drain, and not
so often that a busy machine (CI, two workers, PostgreSQL) misses a pong by scheduling alone."""
FRAME_KEYS = {"message_id", "from", "recipient", "subject", "received_at", "reply_text", "trust"}


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


def message_id_of(frame: dict[str, Any]) -> str:
    """The message a frame tells of: `/api/v1`'s frame names it, `/v1`'s event carries it."""
    message_id = frame["message_id"] if "message_id" in frame else frame["data"]["message_id"]
    return str(message_id)


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
        ("key of another agent", 403, "forbidden"),
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
    other = await create_agent(alice, "other-bot")
    scoped = await alice.http.post(
        "/v1/account/api-keys", json={"name": "other", "scope": "agent", "agent_email": other}
    )
    target, key = {
        "no key": (agent, None),
        "wrong key": (agent, "e2a_" + "0" * 64),
        "other user's agent": (agent, mallory.key),
        "key of another agent": (agent, scoped.json()["key"]),
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


@pytest.mark.parametrize("face", ["/api/v1", "/v1"])
@pytest.mark.parametrize("why", ["no such agent", "database down"])
async def test_a_refused_upgrade_names_its_request_id_as_every_answer_does(
    running: RunningGateway,
    alice: Account,
    agent: str,
    monkeypatch: pytest.MonkeyPatch,
    face: str,
    why: str,
) -> None:
    """A handshake refused before the upgrade carries the request id in X-Request-Id (and, under
    `/v1`, the same one in e2a's envelope), as a plain GET of the path and every REST answer
    do: the id the gateway's log quotes for it."""
    target = agent
    if why == "no such agent":
        target = "nobody@agents.test"
    else:

        async def database_down(*args: Any) -> Any:
            raise StorageUnavailable("the database went away")

        monkeypatch.setattr(websocket_face, "owned_agent", database_down)
        monkeypatch.setattr(v1_socket_face, "owned_agent", database_down)
    url = ws_url(running, target, None).replace("/api/v1/", f"{face}/")
    headers = [("Authorization", f"Bearer {alice.key}"), ("X-Request-Id", "shake-2")]
    with trio.fail_after(WAIT), pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    assert refused.value.status_code == (404 if why == "no such agent" else 503)
    assert (b"x-request-id", b"shake-2") in refused.value.headers
    error = json.loads(refused.value.body or b"")["error"]
    assert error.get("request_id") == ("shake-2" if face == "/v1" else None)


async def test_a_plain_get_by_the_owner_is_told_to_upgrade(alice: Account, agent: str) -> None:
    plain = await alice.http.get(agent_path(agent, "/ws"), params={"token": alice.key})
    assert plain.status_code == 426
    assert plain.json()["error"]["code"] == "upgrade_required"


async def test_a_missing_or_bad_key_is_refused_whatever_header_comes_with_it(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    """No key at all, or a bad `?token=` (which wins over a valid Bearer header), is 401."""
    path = agent_path(agent, "/ws")
    cases = [
        ({}, {"Authorization": ""}),
        ({"token": "invalid_key_12345"}, {}),
        ({}, {"Authorization": "Bearer invalid_key_12345"}),
    ]
    for params, headers in cases:
        plain = await alice.http.get(path, params=params, headers=headers)
        assert plain.status_code == 401, (params, headers)
        assert plain.headers["Content-Type"] == "application/json"
        assert plain.json()["error"]["code"] == "unauthorized"


async def test_the_bearer_header_opens_the_socket_as_the_token_does(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    """delivery.md: `?token=` or an `Authorization: Bearer` header."""
    plain = await alice.http.get(agent_path(agent, "/ws"))
    assert plain.status_code == 426
    assert plain.json()["error"]["code"] == "upgrade_required"

    stored = await accept(running.gateway, [agent], mail("By header"))
    headers = [("Authorization", f"Bearer {alice.key}")]
    url = ws_url(running, agent, None)
    with trio.fail_after(WAIT):
        async with open_websocket_url(url, extra_headers=headers) as ws:
            (frame,) = await next_frames(ws, 1)
    assert frame["message_id"] == stored


async def test_the_v1_socket_reads_the_header_only_and_refuses_a_token_in_the_url(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    """delivery.md: `/v1`'s socket, as e2a's, takes the key in the header only: a key in
    `?token=` alone is no key (401), before the upgrade."""
    base = running.addresses.http_url.replace("http://", "ws://")
    url = f"{base}/v1/agents/{quote(agent, safe='')}/ws?token={alice.key}"
    with trio.fail_after(WAIT), pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(url):
            pass
    assert refused.value.status_code == 401


CLIENT_LOGGERS = ("trio-websocket", "httpx", "httpcore")
"""The test's own clients, which log the URLs they open; the gateway's loggers are the rest."""


async def test_a_key_given_as_token_is_never_logged(
    running: RunningGateway,
    alice: Account,
    agent: str,
    connected: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`?token=` is allowed (browsers cannot set headers on a WebSocket), so a URL carries the
    key: nothing the gateway logs, at any level, accepted or refused, quotes it."""
    caplog.set_level(logging.DEBUG)
    await accept(running.gateway, [agent], mail("One"))
    async with connected() as ws:
        await next_frames(ws, 1)
    wrong = alice.key[:-4] + "0000"
    with trio.fail_after(WAIT), pytest.raises(ConnectionRejected):
        async with connected(wrong):
            pass
    base = running.addresses.http_url
    plain = await alice.http.get(f"{base}{agent_path(agent, '/ws')}?token={wrong}")
    assert plain.status_code == 401
    quoting = {
        record.name
        for record in caplog.records
        if alice.key in record.getMessage() or wrong in record.getMessage()
    }
    assert quoting, "the test's client logs the URL it opens: the capture must show it"
    assert all(name.startswith(CLIENT_LOGGERS) for name in quoting), quoting


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
        "reply_text": first["reply_text"],
        "trust": first["trust"],
    }
    assert set(second) == FRAME_KEYS and second["message_id"] == plain


async def test_frames_carry_the_reading_unless_it_would_make_them_too_long(
    running: RunningGateway, agent: str, connected: Any
) -> None:
    short = await accept(running.gateway, [agent], mail("Short", body="See you at 3."))
    long_body = "\r\n".join(f"Line {n} of a long report." for n in range(12_000))
    long = await accept(running.gateway, [agent], mail("Long", body=long_body))
    async with connected() as ws:
        first, second = await next_frames(ws, 2)
        await smtp_send(running.addresses.smtp_port, [agent], mail("Live long", body=long_body))
        (live,) = await next_frames(ws, 1)
    assert first["message_id"] == short and first["reply_text"] == "See you at 3."
    assert [part["kind"] for part in first["trust"]["parts"]] == ["authored"]
    assert second["message_id"] == long and set(second) == FRAME_KEYS - {"reply_text", "trust"}
    assert live["subject"] == "Live long" and set(live) == FRAME_KEYS - {"reply_text", "trust"}
    assert len(long_body) > MAX_READING_FRAME_BYTES


async def test_two_connections_both_receive_every_notification(
    running: RunningGateway, agent: str, connected: Any
) -> None:
    subscribed = await agent_id(running.gateway, agent)
    async with connected() as one, connected() as two:
        await wait_until(lambda: running.gateway.hub.subscriber_count(subscribed) == 2)
        await smtp_send(running.addresses.smtp_port, [agent], mail("For both"))
        (first,) = await next_frames(one, 1)
        (second,) = await next_frames(two, 1)
    assert first == second and first["subject"] == "For both"
    await wait_until(lambda: running.gateway.hub.subscriber_count(subscribed) == 0)


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
        subscribed = await agent_id(running.gateway, agent)
        running.gateway.hub.publish(subscribed, dict(drained))  # its live notice, late
        await smtp_send(running.addresses.smtp_port, [agent], mail("Next one"))
        (following,) = await next_frames(ws, 1)
        await assert_silent(ws)
    assert following["subject"] == "Next one"


@pytest.mark.parametrize("face", ["api", "v1"])
async def test_a_notice_of_a_drained_message_is_not_sent_again_however_late_it_comes(
    running: RunningGateway,
    alice: Account,
    agent: str,
    mock_clock: trio.testing.MockClock,
    face: str,
) -> None:
    """A message is announced after its commit (from another replica, once its NOTIFY is
    relayed), so its notice may come long after a drain sent it: the client still gets it
    once, on `/api/v1`'s socket and on `/v1`'s, and the mail after it too."""
    mock_clock.rate = 1.0  # time goes by as usual, and jumps when the test says
    earlier = await accept(running.gateway, [agent], mail("Stored before connecting"))
    url = ws_url(running, agent, alice.key if face == "api" else None)
    if face == "v1":
        url = url.replace("/api/v1/", "/v1/")
    headers = [("Authorization", f"Bearer {alice.key}")] if face == "v1" else None
    async with open_websocket_url(url, extra_headers=headers, connect_timeout=WAIT) as ws:
        (drained,) = await next_frames(ws, 1)
        assert message_id_of(drained) == earlier
        await assert_silent(ws)
        mock_clock.jump(600)  # ten minutes later, its live notice comes
        owner = await running.gateway.storage.find_agent(agent)
        assert owner is not None
        stored = await running.gateway.storage.peek_inbound(owner.user_id, agent, earlier)
        assert stored is not None
        running.gateway.hub.publish_message(owner.id, stored)
        await smtp_send(running.addresses.smtp_port, [agent], mail("Next one"))
        (following,) = await next_frames(ws, 1)
        assert message_id_of(following) != earlier, "the drained message was sent again"
        await assert_silent(ws)


@pytest.mark.parametrize("face", ["api", "v1"])
@pytest.mark.parametrize("fate", ["trashed", "deleted"])
async def test_a_late_notice_of_mail_trashed_or_deleted_meanwhile_is_not_sent(
    running: RunningGateway,
    alice: Account,
    agent: str,
    face: str,
    fate: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A notice may come long after its commit (from another replica, once its NOTIFY is
    relayed). Mail its owner moved to the trash or deleted for good meanwhile is no longer in
    the inbox, nor sent by a drain: its notice is dropped too, on `/api/v1`'s socket and on
    `/v1`'s, and the mail after it still comes."""
    url = ws_url(running, agent, alice.key if face == "api" else None)
    if face == "v1":
        url = url.replace("/api/v1/", "/v1/")
    headers = [("Authorization", f"Bearer {alice.key}")] if face == "v1" else None
    hub = running.gateway.hub
    owner = await running.gateway.storage.find_agent(agent)
    assert owner is not None
    before = await accept(running.gateway, [agent], mail("Before"))
    async with open_websocket_url(url, extra_headers=headers, connect_timeout=WAIT) as ws:
        # Its drain has read the inbox once it sends this (one page: no second look), so what
        # is stored next is no drain's to send, unread though it is.
        (drained,) = await next_frames(ws, 1)
        assert message_id_of(drained) == before
        with monkeypatch.context() as elsewhere:  # stored as on another replica: no notice yet
            elsewhere.setattr(hub, "publish_message", lambda *args: None)
            gone = await accept(running.gateway, [agent], mail("Gone before its notice"))
        stored = await running.gateway.storage.peek_inbound(owner.user_id, agent, gone)
        assert stored is not None
        path = f"/v1/agents/{quote(agent, safe='')}/messages/{gone}"
        assert (await alice.http.delete(path)).status_code == 200
        if fate == "deleted":  # out of the trash for good
            purged = await alice.http.delete(
                path, params={"permanent": "true", "confirm": "DELETE"}
            )
            assert purged.status_code == 200, purged.text
        running.gateway.hub.publish_message(owner.id, stored)  # its notice, late
        after = await accept(running.gateway, [agent], mail("After it"))
        (following,) = await next_frames(ws, 1)
        assert message_id_of(following) == after, f"the {fate} message was sent"
        await assert_silent(ws)


async def test_mail_committed_during_the_drain_is_sent_exactly_once(
    running: RunningGateway, agent: str, connected: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mail committed between two pages of the drain is both in the drain's last page and in
    the live queue: the client gets it once, and the mail after it too."""
    backlog = [
        await accept(running.gateway, [agent], mail(f"Backlog {n}"))
        for n in range(DRAIN_PAGE_SIZE + 1)
    ]
    during: list[str] = []
    unread_page = websocket_face.messages.unread_page

    async def page_with_a_commit_before_the_second(*args: Any) -> Any:
        if args[-1] is not None and not during:  # the second page: a message comes meanwhile
            during.append(await accept(running.gateway, [agent], mail("During the drain")))
        return await unread_page(*args)

    monkeypatch.setattr(
        websocket_face.messages, "unread_page", page_with_a_commit_before_the_second
    )
    async with connected() as ws:
        drained = await next_frames(ws, len(backlog) + 1)
        assert [frame["message_id"] for frame in drained] == backlog + during
        after = await accept(running.gateway, [agent], mail("After the drain"))
        (following,) = await next_frames(ws, 1)
        assert following["message_id"] == after
        await assert_silent(ws)


@asynccontextmanager
async def pinging_gateway(
    settings: Settings, resolver: FixtureResolver, ping_seconds: float
) -> AsyncIterator[tuple[Gateway, int, Account, str]]:
    """A gateway whose HTTP server pings WebSockets every `ping_seconds`: the gateway, its HTTP
    port, an account and the account's local agent."""
    sock = bind_tcp("127.0.0.1", 0, "http.listen", "127.0.0.1:0")
    port = sock.getsockname()[1]
    async with open_gateway(settings, resolver) as gateway, trio.open_nursery() as nursery:
        await nursery.start(partial(serve_http, gateway, sock, ping_seconds=ping_seconds))
        account = await open_account(gateway, f"http://127.0.0.1:{port}", "pings@example.com")
        async with account.http:
            agent = await create_agent(account, "pinged")
        yield gateway, port, account, agent
        nursery.cancel_scope.cancel()


async def test_listen_acknowledges_what_was_handled_past_a_lost_connection(
    settings: Settings, resolver: FixtureResolver
) -> None:
    """A handler slower than the server's pong wait loses the connection, and with it the
    ack of what it handled: the next connection sends that message again, and `listen`
    acknowledges it instead of handing it over twice."""
    async with pinging_gateway(settings, resolver, 0.2) as (gateway, port, account, agent):
        ids = [await accept(gateway, [agent], mail(f"slow {number}")) for number in range(3)]
        url = f"ws://127.0.0.1:{port}/api/v1/agents/{quote(agent)}/ws?token={account.key}"
        seen: list[str] = []
        with trio.fail_after(30):
            async with aclosing(listen(url, ack=True, max_backoff=0.2)) as stream:
                async for note in stream:
                    seen.append(note.message_id)
                    if len(seen) == len(ids):
                        break  # the last is not acknowledged: the caller asks for no next
                    await trio.sleep(0.6)  # an LLM call, longer than the pong wait (0.2 s)
        assert seen == ids  # each once, in order


async def test_keep_alive_is_websocket_pings_never_json_frames(
    settings: Settings, resolver: FixtureResolver
) -> None:
    assert WEBSOCKET_PING_SECONDS == 30.0  # the contract's interval; shortened below
    async with pinging_gateway(settings, resolver, 0.1) as (_, port, account, agent):
        pings, texts = await _watch_raw_websocket(port, agent, account.key, seconds=0.8)
    assert pings >= 4
    assert texts == []


@pytest.mark.parametrize("surface", ["/api/v1", "/v1"])
async def test_a_client_that_leaves_a_ping_unanswered_is_closed_ping_timeout(
    settings: Settings, resolver: FixtureResolver, surface: str
) -> None:
    async with pinging_gateway(settings, resolver, 0.2) as (gateway, port, account, agent):
        target = f"{surface}/agents/{quote(agent)}/ws"
        headers = [("Authorization", f"Bearer {account.key}")]
        if surface == "/api/v1":
            target, headers = f"{target}?token={account.key}", []
        closed, pings = await _mute_raw_websocket(port, target, headers)
        registry = gateway.metrics.registry
        # its service ends at once
        await wait_until(lambda: registry.get_sample_value("e2a_ws_connections_active") == 0, 1.0)
        ended = registry.get_sample_value("e2a_ws_disconnects_total", {"reason": "ping_timeout"})
    assert (closed.code, closed.reason) == (1001, "ping_timeout")
    assert pings == 1  # closed after the first ping went unanswered
    assert ended == 1


async def test_mail_for_a_client_closed_for_ping_timeout_waits_without_an_error(
    tmp_path: Path, resolver: FixtureResolver, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that floods pings and reads nothing (so the pongs back up, and the close frame
    after its unanswered ping waits behind them) is closed for ping_timeout; mail that comes
    meanwhile is not pushed into the closed connection as an unhandled error: it waits,
    unread, for the next connection, and the connection is counted ping_timeout."""
    settings = make_settings(tmp_path, http={"keep_alive_seconds": 3})
    async with pinging_gateway(settings, resolver, 0.3) as (gateway, port, account, agent):
        registry = gateway.metrics.registry
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection = WSConnection(ConnectionType.CLIENT)
        target = f"/api/v1/agents/{quote(agent)}/ws?token={account.key}"
        async with stream:
            await stream.send_all(connection.send(Request(host="127.0.0.1", target=target)))
            connection.receive_data(await stream.receive_some(65536))
            assert isinstance(next(connection.events()), AcceptConnection)
            pings = b"".join(connection.send(Ping(b"p" * 120)) for _ in range(1000))
            with trio.move_on_after(1.0):  # until its pongs fill both sides' buffers
                while True:
                    await stream.send_all(pings)
            message_id = await accept(gateway, [agent], mail("While it floods"))
            await wait_until(lambda: registry.get_sample_value("e2a_ws_connections_active") == 0)
        reasons = {
            reason: registry.get_sample_value("e2a_ws_disconnects_total", {"reason": reason})
            for reason in ("ping_timeout", "error")
        }
        user = await gateway.storage.user_for_key_hash(hash_api_key(account.key))
        assert user is not None
        left = await gateway.storage.peek_inbound(user.id, agent, message_id)
    assert [record.getMessage() for record in caplog.records if record.levelno >= 40] == []
    assert reasons == {"ping_timeout": 1, "error": 0}
    assert left is not None and left.status == "unread"


async def _mute_raw_websocket(
    port: int, target: str, headers: list[tuple[str, str]]
) -> tuple[CloseConnection, int]:
    """Connect with a bare wsproto client that never answers a ping; the server's close frame
    and how many pings came before it (the connection must end then)."""
    connection = WSConnection(ConnectionType.CLIENT)
    pings, closed = 0, None
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        request = Request(host="127.0.0.1", target=target, extra_headers=headers)
        await stream.send_all(connection.send(request))
        with trio.fail_after(WAIT):
            while data := await stream.receive_some(65536):
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, Ping):
                        pings += 1
                    elif isinstance(event, CloseConnection):
                        closed = event
    assert closed is not None, "the connection ended without a close frame"
    return closed, pings


async def _watch_raw_websocket(
    port: int, agent: str, key: str, seconds: float
) -> tuple[int, list[str]]:
    """Connect with a bare wsproto client, answer pings, and report for `seconds` how many
    pings came and which text frames."""
    connection = WSConnection(ConnectionType.CLIENT)
    pings, texts = 0, []
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        target = f"/api/v1/agents/{quote(agent)}/ws?token={key}"
        await stream.send_all(connection.send(Request(host="127.0.0.1", target=target)))
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
    subscribed = await agent_id(running.gateway, agent)
    async with connected() as ws:
        await wait_until(lambda: running.gateway.hub.subscriber_count(subscribed) == 1)
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
    sibling = await create_agent(alice, "sibling-bot")
    siblings_message = await accept(running.gateway, [sibling], mail("The sibling's"))

    async with connected() as ws:
        await next_frames(ws, 2)
        await ws.send_message("not json")
        await ws.send_message(json.dumps({"type": "ack", "message_id": bobs_message}))
        await ws.send_message(json.dumps({"type": "ack", "message_id": siblings_message}))
        await ws.send_message(json.dumps({"type": "ack", "message_id": "msg_no_such_message"}))
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
    assert await unread_ids(alice, sibling) == [siblings_message]  # another agent's, same owner


async def test_acks_cost_the_database_once_each_and_a_flood_of_unknown_ones_ends_it(
    running: RunningGateway, alice: Account, agent: str, connected: Any
) -> None:
    """Each ack is a write. An ack repeated on one connection is applied once (and counted
    `acked` once); a client acking ids that name none of its agent's mail, past
    MAX_ACKS_NAMING_NOTHING, has its connection closed with 1008 rather than keep the
    database's writer busy (one client did about 2,800 a second)."""
    registry = running.gateway.metrics.registry

    def counted(outcome: str = "acked") -> float:
        labels = {"channel": "websocket", "outcome": outcome}
        return registry.get_sample_value("e2a_deliveries_total", labels) or 0.0

    first = await accept(running.gateway, [agent], mail("One"))
    second = await accept(running.gateway, [agent], mail("Two"))
    async with connected() as ws:
        await next_frames(ws, 2)
        for _ in range(5):
            await ws.send_message(json.dumps({"type": "ack", "message_id": first}))
        await ws.send_message(json.dumps({"type": "ack", "message_id": second}))
        await wait_until(lambda: counted() == 2)
        for number in range(websocket_face.MAX_ACKS_NAMING_NOTHING + 1):
            await ws.send_message(json.dumps({"type": "ack", "message_id": f"msg_none{number}"}))
        with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    assert closed.value.reason.code == 1008
    assert counted() == 2
    assert await unread_ids(alice, agent) == []


@pytest.mark.parametrize("leaving", ["close", "drop"])
async def test_acks_sent_right_before_leaving_are_all_applied(
    running: RunningGateway, alice: Account, agent: str, connected: Any, leaving: str
) -> None:
    """A client that reads a batch, acks all of it and leaves at once — with a clean close
    (1000) or by dropping the connection — has every ack it sent applied: none of that mail
    comes again on the next connection."""
    batch = 40
    await trio.to_thread.run_sync(
        partial(_send_in_one_session, running.addresses.smtp_port, agent, batch)
    )
    async with connected() as ws:
        frames = await next_frames(ws, batch)
        for frame in frames:
            await ws.send_message(json.dumps({"type": "ack", "message_id": frame["message_id"]}))
        if leaving == "drop":
            await ws._stream.aclose()  # no close frame: the TCP connection just ends
    subscribed = await agent_id(running.gateway, agent)
    await wait_until(lambda: running.gateway.hub.subscriber_count(subscribed) == 0)
    assert await unread_ids(alice, agent) == []
    async with connected() as ws:
        await assert_silent(ws)


async def test_a_client_that_left_is_sent_nothing_while_its_last_acks_are_applied(
    running: RunningGateway,
    alice: Account,
    agent: str,
    connected: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the client has left, its service only applies the acks it sent: the drain of its
    backlog stops, rather than going on pushing frames (and counting them sent) to nobody."""
    backlog = 3 * DRAIN_PAGE_SIZE
    for number in range(backlog):
        await accept(running.gateway, [agent], mail(f"Backlog {number}"))
    acknowledge = websocket_face.messages.acknowledge

    async def slowly(*args: Any) -> bool:
        await trio.sleep(0.2)  # a busy database
        return await acknowledge(*args)

    monkeypatch.setattr(websocket_face.messages, "acknowledge", slowly)
    registry = running.gateway.metrics.registry
    async with connected() as ws:
        frames = await next_frames(ws, 5)
        for frame in frames:
            await ws.send_message(json.dumps({"type": "ack", "message_id": frame["message_id"]}))
    subscribed = await agent_id(running.gateway, agent)
    await wait_until(lambda: running.gateway.hub.subscriber_count(subscribed) == 0)
    sent = registry.get_sample_value(
        "e2a_deliveries_total", {"channel": "websocket", "outcome": "sent"}
    )
    assert len(await unread_ids(alice, agent)) == backlog - 5
    assert sent is not None and sent < DRAIN_PAGE_SIZE


def _send_in_one_session(port: int, agent: str, count: int, body: str = "Hi there.") -> None:
    """Send `count` messages with `body` to `agent` in one SMTP session."""
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        client.ehlo("mail.example.org")
        for number in range(count):
            assert client.sendmail(SENDER, [agent], mail(f"Batch {number}", body=body)) == {}


async def test_acks_sent_during_the_drain_are_read_as_they_come(
    settings: Settings, resolver: FixtureResolver
) -> None:
    """A client that acks each message of a long backlog as it comes: its acks are read during
    the drain, so the HTTP server keeps reading the socket, hears its pongs and never closes
    it for ping_timeout; every ack is applied."""
    pinging = pinging_gateway(settings, resolver, ACKED_DRAIN_PING_SECONDS)
    async with pinging as (gateway, port, account, agent):
        stored = [
            await accept(gateway, [agent], mail(f"Backlog {n}")) for n in range(ACKED_BACKLOG)
        ]
        url = f"ws://127.0.0.1:{port}/api/v1/agents/{quote(agent)}/ws?token={account.key}"
        received: list[str] = []
        async with open_websocket_url(url, connect_timeout=WAIT) as ws:
            with trio.fail_after(WAIT):
                for _ in stored:
                    message_id = json.loads(await ws.get_message())["message_id"]
                    received.append(message_id)
                    await ws.send_message(json.dumps({"type": "ack", "message_id": message_id}))

            def acked() -> float | None:
                return gateway.metrics.registry.get_sample_value(
                    "e2a_deliveries_total", {"channel": "websocket", "outcome": "acked"}
                )

            await wait_until(lambda: acked() == len(stored))
    assert received == stored


async def test_a_client_that_reads_nothing_is_dropped_and_counted_behind(
    tmp_path: Path, resolver: FixtureResolver, nursery: trio.Nursery
) -> None:
    """A client that stops reading altogether (a hung process, a full pipe) takes none of its
    frames, not even a close frame: once it has taken nothing for `http.keep_alive_seconds`
    its connection is dropped, and the gateway holds nothing more for it. The metrics count it
    `behind`, as a client too far behind, not as one that left."""
    settings = make_settings(tmp_path, http={"listen": "127.0.0.1:0", "keep_alive_seconds": 1})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    account = await open_account(running.gateway, running.addresses.http_url, "slow@example.com")
    async with account.http:
        agent = await create_agent(account, "stuck")
    port = int(running.addresses.http_url.rsplit(":", 1)[1])
    registry = running.gateway.metrics.registry
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection = WSConnection(ConnectionType.CLIENT)
    target = f"/api/v1/agents/{quote(agent)}/ws?token={account.key}"
    async with stream:
        await stream.send_all(connection.send(Request(host="127.0.0.1", target=target)))
        connection.receive_data(await stream.receive_some(65536))
        assert isinstance(next(connection.events()), AcceptConnection)
        body = "\r\n".join(f"Line {n} of a report nobody reads." for n in range(3000))
        await trio.to_thread.run_sync(
            partial(_send_in_one_session, running.addresses.smtp_port, agent, 40, body)
        )
        # it reads nothing from here on
        await wait_until(lambda: registry.get_sample_value("e2a_ws_connections_active") == 0)
    ended = registry.get_sample_value("e2a_ws_disconnects_total", {"reason": "behind"})
    left = registry.get_sample_value("e2a_ws_disconnects_total", {"reason": "client_close"})
    assert ended == 1 and not left


def listener(
    agent: str = "agt_slow",
    user: str = "usr_1",
    key: str = "hash_1",
    channel: Channel = "websocket",
) -> Listener:
    return Listener(agent, user, key, channel)


async def test_a_hub_subscriber_that_falls_behind_is_closed_not_blocking() -> None:
    hub = Hub()
    with hub.subscribe(listener()) as slow, hub.subscribe(listener()) as fast:
        for n in range(SUBSCRIBER_BUFFER + 1):
            hub.publish("agt_slow", {"message_id": f"msg_{n}"})
            if n < SUBSCRIBER_BUFFER:
                assert (await fast.receive()) == {"message_id": f"msg_{n}"}
        received = [frame["message_id"] async for frame in slow]
        assert received == [f"msg_{n}" for n in range(SUBSCRIBER_BUFFER)]
        assert slow.ended is Ended.BEHIND and fast.ended is None
        assert hub.subscriber_count("agt_slow") == 1
        assert (await fast.receive()) == {"message_id": f"msg_{SUBSCRIBER_BUFFER}"}
    assert hub.subscriber_count("agt_slow") == 0


async def test_a_revocation_ends_exactly_the_subscriptions_that_depended_on_it() -> None:
    """By agent id, by key hash, by account; frames already buffered are not handed out."""
    hub = Hub()
    with (
        hub.subscribe(listener("agt_a", "usr_1", "key_1")) as a_by_key_1,
        hub.subscribe(listener("agt_a", "usr_1", "key_2", "dashboard")) as a_by_key_2,
        hub.subscribe(listener("agt_b", "usr_1", "key_1")) as b_by_key_1,
        hub.subscribe(listener("agt_c", "usr_2", "key_3")) as other_user,
    ):
        hub.publish("agt_a", {"message_id": "msg_1"})
        hub.revoke(Revocation("key", "key_1"))
        assert (a_by_key_1.ended, b_by_key_1.ended) == (Ended.KEY_REVOKED, Ended.KEY_REVOKED)
        assert await a_by_key_1.receive() is None  # msg_1 was buffered, and is not handed out
        assert await a_by_key_2.receive() == {"message_id": "msg_1"}
        hub.revoke(Revocation("agent", "agt_a"))
        assert a_by_key_2.ended is Ended.AGENT_DELETED
        assert a_by_key_1.ended is Ended.KEY_REVOKED  # the first reason stays
        assert [frame async for frame in a_by_key_2] == []
        assert other_user.ended is None
        hub.revoke(Revocation("user", "usr_2"))
        assert other_user.ended is Ended.ACCOUNT_DELETED
        assert hub.subscriber_count("agt_a") == hub.subscriber_count("agt_c") == 0


async def test_a_revocation_overrides_falling_behind() -> None:
    hub = Hub()
    with hub.subscribe(listener()) as slow:
        for n in range(SUBSCRIBER_BUFFER + 1):
            hub.publish("agt_slow", {"message_id": f"msg_{n}"})
        assert slow.ended is Ended.BEHIND
        hub.revoke(Revocation("key", "hash_1"))
        assert slow.ended is Ended.KEY_REVOKED
        assert await slow.receive() is None


async def test_a_drain_covers_the_mail_numbered_up_to_its_last_message() -> None:
    """What a drain sent is told by the `seq` of its last message: notices of mail numbered up
    to it are of mail it sent, those after it of mail it never saw; before any drain, and
    after one that sent nothing, no notice is of mail it sent."""
    hub = Hub()
    with hub.subscribe(listener()) as subscription:
        assert not subscription.sent_by_drain(1)
        subscription.drained(0)
        assert not subscription.sent_by_drain(1)
        subscription.drained(41)
        assert subscription.sent_by_drain(7) and subscription.sent_by_drain(41)
        assert not subscription.sent_by_drain(42)


def test_the_hub_counts_open_subscriptions_per_key_and_channel() -> None:
    hub = Hub()
    with hub.subscribe(listener(key="k"), limit=2), hub.subscribe(listener(key="k"), limit=2):
        with pytest.raises(TooManyListeners), hub.subscribe(listener(key="k"), limit=2):
            pass
        with hub.subscribe(listener(key="k", channel="dashboard"), limit=2):
            assert hub.listener_count("k", "websocket") == 2
            assert hub.listener_count("k", "dashboard") == 1
        with hub.subscribe(listener(key="other"), limit=2):
            pass
    assert hub.listener_count("k", "websocket") == 0
    with hub.subscribe(listener(key="k"), limit=2):
        assert hub.listener_count("k", "websocket") == 1


# -- access that ends closes the connection: agent deleted, key revoked, account deleted -------

CLOSE_SECONDS = 3.0
"""A revocation closes an open connection within this (it is immediate; this is slack)."""


async def closed_with(ws: WebSocketConnection) -> tuple[int, str | None, list[str]]:
    """Wait (at most CLOSE_SECONDS) for the server to close `ws`; its code and reason, and the
    frames that came before."""
    frames: list[str] = []
    with trio.fail_after(CLOSE_SECONDS), pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(await ws.get_message())
    return closed.value.reason.code, closed.value.reason.reason, frames


async def test_a_reregistered_address_never_reaches_the_old_owners_socket(
    running: RunningGateway, make_account: Any
) -> None:
    """A listens on handover@, deletes the agent; B registers handover@ and gets mail there.
    A's socket is closed when the agent goes, and hears nothing of B's mail."""
    alice: Account = await make_account("alice@example.com")
    bob: Account = await make_account("bob@example.com")
    handover = await create_agent(alice, "handover")
    async with open_websocket_url(ws_url(running, handover, alice.key)) as alices:
        await assert_silent(alices)
        deleted = await alice.http.delete(agent_path(handover, ""))
        assert deleted.status_code == 200
        assert await create_agent(bob, "handover") == handover
        async with open_websocket_url(ws_url(running, handover, bob.key)) as bobs:
            await smtp_send(running.addresses.smtp_port, [handover], mail("For Bob only"))
            (frame,) = await next_frames(bobs, 1)
        code, reason, heard = await closed_with(alices)
    assert frame["subject"] == "For Bob only"
    assert (code, reason, heard) == (1008, "the agent was deleted", [])


@pytest.mark.parametrize("face", ["/api/v1", "/v1"])
@pytest.mark.parametrize("permanent", ["true", "false"])
async def test_a_socket_closes_at_once_when_its_agent_is_deleted_as_mail_arrives(
    running: RunningGateway, alice: Account, permanent: str, face: str
) -> None:
    """Mail arriving over SMTP while the socket's agent is deleted, for good or to the trash:
    the socket closes within CLOSE_SECONDS of the deletion's answer, as deleted, and any
    frame before the close tells of mail its sender heard 250 for."""
    for round_ in range(3):
        agent = await create_agent(alice, f"leaving-{round_}")
        accepted: list[bool] = []
        deleted_at: list[float] = []

        async def sending(agent: str, accepted: list[bool]) -> None:
            with contextlib.suppress(smtplib.SMTPException):  # refused: the agent went first
                await smtp_send(running.addresses.smtp_port, [agent], mail("Going"))
                accepted.append(True)

        async def deleting(agent: str, delay: float, deleted_at: list[float]) -> None:
            await trio.sleep(delay)
            params = {"confirm": "DELETE", "permanent": permanent}
            deleted = await alice.http.delete(f"/v1/agents/{quote(agent, safe='')}", params=params)
            assert deleted.status_code == 200, deleted.text
            deleted_at.append(trio.current_time())

        base = running.addresses.http_url.replace("http://", "ws://")
        url = f"{base}{face}/agents/{quote(agent, safe='')}/ws"
        headers = [("Authorization", f"Bearer {alice.key}")]
        async with open_websocket_url(url, extra_headers=headers) as ws:
            await assert_silent(ws, 0.05)
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sending, agent, accepted)
                    nursery.start_soon(deleting, agent, 0.005 * round_, deleted_at)
            code, reason, heard = await closed_with(ws)
            closed_after = trio.current_time() - deleted_at[0]
        assert (code, reason) == (1008, "the agent was deleted")
        assert closed_after < CLOSE_SECONDS
        assert len(heard) <= len(accepted), (heard, accepted)


async def test_revoking_a_key_closes_its_sockets_at_once_and_only_its_own(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    created = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "laptop"})
    assert created.status_code == 201, created.text
    laptop_key, laptop_id = created.json()["key"], created.json()["id"]
    async with (
        open_websocket_url(ws_url(running, agent, laptop_key)) as laptop,
        open_websocket_url(ws_url(running, agent, alice.key)) as main,
    ):
        await assert_silent(laptop)
        revoked_at = trio.current_time()
        revoked = await alice.http.delete(f"/api/v1/users/me/api-keys/{laptop_id}")
        assert revoked.status_code == 204
        code, reason, _ = await closed_with(laptop)
        took = trio.current_time() - revoked_at
        await smtp_send(running.addresses.smtp_port, [agent], mail("Still flowing"))
        (frame,) = await next_frames(main, 1)
    assert (code, reason) == (1008, "the API key was revoked")
    assert took < 1.0
    assert frame["subject"] == "Still flowing"
    with trio.fail_after(WAIT), pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(ws_url(running, agent, laptop_key)):
            pass
    assert refused.value.status_code == 401


@pytest.mark.parametrize("face", ["/api/v1", "/v1"])
async def test_a_key_revoked_mid_drain_gets_no_further_frame(
    running: RunningGateway,
    alice: Account,
    agent: str,
    face: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Access ends at once: a key revoked while its socket drains a backlog is sent nothing
    after the frame under way, on either face, however much of the page is left."""
    for number in range(3):
        await smtp_send(running.addresses.smtp_port, [agent], mail(f"Backlog {number}"))
    created = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "laptop"})
    key, key_id = created.json()["key"], created.json()["id"]
    module = websocket_face if face == "/api/v1" else v1_socket_face
    real_push = module.push
    pushed = 0

    async def push_then_revoke(gateway: Gateway, text: str) -> None:
        nonlocal pushed
        await real_push(gateway, text)
        pushed += 1
        if pushed == 1:
            revoked = await alice.http.delete(f"/api/v1/users/me/api-keys/{key_id}")
            assert revoked.status_code == 204

    monkeypatch.setattr(module, "push", push_then_revoke)
    url = ws_url(running, agent, None).replace("/api/v1/", f"{face}/")
    async with open_websocket_url(url, extra_headers=[("Authorization", f"Bearer {key}")]) as ws:
        code, _, heard = await closed_with(ws)
    assert code == 1008
    assert len(heard) == 1 and pushed == 1


async def test_a_socket_hears_no_mail_once_its_agent_became_a_cloud_agent(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    """Switched to cloud, the agent's mail goes to its webhook: an open socket is closed
    (1008) rather than told of it too, and a reconnection is refused as for any cloud agent."""
    async with open_websocket_url(ws_url(running, agent, alice.key)) as ws:
        await assert_silent(ws)
        switched = await alice.http.put(
            agent_path(agent, ""),
            json={"agent_mode": "cloud", "webhook_url": "https://hooks.example.com/x"},
        )
        assert switched.status_code == 200, switched.text
        await smtp_send(running.addresses.smtp_port, [agent], mail("For the webhook"))
        code, reason, heard = await closed_with(ws)
    assert (code, reason, heard) == (1008, "the agent is now a cloud agent", [])
    with trio.fail_after(WAIT), pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(ws_url(running, agent, alice.key)):
            pass
    assert refused.value.status_code == 400


async def test_deleting_the_account_closes_its_sockets(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    async with open_websocket_url(ws_url(running, agent, alice.key)) as ws:
        await assert_silent(ws)
        gone = await alice.http.delete("/api/v1/users/me", params={"confirm": "DELETE"})
        assert gone.status_code == 200, gone.text
        code, reason, _ = await closed_with(ws)
    assert (code, reason) == (1008, "the account was deleted")


async def test_a_keys_expiry_closes_its_sockets_on_both_faces(
    running: RunningGateway, alice: Account, agent: str
) -> None:
    """A key made with `expires_at` is refused from that second on: its open sockets, the
    `/api/v1` one and the `/v1` one, are closed then, not left listening."""
    expires = format_timestamp(time.time() + 3)
    created = await alice.http.post(
        "/v1/account/api-keys", json={"name": "for a while", "expires_at": expires}
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    v1_url = ws_url(running, agent, None).replace("/api/v1/", "/v1/")
    async with (
        open_websocket_url(ws_url(running, agent, key)) as legacy,
        open_websocket_url(v1_url, extra_headers=[("Authorization", f"Bearer {key}")]) as v1,
    ):
        await assert_silent(legacy)
        await trio.sleep(max(parse_timestamp(expires).timestamp() - time.time(), 0.0))
        legacy_closed = await closed_with(legacy)
        v1_closed = await closed_with(v1)
    assert legacy_closed == (1008, "the API key expired", [])
    assert v1_closed == (1008, "the API key expired", [])
    plain = await alice.http.get(agent_path(agent, "/ws"), params={"token": key})
    assert plain.status_code == 401


# -- at most http.max_websockets_per_key connections per API key ------------------------------


async def test_websockets_per_key_are_capped_with_a_clear_429(
    tmp_path: Path, resolver: FixtureResolver, nursery: trio.Nursery
) -> None:
    settings = make_settings(tmp_path, http={"listen": "127.0.0.1:0", "max_websockets_per_key": 2})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    account = await open_account(running.gateway, running.addresses.http_url, "cap@example.com")
    async with account.http:
        agent = await create_agent(account, "capped")
        other = await create_agent(account, "second")
        third = await create_agent(account, "third")
        spare = await account.http.post("/api/v1/users/me/api-keys", json={"name": "spare"})
        spare_key = spare.json()["key"]
        url = ws_url(running, agent, account.key)
        async with open_websocket_url(url), open_websocket_url(ws_url(running, other, account.key)):
            with trio.fail_after(WAIT), pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(url):
                    pass
            plain = await account.http.get(agent_path(agent, f"/ws?token={account.key}"))
            async with open_websocket_url(ws_url(running, agent, spare_key)) as by_spare:
                await assert_silent(by_spare)  # another key has its own allowance
            v1_url = ws_url(running, third, None).replace("/api/v1/", "/v1/")
            bearer = [("Authorization", f"Bearer {account.key}")]
            async with open_websocket_url(v1_url, extra_headers=bearer) as by_v1:
                await assert_silent(by_v1)  # `/v1` sockets are one per agent, never refused
        async with open_websocket_url(url) as again:  # the first two are closed: room again
            await assert_silent(again)
    assert refused.value.status_code == 429
    error = json.loads(refused.value.body or b"")["error"]
    assert error["code"] == "too_many_websockets"
    assert "2 WebSocket connections" in error["message"]
    assert "http.max_websockets_per_key" in error["message"]
    assert plain.status_code == 429 and plain.json()["error"] == error
    assert Settings().http.max_websockets_per_key == 20


async def test_access_lost_before_subscribing_is_caught_by_asking_again(
    running: RunningGateway, alice: Account, agent: str, make_account: Any
) -> None:
    """What a connection checks once subscribed: the same key, owner and agent (by id)."""
    storage = running.gateway.storage
    user = await storage.user_for_key_hash(hash_api_key(alice.key))
    assert user is not None
    listener = Listener(
        await agent_id(running.gateway, agent), user.id, hash_api_key(alice.key), "websocket"
    )
    assert await lost_access(storage, listener, agent) is None
    assert await lost_access(storage, replace(listener, user_id="usr_other"), agent) is (
        Ended.KEY_REVOKED
    )
    assert await lost_access(storage, replace(listener, agent_id="agt_old"), agent) is (
        Ended.AGENT_DELETED
    )
    assert (await alice.http.delete(agent_path(agent))).status_code == 200
    assert await lost_access(storage, listener, agent) is Ended.AGENT_DELETED
    keys = (await alice.http.get("/api/v1/users/me/api-keys")).json()["api_keys"]
    spare = await alice.http.post("/api/v1/users/me/api-keys", json={"name": "spare"})
    headers = {"Authorization": f"Bearer {spare.json()['key']}"}
    revoked = await alice.http.delete(f"/api/v1/users/me/api-keys/{keys[0]['id']}", headers=headers)
    assert revoked.status_code == 204
    assert await lost_access(storage, listener, agent) is Ended.KEY_REVOKED


async def test_an_ack_naming_no_storable_id_is_ignored_and_the_socket_stays_open(
    running: RunningGateway, alice: Account, agent: str, connected: Any
) -> None:
    """An ack whose message id holds NUL (which PostgreSQL text can neither hold nor be
    compared with) or a lone surrogate names no message: it is ignored, as an unknown id is,
    and the socket goes on, on every backend; the next ack still marks read."""
    first = await accept(running.gateway, [agent], mail("One"))
    second = await accept(running.gateway, [agent], mail("Two"))
    async with connected() as ws:
        await next_frames(ws, 2)
        await ws.send_message('{"type": "ack", "message_id": "msg_\\u0000"}')
        await ws.send_message('{"type": "ack", "message_id": "msg_\\ud800"}')
        await ws.send_message(json.dumps({"type": "ack", "message_id": first}))

        async def only_second_unread() -> bool:
            return await unread_ids(alice, agent) == [second]

        await wait_until(only_second_unread)
        await smtp_send(running.addresses.smtp_port, [agent], mail("Still open"))
        (live,) = await next_frames(ws, 1)
    assert live["subject"] == "Still open"


async def test_a_client_frame_past_the_bound_closes_the_socket_with_1009(
    running: RunningGateway, alice: Account, agent: str, connected: Any
) -> None:
    """Clients send acks of a few dozen bytes: a frame over 4 KiB is ignored, and one over
    MAX_CLIENT_MESSAGE_BYTES is not even held in memory to be ignored (else every connection
    could make the gateway hold megabytes): the socket is closed with 1009, message too big."""
    async with connected() as ws:
        await ws.send_message("x" * 5000)
        await smtp_send(running.addresses.smtp_port, [agent], mail("Still open"))
        (live,) = await next_frames(ws, 1)
        assert live["subject"] == "Still open"
        await ws.send_message("x" * (MAX_CLIENT_MESSAGE_BYTES + 1))
        code, _, heard = await closed_with(ws)
    assert (code, heard) == (1009, [])


async def test_mail_held_by_the_gate_is_pushed_only_once_released(
    running: RunningGateway, alice: Account, agent: str, connected: Any
) -> None:
    """Mail the agent's inbound gate holds for review is in no drain and no live frame; once
    approved it is pushed live, and sent again by the next drain while it stays unread."""
    gate = {"policy": "allowlist", "allowlist": ["boss@example.net"], "action": "review"}
    await protect(alice, agent, protection(inbound=gate))
    subscribed = await agent_id(running.gateway, agent)
    async with connected() as ws:
        await wait_until(lambda: running.gateway.hub.subscriber_count(subscribed) == 1)
        await smtp_send(running.addresses.smtp_port, [agent], mail("Held"))
        (held,) = await queue(alice)
        await assert_silent(ws)
    async with connected() as ws:
        await assert_silent(ws)
        approved = await alice.http.post(f"/v1/reviews/{held['id']}/approve", json={})
        assert approved.status_code == 200, approved.text
        (released,) = await next_frames(ws, 1)
        await assert_silent(ws)
    assert released["message_id"] == held["id"] and released["subject"] == "Held"
    async with connected() as ws:
        (again,) = await next_frames(ws, 1)
    assert again["message_id"] == held["id"]


async def test_a_slow_reader_of_a_backlog_gets_mail_arriving_meanwhile_once_in_order(
    running: RunningGateway, agent: str, connected: Any
) -> None:
    """Live mail committed while a slow client reads a backlog of several pages comes after
    the backlog, each message once, none skipped."""
    backlog = [
        await accept(running.gateway, [agent], mail(f"Backlog {n}"))
        for n in range(3 * DRAIN_PAGE_SIZE)
    ]
    during: list[str] = []
    received: list[str] = []
    async with connected() as ws, trio.open_nursery() as nursery:

        async def arriving() -> None:
            for n in range(40):
                during.append(await accept(running.gateway, [agent], mail(f"During {n}")))
                await trio.sleep(0.005)

        nursery.start_soon(arriving)
        with trio.fail_after(60):
            while len(received) < len(backlog) + 40:
                received.append(json.loads(await ws.get_message())["message_id"])
                if len(received) % 20 == 0:
                    await trio.sleep(0.01)  # a slow reader
        await assert_silent(ws)
    assert received[: len(backlog)] == backlog
    assert sorted(received[len(backlog) :]) == sorted(set(during) - set(backlog))
    assert len(set(received)) == len(received) and set(received) == set(backlog + during)
