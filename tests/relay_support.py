"""An SMTP relay on 127.0.0.1 for the tests that send mail out: aiosmtpd serving a test's
handler on a free loopback port, stopped when the test is done; `Sink`, a handler recording
what it accepted, and the fixtures `sink` and `relay_port` (import them by name). For a relay
that misbehaves as a test needs (replies aiosmtpd would never give), `ScriptedRelay` served by
`scripted_relay`."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
from aiosmtpd.controller import Controller


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def relay_on_loopback(handler: object, *, smtputf8: bool = False) -> Iterator[int]:
    """Serve `handler` (an aiosmtpd handler) as an SMTP relay on 127.0.0.1, offering SMTPUTF8
    (RFC 6531) when `smtputf8`; yield its port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass
class Sink:
    """Records what the relay accepted; `answer` is the reply to end of DATA."""

    answer: str = "250 OK"
    rcpt_answers: dict[str, str] = field(default_factory=dict)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)
    """The MAIL FROM parameters of each message in `received` (`SMTPUTF8`, `BODY=8BITMIME`)."""
    data_seconds: float = 0.0
    """How long the relay takes to answer the end of DATA (a slow relay)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        answer = self.rcpt_answers.get(address, "250 OK")
        if answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.data_seconds)
        if self.answer.startswith("250"):
            self.received.append(
                (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
            self.mail_options.append(list(envelope.mail_options))
        return self.answer

    def copy_to(self, recipient: str) -> tuple[str, bytes]:
        """The return path and bytes of the copy the relay accepted for `recipient`."""
        (found,) = [(path, raw) for path, rcpts, raw in self.received if recipient in rcpts]
        return found


class StallingRelay(Sink):
    """A relay that holds each RCPT unanswered until `stalled` is set (a hand-off begun that
    has not reached DATA); `rcpt_seen` is set at the first RCPT. Made with `holding=False` it
    answers at once until a test clears `stalled`."""

    def __init__(self, *, holding: bool = True) -> None:
        super().__init__()
        self.rcpt_seen = threading.Event()
        self.stalled = threading.Event()
        if not holding:
            self.stalled.set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.rcpt_seen.set()
        while not self.stalled.is_set():  # noqa: ASYNC110 (set from the test's thread)
            await asyncio.sleep(0.05)
        return await super().handle_RCPT(server, session, envelope, address, options)


class ClockedSink(Sink):
    """A relay that takes `seconds` of the worker's (fake) `clock` to answer each RCPT."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        super().__init__()
        self.clock = clock
        self.seconds = seconds

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.clock[0] += self.seconds
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
def sink() -> Sink:
    """A fresh recording handler."""
    return Sink()


@pytest.fixture
def relay_port(sink: Sink) -> Iterator[int]:
    """`sink` served as a relay on 127.0.0.1; its port."""
    with relay_on_loopback(sink) as port:
        yield port


class LineReader:
    """Reads a client's CRLF-ended lines: `receive(in_data)` gives its next bytes (b"" once it
    has left, then BrokenResourceError), told whether they belong to a message's data."""

    def __init__(self, receive: Callable[[bool], Awaitable[bytes]]) -> None:
        self._receive = receive
        self._buffer = bytearray()

    async def __call__(self, in_data: bool = False) -> bytes:
        """The next line, with its CRLF."""
        while b"\r\n" not in self._buffer:
            data = await self._receive(in_data)
            if not data:
                raise trio.BrokenResourceError("client left")
            self._buffer.extend(data)
        end = self._buffer.index(b"\r\n") + 2
        text = bytes(self._buffer[:end])
        del self._buffer[:end]
        return text


def line_reader(stream: trio.SocketStream) -> LineReader:
    """A LineReader of `stream`, reading whatever has come."""
    return LineReader(lambda in_data: stream.receive_some(65536))


DATA_READ = 16384
"""The most a `ScriptedRelay` with a `read_pause` reads of a message's data at once."""


@dataclass
class ScriptedRelay:
    """A relay that answers as a test scripts it, one command at a time: `greeting` first,
    then for each command the reply `answers` gives for its verb (`b"EHLO"`, `b"MAIL"`,
    `b"RCPT"`, `b"DATA"`, `b"RSET"`, `b"STARTTLS"`, …; `b"."` for the end of data), else
    `250 ok` (`354 go` to DATA). `after_data`, when set, is done with the stream instead of
    answering the end of data. `read_pause` makes a slow link: the relay waits that long before
    each read of a message's data (of DATA_READ octets at most); past `stall_after` octets of
    it the relay reads nothing more (a link that stalls). `commands` records every line the
    client sent outside data, `bodies` every message's data (dot-unstuffed)."""

    greeting: bytes = b"220 relay.test ESMTP\r\n"
    answers: dict[bytes, bytes] = field(default_factory=dict)
    after_data: Callable[[trio.SocketStream], Awaitable[None]] | None = None
    read_pause: float = 0.0
    stall_after: int | None = None
    commands: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def serve(self, stream: trio.SocketStream) -> None:
        """Speak to one client until it quits or leaves."""
        data_read = 0

        async def receive(in_data: bool) -> bytes:
            nonlocal data_read
            if not in_data:
                return await stream.receive_some(65536)
            if self.stall_after is not None and data_read >= self.stall_after:
                await trio.sleep_forever()
            await trio.sleep(self.read_pause)
            data = await stream.receive_some(DATA_READ)
            data_read += len(data)
            return data

        line = LineReader(receive)

        try:
            await stream.send_all(self.greeting)
            while True:
                command = await line()
                self.commands.append(command)
                verb = command.split(b" ", 1)[0].strip().upper()
                if verb == b"QUIT":
                    await stream.send_all(b"221 bye\r\n")
                    return
                answer = self.answers.get(verb, b"354 go\r\n" if verb == b"DATA" else b"250 ok\r\n")
                await stream.send_all(answer)
                if verb != b"DATA" or not answer.startswith(b"354"):
                    continue
                body = bytearray()
                while (text := await line(in_data=True)) != b".\r\n":
                    body += text[1:] if text.startswith(b".") else text
                self.bodies.append(bytes(body))
                if self.after_data is not None:
                    await self.after_data(stream)
                    return
                await stream.send_all(self.answers.get(b".", b"250 ok\r\n"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@asynccontextmanager
async def scripted_relay(
    serve: Callable[[trio.SocketStream], Awaitable[None]], host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve `serve` (a `ScriptedRelay`'s, or any handler of one connection) on `host` (an
    address of this machine) in the test's own trio run; yield its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host=host), serve, 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()
