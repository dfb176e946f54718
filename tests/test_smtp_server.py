"""The trio SMTP listener over real sockets.

The sink here is an in-memory test double: these tests are about the I/O shell (sockets,
timeouts, failures, logging). The gateway's end-to-end tests use the real storage.
"""

from __future__ import annotations

import logging
import re
import shutil
import smtplib
import socket
import ssl
import struct
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from cryptography.hazmat.primitives import serialization

from e2a_gateway.smtp import server as smtp_server
from e2a_gateway.smtp.protocol import Envelope, Mailbox, SessionLimits
from e2a_gateway.smtp.server import (
    ListenerLimits,
    MessageNotStored,
    RecipientVerdict,
    StorageFull,
    client_network,
    serve_smtp,
    server_tls_context,
)

pytestmark = pytest.mark.backend_independent

HOST = "mx.agents.test"
TIMEOUT = 10


class MemorySink:
    """Agents alice@ and bob@agents.test; stored messages kept in a list."""

    def __init__(self) -> None:
        self.agents = {"alice@agents.test", "bob@agents.test"}
        self.checked: list[Mailbox] = []
        self.stored: list[tuple[Envelope, str]] = []
        self.storage_failure: Exception | None = None
        self.check_failure: Exception | None = None
        self.gate: trio.Event | None = None
        """While set to an unset event, commits wait for it."""
        self.committing = trio.Event()

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        await trio.lowlevel.checkpoint()
        self.checked.append(mailbox)
        if self.check_failure is not None:
            raise self.check_failure
        if mailbox.domain != "agents.test":
            return RecipientVerdict.RELAY_DENIED
        if f"{mailbox.local.lower()}@{mailbox.domain}" not in self.agents:
            return RecipientVerdict.UNKNOWN_USER
        return RecipientVerdict.ACCEPT

    async def accept_message(self, envelope: Envelope, peer: str) -> str:
        await trio.lowlevel.checkpoint()
        self.committing.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.storage_failure is not None:
            raise self.storage_failure
        self.stored.append((envelope, peer))
        return f"msg_{len(self.stored)}"


async def start_server(
    nursery: trio.Nursery,
    sink: MemorySink,
    *,
    idle_timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
    limits: ListenerLimits | None = None,
    observer: smtp_server.SmtpObserver | None = None,
    session_limits: SessionLimits | None = None,
) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    await nursery.start(
        partial(
            serve_smtp,
            listeners,
            sink,
            HOST,
            session_limits or SessionLimits(),
            listener_limits=limits or ListenerLimits(idle_timeout=idle_timeout),
            tls=tls,
            observer=observer,
        )
    )
    return port


@dataclass
class StoppableServer:
    """A listener in its own cancel scope: `stop()` is the shutdown signal."""

    port: int
    scope: trio.CancelScope
    stopped: trio.Event

    def stop(self) -> None:
        self.scope.cancel()


async def start_stoppable_server(
    nursery: trio.Nursery,
    sink: MemorySink,
    limits: ListenerLimits,
    session_limits: SessionLimits | None = None,
) -> StoppableServer:
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[int]) -> None:
        try:
            with scope:
                async with trio.open_nursery() as inner:
                    task_status.started(
                        await start_server(
                            inner, sink, limits=limits, session_limits=session_limits
                        )
                    )
        finally:
            stopped.set()

    port = await nursery.start(run)
    return StoppableServer(port, scope, stopped)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def port(nursery: trio.Nursery, sink: MemorySink) -> int:
    return await start_server(nursery, sink)


SmtpReply = tuple[int, bytes]


def smtplib_transaction(
    port: int, sender: str, recipients: list[str], data: bytes
) -> tuple[list[SmtpReply], SmtpReply | None]:
    """One mail transaction with Python's smtplib: the RCPT replies and the final DATA reply."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=5) as client:
        client.ehlo()
        client.mail(sender)
        rcpt_replies = [client.rcpt(recipient) for recipient in recipients]
        if not any(code == 250 for code, _ in rcpt_replies):
            return rcpt_replies, None
        return rcpt_replies, client.data(data)


async def send_mail(
    port: int, recipients: list[str], data: bytes = b"Subject: hi\r\n\r\nhello\r\n"
) -> tuple[list[SmtpReply], SmtpReply | None]:
    return await trio.to_thread.run_sync(
        smtplib_transaction, port, "sender@example.org", recipients, data
    )


class RawClient:
    """A socket speaking SMTP by hand, for what smtplib will not send."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def reply(self) -> bytes:
        """The next complete reply, all its lines."""
        lines = []
        while True:
            line = await self._line()
            lines.append(line)
            if line[3:4] == b" ":
                return b"".join(lines)

    async def replies(self, count: int) -> list[bytes]:
        return [await self.reply() for _ in range(count)]

    async def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        while data := await self._stream.receive_some(4096):
            self._buffer += data
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    async def ending(self) -> tuple[bytes, str]:
        """Everything until the server ends the connection, and how: "closed" or "reset"."""
        try:
            return await self.rest(), "closed"
        except trio.BrokenResourceError:
            rest = bytes(self._buffer)
            self._buffer.clear()
            return rest, "reset"

    async def aclose(self) -> None:
        await self._stream.aclose()

    def reset(self) -> None:
        """Make closing the connection reset it (RST) rather than end it."""
        self._stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) == -1:
            data = await self._stream.receive_some(4096)
            assert data, f"connection closed; unread {bytes(self._buffer)!r}"
            self._buffer += data
        line = bytes(self._buffer[: end + 2])
        del self._buffer[: end + 2]
        return line


def codes(replies: list[bytes]) -> list[str]:
    """Reply code and enhanced code of each reply ("250 2.1.0"), the code alone if it has none."""
    statuses = []
    for reply in replies:
        code, _, text = reply.split(b"\r\n")[-2].decode().partition(" ")
        enhanced = text.split(" ")[0]
        statuses.append(
            f"{code} {enhanced}" if re.fullmatch(r"[245]\.\d+\.\d+", enhanced) else code
        )
    return statuses


