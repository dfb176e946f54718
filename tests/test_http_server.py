"""The HTTP server over raw sockets: when connections close, `100 Continue`, request framing and
status lines — the bytes on the wire, as curl, proxies and monitoring checks see them."""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio
from hypercorn.config import Config
from trio_websocket import open_websocket_url

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.http_server import (
    ConnectionLimits,
    _Connection,
    _CountedListener,
    _Protocols,
    _ServingContext,
)
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import make_settings
from tests.delivery_support import create_agent, mail, open_account, smtp_send
from tests.mcp_support import INITIALIZE
from tests.test_dashboard import sign_in

TERABYTE = 10**12
"""A declared body length over any bound the gateway has."""
MCP_INITIALIZE = json.dumps(INITIALIZE).encode()


@dataclass
class Answer:
    """One HTTP response as read off the socket."""

    status_line: str
    headers: dict[str, str]
    body: bytes

    @property
    def status(self) -> int:
        """The status code."""
        return int(self.status_line.split(" ")[1])

    def json(self) -> object:
        """The body as JSON."""
        return json.loads(self.body)


class RawConnection:
    """One TCP connection to the gateway's HTTP port, written and read byte by byte."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        """Write `data` as is."""
        await self.stream.send_all(data)

    async def _more(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def answer(self, seconds: float = 10) -> Answer:
        """Read one response (head, and a Content-Length or chunked body) within `seconds`."""
        with trio.fail_after(seconds):
            while b"\r\n\r\n" not in self.buffer:
                if not await self._more():
                    raise AssertionError(f"connection closed mid-answer: {self.buffer!r}")
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self._chunks()
            else:
                body = await self._exactly(int(headers.get("content-length", "0")))
        return Answer(status_line, headers, body)

    async def _exactly(self, length: int) -> bytes:
        while len(self.buffer) < length:
            if not await self._more():
                raise AssertionError("connection closed mid-body")
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not await self._more():
                raise AssertionError("connection closed mid-body")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def _chunks(self) -> bytes:
        body = b""
        while size := int((await self._line()).split(b";")[0], 16):
            body += await self._exactly(size)
            await self._line()
        while await self._line():  # trailer section, then the blank line
            pass
        return body

    async def closed_within(self, seconds: float) -> float | None:
        """Seconds until the gateway closed the connection, or None if it stayed open."""
        started = trio.current_time()
        with trio.move_on_after(seconds):
            try:
                while await self._more():
                    pass
            except trio.BrokenResourceError:  # reset: closed as well
                pass
            return trio.current_time() - started
        return None

    async def aclose(self) -> None:
        """Close our side."""
        await self.stream.aclose()


@asynccontextmanager
async def gateway(tmp_path: Path, **http: object) -> AsyncIterator[RunningGateway]:
    """A gateway with these `[http]` settings, stopped at the end of the block."""
    settings = make_settings(tmp_path, http={"listen": "127.0.0.1:0", **http})
    async with trio.open_nursery() as nursery:
        running: RunningGateway = await nursery.start(
            partial(run_gateway, settings, resolver=FixtureResolver())
        )
        yield running
        nursery.cancel_scope.cancel()


def open_sockets() -> int:
    """How many sockets this process (tests and gateway) has open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def connect(running: RunningGateway) -> RawConnection:
    """A new connection to the gateway's HTTP port."""
    return RawConnection(await trio.open_tcp_stream("127.0.0.1", running.addresses.http_port))


async def api_key(running: RunningGateway, email: str = "raw@example.com") -> str:
    """A fresh API key of a new user."""
    _, issued, _ = await bootstrap_user(running.gateway.storage, running.gateway.server_key, email)
    return str(issued.plaintext)


