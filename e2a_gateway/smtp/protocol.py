"""Sans-IO SMTP server session (RFC 5321): bytes from the client in, replies and events out.

`ServerSession` is a state machine in the style of h11. It must not do I/O, import trio or
decide who may receive mail: an I/O shell feeds it bytes, writes its replies and answers its
`RecipientRequested` and `MessageReceived` events.

Choices it makes on the gateway's behalf:

* Lines end with CRLF and nothing else. End of DATA is CRLF "." CRLF only. A message that
  contains a bare CR or LF is read up to that real terminator and then refused with
  `550 5.6.11`, so `\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n` and `\\r\\n.\\n` can neither end the
  message early nor smuggle in a command (CVE-2023-51764, CVE-2023-51765, CVE-2024-27305).
  A command line ending in a bare LF, or holding a bare CR, is refused with `500 5.5.2` and
  never executed.
* A message over the size limit, or with a text line over the line limit, is likewise read to
  its terminator, discarded as it arrives and refused (`552 5.3.4`, `500 5.5.2`). So is one
  whose header section has too many fields (`552 5.3.4`), a field folded over too many lines
  (`554 5.6.0`) or too many octets (`552 5.3.4`): the parsers that read headers later take
  time that grows faster than the header, and these limits bound it (`header_limits.py`).
  When a message has several problems, bare line endings decide the reply, then size, then
  line length, then the header limits in that order, however the input was split into reads.
* Source routes (`<@a,@b:user@c>`) are accepted and ignored, as RFC 5321 section 3.3 asks: only
  the final mailbox counts. `%` and `!` stay in the local part, so they can never name another
  domain. Quoted local parts are unquoted into `Mailbox.local`.
* Domains are lowercased, lose one trailing dot, and non-ASCII labels become A-labels by
  NFC + lowercase + Punycode. IDNA 2003 mappings (such as "ß" to "ss") are deliberately not
  applied: they would merge names that IDNA 2008 keeps apart, and mail must never reach the
  wrong domain. A non-ASCII label that lowercases to ASCII is refused for the same reason.
* `RCPT TO:<Postmaster>` without a domain names the postmaster at this server's hostname.
* Every error reply counts as one of the client's errors: to a command the session could not
  execute (syntax, sequence, unknown command, over-long line), a refused recipient, a refused
  message — all but `452 4.5.3` to a recipient past `max_recipients`, which a client that
  pipelines a long list must expect and which reveals nothing, and the refusals of BDAT chunks
  pipelined after a refused chunk (RFC 3030), which count as junk commands instead. The count
  starts over when a message is accepted, as Postfix's does: an MTA delivering mail with some
  stale recipients keeps going, a client probing addresses (directory harvest) or sending
  garbage does not.
  Past `errors_before_delay` errors each error reply is preceded by a `Pause` of `error_delay`
  seconds, which the shell waits out; at `max_errors` the error reply is followed by
  `421 4.7.0` and the session closes, the rest of its input unread (no recipient in it is
  looked up).
* NOOP, RSET, VRFY, HELP and EXPN deliver nothing: past `max_junk_commands` of them since the
  last accepted message the session answers `421 4.7.0` instead and closes, so a client
  cannot hold a connection by sending NOOP before each timeout.
* Every reply carries an enhanced status code (RFC 2034, RFC 3463) except where RFC 2034 leaves
  it out: the greeting, the reply to EHLO and HELO, and the 354 intermediate reply.

* STARTTLS (RFC 3207) is offered only when the shell says it can do TLS, only after EHLO and
  outside a mail transaction. Everything the client sent after the STARTTLS line, and anything
  fed in before the shell reports the handshake done, is discarded (CVE-2011-0411,
  CVE-2021-38371, CVE-2024-34083); after the handshake the session starts over and waits for a
  new EHLO.
* CHUNKING (RFC 3030): a BDAT chunk's octets are always read, even when the command is
  refused, so they are never taken for commands; its reply follows them. A chunk past the size
  limit ends the transaction (`552 5.3.4`); after the last chunk the message meets the same
  line and header rules as DATA content, checked as the chunks arrive, so both ways in accept
  and refuse the same messages.
* The session keeps no clock, but says what it is reading (`awaiting`): a command line or a
  message's content, numbered, so that the shell can give each a deadline as a whole — not
  only a limit on silence, which a client dripping a byte at a time never reaches.
* On shutdown the session answers `421 4.3.2` as soon as no transaction is in flight: a message
  whose DATA or BDAT has begun, or a decision the shell is making, is finished and answered
  first.
* A message's octets are reserved in the `MessageMemory` the session shares with the others as
  they arrive, and given back once the message is answered or abandoned. DATA, or a BDAT
  chunk, that would not fit in what is left (the SIZE declared with MAIL counting) is refused
  with `452 4.3.1`; so is a message that outgrows it, after its terminator or chunk, nothing of
  it kept. The transaction ends; the session goes on. A content problem that would refuse the
  message anyway (found so far, for BDAT) decides the reply instead.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
import math
import re
from collections import deque
from typing import TypeAlias

from e2a_gateway.addresses import a_label_domain
from e2a_gateway.smtp.header_limits import HeaderProblem, HeaderSectionCheck
from e2a_gateway.smtp.message_memory import MessageBuffer, MessageMemory

__all__ = [
    "Awaiting",
    "ConnectionClosed",
    "Envelope",
    "Event",
    "LocalProtocolError",
    "Mailbox",
    "MessageReceived",
    "MessageRefusal",
    "Pause",
    "RecipientRequested",
    "Reply",
    "ServerSession",
    "SessionLimits",
    "SessionState",
    "Timeout",
    "TlsRequested",
    "check_hostname",
]


@dataclasses.dataclass(frozen=True)
class SessionLimits:
    """Limits for one SMTP session; each has its own reply when a client exceeds it."""

    max_message_bytes: int = 26_214_400
    max_recipients: int = 100
    max_line_length: int = 1000
    """Octets in one text line of a message, CRLF included, transparency dot not."""
    max_command_length: int = 512
    """Octets in one command line, CRLF included."""
    max_errors: int = 20
    """Error replies since the client's last accepted message before `421 4.7.0`."""
    errors_before_delay: int = 10
    """Error replies since the client's last accepted message answered without a `Pause`."""
    error_delay: float = 1.0
    """Seconds of the `Pause` before each error reply past `errors_before_delay` (0: none)."""
    max_junk_commands: int = 100
    """NOOP, RSET, VRFY, HELP and EXPN since the client's last accepted message; more: 421."""
    max_header_fields: int = 1000
    """Fields in a message's header section."""
    max_header_bytes: int = 262_144
    """Octets in a message's header section, line endings included."""
    max_header_continuation_lines: int = 1000
    """Lines one header field may be folded over, after its first."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            least = 0 if field.name in _MAY_BE_ZERO else 1
            if not least <= value < math.inf:
                raise ValueError(
                    f"SessionLimits.{field.name} must be at least {least}, not {value}"
                )


_MAY_BE_ZERO = frozenset({"errors_before_delay", "error_delay"})


@dataclasses.dataclass(frozen=True)
class Mailbox:
    """A mailbox from a path: local part as the client gave it, domain normalised.

    `domain` is lowercase ASCII without a trailing dot (non-ASCII labels as A-labels), or an
    address literal such as `[192.0.2.1]` or `[ipv6:2001:db8::1]`.
    """

    local: str
    domain: str

    @functools.cached_property
    def address(self) -> str:
        """`local@domain`, with the local part quoted when it is not a plain dot-string (worked
        out once: routing asks for a recipient's address several times)."""
        if _DOT_STRING.fullmatch(self.local):
            return f"{self.local}@{self.domain}"
        escaped = self.local.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"@{self.domain}'

    @classmethod
    def of_dot_string(cls, local: str, domain: str) -> Mailbox:
        """The mailbox of `local`, a dot-string the caller has matched (its address needs no
        quoting), at `domain`, already normalised: made with its address at once and without
        the frozen dataclass's `__init__`, for every plain RCPT (1.3 us made and asked for its
        address the usual way, 0.4 this way)."""
        mailbox = object.__new__(cls)
        mailbox.__dict__.update(local=local, domain=domain, address=f"{local}@{domain}")
        return mailbox


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One mail transaction as received: who said hello, sender, accepted recipients, content.

    `mail_from` is the reverse-path's mailbox address, or "" for the null sender. `data` is the
    message exactly as received with dot-stuffing undone, CRLF line endings, and without the
    terminating ".\\r\\n".
    """

    helo: str
    mail_from: str
    recipients: list[Mailbox]
    data: bytes
    extended: bool = True
    """The client introduced itself with EHLO (False: HELO)."""
    tls: bool = False
    """The transaction came over TLS (STARTTLS)."""
    smtputf8: bool = False
    """MAIL FROM carried the SMTPUTF8 parameter."""


@dataclasses.dataclass(frozen=True)
class Reply:
    """A complete reply to write to the client: one or more CRLF-terminated lines."""

    data: bytes


@dataclasses.dataclass(frozen=True)
class MessageRefusal(Reply):
    """A `Reply` that refuses a message read to its end for what it holds (size, bare line
    endings, line length, header limits), or a message the memory for messages has no room
    for (`out_of_memory`); written like any reply, it also names the transaction it ends, so
    that the shell can log what was refused."""

    mail_from: str = ""
    recipients: tuple[Mailbox, ...] = ()
    out_of_memory: bool = False
    """Refused with `452 4.3.1` because the `MessageMemory` was full, not for what it holds."""


@dataclasses.dataclass(frozen=True)
class RecipientRequested:
    """RCPT TO named `address`: answer with `accept_recipient` or `reject_recipient`."""

    address: Mailbox


@dataclasses.dataclass(frozen=True)
class MessageReceived:
    """DATA is complete: store the message, then call `message_accepted` or `message_failed`."""

    envelope: Envelope


@dataclasses.dataclass(frozen=True)
class Pause:
    """Write the replies so far, then wait `seconds` before going on: the next reply is an
    error to a client past `SessionLimits.errors_before_delay`. A shutdown may cut it short."""

    seconds: float


@dataclasses.dataclass(frozen=True)
class TlsRequested:
    """STARTTLS was accepted and its 220 emitted: write it, do the TLS handshake as the server,
    then call `tls_started` (or close the connection if the handshake fails)."""


@dataclasses.dataclass(frozen=True)
class ConnectionClosed:
    """The session is over (QUIT, a 421, or the client went away): close the connection."""


Event: TypeAlias = (
    Reply | RecipientRequested | MessageReceived | Pause | TlsRequested | ConnectionClosed
)


class SessionState(enum.Enum):
    """Where a session is in the SMTP dialogue."""

    GREETING = "greeting"
    """Connected and greeted; waiting for EHLO or HELO."""
    READY = "ready"
    """Introduced; no mail transaction open."""
    MAIL = "mail"
    """MAIL accepted; no recipient accepted yet."""
    RCPT = "rcpt"
    """At least one recipient accepted."""
    DATA = "data"
    """Reading message content."""
    CHUNK = "chunk"
    """Reading the octets of a BDAT chunk (RFC 3030)."""
    AWAITING_RECIPIENT = "awaiting_recipient"
    """`RecipientRequested` emitted; input is buffered until the shell decides."""
    AWAITING_MESSAGE = "awaiting_message"
    """`MessageReceived` emitted; input is buffered until the shell decides."""
    STARTING_TLS = "starting_tls"
    """`TlsRequested` emitted; input is discarded until the shell calls `tls_started`."""
    CLOSED = "closed"
    """`ConnectionClosed` emitted; input is ignored."""


class Awaiting(enum.Enum):
    """What the session reads from the client while it waits for input."""

    COMMAND = "command"
    """A command line (or the octets of a refused BDAT chunk, which belong to its command)."""
    MESSAGE = "message"
    """A message's content: DATA up to its terminator, or BDAT chunks up to the LAST one,
    the BDAT command lines between chunks included."""


class Timeout(enum.Enum):
    """Which of the shell's clocks ran out; the value is the text of the `421 4.4.2`."""

    IDLE = "Idle timeout"
    COMMAND = "Command not received in time"
    MESSAGE = "Message not received in time"


class LocalProtocolError(RuntimeError):
    """The I/O shell used the session out of turn: a bug in the shell, never the client's."""


def check_hostname(hostname: str) -> None:
    """Raise ValueError unless `hostname` can stand in a reply line (printable ASCII, no spaces)."""
    if not hostname or not hostname.isascii() or not hostname.isprintable() or " " in hostname:
        raise ValueError(f"SMTP hostname {hostname!r} must be printable ASCII without spaces")


class ServerSession:
    """The server side of one SMTP connection.

    Feed it bytes with `receive_data`, then call `next_event` until it returns None; write
    every `Reply`, answer every `RecipientRequested` and `MessageReceived`, and close the
    connection on `ConnectionClosed`. Commands may be pipelined (RFC 2920): while a decision
    is pending the session keeps the rest of the input and emits nothing.

    With `tls_available` the session offers STARTTLS and emits `TlsRequested` when a client
    takes it up; the shell must then secure the connection and call `tls_started`.

    Messages are held in `memory`, shared with the listener's other sessions (without it, the
    session's own, without limit); the shell calls `close` when the connection has ended,
    however it ended, to give back what the session held.
    """

    def __init__(
        self,
        hostname: str,
        limits: SessionLimits,
        *,
        tls_available: bool = False,
        memory: MessageMemory | None = None,
    ) -> None:
        check_hostname(hostname)
        self._hostname = hostname
        self._limits = limits
        self._memory = memory or MessageMemory(_NO_MEMORY_LIMIT)
        self._tls_available = tls_available
        self._secure = False
        self._shutting_down = False
        self._state = SessionState.GREETING
        self._buffer = bytearray()
        self._peer_closed = False
        self._events: deque[Event] = deque()
        self._errors = 0
        """Error replies since the last accepted message."""
        self._junk_commands = 0
        """NOOP, RSET, VRFY, HELP and EXPN since the last accepted message."""
        self._commands_read = 0
        self._messages_begun = 0
        self._discarding_long_line = False
        self._after_refused_chunk = False
        """The last reply refused a BDAT chunk that was not the LAST: BDATs the client had
        pipelined after it are expected to be refused too."""
        self._helo = ""
        self._extended = False
        self._transaction = _Transaction()
        self._pending_recipient: Mailbox | None = None
        self._reader = _MessageReader(limits, self._memory)
        self._chunk: _Chunk | None = None

    @property
    def state(self) -> SessionState:
        """Where the session is in the dialogue."""
        return self._state

    @property
    def helo(self) -> str:
        """The client's EHLO or HELO argument, "" before it introduced itself."""
        return self._helo

    @property
    def secure(self) -> bool:
        """True once `tls_started` was called: everything since came over TLS."""
        return self._secure

    @property
    def awaiting(self) -> tuple[Awaiting, int]:
        """What the session is reading now, and its number: it changes as soon as a new
        command line or message is awaited, so the shell can time each one as a whole."""
        if self._state is SessionState.DATA or self._receiving_chunks():
            return Awaiting.MESSAGE, self._messages_begun
        return Awaiting.COMMAND, self._commands_read

    def greeting(self) -> bytes:
        """The 220 banner to send as soon as the connection is open."""
        return _reply_lines(220, [f"{self._hostname} ESMTP e2a"]).data

    def decline(self, text: str, status: str = "4.7.0") -> bytes:
        """Instead of the greeting: the `421 <status>` that turns the client away; the session
        closes.

        For a server at its connection limits (RFC 5321 section 3.1; 4.7.0), or one that takes
        no mail for now (4.3.2); `text` says which.
        """
        reply = _refusal(421, status, f"{self._hostname} {text}")
        self._close()
        self._events.clear()
        return reply.data

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the client; `b""` means the client closed its side.

        While TLS is being started the bytes are dropped: they cannot be trusted (RFC 3207).
        """
        if self._state is SessionState.CLOSED or self._peer_closed:
            return
        if self._state is SessionState.STARTING_TLS:
            if not data:
                self._peer_closed = True
            return
        if data:
            self._buffer += data
        else:
            self._peer_closed = True

    def next_event(self) -> Event | None:
        """The next thing to do, or None when more input or a pending decision is needed.

        Once the session is closed this keeps returning `ConnectionClosed`.
        """
        while not self._events and self._advance():
            pass
        if self._events:
            return self._events.popleft()
        if self._state is SessionState.CLOSED:
            return ConnectionClosed()
        return None

    def accept_recipient(self) -> None:
        """Answer the pending `RecipientRequested`: the recipient is added to the transaction."""
        mailbox = self._take_pending_recipient()
        self._transaction.recipients.append(mailbox)
        self._state = SessionState.RCPT
        self._events.append(_RECIPIENT_OK)
        self._close_if_shutting_down()

    def reject_recipient(self, code: int, enhanced: str, text: str) -> None:
        """Answer the pending `RecipientRequested` with a 4xx or 5xx reply."""
        reply = _refusal(code, enhanced, text)
        self._take_pending_recipient()
        self._state = SessionState.RCPT if self._transaction.recipients else SessionState.MAIL
        self._refuse(reply)
        self._close_if_shutting_down()

    def message_accepted(self, queue_id: str) -> None:
        """Answer the pending `MessageReceived`: the message is stored as `queue_id`."""
        if not queue_id or not queue_id.isascii() or not queue_id.isprintable():
            raise LocalProtocolError(f"queue id {queue_id!r} cannot appear in a reply")
        self._expect_state(SessionState.AWAITING_MESSAGE)
        self._errors = self._junk_commands = 0
        self._end_transaction(_reply(250, "2.0.0", f"Ok: queued as {queue_id}"))

    def message_failed(self, code: int, enhanced: str, text: str) -> None:
        """Answer the pending `MessageReceived` with a 4xx or 5xx reply: nothing was stored."""
        reply = _refusal(code, enhanced, text)
        self._expect_state(SessionState.AWAITING_MESSAGE)
        self._end_transaction(reply, refused=True)

    def tls_started(self) -> None:
        """Answer the pending `TlsRequested`: the handshake is done.

        The session forgets everything the client said before (RFC 3207 section 4.2) and
        waits for a new EHLO; no new greeting is sent.
        """
        self._expect_state(SessionState.STARTING_TLS)
        self._secure = True
        self._buffer.clear()
        self._discarding_long_line = False
        self._helo = ""
        self._extended = False
        self._drop_transaction()
        self._state = SessionState.GREETING
        self._close_if_shutting_down()

    def time_out(self, timeout: Timeout = Timeout.IDLE) -> None:
        """The client was idle too long, or took too long over a command or a message:
        answer `421 4.4.2` and close. Whatever was in flight is abandoned."""
        if self._state is SessionState.CLOSED:
            return
        self._events.append(
            _reply(421, "4.4.2", f"{self._hostname} {timeout.value}, closing connection")
        )
        self._close()

    def shut_down(self, *, immediately: bool = False) -> None:
        """The server is stopping: answer `421 4.3.2` and close once nothing is in flight.

        A message whose DATA or first BDAT chunk has begun, a pending decision and a TLS
        handshake are finished first; the 421 then follows their reply, and input pipelined
        after it is discarded.
        Otherwise, or `immediately` (the grace period is over), the 421 comes at once and
        whatever was in flight is abandoned: the client will retry it.
        """
        if self._state is SessionState.CLOSED:
            return
        self._shutting_down = True
        if immediately:
            self._pending_recipient = None
            self._drop_transaction()
            self._state = SessionState.READY if self._helo else SessionState.GREETING
        self._close_if_shutting_down()

    def close(self) -> None:
        """The connection has ended, however that came about (the client went away, a clock
        ran out, the shell was cancelled, or the session closed it): whatever was in flight is
        dropped and its memory given back. Nothing more is emitted; calling it again is
        harmless."""
        self._pending_recipient = None
        self._state = SessionState.CLOSED
        self._buffer.clear()
        self._events.clear()
        self._drop_transaction()

    @property
    def in_flight(self) -> bool:
        """True while a transaction's DATA or BDAT chunks (between chunks too), a decision or a
        TLS handshake are under way.

        A shell that is shutting down lets such a session go on (within its grace period).
        """
        return self._state in _IN_FLIGHT_STATES or self._receiving_chunks()

    # Reading input

    def _advance(self) -> bool:
        """Consume input into events; False when nothing more can happen without the shell."""
        if self._state in _WAITING_STATES:
            return False
        if self._state is SessionState.DATA:
            progressed = self._read_message()
        elif self._state is SessionState.CHUNK:
            progressed = self._read_chunk()
        else:
            progressed = self._read_command()
        if not progressed and self._peer_closed:
            self._close()
            return True
        return progressed

    def _read_command(self) -> bool:
        """Execute the next complete command line, if there is one."""
        newline = self._buffer.find(b"\n")
        if newline == -1:
            if len(self._buffer) >= self._limits.max_command_length:
                self._discarding_long_line = True
                self._buffer.clear()
            return False
        line = bytes(self._buffer[: newline + 1])
        del self._buffer[: newline + 1]
        self._commands_read += 1
        after_refused_chunk = self._after_refused_chunk
        self._after_refused_chunk = False
        if self._discarding_long_line or len(line) > self._limits.max_command_length:
            self._discarding_long_line = False
            self._refuse_command(_CommandError(500, "5.5.2", "Line too long"))
        else:
            self._execute(line, after_refused_chunk=after_refused_chunk)
        return True

    def _read_message(self) -> bool:
        """Read message content; at its end, emit the message or refuse it."""
        if not self._reader.read(self._buffer):
            return False
        problem = self._reader.problem
        if problem is not None:
            self._refuse_message(problem)
            return True
        self._state = SessionState.AWAITING_MESSAGE
        envelope = Envelope(
            helo=self._helo,
            mail_from=self._transaction.mail_from,
            recipients=list(self._transaction.recipients),
            data=self._reader.take_content(),
            extended=self._extended,
            tls=self._secure,
            smtputf8=self._transaction.smtputf8,
        )
        self._events.append(MessageReceived(envelope))
        return True

    def _read_chunk(self) -> bool:
        """Take the octets of the current BDAT chunk; once all are in, answer the chunk."""
        chunk = self._chunk
        if chunk is None:
            raise LocalProtocolError("no BDAT chunk is being read")
        if chunk.remaining and not self._buffer:
            return False
        taken = bytes(self._buffer[: chunk.remaining])
        del self._buffer[: len(taken)]
        chunk.remaining -= len(taken)
        if isinstance(chunk.into, _CommandError):  # refused: the octets are dropped
            if not chunk.remaining:
                self._state = chunk.resume
                self._refuse_chunk(chunk, chunk.into.reply)
            return True
        content = chunk.into
        content.add(taken)
        if chunk.remaining:
            return True
        problem = content.problem(final=chunk.last)
        if problem is not None:
            self._refuse_message(problem)
            self._after_refused_chunk = not chunk.last
        elif chunk.last:
            self._state = SessionState.AWAITING_MESSAGE
            envelope = Envelope(
                helo=self._helo,
                mail_from=self._transaction.mail_from,
                recipients=list(self._transaction.recipients),
                data=content.take_content(),
                extended=self._extended,
                tls=self._secure,
                smtputf8=self._transaction.smtputf8,
            )
            self._events.append(MessageReceived(envelope))
        else:
            self._state = SessionState.RCPT
            self._events.append(_reply(250, "2.0.0", f"{content.size} octets received"))
        return True

    # Commands

    def _execute(self, line: bytes, *, after_refused_chunk: bool) -> None:
        """Run one command line (terminator included), refusing it if it is malformed;
        `after_refused_chunk` as for `_bdat`."""
        try:
            recipient = _plain_recipient(line)
            if recipient is not None:
                self._require_open_recipients()
                self._request_recipient(recipient)
                return
            verb, argument = _split_command_line(line)
            if verb == "BDAT":
                self._bdat(argument, after_refused_chunk=after_refused_chunk)
            else:
                self._dispatch(verb, argument)
        except _CommandError as error:
            self._refuse_command(error)

    def _dispatch(self, verb: str, argument: str) -> None:
        match verb:
            case "EHLO":
                self._introduce(argument, extended=True)
            case "HELO":
                self._introduce(argument, extended=False)
            case "MAIL":
                self._mail(argument)
            case "RCPT":
                self._rcpt(argument)
            case "DATA":
                self._data(argument)
            case "RSET" | "NOOP" | "VRFY" | "HELP" | "EXPN":
                self._junk_command(verb, argument)
            case "QUIT":
                self._quit(argument)
            case "STARTTLS":
                self._starttls(argument)
            case _ if verb in _NOT_OFFERED:
                raise _CommandError(502, "5.5.1", "Command not implemented")
            case _:
                raise _CommandError(500, "5.5.2", "Unknown command")

    def _junk_command(self, verb: str, argument: str) -> None:
        """A command that delivers nothing; past `max_junk_commands` of them since the last
        accepted message, `421 4.7.0` instead, and the session closes."""
        if not self._count_junk():
            return
        match verb:
            case "RSET":
                self._rset(argument)
            case "NOOP":
                self._events.append(_reply(250, "2.0.0", "Ok"))
            case "VRFY":
                self._vrfy(argument)
            case "HELP":
                self._events.append(_reply(214, "2.0.0", f"Commands: {' '.join(_COMMANDS)}"))
            case _:  # EXPN
                raise _CommandError(502, "5.5.1", "Command not implemented")

    def _count_junk(self) -> bool:
        """Count one command that delivers nothing; False when that is one past
        `max_junk_commands` since the last accepted message: `421 4.7.0` and the session closed."""
        self._junk_commands += 1
        if self._junk_commands <= self._limits.max_junk_commands:
            return True
        self._events.append(
            _reply(
                421,
                "4.7.0",
                f"{self._hostname} Too many commands without mail, closing connection",
            )
        )
        self._close()
        return False

    def _introduce(self, argument: str, *, extended: bool) -> None:
        if not argument:
            raise _CommandError(501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} domain")
        self._helo = argument
        self._extended = extended
        self._drop_transaction()
        self._state = SessionState.READY
        if extended:
            self._events.append(_reply_lines(250, [self._hostname, *self._extensions()]))
        else:
            self._events.append(_reply_lines(250, [self._hostname]))

    def _extensions(self) -> list[str]:
        extensions = [
            f"SIZE {self._limits.max_message_bytes}",
            "8BITMIME",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "CHUNKING",
        ]
        if self._tls_available and not self._secure:
            extensions.append("STARTTLS")
        return extensions

    def _starttls(self, argument: str) -> None:
        if not self._tls_available:
            raise _CommandError(502, "5.5.1", "Command not implemented")
        if argument:
            raise _CommandError(501, "5.5.4", "Syntax: STARTTLS")
        if self._secure:
            raise _CommandError(503, "5.5.1", "TLS already active")
        if self._state is SessionState.GREETING or not self._extended:
            raise _CommandError(503, "5.5.1", "Send EHLO first")
        if self._state is not SessionState.READY:
            raise _CommandError(503, "5.5.1", "STARTTLS not allowed during a mail transaction")
        self._buffer.clear()
        self._discarding_long_line = False
        self._state = SessionState.STARTING_TLS
        self._events.append(_reply(220, "2.0.0", "Ready to start TLS"))
        self._events.append(TlsRequested())

    def _mail(self, argument: str) -> None:
        if self._state is SessionState.GREETING:
            raise _CommandError(503, "5.5.1", "Send EHLO or HELO first")
        if self._state is not SessionState.READY:
            raise _CommandError(503, "5.5.1", "Nested MAIL command")
        path, parameters = _split_path_argument(argument, "FROM:", "MAIL FROM:<address>")
        options = self._mail_options(parameters)
        if not path.isascii() and not options.smtputf8:
            raise _CommandError(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter")
        try:
            sender = "" if path == "" else _parse_mailbox(path).address
        except _AddressError as error:
            raise _CommandError(501, "5.1.7", f"Bad sender address syntax: {error}") from None
        if options.size is not None and options.size > self._limits.max_message_bytes:
            self._refuse(_reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
            return
        self._transaction = _Transaction(
            mail_from=sender, smtputf8=options.smtputf8, size=options.size
        )
        self._state = SessionState.MAIL
        self._events.append(_SENDER_OK)

    def _mail_options(self, parameters: dict[str, str | None]) -> _MailOptions:
        """Validate MAIL parameters (SIZE, BODY, SMTPUTF8)."""
        if parameters and not self._extended:
            raise _CommandError(555, "5.5.4", "MAIL parameters require EHLO")
        unsupported = sorted(parameters.keys() - _MAIL_PARAMETERS)
        if unsupported:
            raise _CommandError(555, "5.5.4", f"Unsupported parameter {unsupported[0]}")
        if parameters.get("SMTPUTF8") is not None:
            raise _CommandError(501, "5.5.4", "SMTPUTF8 takes no value")
        body = parameters.get("BODY", "7BIT")
        if body is None or body.upper() not in _BODY_TYPES:
            raise _CommandError(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
        return _MailOptions(smtputf8="SMTPUTF8" in parameters, size=_declared_size(parameters))

    def _require_transaction(self) -> None:
        """Refuse a command that needs a transaction begun by MAIL."""
        if self._state not in (SessionState.MAIL, SessionState.RCPT):
            raise _CommandError(503, "5.5.1", "Need MAIL command")

    def _require_open_recipients(self) -> None:
        """Refuse a RCPT outside a transaction, or once its message has begun in chunks (RFC
        3030: the recipients are settled before the first BDAT)."""
        self._require_transaction()
        if self._transaction.chunks is not None:
            raise _CommandError(503, "5.5.1", "RCPT cannot follow BDAT in one transaction")

    def _rcpt(self, argument: str) -> None:
        self._require_open_recipients()
        path, parameters = _split_path_argument(argument, "TO:", "RCPT TO:<address>")
        if parameters:
            raise _CommandError(555, "5.5.4", f"Unsupported parameter {min(parameters)}")
        if not path.isascii() and not self._transaction.smtputf8:
            raise _CommandError(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        self._request_recipient(self._recipient_mailbox(path))

    def _request_recipient(self, mailbox: Mailbox) -> None:
        """After a well-formed RCPT in a transaction: ask the shell about `mailbox`, unless
        the transaction has all the recipients it may have."""
        if len(self._transaction.recipients) >= self._limits.max_recipients:
            self._events.append(_reply(452, "4.5.3", "Too many recipients"))
            return
        self._pending_recipient = mailbox
        self._state = SessionState.AWAITING_RECIPIENT
        self._events.append(RecipientRequested(mailbox))

    def _recipient_mailbox(self, path: str) -> Mailbox:
        if path.lower() == "postmaster":
            return Mailbox("postmaster", self._hostname.lower())
        try:
            return _parse_mailbox(path)
        except _AddressError as error:
            raise _CommandError(501, "5.1.3", f"Bad recipient address syntax: {error}") from None

    def _data(self, argument: str) -> None:
        if argument:
            raise _CommandError(501, "5.5.4", "Syntax: DATA")
        self._require_transaction()
        if not self._transaction.recipients:
            self._refuse(_reply(554, "5.5.1", "No valid recipients"))
            return
        if self._transaction.chunks is not None:
            raise _CommandError(503, "5.5.1", "DATA cannot follow BDAT in one transaction")
        reader = _MessageReader(self._limits, self._memory)
        if not reader.can_hold(self._transaction.size or 0):
            self._refuse_message(_ContentProblem.OUT_OF_MEMORY)
            return
        self._reader = reader
        self._messages_begun += 1
        self._state = SessionState.DATA
        self._events.append(_reply_lines(354, ["End data with <CR><LF>.<CR><LF>"]))

    def _bdat(self, argument: str, *, after_refused_chunk: bool) -> None:
        """BDAT size [LAST] (RFC 3030): the chunk's octets follow the command line at once, so
        they are read (and dropped) even when the command is refused; its reply comes after.

        `after_refused_chunk`: the command before it was a BDAT, not the LAST, that was
        refused, so the client may have pipelined this one before it knew."""
        match argument.upper().split(" "):
            case [size] if size.isascii() and size.isdigit() and len(size) <= 20:
                last = False
            case [size, "LAST"] if size.isascii() and size.isdigit() and len(size) <= 20:
                last = True
            case _:
                raise _CommandError(501, "5.5.4", "Syntax: BDAT size [LAST]")
        into: _ChunkedContent | _CommandError
        if self._state is SessionState.GREETING:
            into = _CommandError(503, "5.5.1", "Send EHLO first")
        elif not self._extended:
            into = _CommandError(503, "5.5.1", "BDAT requires EHLO")
        elif self._state is SessionState.READY:
            into = _CommandError(503, "5.5.1", "Need MAIL command")
        elif not self._transaction.recipients:
            into = _CommandError(554, "5.5.1", "No valid recipients")
        else:
            chunks = self._transaction.chunks
            if chunks is None:
                chunks = self._transaction.chunks = _ChunkedContent(self._limits, self._memory)
                self._messages_begun += 1
            chunks.expect(max(self._transaction.size or 0, chunks.size + int(size)))
            into = chunks
        self._chunk = _Chunk(
            int(size),
            last=last,
            into=into,
            resume=self._state,
            after_refused_chunk=after_refused_chunk,
        )
        self._state = SessionState.CHUNK

    def _rset(self, argument: str) -> None:
        if argument:
            raise _CommandError(501, "5.5.4", "Syntax: RSET")
        self._end_transaction(_reply(250, "2.0.0", "Ok"))

    def _quit(self, argument: str) -> None:
        if argument:
            raise _CommandError(501, "5.5.4", "Syntax: QUIT")
        self._events.append(_reply(221, "2.0.0", f"{self._hostname} closing connection"))
        self._close()

    def _vrfy(self, argument: str) -> None:
        if not argument:
            raise _CommandError(501, "5.5.4", "Syntax: VRFY address")
        self._events.append(_reply(252, "2.1.5", "Cannot VRFY user; try RCPT to attempt delivery"))

    # Transitions

    def _close_if_shutting_down(self) -> None:
        """After a transaction or decision ends: the 421 of a pending shutdown, if any."""
        if self._shutting_down and self._state is not SessionState.CLOSED and not self.in_flight:
            self._events.append(
                _reply(421, "4.3.2", f"{self._hostname} Service shutting down, closing connection")
            )
            self._close()

    def _refuse_command(self, error: _CommandError) -> None:
        """Answer a command that could not be executed."""
        self._refuse(error.reply)

    def _refuse_chunk(self, chunk: _Chunk, reply: Reply) -> None:
        """Answer a refused BDAT chunk, now that its octets are read. RFC 3030 lets a client
        pipeline its chunks and asks the server to take and discard those that follow a
        refused one: their refusals are expected, not the client's errors, and count as
        commands that deliver nothing instead (`max_junk_commands`), so that a client cannot
        hold the session with them either."""
        if not chunk.after_refused_chunk:
            self._refuse(reply)
        elif self._count_junk():
            self._events.append(reply)
        if self._state is not SessionState.CLOSED:
            self._after_refused_chunk = not chunk.last

    def _refuse(self, reply: Reply) -> None:
        """Answer with `reply`, an error: one more of the client's errors since its last
        accepted message. Past `errors_before_delay` of them the reply waits a `Pause`; at
        `max_errors` it is followed by `421 4.7.0` and the session closes."""
        self._errors += 1
        if self._errors > self._limits.errors_before_delay and self._limits.error_delay:
            self._events.append(Pause(self._limits.error_delay))
        self._events.append(reply)
        if self._errors >= self._limits.max_errors:
            self._events.append(
                _reply(421, "4.7.0", f"{self._hostname} Too many errors, closing connection")
            )
            self._close()

    def _refuse_message(self, problem: _ContentProblem) -> None:
        """End the transaction whose message was read and found to have `problem`."""
        code, enhanced, text = problem.value
        refusal = MessageRefusal(
            _reply(code, enhanced, text).data,
            self._transaction.mail_from,
            tuple(self._transaction.recipients),
            out_of_memory=problem is _ContentProblem.OUT_OF_MEMORY,
        )
        self._end_transaction(refusal, refused=True)

    def _end_transaction(self, reply: Reply, *, refused: bool = False) -> None:
        """Forget the mail transaction and answer with `reply`, an error if `refused`."""
        self._drop_transaction()
        self._state = SessionState.READY if self._helo else SessionState.GREETING
        if refused:
            self._refuse(reply)
        else:
            self._events.append(reply)
        self._close_if_shutting_down()

    def _drop_transaction(self) -> None:
        """Forget the mail transaction, and give back the memory its message held."""
        self._reader.discard()
        if self._transaction.chunks is not None:
            self._transaction.chunks.discard()
        self._transaction = _Transaction()

    def _close(self) -> None:
        self._state = SessionState.CLOSED
        self._buffer.clear()
        self._drop_transaction()
        self._events.append(ConnectionClosed())

    def _receiving_chunks(self) -> bool:
        """True from a transaction's first accepted BDAT chunk until its message is complete."""
        if self._transaction.chunks is None:
            return False
        if self._state is SessionState.CHUNK:
            return self._chunk is not None and self._chunk.into is self._transaction.chunks
        return self._state is SessionState.RCPT

    def _take_pending_recipient(self) -> Mailbox:
        self._expect_state(SessionState.AWAITING_RECIPIENT)
        mailbox = self._pending_recipient
        if mailbox is None:
            raise LocalProtocolError("no recipient decision is pending")
        self._pending_recipient = None
        return mailbox

    def _expect_state(self, state: SessionState) -> None:
        if self._state is not state:
            raise LocalProtocolError(f"session is {self._state.name}, not {state.name}")


_WAITING_STATES = (
    SessionState.AWAITING_RECIPIENT,
    SessionState.AWAITING_MESSAGE,
    SessionState.STARTING_TLS,
    SessionState.CLOSED,
)
"""A tuple, not a set: asked before every command, and a look-up in a set hashes the member
in Python (`Enum.__hash__`) where a tuple compares identities."""
_IN_FLIGHT_STATES = frozenset(
    {
        SessionState.DATA,
        SessionState.CHUNK,
        SessionState.AWAITING_RECIPIENT,
        SessionState.AWAITING_MESSAGE,
        SessionState.STARTING_TLS,
    }
)
_COMMANDS = (
    "EHLO",
    "HELO",
    "MAIL",
    "RCPT",
    "DATA",
    "BDAT",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "HELP",
)
_NOT_OFFERED = frozenset({"TURN", "ETRN", "AUTH"})
_MAIL_PARAMETERS = frozenset({"SIZE", "BODY", "SMTPUTF8"})
_BODY_TYPES = frozenset({"7BIT", "8BITMIME"})
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ENHANCED_FAILURE = re.compile(r"([45])\.[0-9]{1,3}\.[0-9]{1,3}")


@dataclasses.dataclass
class _Transaction:
    """The mail transaction opened by MAIL: sender and the recipients accepted so far."""

    mail_from: str = ""
    smtputf8: bool = False
    size: int | None = None
    """The message size MAIL declared (SIZE=), if it did."""
    recipients: list[Mailbox] = dataclasses.field(default_factory=list)
    chunks: _ChunkedContent | None = None
    """The message so far when it comes by BDAT (None until the first chunk is taken)."""


@dataclasses.dataclass
class _Chunk:
    """The BDAT chunk being read: octets still to come, whether it ends the message, and where
    the octets go — the transaction's content, or nowhere, to be answered with the refusal once
    they are read (back in state `resume`)."""

    remaining: int
    last: bool
    into: _ChunkedContent | _CommandError
    resume: SessionState
    after_refused_chunk: bool
    """The BDAT before it, not the LAST, was refused (`ServerSession._refuse_chunk`)."""


@dataclasses.dataclass(frozen=True)
class _MailOptions:
    smtputf8: bool
    size: int | None


class _CommandError(Exception):
    """A command the session refuses to execute, with the reply that says why."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.reply = _reply(code, enhanced, text)


def _reply(code: int, enhanced: str, text: str) -> Reply:
    return _reply_lines(code, [f"{enhanced} {text}"])


def _reply_lines(code: int, lines: list[str]) -> Reply:
    """A reply of one or more lines, continuation lines marked with "-" (RFC 5321 4.2.1)."""
    last = len(lines) - 1
    text = "".join(
        f"{code}{' ' if index == last else '-'}{line}\r\n" for index, line in enumerate(lines)
    )
    return Reply(text.encode("utf-8"))


_NO_MEMORY_LIMIT = 2**62
"""The limit of a session's own `MessageMemory`, when the shell gives it none to share."""
_SENDER_OK = _reply(250, "2.1.0", "Ok")
_RECIPIENT_OK = _reply(250, "2.1.5", "Ok")
"""The replies to MAIL and RCPT, the same every time: made once, not once per recipient."""


def _refusal(code: int, enhanced: str, text: str) -> Reply:
    """A 4xx/5xx reply the shell asked for, checked so it cannot break the dialogue."""
    match = _ENHANCED_FAILURE.fullmatch(enhanced)
    if not 400 <= code <= 599 or match is None or match.group(1) != str(code)[0]:
        raise LocalProtocolError(f"{code} {enhanced} is not a matching 4xx/5xx status")
    if _CONTROL_CHARACTER.search(text):
        raise LocalProtocolError(f"reply text {text!r} contains control characters")
    return _reply(code, enhanced, text)


def _declared_size(parameters: dict[str, str | None]) -> int | None:
    """The message size announced with MAIL's SIZE parameter (RFC 1870), if any."""
    if "SIZE" not in parameters:
        return None
    value = parameters["SIZE"]
    if value is None or not (value.isascii() and value.isdigit()):
        raise _CommandError(501, "5.5.4", "SIZE must be a number of octets")
    if len(value) > _SIZE_DIGITS:  # beyond every limit (and Python's for int(), at 4,300)
        return _BEYOND_ANY_SIZE
    return int(value)


_SIZE_DIGITS = 20
_BEYOND_ANY_SIZE: int = 10**_SIZE_DIGITS
"""What SIZE values of more than _SIZE_DIGITS digits count as: larger than any message limit."""


_PLAIN_RCPT = re.compile(
    rb"(?i:RCPT TO):<([!#-'*+\-/-9=?A-Z^-~]+(?:\.[!#-'*+\-/-9=?A-Z^-~]+)*)@([A-Za-z0-9.-]+)>\r\n"
)
"""`RCPT TO:<local@domain>` in its plainest form, as nearly every client sends it: an ASCII
dot-string local part, a domain name, no parameters, no spaces."""


def _plain_recipient(line: bytes) -> Mailbox | None:
    """The mailbox of a plain RCPT command line (`_PLAIN_RCPT`), read at once; None for any
    other line, which the general parser reads (and refuses, if it must). Both give the same
    mailbox for a plain line (tests/test_smtp_protocol.py checks it)."""
    plain = _PLAIN_RCPT.fullmatch(line)
    if plain is None:
        return None
    try:
        domain = _normalise_domain(plain[2].decode("ascii"))
    except _AddressError:
        return None
    return Mailbox.of_dot_string(plain[1].decode("ascii"), domain)


def _split_command_line(line: bytes) -> tuple[str, str]:
    """`b"MAIL FROM:<a@b>\\r\\n"` -> `("MAIL", "FROM:<a@b>")`; refuses malformed lines."""
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise _CommandError(500, "5.5.2", "Command lines must end with CRLF, without bare CR")
    try:
        text = line[:-2].decode("utf-8")
    except UnicodeDecodeError:
        raise _CommandError(500, "5.5.2", "Command line is not valid UTF-8") from None
    if _CONTROL_CHARACTER.search(text):
        raise _CommandError(500, "5.5.2", "Control characters are not allowed in commands")
    verb, _, argument = text.partition(" ")
    if not verb.isascii():
        raise _CommandError(500, "5.5.2", "Unknown command")
    return verb.upper(), argument.strip(" ")


def _split_path_argument(
    argument: str, keyword: str, syntax: str
) -> tuple[str, dict[str, str | None]]:
    """`FROM:<path> PARAM=value ...` -> (path without brackets, parameters by upper-case name)."""
    prefix = argument[: len(keyword)]
    if not prefix.isascii() or prefix.upper() != keyword:
        raise _CommandError(501, "5.5.4", f"Syntax: {syntax} [parameters]")
    bracketed = argument[len(keyword) :].lstrip(" ")
    path_end = _closing_bracket(bracketed)
    if path_end is None:
        raise _CommandError(501, "5.5.4", f"Syntax: {syntax} [parameters]")
    rest = bracketed[path_end + 1 :]
    if rest and not rest.startswith(" "):
        raise _CommandError(501, "5.5.4", f"Syntax: {syntax} [parameters]")
    return bracketed[1:path_end], _parse_parameters(rest)


def _closing_bracket(text: str) -> int | None:
    """Index of the ">" that closes the path `text` starts with, skipping quoted strings."""
    if not text.startswith("<"):
        return None
    if '"' not in text:  # no quoted string (nearly every path): the first ">" closes it
        index = text.find(">")
        return index if index != -1 else None
    quoted = escaped = False
    for index, char in enumerate(text[1:], start=1):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return None


_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# esmtp-value: any character but controls, space and "=" (RFC 5321 4.1.2; UTF-8 per RFC 6531),
# written as a negated class, which compiles in microseconds where the range form takes ms.
_ESMTP_VALUE = re.compile(r"[^\x00-\x20=\x7f]+")


def _parse_parameters(text: str) -> dict[str, str | None]:
    """`SIZE=100 BODY=8BITMIME SMTPUTF8` -> `{"SIZE": "100", ...}` (RFC 5321 esmtp-param)."""
    parameters: dict[str, str | None] = {}
    for item in filter(None, text.split(" ")):
        keyword, equals, value = item.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(keyword) or (equals and not _ESMTP_VALUE.fullmatch(value)):
            raise _CommandError(501, "5.5.4", "Bad parameter syntax")
        name = keyword.upper()
        if name in parameters:
            raise _CommandError(501, "5.5.4", f"Duplicate parameter {name}")
        parameters[name] = value if equals else None
    return parameters


# Addresses (RFC 5321 section 4.1.2, with RFC 6531 UTF-8)

# atext (RFC 5322 3.2.3) and every non-ASCII character (RFC 6531): all but controls, space and
# the specials, as a negated class for the same reason as _ESMTP_VALUE.
_ATEXT = r'[^\x00-\x20\x7f"(),.:;<>@\[\\\]]'
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_QUOTED_LOCAL = re.compile(r'"((?:[^"\\\x00-\x1f\x7f]|\\[ -~])*)"@(.*)', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)")


class _AddressError(ValueError):
    """A path that is not a syntactically valid mailbox; the message says what is wrong."""


def _parse_mailbox(path: str) -> Mailbox:
    """Parse the inside of `<...>`, ignoring any source route, into a Mailbox."""
    if path.startswith("@"):
        path = _without_source_route(path)
    local, domain = _split_mailbox(path)
    if domain.startswith("["):
        return Mailbox(local, _normalise_address_literal(domain))
    return Mailbox(local, _normalise_domain(domain))


def _without_source_route(path: str) -> str:
    """`@a,@b:user@c` -> `user@c`, after checking that the route is well-formed."""
    route, colon, mailbox = path.partition(":")
    if not colon:
        raise _AddressError("source route without ':'")
    for hop in route.split(","):
        if not hop.startswith("@"):
            raise _AddressError("source route hops must start with '@'")
        _normalise_domain(hop[1:])
    return mailbox


def _split_mailbox(mailbox: str) -> tuple[str, str]:
    """`local@domain` -> (unquoted local part, domain as written)."""
    if mailbox.startswith('"'):
        quoted = _QUOTED_LOCAL.fullmatch(mailbox)
        if quoted is None:
            raise _AddressError("malformed quoted local part")
        return _QUOTED_PAIR.sub(r"\1", quoted.group(1)), quoted.group(2)
    local, at, domain = mailbox.partition("@")
    if not at:
        raise _AddressError("missing '@domain'")
    if not _DOT_STRING.fullmatch(local):
        raise _AddressError("malformed local part")
    return local, domain


def _normalise_domain(domain: str) -> str:
    """Lowercase ASCII form of `domain` without its trailing dot (`a_label_domain`)."""
    try:
        return _a_label_domain(domain)
    except ValueError as error:
        raise _AddressError(str(error)) from None


_a_label_domain = functools.lru_cache(maxsize=4096)(a_label_domain)
"""`a_label_domain`, remembered: mail comes from and to the same domains again and again."""


def _normalise_address_literal(literal: str) -> str:
    """`[192.0.2.1]` or `[IPv6:2001:DB8::1]` -> canonical lowercase form."""
    if not literal.endswith("]"):
        raise _AddressError("unterminated address literal")
    inner = literal[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            address = ipaddress.IPv6Address(inner[5:])
            if address.scope_id is not None:
                raise _AddressError("scoped IPv6 literal")
            return f"[ipv6:{address.compressed}]"
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ipaddress.AddressValueError:
        raise _AddressError("invalid address literal") from None


# Message content


_CR, _DOT = 0x0D, 0x2E


class _ContentProblem(enum.Enum):
    """Why a message is refused once its terminator has been read; values are the reply.

    Declaration order is precedence: it decides the reply when a message has several problems.
    """

    BARE_LINE_ENDING = (550, "5.6.11", "Bare CR or LF not allowed; lines must end with CRLF")
    TOO_BIG = (552, "5.3.4", "Message size exceeds fixed maximum message size")
    LINE_TOO_LONG = (500, "5.5.2", "Line too long")
    TOO_MANY_HEADER_FIELDS = (552, "5.3.4", "Too many header fields")
    HEADER_FIELD_FOLDED_TOO_OFTEN = (554, "5.6.0", "Header field folded over too many lines")
    HEADER_TOO_LARGE = (552, "5.3.4", "Header section exceeds fixed maximum size")
    OUT_OF_MEMORY = (452, "4.3.1", "Insufficient system storage, try again later")
    """Last: a message refused anyway for what it holds is told so, not asked to come back."""


_HEADER_PROBLEMS = {
    HeaderProblem.TOO_MANY_FIELDS: _ContentProblem.TOO_MANY_HEADER_FIELDS,
    HeaderProblem.FOLDED_TOO_OFTEN: _ContentProblem.HEADER_FIELD_FOLDED_TOO_OFTEN,
    HeaderProblem.TOO_LARGE: _ContentProblem.HEADER_TOO_LARGE,
}


def _header_check(limits: SessionLimits) -> HeaderSectionCheck:
    return HeaderSectionCheck(
        max_fields=limits.max_header_fields,
        max_bytes=limits.max_header_bytes,
        max_continuation_lines=limits.max_header_continuation_lines,
    )


def _deciding_problem(
    problems: set[_ContentProblem], headers: HeaderSectionCheck
) -> _ContentProblem | None:
    """Of `problems` and the header section's problem, the one that decides the reply."""
    header_problem = headers.problem
    if header_problem is not None:
        problems = problems | {_HEADER_PROBLEMS[header_problem]}
    return next((problem for problem in _ContentProblem if problem in problems), None)


class _MessageReader:
    """Reads DATA content up to CRLF.CRLF, undoing dot-stuffing and enforcing the limits.

    Content is taken out of the receive buffer as it arrives, so memory stays bounded by the
    size limit and each byte is examined a constant number of times, mostly by bytes methods
    in C: only a line split between reads is taken piece by piece. Once a problem is found
    the content is no longer kept, only checked, so that the verdict does not depend on how
    the input was split into reads.
    """

    def __init__(self, limits: SessionLimits, memory: MessageMemory) -> None:
        self._max_message_bytes = limits.max_message_bytes
        self._max_line_length = limits.max_line_length
        self._headers = _header_check(limits)
        self._content = MessageBuffer(memory)
        self._size = 0
        self._line_length = 0
        self._at_line_start = True
        self._problems: set[_ContentProblem] = set()

    @property
    def problem(self) -> _ContentProblem | None:
        """The problem that decides the reply, None for a message that can be accepted."""
        return _deciding_problem(self._problems, self._headers)

    def read(self, buffer: bytearray) -> bool:
        """Move content out of `buffer`; True once the terminating ".\\r\\n" has been consumed."""
        consumed, finished = self._scan(buffer)
        del buffer[:consumed]
        return finished

    def can_hold(self, octets: int) -> bool:
        """Whether the memory left would take a message of `octets` octets."""
        return self._content.can_hold(octets)

    def take_content(self) -> bytes:
        """Hand over the message read so far; its memory stays reserved until `discard`."""
        return self._content.take()

    def discard(self) -> None:
        """Drop what was read, and give back the memory of the message (taken or not)."""
        self._content.discard()

    def _scan(self, buffer: bytearray) -> tuple[int, bool]:
        position = 0
        while (crlf := buffer.find(b"\r\n", position)) != -1:
            next_line = crlf + 2
            if self._at_line_start and crlf == position + 1 and buffer[position] == _DOT:
                return next_line, True
            if self._at_line_start:
                position = self._take_whole_lines(buffer, position)
            else:  # the rest of a line begun in an earlier read
                self._take(buffer, position, next_line, line_ends=True)
                position = next_line
        return self._take_unfinished_line(buffer, position), False

    def _take_whole_lines(self, buffer: bytearray, start: int) -> int:
        """Take the whole lines from `start`, a line start, up to the terminator or the last
        CRLF in `buffer`, checked all at once by bytes methods in C: exactly what taking them
        one by one would do, in a time that does not depend on how short they are. Returns
        where the lines taken end.

        One search finds the first line that begins with a dot: mostly the terminator itself,
        so that finding it and learning that no line needs its dot taken away cost one pass.
        The lines' endings and lengths are read from one `splitlines` (about 0.2 ms for 100 KB
        of 78-octet lines, against 0.5 ms for counting each kind of line ending and splitting
        at CRLF)."""
        dotted = buffer.find(b"\r\n.", start)
        if dotted == -1:
            terminator = -1
        elif buffer[dotted + 3 : dotted + 5] == b"\r\n":
            terminator = dotted
        else:
            terminator = buffer.find(b"\r\n.\r\n", dotted)
        stop = terminator + 2 if terminator != -1 else buffer.rfind(b"\r\n", start) + 2
        lines = bytes(buffer[start:stop])
        stuffed = dotted != -1 and dotted + 2 < stop  # a line after the first begins with a dot
        content = lines.replace(b"\r\n.", b"\r\n") if stuffed else lines
        if content.startswith(b"."):
            content = content[1:]
        texts = content.splitlines()  # the lines without their endings: split at CRLF, CR or LF
        if len(content) - len(b"".join(texts)) != 2 * len(texts):  # a CR or LF stood alone
            self._problems.add(_ContentProblem.BARE_LINE_ENDING)
            texts = content.split(b"\r\n")  # a line is what lies between CRLFs
        if max(map(len, texts)) + 2 > self._max_line_length:
            self._problems.add(_ContentProblem.LINE_TOO_LONG)
        self._size += len(content)
        if self._size > self._max_message_bytes:
            self._problems.add(_ContentProblem.TOO_BIG)
        self._headers.feed(content)
        self._keep(content)
        return stop

    def _take_unfinished_line(self, buffer: bytearray, start: int) -> int:
        """Take what there is of the last line, keeping back what may still become CRLF or "."."""
        stop = len(buffer)
        if stop > start and buffer[stop - 1] == _CR:
            stop -= 1
        if self._at_line_start and stop == start + 1 and buffer[start] == _DOT:
            stop = start
        if stop > start:
            self._take(buffer, start, stop, line_ends=False)
        return stop

    def _take(self, buffer: bytearray, start: int, stop: int, *, line_ends: bool) -> None:
        """Take `buffer[start:stop]`, a whole line (CRLF included) or the start of one."""
        if self._at_line_start and buffer[start] == _DOT:
            start += 1
        self._at_line_start = line_ends
        self._size += stop - start
        self._line_length += stop - start
        taken = buffer[start:stop]
        self._headers.feed(taken)
        self._check(buffer, start, stop - 2 if line_ends else stop)
        self._keep(taken)
        if line_ends:
            self._line_length = 0

    def _keep(self, content: bytes | bytearray) -> None:
        """Keep `content` while the message can still be accepted; after that, nothing."""
        if self._problems or self._headers.problem is not None:
            self._content.discard()
        elif not self._content.keep(content):
            self._problems.add(_ContentProblem.OUT_OF_MEMORY)

    def _check(self, buffer: bytearray, start: int, end: int) -> None:
        """Check the text `buffer[start:end]` (no line ending) and the running totals."""
        if buffer.find(b"\r", start, end) != -1 or buffer.find(b"\n", start, end) != -1:
            self._problems.add(_ContentProblem.BARE_LINE_ENDING)
        if self._size > self._max_message_bytes:
            self._problems.add(_ContentProblem.TOO_BIG)
        if self._line_length > self._max_line_length:
            self._problems.add(_ContentProblem.LINE_TOO_LONG)


class _ChunkedContent:
    """A message arriving in BDAT chunks: kept as it comes (up to the size limit) and held to
    the same rules as DATA content — lines end in CRLF and stay within the line limit, the
    header section within its limits — checked as the octets arrive, so that the work per
    chunk is bounded by the chunk and both ways in accept and refuse the same messages."""

    def __init__(self, limits: SessionLimits, memory: MessageMemory) -> None:
        self._max_message_bytes = limits.max_message_bytes
        self._max_line_length = limits.max_line_length
        self._headers = _header_check(limits)
        self._content = MessageBuffer(memory)
        self.size = 0
        self._line_length = 0
        """Octets of the line being read so far, a CR held back at the end not counted."""
        self._held_cr = False
        """The octets so far end in a CR that the next octets decide about (CRLF or bare)."""
        self._problems: set[_ContentProblem] = set()

    def add(self, octets: bytes) -> None:
        """Add one chunk's octets (or part of them)."""
        self.size += len(octets)
        if self.size > self._max_message_bytes:
            self._problems.add(_ContentProblem.TOO_BIG)
        self._headers.feed(octets)
        self._check_lines(b"\r" + octets if self._held_cr else octets)
        if self._problems or self._headers.problem is not None:
            self._content.discard()
        elif not self._content.keep(octets):
            self._problems.add(_ContentProblem.OUT_OF_MEMORY)

    def expect(self, octets: int) -> None:
        """The message will have at least `octets` octets in all (a BDAT's chunk size, MAIL's
        SIZE): when the memory left would not take them, nothing more is kept and the chunk
        is refused once read."""
        if not self._problems and not self._content.can_hold(octets):
            self._problems.add(_ContentProblem.OUT_OF_MEMORY)
            self._content.discard()

    def problem(self, *, final: bool) -> _ContentProblem | None:
        """Why the message must be refused: its size or a lack of memory at once, the rest
        after the last chunk."""
        if _ContentProblem.TOO_BIG in self._problems:
            return _ContentProblem.TOO_BIG
        if not final:
            if _ContentProblem.OUT_OF_MEMORY in self._problems:
                return _ContentProblem.OUT_OF_MEMORY
            return None
        problems = set(self._problems)
        if self._held_cr:
            problems.add(_ContentProblem.BARE_LINE_ENDING)
        if self._line_length + 2 > self._max_line_length:  # the last line, CRLF or not
            problems.add(_ContentProblem.LINE_TOO_LONG)
        return _deciding_problem(problems, self._headers)

    def take_content(self) -> bytes:
        """Hand over the whole message; its memory stays reserved until `discard`."""
        return self._content.take()

    def discard(self) -> None:
        """Drop the chunks received, and give back the memory of the message (taken or not)."""
        self._content.discard()

    def _check_lines(self, text: bytes) -> None:
        """Check `text`, which continues the line being read: no bare CR or LF, no line over the
        limit. A CR at its end is held back until the next octets show whether LF follows."""
        self._held_cr = text.endswith(b"\r")
        if self._held_cr:
            text = text[:-1]
        line_ends = text.count(b"\r\n")
        if text.count(b"\r") != line_ends or text.count(b"\n") != line_ends:
            self._problems.add(_ContentProblem.BARE_LINE_ENDING)
        if not line_ends:
            self._line_length += len(text)
            return
        first, last = text.find(b"\r\n"), text.rfind(b"\r\n")
        longest = self._line_length + first
        if last - first > self._max_line_length:  # a line in between may be too long
            longest = max(longest, *map(len, text[first + 2 : last].split(b"\r\n")))
        if longest + 2 > self._max_line_length:
            self._problems.add(_ContentProblem.LINE_TOO_LONG)
        self._line_length = len(text) - last - 2