async def test_message_arrives_byte_exact(port: int, sink: MemorySink) -> None:
    data = (
        b"From: sender@example.org\r\nSubject: bytes\r\n\r\n"
        b".leading dot\r\n..two dots\r\n.\r\n"
        b"\xc3\xa9t\xc3\xa9 8-bit \x80\xff\r\ntrailing space \r\n\r\n"
    )
    with trio.fail_after(TIMEOUT):
        rcpt_replies, data_reply = await send_mail(
            port, ["alice@agents.test", "Bob@Agents.Test."], data
        )
    assert rcpt_replies == [(250, b"2.1.5 Ok"), (250, b"2.1.5 Ok")]
    assert data_reply == (250, b"2.0.0 Ok: queued as msg_1")
    recipients = [Mailbox("alice", "agents.test"), Mailbox("Bob", "agents.test")]
    expected = Envelope("client.example", "sender@example.org", recipients, data)
    assert sink.stored == [(expected, "127.0.0.1")]


async def test_unknown_agents_and_foreign_domains_are_refused(port: int, sink: MemorySink) -> None:
    recipients = ["nobody@agents.test", "alice@elsewhere.test", "alice@[127.0.0.1]"]
    with trio.fail_after(TIMEOUT):
        rcpt_replies, data_reply = await send_mail(port, recipients)
    assert rcpt_replies == [
        (550, b"5.1.1 <nobody@agents.test>: no such agent here"),
        (550, b"5.7.1 <alice@elsewhere.test>: relay access denied"),
        (550, b"5.7.1 <alice@[127.0.0.1]>: relay access denied"),
    ]
    assert data_reply is None
    assert [mailbox.domain for mailbox in sink.checked] == ["agents.test", "elsewhere.test"]
    assert sink.stored == []


async def test_storage_failure_asks_the_client_to_retry(port: int, sink: MemorySink) -> None:
    sink.storage_failure = MessageNotStored("database is locked")
    with trio.fail_after(TIMEOUT):
        _, data_reply = await send_mail(port, ["alice@agents.test"])
    assert data_reply == (451, b"4.3.0 Temporary storage failure, try again later")
    assert sink.stored == []


async def test_full_storage_is_answered_452_4_3_1(port: int, sink: MemorySink) -> None:
    """As Postfix answers when its queue's file system is full (RFC 3463: mail system full)."""
    sink.storage_failure = StorageFull("database.url: cannot write sqlite:///e2a.db: disk full")
    with trio.fail_after(TIMEOUT):
        _, data_reply = await send_mail(port, ["alice@agents.test"])
    assert data_reply == (452, b"4.3.1 Insufficient system storage, try again later")
    assert sink.stored == []


