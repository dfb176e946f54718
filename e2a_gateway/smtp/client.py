"""A sans-IO SMTP *client* session: replies in, commands out, one message after another.

It speaks ESMTP to a relay: EHLO (HELO, without extensions, to a server that does not know
EHLO when neither STARTTLS nor AUTH is to follow), STARTTLS when asked (the I/O shell performs
the handshake and calls `tls_started`), AUTH PLAIN or LOGIN, then per message MAIL (with
SMTPUTF8 when the message needs it, RFC 6531), one RCPT per recipient and DATA with
dot-stuffing; RSET after a
transaction the relay left open, QUIT at the end. It never imports trio and never touches a
socket. Each message's outcome says, per recipient, whether the relay accepted it, refused it
for good (5xx) or for now (4xx); a refusal while the session is set up (greeting to AUTH) is
about the gateway, not the message, and leaves it for now whatever its code.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Literal

TlsMode = Literal["starttls", "implicit", "none"]
MAX_REPLY_LINE = 4096
"""The longest reply line taken, in octets (RFC 5321 section 4.5.3.1.5 allows 512)."""
MAX_REPLY_LINES = 200
"""The most lines one reply may have (an EHLO reply has a dozen or two): a relay sending
continuation lines without end is cut off, not gathered until the hand-off times out."""


class ClientProtocolError(Exception):
    """The server sent something that is not an SMTP reply."""


@dataclass(frozen=True)
class ServerReply:
    """One complete (possibly multi-line) reply."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """All lines joined with spaces."""
        return " ".join(self.lines)

    @property
    def transient(self) -> bool:
        """A 4xx reply: try again later."""
        return 400 <= self.code < 500


class ReplyReader:
    """Splits bytes from the server into complete replies (RFC 5321 section 4.2), each at
    most MAX_REPLY_LINES lines of MAX_REPLY_LINE octets; a line that is no reply (no code,
    or a code outside 2xx-5xx), a reply longer than that, or one whose lines disagree on
    success (`550-…` then `250 …`: RFC 5321 section 4.2.1 has every line's code the same)
    raises ClientProtocolError. Lines whose codes differ within one class (`250-…` then
    `251 …`) read as the last line's code, as Postfix and smtplib read them."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._first_class = b""

    def feed(self, data: bytes) -> list[ServerReply]:
        """Add bytes; return every reply they complete."""
        self._buffer += data
        replies = []
        while (end := self._buffer.find(b"\n")) != -1:
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if len(raw) > MAX_REPLY_LINE:
                raise ClientProtocolError("reply line too long")
            if (
                len(raw) < 3
                or raw[:1] not in (b"2", b"3", b"4", b"5")
                or not raw[:3].isdigit()
                or raw[3:4] not in (b"", b" ", b"-")
            ):
                raise ClientProtocolError(f"not an SMTP reply line: {raw[:80]!r}")
            if self._lines and raw[:1] != self._first_class:
                raise ClientProtocolError(
                    f"the lines of a reply disagree: {self._first_class.decode()}xx, then "
                    f"{raw[:80]!r}"
                )
            if not self._lines:
                self._first_class = raw[:1]
            if len(self._lines) >= MAX_REPLY_LINES - 1 and raw[3:4] == b"-":
                raise ClientProtocolError(f"reply too long: over {MAX_REPLY_LINES} lines")
            # NUL reads as U+FFFD: a reply's text is kept (a send's error, a bounce's detail),
            # and PostgreSQL's text cannot hold NUL
            self._lines.append(raw[4:].decode("utf-8", "replace").replace("\x00", "\ufffd"))
            if raw[3:4] != b"-":
                replies.append(ServerReply(int(raw[:3]), tuple(self._lines)))
                self._lines = []
        if len(self._buffer) > MAX_REPLY_LINE:
            raise ClientProtocolError("reply line too long")
        return replies

    @property
    def holding(self) -> bool:
        """Whether bytes of a reply not yet complete are held (a partial line, or lines of a
        multi-line reply that has not ended)."""
        return bool(self._buffer or self._lines)


@dataclass(frozen=True)
class Credentials:
    """Username and password for SMTP AUTH."""

    username: str
    password: str


@dataclass(frozen=True)
class Outgoing:
    """One message to hand to the relay."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes

    @property
    def needs_smtputf8(self) -> bool:
        """Whether the message can travel only with SMTPUTF8 (RFC 6531 section 3.2): an
        envelope address beyond ASCII, or UTF-8 in its header fields (RFC 6532). An 8-bit body
        alone needs 8BITMIME, not this."""
        envelope = (self.mail_from, *self.recipients)
        end = self.data.find(b"\r\n\r\n")
        headers = self.data if end < 0 else self.data[:end]
        return not all(address.isascii() for address in envelope) or not headers.isascii()


@dataclass
class Outcome:
    """How the hand-off went, per recipient. `error` explains a session-wide failure;
    `taken` is the text of the relay's 250 reply to the message's DATA (None until then), which
    may name the id the relay gave it."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    taken: str | None = None


@dataclass(frozen=True)
class SendBytes:
    """Write these bytes to the server."""

    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Perform the TLS handshake now, then call `tls_started`."""


@dataclass(frozen=True)
class Ready:
    """The connection is set up and no message was given: call `begin` with one."""


@dataclass(frozen=True)
class NeedMore:
    """Nothing to send: the reply answered one command of a pipelined group; feed the next."""


@dataclass(frozen=True)
class Delivered:
    """The message's transaction is over; the connection can carry another (`begin`) or be
    ended (`quit`)."""

    outcome: Outcome


@dataclass(frozen=True)
class Finished:
    """The session is over; close the connection. `outcome` is the last message's."""

    outcome: Outcome


Action = SendBytes | StartTls | Ready | NeedMore | Delivered | Finished


class _State(enum.Enum):
    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    AUTH = "auth"
    AUTH_LOGIN = "auth_login"
    AUTH_LOGIN_USERNAME = "auth_login_username"
    IDLE = "idle"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    BODY = "body"
    EMPTY_BODY = "empty_body"
    RSET = "rset"
    QUIT = "quit"
    DONE = "done"


_SETTING_UP = frozenset(
    {
        _State.GREETING,
        _State.EHLO,
        _State.HELO,
        _State.STARTTLS,
        _State.AUTH,
        _State.AUTH_LOGIN,
        _State.AUTH_LOGIN_USERNAME,
    }
)
END_OF_DATA = "end of DATA"
"""What a session that sent a message's data awaits (`ClientSession.awaiting`): the relay's
reply to its end, which may take longer than a command's (RFC 5321 section 4.5.3.2.6)."""
_STAGES = {
    _State.GREETING: "greeting",
    _State.EHLO: "EHLO",
    _State.HELO: "HELO",
    _State.STARTTLS: "STARTTLS",
    _State.AUTH: "AUTH",
    _State.AUTH_LOGIN: "AUTH LOGIN",
    _State.AUTH_LOGIN_USERNAME: "AUTH LOGIN",
    _State.IDLE: "idle",
    _State.MAIL: "MAIL FROM",
    _State.RCPT: "RCPT TO",
    _State.DATA: "DATA",
    _State.BODY: END_OF_DATA,
    _State.EMPTY_BODY: END_OF_DATA,
    _State.RSET: "RSET",
    _State.QUIT: "QUIT",
}
"""What each state waits for, as outcomes name it."""
SERVICE_CLOSING = 421
"""The reply with which a server closes the connection (RFC 5321 section 3.8)."""
EHLO_UNKNOWN = frozenset({500, 502})
"""EHLO's replies from a server that does not know the command (RFC 5321 section 3.2:
"command not recognized", "command not implemented"), greeted with HELO instead."""
UNANSWERED_DATA = (
    "connection lost after the message was sent, before the relay answered: it may have "
    "taken it, and the retry may deliver it twice"
)
"""Why a message whose end of data the relay never answered is deferred (RFC 5321 section
6.1: it cannot be known to be delivered, so it is sent again, as Postfix does)."""
NO_SMTPUTF8 = (
    "SMTPUTF8: 553 5.6.7 the receiving server does not support internationalised mail: the "
    "message names an address beyond ASCII (RFC 6531, RFC 6532) and the relay does not offer "
    "SMTPUTF8 (Non-ASCII addresses not permitted for that recipient); not sent, nor downgraded"
)
"""Why every recipient of a message that needs SMTPUTF8 fails for good at a relay whose EHLO
does not offer it (RFC 6531 section 3.2: such a message is returned, never sent 7-bit)."""


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload: lines starting with '.' doubled, CRLF endings, terminated by CRLF.CRLF.

    A bare CR or LF ends a line as CRLF does, so that no relay reading line ends leniently
    finds an end of data (`\\r.\\r`, `\\n.\\n`) before the real one (SMTP smuggling).
    Messages e2a writes end their lines in CRLF already: counting the line ends shows it in
    about half the time rewriting them takes (10 MB: some 20-50 ms saved)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") == crlf == data.count(b"\n"):
        body = data
    else:
        body = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if body.startswith(b"."):
        body = b"." + body
    body = body.replace(b"\r\n.", b"\r\n..")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


class ClientSession:
    """One connection to an SMTP relay, carrying one message after another.

    Give it a message with `begin` (at once, before the greeting, or whenever it is `idle`),
    feed the server's replies to `receive_reply` and perform each returned action; after
    `StartTls`, call `tls_started`. When a message's transaction ends it returns
    `Delivered` and is idle again, or `Finished` when the connection cannot carry another
    (the relay refused the session, or is closing it). `quit` ends an idle session."""

    def __init__(
        self,
        hostname: str,
        *,
        tls: TlsMode = "none",
        credentials: Credentials | None = None,
    ) -> None:
        self._hostname = hostname
        self._tls = tls
        self._credentials = credentials
        self._state = _State.GREETING
        self._secure = tls == "implicit"
        self._extensions: dict[str, str] = {}
        self._message: Outgoing | None = None
        self._pending_rcpt = 0
        self._pipelined = False
        self._mail_refused = False
        self._outcome = Outcome()

    @property
    def outcome(self) -> Outcome:
        """The current (or last) message's outcome so far; final once `Delivered` or
        `Finished` was returned for it."""
        return self._outcome

    @property
    def idle(self) -> bool:
        """Set up, with no message in progress: `begin` may be called."""
        return self._state is _State.IDLE

    @property
    def awaiting(self) -> str | None:
        """What the session waits for the relay to answer ("greeting", "EHLO", "MAIL FROM",
        …, END_OF_DATA; None when idle or over): the I/O shell bounds the wait accordingly.
        Bytes to send while it awaits END_OF_DATA are the message's data."""
        if self._state in (_State.IDLE, _State.DONE):
            return None
        return _STAGES[self._state]

    def begin(self, message: Outgoing) -> Action | None:
        """Take `message` as the next one: its MAIL command when idle, else None (it goes out
        once the session is set up). Only before the greeting or while idle."""
        if self._state is not _State.GREETING and self._state is not _State.IDLE:
            raise RuntimeError(f"cannot begin a message in state {self._state.value}")
        self._message = message
        self._outcome = Outcome()
        if self._state is _State.IDLE:
            return self._send_mail()
        return None

    def quit(self) -> SendBytes:
        """End the session: QUIT (its reply returns `Finished`)."""
        return self._command(_State.QUIT, "QUIT")

    def receive_reply(self, reply: ServerReply) -> Action:
        """The next thing to do after the server said `reply`."""
        if reply.code == SERVICE_CLOSING and self._state not in (_State.QUIT, _State.DONE):
            return self._fail_all(reply, _STAGES[self._state])
        handler = {
            _State.GREETING: self._on_greeting,
            _State.EHLO: self._on_ehlo,
            _State.HELO: self._on_helo,
            _State.STARTTLS: self._on_starttls,
            _State.AUTH: self._on_auth,
            _State.AUTH_LOGIN: self._on_login_prompt,
            _State.AUTH_LOGIN_USERNAME: self._on_login_prompt,
            _State.IDLE: self._on_unexpected,
            _State.MAIL: self._on_mail,
            _State.RCPT: self._on_rcpt,
            _State.DATA: self._on_data,
            _State.BODY: self._on_body,
            _State.EMPTY_BODY: self._on_empty_body,
            _State.RSET: self._on_rset,
            _State.QUIT: self._on_quit,
            _State.DONE: self._on_quit,
        }[self._state]
        return handler(reply)

    def connection_lost(self, *, data_sent: bool = True) -> Outcome:
        """The connection broke (or timed out): every recipient of the message in progress
        not yet accepted is deferred; once its data was sent the relay may hold it, which the
        reason says (`UNANSWERED_DATA`), unless `data_sent` is False (its end never went out).
        Returns that message's outcome."""
        if self._state is _State.BODY and data_sent:
            self._defer_rest(UNANSWERED_DATA)
        elif self._state not in (_State.IDLE, _State.RSET, _State.QUIT, _State.DONE):
            self._defer_rest("connection lost")
        self._state = _State.DONE
        return self._outcome

    def tls_started(self) -> Action:
        """The handshake succeeded: greet again over TLS (RFC 3207)."""
        self._secure = True
        return self._send_ehlo()

    # -- transitions ------------------------------------------------------------------------

    def _command(self, state: _State, line: str) -> SendBytes:
        self._state = state
        return SendBytes(line.encode("utf-8") + b"\r\n")

    def _send_ehlo(self) -> SendBytes:
        return self._command(_State.EHLO, f"EHLO {self._hostname}")

    def _fail_all(self, reply: ServerReply, during: str) -> Action:
        """The message cannot go through (the reply says whether for now or for good; while
        the session is set up, for now: `_setup_failed`). A session that the relay is closing
        ends with QUIT; otherwise the transaction is over and the connection can carry the
        next message."""
        if self._state in _SETTING_UP:
            return self._setup_failed(reply, during)
        self._fail_message(reply, during)
        if reply.code == SERVICE_CLOSING:
            return self.quit()
        if self._state is _State.MAIL or self._state is _State.BODY:
            return self._delivered()  # no transaction was begun, or it has ended
        return self._command(_State.RSET, "RSET")

    def _fail_message(self, reply: ServerReply, during: str) -> None:
        """Every recipient without a final answer fails with `reply`: for now (4xx) or for
        good."""
        reason = f"{during}: {reply.code} {reply.text}"
        self._fail_pending(
            self._outcome.deferred if reply.transient else self._outcome.refused, reason
        )

    def _delivered(self) -> Delivered:
        """The message's transaction is over and the session idle again."""
        self._state = _State.IDLE
        return Delivered(self._outcome)

    def _defer_rest(self, reason: str) -> None:
        self._fail_pending(self._outcome.deferred, reason)

    def _fail_pending(self, bucket: dict[str, str], reason: str) -> None:
        """The message did not go through: every recipient without a final answer of its
        own (including those accepted at RCPT) goes into `bucket`."""
        self._outcome.error = self._outcome.error or reason
        if self._message is None:
            return
        settled = self._outcome.refused.keys() | self._outcome.deferred.keys()
        for recipient in self._message.recipients:
            if recipient in self._outcome.accepted or recipient not in settled:
                bucket[recipient] = reason
        self._outcome.accepted.clear()

    def _on_greeting(self, reply: ServerReply) -> Action:
        if reply.code != 220:
            return self._setup_failed(reply, "greeting")
        return self._send_ehlo()

    def _on_ehlo(self, reply: ServerReply) -> Action:
        if reply.code != 250:
            if reply.code in EHLO_UNKNOWN and self._may_do_without_extensions:
                # A server that knows no EHLO (RFC 5321 section 3.2): HELO, and no extension
                # at all. Another refusal (550 to the gateway's name) is no reason to retry.
                self._extensions = {}
                return self._command(_State.HELO, f"HELO {self._hostname}")
            return self._setup_failed(reply, "EHLO")
        self._extensions = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.partition(" ")
            self._extensions[keyword.upper()] = params
        if self._tls == "starttls" and not self._secure:
            if "STARTTLS" not in self._extensions:
                # Nothing goes out in clear, and the message waits: a relay whose certificate
                # did not load, or a man in the middle stripping STARTTLS, refuses nothing.
                return self._setup_failed(
                    ServerReply(454, ("relay does not offer STARTTLS",)), "EHLO"
                )
            return self._command(_State.STARTTLS, "STARTTLS")
        return self._authenticate_or_mail()

    @property
    def _may_do_without_extensions(self) -> bool:
        """Whether the session needs nothing EHLO alone offers: neither STARTTLS (still to
        come) nor AUTH. HELO would otherwise carry the mail in clear or unauthenticated."""
        tls_pending = self._tls == "starttls" and not self._secure
        return not tls_pending and self._credentials is None

    def _on_helo(self, reply: ServerReply) -> Action:
        if reply.code != 250:
            return self._setup_failed(reply, "HELO")
        return self._set_up()

    def _on_starttls(self, reply: ServerReply) -> Action:
        if reply.code != 220:
            return self._setup_failed(reply, "STARTTLS")
        return StartTls()

    def _authenticate_or_mail(self) -> Action:
        if self._credentials is None:
            return self._set_up()
        mechanisms = _auth_mechanisms(self._extensions)
        user, password = self._credentials.username, self._credentials.password
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            return self._command(_State.AUTH, f"AUTH PLAIN {token}")
        if "LOGIN" in mechanisms:
            return self._command(_State.AUTH_LOGIN, "AUTH LOGIN")
        return self._setup_failed(
            ServerReply(454, ("relay offers neither AUTH PLAIN nor AUTH LOGIN",)), "AUTH"
        )

    def _setup_failed(self, reply: ServerReply, during: str) -> Action:
        """The relay refused the session before any message was given (its greeting, EHLO,
        STARTTLS, AUTH) or cannot give what the settings require: the fault is in the relay's
        or the gateway's set-up (the gateway's address or name refused, TLS unavailable, a
        wrong password), not in the message, so every recipient waits for a retry whatever
        the code (as Postfix's `smtp_skip_5xx_greeting`, mandatory TLS and
        `smtp_sasl_auth_soft_bounce` have it): mail sent before the set-up is mended still
        goes. The session ends."""
        self._defer_rest(f"{during}: {reply.code} {reply.text}")
        return self.quit()

    def _on_login_prompt(self, reply: ServerReply) -> Action:
        """AUTH LOGIN: 334 asks for the username, then for the password."""
        if reply.code != 334 or self._credentials is None:
            return self._setup_failed(reply, "AUTH LOGIN")
        if self._state is _State.AUTH_LOGIN:
            username = base64.b64encode(self._credentials.username.encode()).decode()
            return self._command(_State.AUTH_LOGIN_USERNAME, username)
        password = base64.b64encode(self._credentials.password.encode()).decode()
        return self._command(_State.AUTH, password)

    def _on_auth(self, reply: ServerReply) -> Action:
        if reply.code != 235:
            return self._setup_failed(reply, "AUTH")
        return self._set_up()

    def _set_up(self) -> Action:
        """The session is ready: the message given meanwhile goes out, else wait for one."""
        self._state = _State.IDLE
        if self._message is None:
            return Ready()
        return self._send_mail()

    def _send_mail(self) -> SendBytes | Delivered:
        """MAIL, and with PIPELINING (RFC 2920) every RCPT and DATA in the same write: the
        replies then come in order, and only the message's body waits for 354. A message
        larger than the relay's SIZE is refused for good without a word to the relay
        (RFC 1870 section 6.1), which stays idle for the next one; so is one that needs
        SMTPUTF8 when the relay does not offer it (`NO_SMTPUTF8`), else it asks for it."""
        assert self._message is not None
        params = ""
        smtputf8 = self._message.needs_smtputf8
        if smtputf8 and "SMTPUTF8" not in self._extensions:
            self._fail_pending(self._outcome.refused, NO_SMTPUTF8)
            return self._delivered()
        if "SIZE" in self._extensions:
            size = len(self._message.data)
            limit = self._extensions["SIZE"].strip()
            if limit.isdigit() and 0 < int(limit) < size:
                reason = f"SIZE: the message is {size} octets, the relay takes at most {limit}"
                self._fail_pending(self._outcome.refused, reason)
                return self._delivered()
            params += f" SIZE={size}"
        # bytes.isascii, not a look at each byte in Python: 25 MB took half a second, in which
        # nothing else in the process ran
        if "8BITMIME" in self._extensions and not self._message.data.isascii():
            params += " BODY=8BITMIME"
        if smtputf8:
            params += " SMTPUTF8"
        mail = self._command(_State.MAIL, f"MAIL FROM:<{self._message.mail_from}>{params}")
        self._pending_rcpt = 0
        self._mail_refused = False
        self._pipelined = "PIPELINING" in self._extensions
        if not self._pipelined:
            return mail
        group = [f"RCPT TO:<{recipient}>" for recipient in self._message.recipients]
        return SendBytes(mail.data + "".join(f"{line}\r\n" for line in [*group, "DATA"]).encode())

    def _on_mail(self, reply: ServerReply) -> Action:
        if reply.code == 250:
            if self._pipelined:
                self._state = _State.RCPT
                return NeedMore()
            return self._next_rcpt()
        if not self._pipelined:
            return self._fail_all(reply, "MAIL FROM")
        # The RCPTs and DATA sent with it are answered too (503): read past them.
        self._mail_refused = True
        self._fail_message(reply, "MAIL FROM")
        self._state = _State.RCPT
        return NeedMore()

    def _next_rcpt(self) -> Action:
        assert self._message is not None
        recipient = self._message.recipients[self._pending_rcpt]
        return self._command(_State.RCPT, f"RCPT TO:<{recipient}>")

    def _on_rcpt(self, reply: ServerReply) -> Action:
        assert self._message is not None
        recipient = self._message.recipients[self._pending_rcpt]
        reason = f"RCPT TO: {reply.code} {reply.text}"
        if self._mail_refused:
            pass  # every recipient already failed with MAIL's reply
        elif reply.code in (250, 251):
            self._outcome.accepted.append(recipient)
        elif reply.transient:
            self._outcome.deferred[recipient] = reason
        else:
            self._outcome.refused[recipient] = reason
        self._pending_rcpt += 1
        if self._pending_rcpt < len(self._message.recipients):
            return NeedMore() if self._pipelined else self._next_rcpt()
        if self._pipelined:
            self._state = _State.DATA
            return NeedMore()
        if not self._outcome.accepted:
            return self._command(_State.RSET, "RSET")  # MAIL was accepted: close the transaction
        return self._command(_State.DATA, "DATA")

    def _on_data(self, reply: ServerReply) -> Action:
        assert self._message is not None
        if reply.code == 354 and (self._mail_refused or not self._outcome.accepted):
            # Pipelined DATA the relay took although it accepted no recipient: end the empty
            # message at once (RFC 2920 section 3.1); its reply ends the transaction.
            self._state = _State.EMPTY_BODY
            return SendBytes(b".\r\n")
        if self._mail_refused:  # no transaction was begun
            return self._delivered()
        if reply.code != 354:
            if not self._outcome.accepted:  # every RCPT failed: their reasons say why
                return self._command(_State.RSET, "RSET")
            if reply.code < 400:
                # neither an invitation nor a refusal: the relay is out of step with the
                # session, so nothing it said is certain: the message waits for a retry
                # (not refused for good), and this connection carries nothing more
                self._fail_message(_out_of_step(reply), "DATA")
                return self.quit()
            return self._fail_all(reply, "DATA")
        self._state = _State.BODY
        return SendBytes(dot_stuff(self._message.data))

    def _on_body(self, reply: ServerReply) -> Action:
        if reply.code != 250:
            return self._fail_all(reply, END_OF_DATA)
        self._outcome.taken = reply.text
        return self._delivered()

    def _on_empty_body(self, reply: ServerReply) -> Action:
        return self._delivered()

    def _on_rset(self, reply: ServerReply) -> Action:
        if reply.code != 250:  # the relay is confused: do not trust this connection again
            return self.quit()
        return self._delivered()

    def _on_unexpected(self, reply: ServerReply) -> Action:
        """A reply nobody asked for while idle: end the session."""
        return self.quit()

    def _on_quit(self, reply: ServerReply) -> Action:
        self._state = _State.DONE
        return Finished(self._outcome)


def _out_of_step(reply: ServerReply) -> ServerReply:
    """A transient failure standing for `reply`, which answered a command as no relay in step
    with the session would."""
    return ServerReply(451, (f"the relay answered {reply.code} {reply.text}, out of step",))


def _auth_mechanisms(extensions: dict[str, str]) -> set[str]:
    """The SASL mechanisms an EHLO reply offers: `AUTH LOGIN PLAIN` (RFC 4954), and the form
    relays of Outlook's time wrote before it, `AUTH=LOGIN PLAIN`, alone or beside it."""
    mechanisms = set(extensions.get("AUTH", "").upper().split())
    for keyword, params in extensions.items():
        if keyword.startswith("AUTH="):
            mechanisms.update(f"{keyword[len('AUTH=') :]} {params}".upper().split())
    return mechanisms