def get(path: str, *headers: str, version: str = "1.1") -> bytes:
    """A GET request with a Host header (HTTP/1.1) and `headers`."""
    lines = [f"GET {path} HTTP/{version}", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade(path: str, key: str) -> bytes:
    """A WebSocket upgrade request for `path` with the API key `key`."""
    return get(
        path,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Authorization: Bearer {key}",
    )


def post(path: str, body: bytes, *headers: str, length: bool = True) -> tuple[bytes, bytes]:
    """A POST's head (with Content-Length unless told not to) and its body."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


# When connections close


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(tmp_path: Path) -> None:
    async with gateway(tmp_path, keep_alive_seconds=0.5) as running:
        connection = await connect(running)
        for _ in range(2):  # kept alive between requests
            await connection.send(get("/api/health"))
            assert (await connection.answer()).status == 200
        closed_after = await connection.closed_within(5)
        assert closed_after is not None, "the idle connection was never closed"
        assert 0.3 <= closed_after < 3


async def test_a_keep_alive_connection_the_client_closes_is_let_go_at_once(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, keep_alive_seconds=60) as running:
        await trio.sleep(0.5)  # let start-up's deferred loading open what it opens
        gc.collect()
        before = open_sockets()
        connections = [await connect(running) for _ in range(20)]
        for connection in connections:
            await connection.send(get("/api/health"))
            assert (await connection.answer()).status == 200
        for connection in connections:
            await connection.aclose()
        with trio.fail_after(3):  # not after keep_alive_seconds
            while open_sockets() > before:  # noqa: ASYNC110
                await trio.sleep(0.05)


async def test_a_connection_that_never_sends_a_request_is_closed_too(tmp_path: Path) -> None:
    async with gateway(tmp_path, keep_alive_seconds=0.5) as running:
        connection = await connect(running)
        await connection.send(b"GET /api/hea")  # half a request line, then nothing
        assert await connection.closed_within(5) is not None


async def test_a_websocket_is_not_idle_however_quiet(tmp_path: Path) -> None:
    async with gateway(tmp_path, keep_alive_seconds=0.3) as running:
        account = await open_account(running.gateway, running.addresses.http_url, "ws@x.com")
        agent = await create_agent(account, "quiet")
        await account.http.aclose()
        base = running.addresses.http_url.replace("http://", "ws://")
        url = f"{base}/api/v1/agents/{quote(agent, safe='')}/ws?token={account.key}"
        async with open_websocket_url(url, connect_timeout=10) as ws:
            await trio.sleep(1.5)  # five keep-alive timeouts without a frame
            await smtp_send(running.addresses.smtp_port, [agent], mail("Still there"))
            with trio.fail_after(10):
                frame = json.loads(await ws.get_message())
        assert frame["subject"] == "Still there"


@pytest.mark.parametrize(
    "socket_path", ["/v1/agents/{}/ws", "/api/v1/agents/{}/ws"], ids=["v1", "legacy"]
)
async def test_a_websocket_its_client_resets_is_let_go_at_once(
    tmp_path: Path, socket_path: str
) -> None:
    # An agent on a flaky network reconnects over and over; each connection it drops
    # without a close frame must free its socket and its place at once, not when the next
    # ping finds it gone (up to the 30 s ping interval later): 100 such drops from one
    # address filled `max_connections_per_ip` and locked that address out.
    cycles = 100
    async with gateway(tmp_path, keep_alive_seconds=60, max_connections_per_ip=5) as running:
        account = await open_account(running.gateway, running.addresses.http_url, "flaky@x.com")
        agent = await create_agent(account, "flaky")
        await account.http.aclose()
        await smtp_send(running.addresses.smtp_port, [agent], mail("Unread"))
        path = socket_path.format(quote(agent, safe=""))
        await trio.sleep(0.5)  # let start-up's deferred loading open what it opens
        gc.collect()
        before = open_sockets()
        for _ in range(cycles):
            connection = await connect(running)
            await connection.send(upgrade(path, account.key))
            assert (await connection.answer()).status == 101
            connection.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            await connection.aclose()  # a reset, the unread message unacked
            with trio.fail_after(3):
                while open_sockets() > before:  # noqa: ASYNC110
                    await trio.sleep(0.01)
        assert await served(await connect(running))


@pytest.mark.parametrize(
    "request_bytes",
    [
        get("/api/health", "Connection: close"),
        get("/api/health", version="1.0"),
        get("/", "Connection: close"),  # the dashboard
        get("/no/such/page", "Connection: close"),
    ],
    ids=["connection-close", "http-1.0", "dashboard", "not-found"],
)
async def test_the_connection_closes_after_an_answer_that_says_so(
    tmp_path: Path, request_bytes: bytes
) -> None:
    async with gateway(tmp_path, keep_alive_seconds=60) as running:
        connection = await connect(running)
        await connection.send(request_bytes)
        answer = await connection.answer()
        assert answer.headers["connection"].lower() == "close"
        closed_after = await connection.closed_within(5)
        assert closed_after is not None and closed_after < 1


@pytest.mark.parametrize(
    "trailing",
    [b"\r\n", get("/api/health"), b"junk that is not HTTP"],
    ids=["blank-line", "pipelined-request", "junk"],
)
@pytest.mark.parametrize("closing", ["Connection: close", "HTTP/1.0"])
async def test_bytes_after_a_request_that_closes_the_connection_are_ignored(
    tmp_path: Path, trailing: bytes, closing: str
) -> None:
    """A request that says the connection closes after it (`Connection: close`, or HTTP/1.0)
    is answered and carried out whatever the client sends after it (old clients end a POST
    body with a blank line): those bytes are not read as a request (RFC 9112 section 9.6).
    They were taken for a malformed request: the POST was answered 400 and not carried out."""
    async with gateway(tmp_path, keep_alive_seconds=60) as running:
        key = await api_key(running)
        body = json.dumps({"slug": "closing-bot", "agent_mode": "local"}).encode()
        lines = [
            "POST /api/v1/agents HTTP/1.0"
            if closing == "HTTP/1.0"
            else "POST /api/v1/agents HTTP/1.1",
            "Host: 127.0.0.1",
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if closing != "HTTP/1.0":
            lines.append(closing)
        connection = await connect(running)
        await connection.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body + trailing)
        answer = await connection.answer()
        assert answer.status == 201, answer.body
        assert answer.json()["email"] == "closing-bot@agents.test"  # type: ignore[index]
        assert await connection.closed_within(5) is not None
        assert connection.buffer == b""  # nothing answered the bytes after it


async def test_three_hundred_idle_connections_are_released(tmp_path: Path) -> None:
    count = 300
    async with gateway(tmp_path, keep_alive_seconds=3, max_connections_per_ip=count) as running:
        await trio.sleep(0.5)  # let start-up's deferred loading open what it opens
        gc.collect()  # and earlier tests' leftovers close now, not during the count
        before = open_sockets()
        connections: list[RawConnection] = []

        async def open_one() -> None:
            connection = await connect(running)
            connections.append(connection)
            await connection.send(get("/api/health"))
            assert (await connection.answer(30)).status == 200

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(open_one)
        assert open_sockets() >= before + 2 * count  # both ends are in this process
        closed: list[float | None] = []

        async def wait_closed(connection: RawConnection) -> None:
            closed.append(await connection.closed_within(15))

        async with trio.open_nursery() as nursery:
            for connection in connections:
                nursery.start_soon(wait_closed, connection)
        assert None not in closed and len(closed) == count
        for connection in connections:
            await connection.aclose()
        assert open_sockets() <= before + 5


async def test_a_request_body_that_stops_arriving_is_given_up(tmp_path: Path) -> None:
    async with gateway(tmp_path, keep_alive_seconds=0.5) as running:
        key = await api_key(running)
        connection = await connect(running)
        head, body = post(
            "/api/v1/agents",
            b'{"slug": "slow", "agent_mode": "local"}',
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
        )
        await connection.send(head + body[:5])  # and the rest never comes
        closed_after = await connection.closed_within(10)
        assert closed_after is not None, "the connection waited for the body for ever"
        assert closed_after < 5


async def test_a_slow_body_that_keeps_coming_is_read_whole(tmp_path: Path) -> None:
    async with gateway(tmp_path, keep_alive_seconds=0.5) as running:
        key = await api_key(running)
        connection = await connect(running)
        head, body = post(
            "/api/v1/agents",
            b'{"slug": "trickle", "agent_mode": "local"}',
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
        )
        await connection.send(head)
        for start in range(0, len(body), 8):  # longer in all than the idle timeout
            await trio.sleep(0.2)
            await connection.send(body[start : start + 8])
        assert (await connection.answer()).status == 201


async def large_answer_request(running: RunningGateway) -> bytes:
    """A request whose answer runs to megabytes: a full inbound message of 4.7 MB."""
    account = await open_account(running.gateway, running.addresses.http_url, "big@x.com")
    agent = await create_agent(account, "big")
    body = ("x" * 76 + "\r\n") * 60000
    await smtp_send(running.addresses.smtp_port, [agent], mail("Big", body=body))
    path = f"/api/v1/agents/{quote(agent, safe='')}/messages"
    listed = await account.http.get(path, params={"status": "all"})
    message_id = listed.json()["messages"][0]["message_id"]
    await account.http.aclose()
    return get(f"{path}/{message_id}", f"Authorization: Bearer {account.key}")


async def unread_connection(running: RunningGateway) -> trio.SocketStream:
    """A connection whose client reads nothing until told to, with a small receive buffer."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", running.addresses.http_port))
    return trio.SocketStream(sock)


