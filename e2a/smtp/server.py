"""Trio listener for inbound SMTP: one task per connection, each driving a `ServerSession`.

It moves bytes between sockets and sessions and turns the sessions' decision requests into
`MailSink` calls. It must not interpret SMTP (protocol.py does) nor store mail (the sink does),
and nothing a client or a sink does may take the listener or another session down.
"""

from __future__ import annotations

import enum
import logging
from typing import Protocol

import trio

from e2a.smtp.protocol import (
    ConnectionClosed,
    Envelope,
    Mailbox,
    MessageReceived,
    RecipientRequested,
    Reply,
    ServerSession,
    SessionLimits,
    check_hostname,
)

__all__ = ["MailSink", "MessageNotStored", "RecipientVerdict", "serve_smtp"]

logger = logging.getLogger("e2a.smtp")

_RECEIVE_BYTES = 65536


class RecipientVerdict(enum.Enum):
    """The gateway's answer to `RCPT TO`."""

    ACCEPT = "accept"
    UNKNOWN_USER = "unknown_user"
    """One of our domains, but no such agent: 550 5.1.1."""
    RELAY_DENIED = "relay_denied"
    """Not one of our domains: 550 5.7.1."""


class MessageNotStored(Exception):
    """The sink could not commit a message; the client is told to try again later (451 4.3.0)."""


class MailSink(Protocol):
    """What the listener needs from the gateway: recipient decisions and durable storage."""

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        """Whether this gateway takes mail for `mailbox`."""
        ...

    async def accept_message(self, envelope: Envelope, peer: str) -> str:
        """Commit the message for all its recipients and return its id.

        The client hears 250 only after this returns. Raise `MessageNotStored` when the
        message could not be committed; `peer` is the client's IP address.
        """
        ...


async def serve_smtp(
    listeners: list[trio.SocketListener],
    sink: MailSink,
    hostname: str,
    limits: SessionLimits,
    *,
    idle_timeout: float = 300.0,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SMTP on `listeners` until cancelled, one task per connection.

    `hostname` names this server in the greeting and replies; a value that cannot appear in a
    reply raises ValueError before anything is served. Cancellation closes every connection.
    """
    check_hostname(hostname)

    async def serve_connection(stream: trio.SocketStream) -> None:
        connection = _ClientConnection(stream, ServerSession(hostname, limits), sink, idle_timeout)
        await connection.serve()

    await trio.serve_listeners(serve_connection, listeners, task_status=task_status)


class _ClientConnection:
    """One SMTP client: its socket, its session, and what its log line will say."""

    def __init__(
        self, stream: trio.SocketStream, session: ServerSession, sink: MailSink, idle_timeout: float
    ) -> None:
        self._stream = stream
        self._session = session
        self._sink = sink
        self._idle_timeout = idle_timeout
        self._peer = _peer_ip(stream)
        self._messages: list[str] = []
        self._refused_recipients: list[str] = []
        self._end = ""
        self._last_reply = b""

    async def serve(self) -> None:
        """Hold the dialogue until either side ends it, then log one line about the session."""
        try:
            async with self._stream:
                await self._converse()
        except trio.BrokenResourceError:
            self._end = "connection lost"
        except trio.TooSlowError:
            self._end = "client stopped reading replies"
        except Exception:
            logger.exception("SMTP session with %s failed", self._peer)
            self._end = "internal error"
        finally:
            self._log_session()

    async def _converse(self) -> None:
        await self._send(self._session.greeting())
        outgoing = bytearray()
        while True:
            event = self._session.next_event()
            if isinstance(event, Reply):
                outgoing += event.data
                continue
            if outgoing:
                await self._send(bytes(outgoing))
                outgoing.clear()
            match event:
                case None:
                    await self._receive()
                case RecipientRequested(address=mailbox):
                    await self._decide_recipient(mailbox)
                case MessageReceived(envelope=envelope):
                    await self._deliver(envelope)
                case ConnectionClosed():
                    self._end = self._end or _status_line(self._last_reply)
                    return

    async def _send(self, data: bytes) -> None:
        self._last_reply = data
        with trio.fail_after(self._idle_timeout):
            await self._stream.send_all(data)

    async def _receive(self) -> None:
        data: bytes | None = None
        with trio.move_on_after(self._idle_timeout):
            data = await self._stream.receive_some(_RECEIVE_BYTES)
        if data is None:
            self._end = "idle timeout"
            self._session.time_out()
            return
        if not data:
            self._end = "client closed the connection"
        self._session.receive_data(data)

    async def _decide_recipient(self, mailbox: Mailbox) -> None:
        verdict: RecipientVerdict | None
        try:
            verdict = await self._recipient_verdict(mailbox)
        except Exception:
            logger.exception("SMTP client %s: checking <%s> failed", self._peer, mailbox.address)
            verdict = None
        if verdict is RecipientVerdict.ACCEPT:
            self._session.accept_recipient()
            return
        if verdict is RecipientVerdict.UNKNOWN_USER:
            code, enhanced, text = 550, "5.1.1", f"<{mailbox.address}>: no such agent here"
        elif verdict is RecipientVerdict.RELAY_DENIED:
            code, enhanced, text = 550, "5.7.1", f"<{mailbox.address}>: relay access denied"
        else:
            code, enhanced, text = 451, "4.3.0", "Temporary failure, try again later"
        self._session.reject_recipient(code, enhanced, text)
        self._refused_recipients.append(f"<{mailbox.address}> {code} {enhanced}")

    async def _recipient_verdict(self, mailbox: Mailbox) -> RecipientVerdict:
        if mailbox.domain.startswith("["):
            return RecipientVerdict.RELAY_DENIED  # an address literal is never one of our domains
        return await self._sink.check_recipient(mailbox)

    async def _deliver(self, envelope: Envelope) -> None:
        recipients = ",".join(f"<{mailbox.address}>" for mailbox in envelope.recipients)
        summary = f"from=<{envelope.mail_from}> to={recipients}"
        try:
            queue_id = await self._sink.accept_message(envelope, self._peer)
        except MessageNotStored as error:
            logger.warning("SMTP client %s: message not stored: %s", self._peer, error)
        except Exception:
            logger.exception("SMTP client %s: storing a message failed", self._peer)
        else:
            self._session.message_accepted(queue_id)
            self._messages.append(f"{summary} queued as {queue_id}")
            return
        self._session.message_failed(451, "4.3.0", "Temporary storage failure, try again later")
        self._messages.append(f"{summary} not stored")

    def _log_session(self) -> None:
        logger.info(
            "SMTP session client=%s helo=%r messages=[%s] refused=[%s] end=%s",
            self._peer,
            self._session.helo,
            "; ".join(self._messages),
            "; ".join(self._refused_recipients),
            self._end or "server shutdown",
        )


def _peer_ip(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return str(address[0]) if isinstance(address, tuple) else str(address)


def _status_line(reply: bytes) -> str:
    """The last line of a reply, e.g. "221 2.0.0 mx.example closing connection"."""
    return reply.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].decode("utf-8", "replace")
