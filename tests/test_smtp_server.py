"""The trio SMTP listener over real sockets.

The sink here is an in-memory test double: these tests are about the I/O shell (sockets,
timeouts, failures, logging). The gateway's end-to-end tests use the real storage.
"""

from __future__ import annotations

import logging
import re
import smtplib
from functools import partial

import pytest
import trio
import trio.testing

from e2a.smtp.protocol import Envelope, Mailbox, SessionLimits
from e2a.smtp.server import MessageNotStored, RecipientVerdict, serve_smtp

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
        if self.storage_failure is not None:
            raise self.storage_failure
        self.stored.append((envelope, peer))
        return f"msg_{len(self.stored)}"


async def start_server(
    nursery: trio.Nursery, sink: MemorySink, *, idle_timeout: float = 30.0
) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    await nursery.start(
        partial(serve_smtp, listeners, sink, HOST, SessionLimits(), idle_timeout=idle_timeout)
    )
    return port


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

    async def aclose(self) -> None:
        await self._stream.aclose()

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


async def test_a_recipient_check_bug_is_answered_451(port: int, sink: MemorySink) -> None:
    sink.check_failure = RuntimeError("bug in the sink")
    with trio.fail_after(TIMEOUT):
        rcpt_replies, _ = await send_mail(port, ["alice@agents.test"])
    assert rcpt_replies == [(451, b"4.3.0 Temporary failure, try again later")]


async def test_session_is_logged_in_one_line_without_the_body(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2a.smtp")
    with trio.fail_after(TIMEOUT):
        await send_mail(port, ["alice@agents.test", "nobody@agents.test"], b"secret body\r\n")
        await trio.testing.wait_all_tasks_blocked()
    [record] = caplog.records
    assert record.getMessage() == (
        "SMTP session client=127.0.0.1 helo='client.example' "
        "messages=[from=<sender@example.org> to=<alice@agents.test> queued as msg_1] "
        "refused=[<nobody@agents.test> 550 5.1.1] end=221 2.0.0 mx.agents.test closing connection"
    )


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


async def test_shutdown_closes_open_connections(sink: MemorySink) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as server:
            port = await start_server(server, sink)
            client = await RawClient.connect(port)
            await client.reply()
            await client.send(b"EHLO client.example\r\n")
            await client.reply()
            server.cancel_scope.cancel()
        assert await client.rest() == b""


async def test_a_bad_hostname_fails_before_serving(nursery: trio.Nursery, sink: MemorySink) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with pytest.raises(ValueError, match="SMTP hostname"):
        await nursery.start(serve_smtp, listeners, sink, "bad host\r\n", SessionLimits())
    for listener in listeners:
        await listener.aclose()