async def test_a_client_that_stops_reading_its_answer_is_let_go(tmp_path: Path) -> None:
    async with gateway(tmp_path, keep_alive_seconds=0.5) as running:
        request = await large_answer_request(running)
        stream = await unread_connection(running)
        await stream.send_all(request)
        await trio.sleep(3)  # reading nothing
        received, ended = b"", False
        with trio.move_on_after(5):
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
            ended = True
        assert ended, "the gateway kept writing to a client that had stopped reading"
        assert len(received) < 4_000_000
        await stream.aclose()


async def close_after(stream: trio.SocketStream, seconds: float) -> None:
    """Close `stream` after `seconds`."""
    await trio.sleep(seconds)
    await stream.aclose()


async def test_a_client_that_never_reads_does_not_hold_up_the_stop(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        async with gateway(tmp_path, keep_alive_seconds=0.5) as running:
            request = await large_answer_request(running)
            stream = await unread_connection(running)
            await stream.send_all(request)
            await trio.sleep(3)  # the answer is written until the client's buffers are full
            nursery.start_soon(close_after, stream, 20)  # the test's own bound
            stopping = trio.current_time()
        stopped_after = trio.current_time() - stopping
        nursery.cancel_scope.cancel()
    assert stopped_after < 5, f"the gateway took {stopped_after:.1f} s to stop"


class SlowResolver(FixtureResolver):
    """DNS that takes `seconds` to give every name one public address."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def a(self, name: str) -> list[str]:
        """One public address, after the wait."""
        time.sleep(self.seconds)
        return ["93.184.216.34"]

    def aaaa(self, name: str) -> list[str]:
        """None, after the wait."""
        time.sleep(self.seconds)
        return []


async def test_a_request_in_progress_when_the_gateway_stops_is_answered(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, http={"listen": "127.0.0.1:0"})
    async with trio.open_nursery() as nursery:
        running: RunningGateway = await nursery.start(
            partial(run_gateway, settings, resolver=SlowResolver(1.0))
        )
        key = await api_key(running)
        connection = await connect(running)
        head, body = post(
            "/api/v1/agents",
            b'{"slug": "hooked", "webhook_url": "https://hooks.example.com/in"}',
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
        )
        await connection.send(head + body)  # its webhook host takes a second to resolve
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    answer = await connection.answer()
    assert answer.status == 201, answer
    assert answer.headers["connection"] == "close"
    assert await connection.closed_within(5) is not None


async def test_an_open_event_stream_does_not_hold_up_the_stop(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        async with gateway(tmp_path) as running:
            account = await open_account(running.gateway, running.addresses.http_url, "sse@x.com")
            agent = await create_agent(account, "streamed")
            await account.http.aclose()
            browser = httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10)
            assert (await sign_in(browser, account.key)).status_code == 303
            events = f"/agents/{quote(agent, safe='')}/events"
            stream_open = trio.Event()

            async def listen() -> None:
                with contextlib.suppress(httpx.HTTPError):
                    async with browser.stream("GET", events) as stream:
                        assert stream.status_code == 200
                        stream_open.set()
                        async for _ in stream.aiter_bytes():
                            pass

            nursery.start_soon(listen)
            with trio.fail_after(10):
                await stream_open.wait()
            stopping = trio.current_time()
        stopped_after = trio.current_time() - stopping
        await browser.aclose()
    assert stopped_after < 2, f"the gateway took {stopped_after:.1f} s to stop"


@pytest.mark.parametrize("path", ["/api/v1/agents", "/v1/agents"])
async def test_a_request_cut_short_by_the_stop_is_told_to_retry(tmp_path: Path, path: str) -> None:
    async with gateway(tmp_path) as running:
        key = await api_key(running)
        connection = await connect(running)
        head, body = post(
            path,
            b'{"slug": "cut", "agent_mode": "local"}',
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
            "X-Request-Id: cut-1",
        )
        await connection.send(head + body[:5])  # the rest will not come in the stop's grace
        await trio.sleep(0.5)
    answer = await connection.answer(1)
    assert answer.status_line == "HTTP/1.1 503 Service Unavailable"
    assert answer.headers["connection"] == "close"
    assert answer.headers["retry-after"] == "1"
    error = answer.json()["error"]  # type: ignore[index]
    assert error["code"] == "shutting_down"
    assert "retry" in error["message"]
    assert_request_id(answer, path, "cut-1")


def assert_request_id(answer: Answer, path: str, request_id: str) -> None:
    """`answer` carries `request_id` as each API does: in X-Request-Id, and under `/v1` in the
    error envelope too (e2a's ErrorBody requires it)."""
    assert answer.headers["x-request-id"] == request_id
    error = answer.json()["error"]  # type: ignore[index]
    if path.startswith("/v1/"):
        assert error["request_id"] == request_id
    else:
        assert "request_id" not in error


# Request framing and 100 Continue


@pytest.mark.parametrize("path", ["/api/v1/agents", "/mcp"])
async def test_content_length_with_transfer_encoding_is_refused(tmp_path: Path, path: str) -> None:
    async with gateway(tmp_path) as running:
        key = await api_key(running)
        connection = await connect(running)
        head, body = post(
            path,
            b"0\r\n\r\n",
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            length=False,
        )
        await connection.send(head + body)
        answer = await connection.answer()
        assert answer.status_line == "HTTP/1.1 400 Bad Request"
        assert answer.json() == {
            "error": {
                "code": "invalid_request",
                "message": "Content-Length and Transfer-Encoding together leave the body's "
                "length ambiguous (RFC 9112 section 6.1); send only one of them",
            }
        }
        assert answer.headers["connection"] == "close"
        assert await connection.closed_within(5) is not None
        assert connection.buffer == b""


@pytest.mark.parametrize("path", ["/api/v1/agents", "/v1/agents", "/mcp", "/signin"])
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "gzip, identity"])
async def test_a_compressed_request_body_is_refused_with_415(
    tmp_path: Path, path: str, coding: str
) -> None:
    """A body sent with a content coding (a gzip bomb: 10 MB of JSON in 10 KB) is refused with
    415 naming the coding and `Accept-Encoding: identity` (RFC 9110 section 15.5.16), never
    inflated. It used to be read as JSON as it came, answered `not valid JSON: 'utf-8' codec
    can't decode byte 0x8b`, or a parse error on `/mcp`: no word of what was wrong."""
    async with gateway(tmp_path) as running:
        key = await api_key(running)
        connection = await connect(running)
        bomb = gzip.compress(b'{"slug": "' + b"a" * 10_000_000 + b'"}')
        head, body = post(
            path,
            bomb,
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"Content-Encoding: {coding}",
            "X-Request-Id: coded-1",
        )
        await connection.send(head + body)
        answer = await connection.answer()
        assert answer.status_line == "HTTP/1.1 415 Unsupported Media Type"
        assert answer.headers["accept-encoding"] == "identity"
        assert answer.headers["content-type"] == "application/json"
        error = answer.json()["error"]  # type: ignore[index]
        assert error["code"] == "unsupported_media_type"
        assert f"Content-Encoding: {coding}" in error["message"]
        assert "uncompressed" in error["message"]
        if path != "/mcp" and path != "/signin":
            assert_request_id(answer, path, "coded-1")
        assert await connection.closed_within(5) is not None