async def test_a_sink_bug_is_answered_451_and_the_listener_keeps_serving(
    port: int, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    sink.storage_failure = RuntimeError("bug in the sink")
    with trio.fail_after(TIMEOUT):
        _, data_reply = await send_mail(port, ["alice@agents.test"], b"secret body\r\n")
        assert data_reply == (451, b"4.3.0 Temporary storage failure, try again later")
        sink.storage_failure = None
        _, data_reply = await send_mail(port, ["alice@agents.test"])
    assert data_reply == (250, b"2.0.0 Ok: queued as msg_1")
    failure = next(record for record in caplog.records if record.exc_info)
    assert "127.0.0.1" in failure.getMessage()
    assert all("secret body" not in record.getMessage() for record in caplog.records)


async def test_a_recipient_check_bug_is_answered_451_and_logged_without_a_reply_token(
    port: int, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.check_failure = RuntimeError("bug in the sink")
    token = "k3q7d2m5xw4hfz6abcdefghijk"  # a reply address's token is a secret
    with trio.fail_after(TIMEOUT):
        rcpt_replies, _ = await send_mail(port, ["alice@agents.test"])
        reply_replies, _ = await send_mail(port, [f"approvals+{token}@{HOST}"])
    assert rcpt_replies == [(451, b"4.3.0 Temporary failure, try again later")]
    assert reply_replies == rcpt_replies
    failures = [record.getMessage() for record in caplog.records if record.exc_info]
    assert failures[-1] == f"SMTP client 127.0.0.1: checking <approvals+…@{HOST}> failed"
    assert token not in caplog.text


async def test_session_is_logged_in_one_line_without_the_body(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    with trio.fail_after(TIMEOUT):
        await send_mail(port, ["alice@agents.test", "nobody@agents.test"], b"secret body\r\n")
        await trio.testing.wait_all_tasks_blocked()
    [record] = caplog.records
    assert record.getMessage() == (
        "SMTP session client=127.0.0.1 helo='client.example' tls=no "
        "messages=[from=<sender@example.org> to=<alice@agents.test> queued as msg_1] "
        "refused=[<nobody@agents.test> 550 5.1.1] end=221 2.0.0 mx.agents.test closing connection"
    )


async def test_messages_refused_for_their_content_are_logged_with_their_envelope(
    nursery: trio.Nursery, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    """A message read to its end and refused (bare line endings, size; by DATA or BDAT) is
    in the session's line like every other message: who sent it to whom, and the reply."""
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    limits = SessionLimits(max_message_bytes=50)
    await nursery.start(partial(serve_smtp, listeners, sink, HOST, limits))
    transaction = b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@agents.test>\r\n"
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO client.example\r\n" + transaction + b"DATA\r\n")
        await client.replies(4)
        await client.send(b"Subject: hi\r\n\r\nsecret\nbody\r\n.\r\n")
        assert codes([await client.reply()]) == ["550 5.6.11"]
        await client.send(transaction + b"BDAT 60 LAST\r\n" + b"x" * 58 + b"\r\nQUIT\r\n")
        replies = codes(await client.replies(4))
        assert replies == ["250 2.1.0", "250 2.1.5", "552 5.3.4", "221 2.0.0"]
        await client.rest()
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
    [record] = caplog.records
    refused = "from=<sender@example.org> to=<alice@agents.test> refused {}"
    assert record.getMessage() == (
        "SMTP session client=127.0.0.1 helo='client.example' tls=no "
        f"messages=[{refused.format('550 5.6.11')}; {refused.format('552 5.3.4')}] refused=[] "
        "end=221 2.0.0 mx.agents.test closing connection"
    )
    assert sink.stored == []


async def test_a_long_session_logs_a_line_for_each_full_set_of_entries(
    port: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MTA keeping its connection for many messages: the session's list is logged and
    emptied each time it holds SESSION_LOG_ENTRIES, nothing left out, the rest at the end."""
    monkeypatch.setattr(smtp_server, "SESSION_LOG_ENTRIES", 3)
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    transaction = b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@agents.test>\r\n"
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO client.example\r\n")
        await client.reply()
        for number in range(4):
            refused = b"RCPT TO:<nobody@agents.test>\r\n" if number == 1 else b""
            await client.send(transaction + refused + b"DATA\r\n")
            await client.replies(4 if refused else 3)
            await client.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
            assert (await client.reply()).startswith(b"250 ")
        await client.send(b"QUIT\r\n")
        await client.rest()
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
    lines = [record.getMessage() for record in caplog.records]
    prefix = "SMTP session client=127.0.0.1 helo='client.example' tls=no "
    accepted = "from=<sender@example.org> to=<alice@agents.test> queued as msg_{}"
    assert lines == [
        f"{prefix}messages=[{accepted.format(1)}; {accepted.format(2)}] "
        "refused=[<nobody@agents.test> 550 5.1.1] end=continues",
        f"{prefix}messages=[{accepted.format(3)}; {accepted.format(4)}] refused=[] "
        "end=221 2.0.0 mx.agents.test closing connection",
    ]


async def test_idle_client_is_disconnected(nursery: trio.Nursery, sink: MemorySink) -> None:
    port = await start_server(nursery, sink, idle_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        assert await client.reply() == b"220 mx.agents.test ESMTP e2a\r\n"
        await client.send(b"EHLO client.example\r\n")
        await client.reply()
        assert await client.rest() == (
            b"421 4.4.2 mx.agents.test Idle timeout, closing connection\r\n"
        )


async def drip(client: RawClient, data: bytes, interval: float) -> None:
    """Send `data` a byte at a time, `interval` seconds apart, until the server hangs up."""
    for byte in data:
        try:
            await client.send(bytes([byte]))
        except trio.BrokenResourceError:
            return
        await trio.sleep(interval)


SLOW = ListenerLimits(idle_timeout=1.0, command_timeout=0.6, data_timeout=0.8)
"""Deadlines that a client dripping a byte every 0.05 s never meets, while it is never idle."""


async def test_a_command_dripped_byte_by_byte_meets_its_deadline(
    nursery: trio.Nursery, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    port = await start_server(nursery, sink, limits=SLOW)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        started = trio.current_time()
        command = b"EHLO " + b"x" * 100 + b"\r\n"  # 5.3 s to drip in full
        nursery.start_soon(drip, client, command, 0.05)
        assert await client.rest() == (
            b"421 4.4.2 mx.agents.test Command not received in time, closing connection\r\n"
        )
        # The command deadline, not the idle one (which a byte every 0.05 s keeps off), and
        # long before the whole command is in; generous above for a loaded machine.
        assert 0.6 <= trio.current_time() - started < len(command) * 0.05 / 2
        await trio.testing.wait_all_tasks_blocked()  # the session logs once it has closed
    assert "end=command timeout" in caplog.text


async def test_each_command_gets_its_own_deadline(nursery: trio.Nursery, sink: MemorySink) -> None:
    port = await start_server(nursery, sink, limits=SLOW)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        for _ in range(6):  # 2.4 s in all, each command well within its 0.6 s
            await trio.sleep(0.4)
            await client.send(b"NOOP\r\n")
            assert codes([await client.reply()]) == ["250 2.0.0"]
        await client.send(b"QUIT\r\n")
        assert codes([await client.reply()]) == ["221 2.0.0"]


async def test_a_message_dripped_line_by_line_meets_its_deadline(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    port = await start_server(nursery, sink, limits=SLOW)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<s@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\nDATA\r\n"
        )
        assert codes(await client.replies(4))[-1] == "354"
        started = trio.current_time()
        for _ in range(40):  # a whole line every 0.05 s: never idle, never a slow command
            try:
                await client.send(b"Subject: slowly\r\n")
            except trio.BrokenResourceError:
                break
            await trio.sleep(0.05)
        assert await client.rest() == (
            b"421 4.4.2 mx.agents.test Message not received in time, closing connection\r\n"
        )
        # The data deadline (0.8 s), while the lines still came (2 s of them).
        assert 0.8 <= trio.current_time() - started < 2
    assert sink.stored == []


async def test_bdat_chunks_and_the_commands_between_them_share_one_deadline(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    port = await start_server(nursery, sink, limits=SLOW)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@agents.test>\r\n"
        )
        await client.replies(3)
        started = trio.current_time()
        replies = b""
        for _ in range(40):  # a small chunk every 0.05 s, each answered at once
            try:
                await client.send(b"BDAT 3\r\nhi\n")
                replies += await client.reply()
            except (trio.BrokenResourceError, AssertionError):
                break
            await trio.sleep(0.05)
        replies += await client.rest()
        assert replies.endswith(
            b"421 4.4.2 mx.agents.test Message not received in time, closing connection\r\n"
        )
        # One deadline (0.8 s) for all the chunks, while they still came (2 s of them).
        assert 0.8 <= trio.current_time() - started < 2
    assert sink.stored == []


async def test_a_message_within_its_deadline_is_taken_after_slow_commands(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    port = await start_server(nursery, sink, limits=SLOW)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        for command in [b"EHLO client.example", b"MAIL FROM:<s@example.org>", b"DATA"]:
            if command == b"DATA":
                await client.send(b"RCPT TO:<alice@agents.test>\r\n")
                await client.reply()
            await trio.sleep(0.4)
            await client.send(command + b"\r\n")
            await client.reply()
        await trio.sleep(0.5)
        await client.send(b"Subject: in time\r\n\r\nbody\r\n.\r\n")
        assert codes([await client.reply()]) == ["250 2.0.0"]
    assert [envelope.data for envelope, _ in sink.stored] == [b"Subject: in time\r\n\r\nbody\r\n"]


async def test_pipelined_commands_are_answered_in_order(port: int, sink: MemorySink) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\nRCPT TO:<nobody@agents.test>\r\n"
            b"RCPT TO:<bob@agents.test>\r\nDATA\r\n"
        )
        replies = await client.replies(6)
        await client.send(b"pipelined\r\n.\r\nNOOP\r\nQUIT\r\n")
        replies += await client.replies(3)
        assert await client.rest() == b""
    assert codes(replies) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "250 2.0.0",
        "221 2.0.0",
    ]
    [(envelope, _)] = sink.stored
    assert envelope.data == b"pipelined\r\n"
    assert [mailbox.local for mailbox in envelope.recipients] == ["alice", "bob"]


async def test_a_large_message_in_pipelined_bdat_chunks_arrives_byte_exact(
    port: int, sink: MemorySink
) -> None:
    """CHUNKING over a real socket: 300 KB in three chunks sent in one go behind the envelope,
    the octets split across reads however TCP likes."""
    body = b"".join(b"line %06d with no dot-stuffing .\r\n.\r\n" % n for n in range(7000))
    chunks = [body[:100_000], body[100_000:200_000], body[200_000:]]
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\n"
            + b"".join(
                b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if n == 2 else b"") + chunk
                for n, chunk in enumerate(chunks)
            )
            + b"QUIT\r\n"
        )
        replies = await client.replies(7)
        assert await client.rest() == b""
    assert codes(replies) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0",
        "250 2.0.0",
        "250 2.0.0",
        "221 2.0.0",
    ]
    assert replies[3] == b"250 2.0.0 100000 octets received\r\n"
    assert replies[5] == b"250 2.0.0 Ok: queued as msg_1\r\n"
    assert b"CHUNKING" in replies[0]
    [(envelope, _)] = sink.stored
    assert envelope.data == body


async def test_chunks_pipelined_after_a_refused_one_are_dropped_without_a_cutoff(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    """An MTA that pipelines its BDAT chunks (RFC 3030) for a message over the size limit
    hears 552 for the chunk that went over and 503 for the rest, at once, and can go on to
    deliver its next message in the same session: the chunks it had already sent are not
    errors, which would delay their replies and end the session with 421."""
    port = await start_server(
        nursery,
        sink,
        session_limits=SessionLimits(max_message_bytes=1000, errors_before_delay=1, max_errors=5),
    )
    envelope = b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@agents.test>\r\n"
    chunks = b"BDAT 400\r\n" + b"x" * 398 + b"\r\n"
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO client.example\r\n" + envelope + chunks * 9 + b"BDAT 0 LAST\r\n")
        with trio.fail_after(0.5):  # no error delay
            replies = await client.replies(13)
        assert codes(replies) == [
            *["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0", "552 5.3.4"],
            *["503 5.5.1"] * 7,
        ]
        await client.send(envelope + b"BDAT 4 LAST\r\nhi\r\nQUIT\r\n")
        replies = await client.replies(4)
        assert await client.rest() == b""
    assert codes(replies) == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "221 2.0.0"]
    assert [envelope.data for envelope, _ in sink.stored] == [b"hi\r\n"]


async def test_smuggled_end_of_data_is_refused(port: int, sink: MemorySink) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\nDATA\r\n"
        )
        await client.replies(4)
        await client.send(
            b"Subject: real\r\n\r\nreal\n.\n"
            b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<bob@agents.test>\r\nDATA\r\n"
            b"Subject: forged\r\n\r\nforged\r\n.\r\nQUIT\r\n"
        )
        replies = await client.replies(2)
        assert await client.rest() == b""
    assert replies[0] == b"550 5.6.11 Bare CR or LF not allowed; lines must end with CRLF\r\n"
    assert codes(replies)[1] == "221 2.0.0"
    assert sink.stored == []
    assert [mailbox.local for mailbox in sink.checked] == ["alice"]


async def test_client_vanishing_mid_message_stores_nothing(port: int, sink: MemorySink) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\nDATA\r\n"
        )
        await client.replies(4)
        await client.send(b"Subject: cut off\r\n\r\nhalf a mess")
        await client.aclose()
        _, data_reply = await send_mail(port, ["bob@agents.test"])
    assert data_reply == (250, b"2.0.0 Ok: queued as msg_1")
    assert [envelope.recipients for envelope, _ in sink.stored] == [[Mailbox("bob", "agents.test")]]


async def test_garbage_is_refused_and_the_session_continues(port: int) -> None:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"\xff\xfe\x00garbage\r\nGET / HTTP/1.1\r\n\r\nNOOP\r\n")
        replies = await client.replies(4)
    assert codes(replies) == ["500 5.5.2", "500 5.5.2", "500 5.5.2", "250 2.0.0"]


async def test_sessions_run_concurrently(port: int) -> None:
    with trio.fail_after(TIMEOUT):
        idle = await RawClient.connect(port)
        await idle.reply()
        await idle.send(b"EHLO slow.example\r\nMAIL FROM:<sender@example.org>\r\n")
        _, data_reply = await send_mail(port, ["alice@agents.test"])
        assert data_reply is not None
        assert data_reply[0] == 250
        await idle.send(b"QUIT\r\n")
        assert codes(await idle.replies(3)) == ["250", "250 2.1.0", "221 2.0.0"]


SHUTDOWN = b"421 4.3.2 mx.agents.test Service shutting down, closing connection\r\n"


async def test_shutdown_closes_idle_connections_with_421(sink: MemorySink) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as server:
            port = await start_server(server, sink)
            client = await RawClient.connect(port)
            await client.reply()
            await client.send(b"EHLO client.example\r\n")
            await client.reply()
            server.cancel_scope.cancel()
        assert await client.rest() == SHUTDOWN
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_bad_hostname_fails_before_serving(nursery: trio.Nursery, sink: MemorySink) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with pytest.raises(ValueError, match="SMTP hostname"):
        await nursery.start(serve_smtp, listeners, sink, "bad host\r\n", SessionLimits())
    for listener in listeners:
        await listener.aclose()


async def test_shutdown_lets_a_message_being_sent_finish(
    nursery: trio.Nursery, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    """A message being sent is finished; the log says what the stop waits for, and how long
    at most (an operator watching a stop that takes 30 s knows why)."""
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    server = await start_stoppable_server(nursery, sink, ListenerLimits(shutdown_grace_period=5))
    with trio.fail_after(TIMEOUT):
        sending = await RawClient.connect(server.port)
        idle = await RawClient.connect(server.port)
        await idle.reply()
        await sending.reply()
        await sending.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\nDATA\r\nSubject: first half\r\n"
        )
        assert codes(await sending.replies(4)) == ["250", "250 2.1.0", "250 2.1.5", "354"]
        server.stop()
        assert await idle.rest() == SHUTDOWN
        assert (
            "stopping: 1 SMTP session in flight gets up to 5 s to finish its message "
            "(smtp.shutdown_grace_seconds)"
        ) in caplog.text
        await sending.send(b"\r\nsecond half\r\n.\r\nNOOP\r\n")
        assert codes([await sending.reply()]) == ["250 2.0.0"]
        assert await sending.rest() == SHUTDOWN
        await server.stopped.wait()
    [(envelope, _)] = sink.stored
    assert envelope.data == b"Subject: first half\r\n\r\nsecond half\r\n"


async def test_shutdown_waits_for_the_commit_in_progress(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    server = await start_stoppable_server(nursery, sink, ListenerLimits(shutdown_grace_period=5))
    sink.gate = trio.Event()
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\nDATA\r\nhi\r\n.\r\n"
        )
        await client.replies(4)
        await sink.committing.wait()
        server.stop()
        await trio.sleep(0.1)
        assert not server.stopped.is_set()
        sink.gate.set()
        assert codes([await client.reply()]) == ["250 2.0.0"]
        assert await client.rest() == SHUTDOWN
        await server.stopped.wait()
    assert len(sink.stored) == 1


async def test_a_transaction_outlasting_the_grace_period_is_abandoned(
    nursery: trio.Nursery, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    server = await start_stoppable_server(nursery, sink, ListenerLimits(shutdown_grace_period=0.3))
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.port)
        await client.reply()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n"
            b"RCPT TO:<alice@agents.test>\r\nDATA\r\nthe client stalls here\r\n"
        )
        await client.replies(4)
        started = trio.current_time()
        server.stop()
        assert await client.rest() == SHUTDOWN
        await server.stopped.wait()
        assert 0.3 <= trio.current_time() - started < 3
    assert sink.stored == []
    assert "end=shutdown grace period expired" in caplog.text


class Refusals:
    """An observer that keeps the reasons of refusals."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def session_started(self) -> None:
        pass

    def session_ended(self) -> None:
        pass

    def message_accepted(self) -> None:
        pass

    def mail_rejected(self, reason: str) -> None:
        self.reasons.append(reason)


FILLER = b"".join(b"line %05d of a message that fills memory\r\n" % n for n in range(2000))
"""A message of 2000 lines, 86,000 octets."""
TRANSACTION = b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@agents.test>\r\nDATA\r\n"


async def holding_a_message(port: int) -> RawClient:
    """A client that has sent all of FILLER but its terminator, read by the server."""
    client = await RawClient.connect(port)
    await client.reply()
    await client.send(b"EHLO first.example\r\n" + TRANSACTION)
    assert codes(await client.replies(4)) == ["250", "250 2.1.0", "250 2.1.5", "354"]
    await client.send(FILLER)
    await trio.testing.wait_all_tasks_blocked()
    return client


async def test_a_message_the_memory_cannot_take_is_deferred_until_another_is_done(
    nursery: trio.Nursery, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    """While one session holds most of smtp.max_message_memory_bytes, another's message that
    outgrows the rest is read to its end and answered 452 4.3.1 (counted, logged); its session
    goes on, and once the first message is stored, intact, the retry is taken."""
    refusals = Refusals()
    limits = ListenerLimits(max_message_memory=120_000)
    port = await start_server(nursery, sink, limits=limits, observer=refusals)
    second_message = FILLER[: len(FILLER) // 2]
    with trio.fail_after(TIMEOUT):
        first = await holding_a_message(port)
        second = await RawClient.connect(port)
        await second.reply()
        await second.send(b"EHLO second.example\r\n" + TRANSACTION + second_message + b".\r\n")
        replies = await second.replies(5)
        assert codes(replies) == ["250", "250 2.1.0", "250 2.1.5", "354", "452 4.3.1"]
        assert replies[-1] == b"452 4.3.1 Insufficient system storage, try again later\r\n"
        await second.send(b"NOOP\r\n")
        assert codes([await second.reply()]) == ["250 2.0.0"]
        await first.send(b".\r\nQUIT\r\n")
        assert codes(await first.replies(2)) == ["250 2.0.0", "221 2.0.0"]
        await second.send(TRANSACTION + second_message + b".\r\nQUIT\r\n")
        assert codes(await second.replies(5)) == [
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0",
        ]
    assert [envelope.data for envelope, _ in sink.stored] == [FILLER, second_message]
    assert refusals.reasons == ["memory_limit"]
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        "SMTP client 127.0.0.1: message refused with 452 4.3.1: the messages being received hold "
    )
    assert "of the 120000 octets allowed (smtp.max_message_memory_bytes)" in warning.getMessage()


async def test_data_is_deferred_at_once_when_its_declared_size_does_not_fit(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    port = await start_server(nursery, sink, limits=ListenerLimits(max_message_memory=120_000))
    with trio.fail_after(TIMEOUT):
        first = await holding_a_message(port)
        second = await RawClient.connect(port)
        await second.reply()
        await second.send(
            b"EHLO second.example\r\nMAIL FROM:<sender@example.org> SIZE=40000\r\n"
            b"RCPT TO:<alice@agents.test>\r\nDATA\r\nRSET\r\n"
        )
        assert codes(await second.replies(5)) == [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "452 4.3.1",
            "250 2.0.0",
        ]
        await first.send(b".\r\n")
        assert codes([await first.reply()]) == ["250 2.0.0"]
    assert [envelope.data for envelope, _ in sink.stored] == [FILLER]


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_a_client_gone_mid_message_gives_its_memory_back(
    nursery: trio.Nursery, sink: MemorySink, reset: bool
) -> None:
    """Whether the client closes its side or the connection breaks (a reset: the session
    ends on an error), what it held is free for the next message at once."""
    port = await start_server(nursery, sink, limits=ListenerLimits(max_message_memory=120_000))
    with trio.fail_after(TIMEOUT):
        gone = await holding_a_message(port)
        if reset:
            gone.reset()
        await gone.aclose()
        await trio.testing.wait_all_tasks_blocked()
        _, data_reply = await send_mail(port, ["bob@agents.test"], FILLER)
    assert data_reply == (250, b"2.0.0 Ok: queued as msg_1")
    assert [envelope.data for envelope, _ in sink.stored] == [FILLER]


async def test_sessions_over_the_total_limit_are_turned_away(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    port = await start_server(nursery, sink, limits=ListenerLimits(max_sessions=2))
    with trio.fail_after(TIMEOUT):
        first, second = await RawClient.connect(port), await RawClient.connect(port)
        assert codes([await first.reply(), await second.reply()]) == ["220", "220"]
        third = await RawClient.connect(port)
        assert await third.rest() == (
            b"421 4.7.0 mx.agents.test Too many connections, try again later\r\n"
        )
        await first.send(b"QUIT\r\n")
        await first.rest()
        assert await greeting_when_admitted(port) == b"220 mx.agents.test ESMTP e2a\r\n"


async def greeting_when_admitted(port: int, local_address: str | None = None) -> bytes:
    """Connect until the server has noticed a slot is free; the first reply then."""
    while True:
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local_address)
        client = RawClient(stream)
        reply = await client.reply()
        if reply.startswith(b"220"):
            return reply
        await client.aclose()
        await trio.sleep(0.01)


async def test_sessions_over_the_per_address_limit_are_turned_away(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    port = await start_server(nursery, sink, limits=ListenerLimits(max_sessions_per_ip=1))
    with trio.fail_after(TIMEOUT):
        first = await RawClient.connect(port)
        await first.reply()
        second = await RawClient.connect(port)
        assert await second.rest() == (
            b"421 4.7.0 mx.agents.test Too many connections from your address\r\n"
        )
        other_address = RawClient(
            await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
        )
        assert codes([await other_address.reply()]) == ["220"]


def test_listener_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_sessions_per_ip"):
        ListenerLimits(max_sessions_per_ip=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        ListenerLimits(idle_timeout=float("inf"))
    with pytest.raises(ValueError, match="data_timeout"):
        ListenerLimits(data_timeout=0)
    with pytest.raises(ValueError, match="network prefixes"):
        ListenerLimits(ipv4_network_prefix=33)
    with pytest.raises(ValueError, match="network prefixes"):
        ListenerLimits(ipv6_network_prefix=129)


async def test_sessions_over_the_per_network_limit_are_turned_away(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    limits = ListenerLimits(max_sessions_per_network=2)
    port = await start_server(nursery, sink, limits=limits)

    async def from_address(address: str) -> RawClient:
        return RawClient(await trio.open_tcp_stream("127.0.0.1", port, local_address=address))

    with trio.fail_after(TIMEOUT):
        first, second = await from_address("127.0.0.1"), await from_address("127.0.0.2")
        assert codes([await first.reply(), await second.reply()]) == ["220", "220"]
        third = await from_address("127.0.0.3")
        assert await third.rest() == (
            b"421 4.7.0 mx.agents.test Too many connections from your network\r\n"
        )
        other_network = await from_address("127.0.1.1")
        assert codes([await other_network.reply()]) == ["220"]
        await second.send(b"QUIT\r\n")
        await second.rest()
        assert (await greeting_when_admitted(port, "127.0.0.3")).startswith(b"220 ")


@pytest.mark.parametrize(
    ("peer", "network"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),
        ("fe80::1:2%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_client_network(peer: str, network: str) -> None:
    assert client_network(peer, ListenerLimits()) == network


def test_client_network_prefixes_are_configurable() -> None:
    limits = ListenerLimits(ipv4_network_prefix=32, ipv6_network_prefix=48)
    assert client_network("192.0.2.77", limits) == "192.0.2.77/32"
    assert client_network("2001:db8:1:2:3:4:5:6", limits) == "2001:db8:1::/48"


# STARTTLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    """The server's context, loaded the way the gateway loads smtp.tls_cert/tls_key."""
    issued = ca.issue_cert(HOST, "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return server_tls_context(cert, key)


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_port(nursery: trio.Nursery, sink: MemorySink, server_tls: ssl.SSLContext) -> int:
    return await start_server(nursery, sink, tls=server_tls)


def smtplib_over_tls(port: int, context: ssl.SSLContext, data: bytes) -> tuple[bool, SmtpReply]:
    """STARTTLS with certificate verification, then one 8-bit message; (offered, DATA reply)."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=5) as client:
        client.ehlo()
        offered = client.has_extn("starttls")
        client.starttls(context=context)
        client.ehlo()
        assert not client.has_extn("starttls")
        client.mail("sender@example.org", ["BODY=8BITMIME", "SMTPUTF8"])
        client.rcpt("alice@agents.test")
        return offered, client.data(data)


async def test_starttls_with_smtplib(
    tls_port: int,
    sink: MemorySink,
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    data = "Subject: caf\u00e9\r\n\r\n8-bit body \u00e9\r\n".encode()
    with trio.fail_after(TIMEOUT):
        offered, reply = await trio.to_thread.run_sync(smtplib_over_tls, tls_port, client_tls, data)
        await trio.testing.wait_all_tasks_blocked()
    assert offered
    assert reply == (250, b"2.0.0 Ok: queued as msg_1")
    assert sink.stored[0][0].data == data
    assert "tls=TLSv1.3" in caplog.text


async def test_starttls_is_not_offered_without_a_certificate(port: int) -> None:
    def ehlo() -> bool:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.ehlo()
            return client.has_extn("starttls")

    with trio.fail_after(TIMEOUT):
        assert not await trio.to_thread.run_sync(ehlo)


async def tls_client(
    port: int,
    context: ssl.SSLContext,
    pipelined: bytes,
    stream: trio.SocketStream | None = None,
) -> tuple[bytes, trio.SSLStream[trio.SocketStream]]:
    """Greeted, EHLO'd, STARTTLS (with `pipelined` in the same packet), handshake done; over
    `stream` if given, else a new connection to `port`."""
    if stream is None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    plain = RawClient(stream)
    await plain.reply()
    await plain.send(b"EHLO client.example\r\n")
    await plain.reply()
    await plain.send(b"STARTTLS\r\n" + pipelined)
    ready = await plain.reply()
    secure = trio.SSLStream(stream, context, server_hostname=HOST)
    await secure.do_handshake()
    return ready, secure


async def test_commands_pipelined_after_starttls_are_discarded(
    tls_port: int, sink: MemorySink, client_tls: ssl.SSLContext
) -> None:
    """CVE-2011-0411 / CVE-2024-34083: plaintext injected before the handshake never runs."""
    injected = (
        b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@agents.test>\r\nDATA\r\n"
        b"Subject: injected\r\n\r\nforged\r\n.\r\n"
    )
    with trio.fail_after(TIMEOUT):
        ready, secure = await tls_client(tls_port, client_tls, injected)
        assert ready == b"220 2.0.0 Ready to start TLS\r\n"
        client = RawClient(secure)  # type: ignore[arg-type]
        await client.send(b"RCPT TO:<alice@agents.test>\r\nEHLO client.example\r\nQUIT\r\n")
        replies = await client.replies(3)
    assert codes(replies) == ["503 5.5.1", "250", "221 2.0.0"]
    assert b"STARTTLS" not in replies[1]
    assert sink.checked == []
    assert sink.stored == []


async def test_a_failed_handshake_ends_only_that_session(
    tls_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(tls_port)
        await client.reply()
        await client.send(b"EHLO client.example\r\nSTARTTLS\r\n")
        await client.replies(2)
        await client.send(b"this is not a TLS ClientHello\r\n")
        assert await client.rest() == b""
        _, data_reply = await send_mail(tls_port, ["alice@agents.test"])
    assert data_reply == (250, b"2.0.0 Ok: queued as msg_1")
    assert "end=TLS handshake failed" in caplog.text


async def test_a_stalled_handshake_is_ended_after_the_idle_timeout(
    nursery: trio.Nursery,
    sink: MemorySink,
    server_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that takes up STARTTLS and then says nothing holds its session slot no longer
    than an idle client does, and the log says why the session ended."""
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    limits = ListenerLimits(idle_timeout=0.5, max_sessions_per_ip=1)
    port = await start_server(nursery, sink, tls=server_tls, limits=limits)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO client.example\r\nSTARTTLS\r\n")
        await client.replies(2)
        assert await client.rest() == b""
        await trio.testing.wait_all_tasks_blocked()
        _, data_reply = await send_mail(port, ["alice@agents.test"])
    assert data_reply == (250, b"2.0.0 Ok: queued as msg_1")
    assert "end=TLS handshake timed out after 0.5 s" in caplog.text


def old_tls_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that speaks `version` alone (OpenSSL's security level lowered to let it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1", "TLSv1.1"]
)
async def test_tls_before_1_2_is_refused_and_the_session_slot_freed(
    nursery: trio.Nursery,
    sink: MemorySink,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    version: ssl.TLSVersion,
) -> None:
    """STARTTLS takes TLS 1.2 and 1.3 only: an older client's handshake fails, the log says so
    in one line (no traceback), and the client's one session slot is free again at once."""
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    limits = ListenerLimits(max_sessions_per_ip=1)
    port = await start_server(nursery, sink, tls=server_tls, limits=limits)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(trio.BrokenResourceError):
            await tls_client(port, old_tls_client(version), b"")
        await wait_for_log(caplog, "end=TLS handshake failed")
        offered, reply = await trio.to_thread.run_sync(
            smtplib_over_tls, port, client_tls, b"Subject: hi\r\n\r\nhi\r\n"
        )
    assert offered and reply == (250, b"2.0.0 Ok: queued as msg_1")
    [failed] = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert "unsupported protocol" in failed.getMessage()
    assert failed.exc_info is None
    assert "tls=TLSv1.3" in caplog.text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl program")
async def test_a_client_cannot_renegotiate(
    tls_port: int, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS 1.2 client asking to renegotiate (a handshake's CPU for the server at each ask,
    without a new connection) is refused: the session ends, no command after it is run."""
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    script = "sleep 1; printf 'R\\n'; sleep 1; printf 'NOOP\\r\\n'; sleep 1"
    command = (
        f"({script}) | openssl s_client -connect 127.0.0.1:{tls_port} -starttls smtp -tls1_2 -crlf"
    )
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            command, shell=True, capture_stdout=True, capture_stderr=True, check=False
        )
        await wait_for_log(caplog, "tls=TLSv1.2")
    assert b"RENEGOTIATING" in done.stderr  # the client did ask
    assert b"250 2.0.0 Ok" not in done.stdout + done.stderr
    assert "end=connection lost" in caplog.text


def test_unusable_certificate_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        server_tls_context(tmp_path / "missing.pem", tmp_path / "missing.key")
    (tmp_path / "garbage.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"garbage\.pem"):
        server_tls_context(tmp_path / "garbage.pem", tmp_path / "garbage.pem")


def test_a_misplaced_certificate_or_key_is_named_alone_with_what_to_give(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """The usual mistakes (certbot's live directory given as a file, the two files swapped)
    name the one file that is wrong and what belongs there, not OpenSSL's `PEM lib`."""
    issued = ca.issue_cert(HOST)
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "fullchain.pem", live / "privkey.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))

    with pytest.raises(ValueError) as raised:
        server_tls_context(live, key)
    assert str(raised.value).startswith(f"{live} is a directory")
    assert "fullchain.pem" in str(raised.value)

    with pytest.raises(ValueError) as raised:
        server_tls_context(key, cert)
    assert str(raised.value).startswith(f"{key} holds no PEM certificate")

    with pytest.raises(ValueError) as raised:
        server_tls_context(cert, cert)
    assert str(raised.value).startswith(f"{cert} holds no PEM private key")

    combined = live / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    assert server_tls_context(combined, combined)


def test_a_passphrase_protected_key_is_named_without_asking_for_the_passphrase(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """The gateway starts unattended: an encrypted key is refused with a message saying so
    (OpenSSL would otherwise prompt for a passphrase on the terminal, or fail obscurely)."""
    issued = ca.issue_cert(HOST)
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    cert, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    key_file.write_bytes(encrypted)
    with pytest.raises(ValueError, match=r"key\.pem is protected by a passphrase") as raised:
        server_tls_context(cert, key_file)
    assert "openssl pkey" in str(raised.value)


class GatedRecipientSink(MemorySink):
    """Checking bob@ waits for `bob_checked` to be set."""

    def __init__(self) -> None:
        super().__init__()
        self.bob_checked = trio.Event()

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        if mailbox.local == "bob":
            await self.bob_checked.wait()
        return await super().check_recipient(mailbox)


async def test_pipelined_recipients_are_answered_together(nursery: trio.Nursery) -> None:
    """RFC 2920: the replies to MAIL and every RCPT of a pipelined transaction go out in one
    write once the recipients are checked, not one write per command."""
    sink = GatedRecipientSink()
    port = await start_server(nursery, sink)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO client.example\r\n")
        await client.reply()
        await client.send(
            b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@agents.test>\r\n"
            b"RCPT TO:<bob@agents.test>\r\nDATA\r\n"
        )
        early: list[bytes] = []
        with trio.move_on_after(0.5):
            early.append(await client.reply())
        assert early == []  # MAIL's and alice's replies wait for bob's check
        sink.bob_checked.set()
        assert codes(await client.replies(4)) == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"]
        await client.aclose()


# Errors and junk commands since the client last delivered mail


ERROR_DELAY = 0.1
"""The error delay the tests below use; the counts are the defaults."""
TOO_MANY_ERRORS = b"421 4.7.0 mx.agents.test Too many errors, closing connection\r\n"


def recipients_lines(addresses: list[str]) -> bytes:
    return b"".join(b"RCPT TO:<%s>\r\n" % address.encode() for address in addresses)


async def test_a_harvester_is_slowed_then_cut_off_before_its_other_recipients_are_looked_up(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    """Directory harvest: 5,000 pipelined RCPTs for unknown agents. The first ten refusals
    come at once, the next ten each after the error delay, then 421; only twenty addresses
    are ever looked up."""
    port = await start_server(nursery, sink, session_limits=SessionLimits(error_delay=ERROR_DELAY))
    probes = [f"guess{number}@agents.test" for number in range(5000)]
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO harvester.example\r\nMAIL FROM:<x@example.org>\r\n")
        await client.replies(2)
        started = trio.current_time()
        await client.send(recipients_lines(probes))
        refusals = await client.replies(20)
        elapsed = trio.current_time() - started
        assert await client.rest() == TOO_MANY_ERRORS
    assert codes(refusals) == ["550 5.1.1"] * 20
    assert elapsed >= 10 * ERROR_DELAY
    assert [mailbox.local for mailbox in sink.checked] == [f"guess{n}" for n in range(20)]


async def test_an_mta_with_stale_recipients_still_delivers_to_the_valid_ones(
    nursery: trio.Nursery, sink: MemorySink
) -> None:
    """A list server's transaction with 15 agents that no longer exist and 5 that do, stale
    ones first: slowed past the tenth refusal, never cut off; the message is stored, and the
    count starts over, so the next such transaction in the session is delivered too."""
    valid = ["alice@agents.test", "bob@agents.test"] + [f"a{n}@agents.test" for n in range(3)]
    sink.agents |= set(valid)
    stale = [f"left{number}@agents.test" for number in range(15)]
    port = await start_server(nursery, sink, session_limits=SessionLimits(error_delay=ERROR_DELAY))
    transaction = b"MAIL FROM:<list@example.org>\r\n" + recipients_lines(stale + valid)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO lists.example.org\r\n")
        await client.reply()
        for _ in range(2):
            await client.send(transaction + b"DATA\r\n")
            replies = codes(await client.replies(22))
            assert replies == ["250 2.1.0", *["550 5.1.1"] * 15, *["250 2.1.5"] * 5, "354"]
            await client.send(b"Subject: digest\r\n\r\nhello\r\n.\r\n")
            assert codes([await client.reply()]) == ["250 2.0.0"]
        await client.send(b"QUIT\r\n")
        assert codes([await client.reply()]) == ["221 2.0.0"]
    assert [len(envelope.recipients) for envelope, _ in sink.stored] == [5, 5]


async def test_a_noop_flood_is_cut_off(nursery: trio.Nursery, sink: MemorySink) -> None:
    """NOOP before each timeout cannot hold a connection: past 100 of them without mail, 421."""
    port = await start_server(nursery, sink)
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(port)
        await client.reply()
        await client.send(b"EHLO idler.example\r\n")
        await client.reply()
        for _ in range(100):
            await client.send(b"NOOP\r\n")
            assert codes([await client.reply()]) == ["250 2.0.0"]
        await client.send(b"NOOP\r\n")
        assert await client.rest() == (
            b"421 4.7.0 mx.agents.test Too many commands without mail, closing connection\r\n"
        )


async def test_shutdown_cuts_an_error_delay_short(nursery: trio.Nursery, sink: MemorySink) -> None:
    server = await start_stoppable_server(
        nursery,
        sink,
        ListenerLimits(shutdown_grace_period=5),
        SessionLimits(errors_before_delay=0, error_delay=60),
    )
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(server.port)
        await client.reply()
        await client.send(b"EHLO client.example\r\nMAIL FROM:<x@example.org>\r\n")
        await client.replies(2)
        await client.send(b"RCPT TO:<nobody@agents.test>\r\n")
        await trio.testing.wait_all_tasks_blocked()
        server.stop()
        rest = await client.rest()
        await server.stopped.wait()
    assert rest == b"550 5.1.1 <nobody@agents.test>: no such agent here\r\n" + SHUTDOWN


# The last reply reaches a client that pipelined past it


async def connect_slow_reader(port: int) -> trio.SocketStream:
    """A connection whose receive window holds a few hundred octets: like a distant client,
    it leaves most of the server's replies in the server's send buffer until it reads them."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> None:
    while text not in caplog.text:  # noqa: ASYNC110 (logging has no event to wait on)
        await trio.sleep(0.01)


HELP = b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"
ENDINGS = {
    "errors": (b"BOGUS\r\n" * 200, b"500 5.5.2 Unknown command\r\n" * 20 + TOO_MANY_ERRORS),
    "junk": (
        b"HELP\r\n" * 200,
        HELP * 100
        + b"421 4.7.0 mx.agents.test Too many commands without mail, closing connection\r\n",
    ),
    "quit": (
        b"HELP\r\n" * 50 + b"QUIT\r\n" + b"NOOP\r\n" * 200,
        HELP * 50 + b"221 2.0.0 mx.agents.test closing connection\r\n",
    ),
}


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_client_writing_past_the_last_reply_still_reads_it(
    nursery: trio.Nursery,
    sink: MemorySink,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    secure: bool,
    ending: str,
) -> None:
    """A client pipelines commands past a 421 (too many errors, too many commands without
    mail) or a QUIT, has read none of the replies when the session ends, and keeps writing
    after it: it still reads every reply, the last one included, and then the end of the
    connection (over TLS, close_notify), not a reset that would have thrown replies away."""
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    pipelined, replies = ENDINGS[ending]
    port = await start_server(
        nursery, sink, tls=server_tls, session_limits=SessionLimits(error_delay=0)
    )
    with trio.fail_after(TIMEOUT):
        stream = await connect_slow_reader(port)
        if secure:
            _, secure_stream = await tls_client(port, client_tls, b"", stream)
            client = RawClient(secure_stream)  # type: ignore[arg-type]
        else:
            client = RawClient(stream)
            await client.reply()
        await client.send(b"EHLO client.example\r\n")
        await client.reply()
        await client.send(pipelined)
        await wait_for_log(caplog, "SMTP session client=127.0.0.1")
        await client.send(b"NOOP\r\n" * 100)
        await trio.sleep(0.1)  # the server's answer to these lines, if any, has arrived
        assert await client.ending() == (replies, "closed")