async def test_a_request_body_said_to_be_identity_coded_is_read(tmp_path: Path) -> None:
    async with gateway(tmp_path) as running:
        key = await api_key(running)
        connection = await connect(running)
        head, body = post(
            "/api/v1/agents",
            json.dumps({"slug": "plain-bot", "agent_mode": "local"}).encode(),
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
            "Content-Encoding: identity",
        )
        await connection.send(head + body)
        assert (await connection.answer()).status == 201


@pytest.mark.parametrize("path", ["/api/v1/agents", "/v1/agents"])
@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (("Content-Length: 12", "Transfer-Encoding: chunked"), b"2\r\n{}\r\n0\r\n\r\n"),
        (("Transfer-Encoding: chunked",), b"zz\r\n{}\r\n0\r\n\r\n"),
    ],
    ids=["ambiguous-lengths", "chunk-size-not-hex"],
)
async def test_a_request_refused_for_its_framing_carries_its_request_id(
    tmp_path: Path, path: str, framing: tuple[str, ...], body: bytes
) -> None:
    """Found by fuzzing: these refusals, made below the apps, had no request id, so under
    `/v1` their body was not e2a's error envelope."""
    async with gateway(tmp_path) as running:
        key = await api_key(running)
        connection = await connect(running)
        head, _ = post(
            path,
            body,
            f"Authorization: Bearer {key}",
            "Content-Type: application/json",
            "X-Request-Id: framing-1",
            *framing,
            length=False,
        )
        await connection.send(head + body)
        answer = await connection.answer()
        assert answer.status_line == "HTTP/1.1 400 Bad Request"
        assert answer.json()["error"]["code"] == "invalid_request"  # type: ignore[index]
        assert_request_id(answer, path, "framing-1")
        assert await connection.closed_within(5) is not None


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/api/v1/agents", "application/json", b'{"slug": "patient", "agent_mode": "local"}'),
        ("/mcp", "application/json", MCP_INITIALIZE),
    ],
)
async def test_100_continue_comes_only_after_the_key_is_checked(
    tmp_path: Path, path: str, content_type: str, body: bytes
) -> None:
    async with gateway(tmp_path) as running:
        key = await api_key(running)
        mcp = ("Accept: application/json, text/event-stream",) if path == "/mcp" else ()
        for bad in ("Bearer e2a_" + "0" * 64, "Bearer nonsense", None):
            connection = await connect(running)
            auth = (f"Authorization: {bad}",) if bad else ()
            head, _ = post(
                path, body, *auth, *mcp, f"Content-Type: {content_type}", "Expect: 100-continue"
            )
            await connection.send(head)  # and never the body
            answer = await connection.answer()
            assert answer.status_line == "HTTP/1.1 401 Unauthorized", answer
            assert await connection.closed_within(5) is not None
            assert connection.buffer == b""  # no 100 Continue anywhere

        connection = await connect(running)
        head, _ = post(
            path,
            body,
            f"Authorization: Bearer {key}",
            *mcp,
            f"Content-Type: {content_type}",
            "Expect: 100-continue",
        )
        await connection.send(head)
        go_on = await connection.answer()
        assert go_on.status_line == "HTTP/1.1 100 Continue"
        await connection.send(body)
        answer = await connection.answer()
        assert answer.status in (200, 201), answer
        await connection.send(get("/api/health"))  # the connection lives on
        assert (await connection.answer()).status == 200


async def test_a_body_too_large_is_refused_without_100_continue(tmp_path: Path) -> None:
    async with gateway(tmp_path) as running:
        key = await api_key(running)
        connection = await connect(running)
        await connection.send(
            b"POST /api/v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {TERABYTE}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        answer = await connection.answer()
        assert answer.status_line == "HTTP/1.1 413 Request Entity Too Large"
        assert await connection.closed_within(5) is not None


@pytest.mark.parametrize(
    ("request_bytes", "status_line", "code"),
    [
        (
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
            "invalid_request",
        ),
        (
            b"POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Content-Length: 3\r\n\r\n{}",
            "HTTP/1.1 400 Bad Request",
            "invalid_request",
        ),
        (
            b"POST /api/v1/agents HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked"
            b"\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 501 Not Implemented",
            "not_implemented",
        ),
        (
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70000,
            "HTTP/1.1 431 Request Header Fields Too Large",
            "invalid_request",
        ),
    ],
    ids=["bad-header-line", "conflicting-lengths", "unknown-transfer-coding", "head-too-large"],
)
async def test_a_request_the_server_cannot_parse_gets_a_json_error(
    tmp_path: Path, request_bytes: bytes, status_line: str, code: str
) -> None:
    async with gateway(tmp_path) as running:
        connection = await connect(running)
        await connection.send(request_bytes)
        answer = await connection.answer()
        assert answer.status_line == status_line
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["connection"] == "close"
        error = answer.json()["error"]  # type: ignore[index]
        assert error["code"] == code
        assert error["message"]
        assert await connection.closed_within(5) is not None


WEBSOCKET_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize("face", ["/api/v1", "/v1"])
@pytest.mark.parametrize(
    ("version", "headers", "named"),
    [
        ("1.1", [WEBSOCKET_KEY], "Sec-WebSocket-Version"),
        ("1.1", [WEBSOCKET_KEY, "Sec-WebSocket-Version: 8"], "Sec-WebSocket-Version"),
        ("1.1", ["Sec-WebSocket-Version: 13"], "Sec-WebSocket-Key"),
        ("1.0", [WEBSOCKET_KEY, "Sec-WebSocket-Version: 13"], "HTTP/1.1"),
    ],
    ids=["no-version", "version-8", "no-key", "http-1.0"],
)
async def test_a_websocket_handshake_the_server_cannot_take_gets_a_json_error(
    tmp_path: Path, face: str, version: str, headers: list[str], named: str
) -> None:
    """An upgrade request RFC 6455 does not allow is refused with 400 in the face's JSON
    envelope naming what is wrong, and the version this server speaks (hypercorn answered an
    empty 400, and left out the Sec-WebSocket-Version that RFC 6455 §4.4 requires)."""
    async with gateway(tmp_path) as running:
        connection = await connect(running)
        upgrade = ["Connection: Upgrade", "Upgrade: websocket", "X-Request-Id: shake-1"]
        path = f"{face}/agents/{quote('bot@agents.test')}/ws"
        await connection.send(get(path, *upgrade, *headers, version=version))
        answer = await connection.answer()
    assert answer.status_line == "HTTP/1.1 400 Bad Request"
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["sec-websocket-version"] == "13"
    error = answer.json()["error"]  # type: ignore[index]
    assert error["code"] == "invalid_request"
    assert named in error["message"]
    assert_request_id(answer, path, "shake-1")


# Status lines


async def test_status_lines_carry_reason_phrases(tmp_path: Path) -> None:
    async with gateway(tmp_path) as running:
        connection = await connect(running)
        for request_bytes, status_line in (
            (get("/api/health"), "HTTP/1.1 200 OK"),
            (get("/no/such/page"), "HTTP/1.1 404 Not Found"),
            (get("/api/v1/agents"), "HTTP/1.1 401 Unauthorized"),
        ):
            await connection.send(request_bytes)
            assert (await connection.answer()).status_line == status_line
        # hypercorn's own answer to a request h11 cannot parse
        broken = await connect(running)
        await broken.send(b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert (await broken.answer()).status_line == "HTTP/1.1 400 Bad Request"
        status_lines = re.compile(rb"HTTP/1\.1 \d{3} \S")
        assert status_lines.match(b"HTTP/1.1 200 OK")


# How many connections are served at once


async def connect_from(running: RunningGateway, address: str) -> RawConnection:
    """A new connection to the gateway's HTTP port from the loopback address `address`."""
    port = running.addresses.http_port
    return RawConnection(await trio.open_tcp_stream("127.0.0.1", port, local_address=address))


async def served(connection: RawConnection) -> bool:
    """Whether `connection` is answered (200 to a health check), not closed unanswered."""
    with contextlib.suppress(trio.BrokenResourceError):
        await connection.send(get("/api/health"))
    try:
        return (await connection.answer()).status == 200
    except (AssertionError, trio.BrokenResourceError):
        return False


def refusals(running: RunningGateway, limit: str) -> float:
    """How many connections `/metrics` counts as closed unserved for `limit`."""
    value = running.gateway.metrics.registry.get_sample_value(
        "e2a_http_connections_refused_total", {"limit": limit}
    )
    return value or 0.0


async def test_a_connection_over_max_connections_is_closed_and_the_others_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(tmp_path, max_connections=3, keep_alive_seconds=60) as running:
        held = [await connect(running) for _ in range(3)]
        for connection in held:
            assert await served(connection)
        for _ in range(2):  # a burst: closed at once, without an answer, logged once
            extra = await connect(running)
            assert not await served(extra)
            assert extra.buffer == b""
            await extra.aclose()
        assert refusals(running, "max_connections") == 2
        lines = [r.getMessage() for r in caplog.records if "closed unserved" in r.getMessage()]
        assert len(lines) == 1 and "http.max_connections " in lines[0], lines
        for connection in held:  # still served, kept alive
            assert await served(connection)
        await held.pop().aclose()  # frees its place
        with trio.fail_after(5):
            while not await served(replacement := await connect(running)):  # noqa: ASYNC110
                await trio.sleep(0.05)
        held.append(replacement)
        assert not await served(await connect(running))  # the place is taken again
        for connection in held:
            await connection.aclose()


async def test_max_connections_per_ip_counts_each_client_address(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_connections_per_ip=2, keep_alive_seconds=60) as running:
        first = [await connect_from(running, "127.0.0.1") for _ in range(2)]
        for connection in first:
            assert await served(connection)
        assert not await served(await connect_from(running, "127.0.0.1"))
        assert refusals(running, "max_connections_per_ip") == 1
        other = await connect_from(running, "127.0.0.2")  # another client: its own count
        assert await served(other)
        assert refusals(running, "max_connections") == 0
        await first[0].aclose()
        with trio.fail_after(5):
            while not await served(await connect_from(running, "127.0.0.1")):  # noqa: ASYNC110
                await trio.sleep(0.05)


async def test_a_trusted_proxy_is_not_held_to_max_connections_per_ip(tmp_path: Path) -> None:
    async with gateway(
        tmp_path, max_connections_per_ip=1, trusted_proxies=["127.0.0.2"], keep_alive_seconds=60
    ) as running:
        proxied = [await connect_from(running, "127.0.0.2") for _ in range(3)]
        for connection in proxied:
            assert await served(connection)
        assert await served(await connect_from(running, "127.0.0.1"))
        assert not await served(await connect_from(running, "127.0.0.1"))
        assert refusals(running, "max_connections_per_ip") == 1


# One connection's trouble stays its own


def raw_connection(stream: trio.SocketStream) -> _Connection:
    """The gateway's connection class on `stream`, without an app: only writes and closes."""
    config = Config()
    config.keep_alive_timeout = 1.0
    context = _ServingContext(1.0)
    connection = _Connection(None, config, context, {}, stream)  # type: ignore[arg-type]
    connection.protocol = _Protocols(
        None,  # type: ignore[arg-type]
        config,
        context,
        None,  # type: ignore[arg-type]
        {},  # type: ignore[arg-type]
        False,
        None,
        None,
        connection.protocol_send,
    )
    return connection


async def test_a_write_beside_the_close_waits_its_turn() -> None:
    """Found probing WebSockets: a connection closing (a close frame answered) while another of
    its tasks wrote to it (a ping, a frame of the app's) sent its EOF beside that write; trio
    refused the second sender with BusyResourceError, which took the whole HTTP listener
    down. The EOF now waits its turn, as every write does. (trio runs the two tasks in either
    order, at random: forty tries meet the bad one.)"""
    for _ in range(40):
        ours, theirs = socket.socketpair()
        connection = raw_connection(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        with theirs, trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection._close)
                nursery.start_soon(connection._write, b"ping")


async def test_a_connection_that_fails_is_logged_and_frees_its_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours, theirs = socket.socketpair()
    listener = _CountedListener(
        None,  # type: ignore[arg-type]
        ConnectionLimits(max_connections=1, max_connections_per_ip=1, ipv6_network_prefix=64),
        lambda limit: None,
    )
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    listener._admitted[stream] = "local"
    listener._open = 1
    listener._per_network["local"] = 1

    async def failing(stream: trio.SocketStream) -> None:
        raise RuntimeError("a bug in one connection")

    with theirs:
        await listener.serve(failing, stream)  # does not raise: the other connections go on
    assert listener._open == 0 and not listener._per_network
    assert any("a bug in one connection" in (r.exc_text or "") for r in caplog.records)
