"""Handing messages to the configured relay (`outbound_smtp`): the trio shell around the
sans-IO `ClientSession`. Plain, STARTTLS or implicit TLS; AUTH when credentials are set.

`RelayConnections` keeps connections open between messages while its `keep_connections` task
runs (as an MTA's connection cache does): a message goes out on an idle connection when there
is one, so a burst of mail pays for one connect, TLS handshake and AUTH per connection instead
of per message. With a relay that offers PIPELINING a message costs two round trips (its
envelope and DATA in one write, then its body). Messages handed off together (`hand_off_each`:
a copy per recipient) go out one after another over one connection. A kept connection the
relay has closed meanwhile (or that answers nothing for KEPT_ANSWER_SECONDS) is noticed before
anything of the message was accepted, and the message goes out on a new connection instead.

Every step is bounded on its own, as RFC 5321 section 4.5.3.2 and Postfix bound them, never the
hand-off as a whole (a large message over a slow link takes as long as it takes): connecting
(CONNECT_SECONDS at most), each reply the relay owes a command and the TLS handshake
(`outbound_smtp.timeout_seconds`), sending the message's data (`data_timeout_seconds` without
progress) and the reply to its end (`end_of_data_timeout_seconds`).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import math
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import certifi
import trio

from e2a_gateway.config import OutboundSmtpSettings
from e2a_gateway.smtp.client import (
    END_OF_DATA,
    SERVICE_CLOSING,
    Action,
    ClientProtocolError,
    ClientSession,
    Credentials,
    Delivered,
    Finished,
    NeedMore,
    Outcome,
    Outgoing,
    ReplyReader,
    SendBytes,
    StartTls,
)

log = logging.getLogger("e2a.outbound")

RECEIVE_BYTES = 65536
CLOSE_SECONDS = 1.0
"""Bound on saying QUIT to a relay when a connection is let go."""
STOPPING = "not handed off: the gateway was stopping"
KEPT_ANSWER_SECONDS = 10.0
"""How long a kept connection may leave a message's first command unanswered before it counts
as dead and the message goes out on a new connection (nothing of it was accepted yet)."""
CONNECT_SECONDS = 30.0
"""The longest a connect to the relay may take (Postfix's `smtp_connect_timeout`), unless
`outbound_smtp.timeout_seconds` is shorter."""
DATA_CHUNK = 65536
"""A message's data is written in pieces of this many octets, each of which must go out within
`outbound_smtp.data_timeout_seconds`: the bound is on progress, not on the whole transfer."""
INJECTED_BEFORE_TLS = (
    "STARTTLS: the relay sent more after its 220 to STARTTLS, before TLS began (replies a man "
    "in the middle injected would be read as the relay's over TLS); TLS not started, nothing sent"
)
"""Why a session ends when bytes follow the 220 to STARTTLS in what was read before the
handshake (RFC 3207 section 5: the STARTTLS injection of CVE-2011-0411, seen from the client).
Only an active attacker or a broken relay sends them; the message waits for a retry."""
EARLY_REPLY = (
    "the relay sent a reply to a command before it was sent (two replies to one command): "
    "each reply after it would be read as the answer to the command before"
)
"""Why a session ends when the replies read hold more than the commands sent so far ask for:
a reply nobody asked for yet would answer the next command, a spare 250 taking a message the
relay then refuses. The message waits for a retry, neither sent nor refused."""


_IMPLICIT_HINT = (
    " — a relay that expects TLS from the first byte (port 465) needs "
    'outbound_smtp.tls = "implicit"'
)
"""Said of a connection the relay never greeted, where the gateway waits for the greeting."""
_PLAIN_REPLY = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})
"""OpenSSL's reasons for a handshake answered with plain text (an SMTP greeting)."""
_STARTTLS_HINT = (
    " — the relay answered in plain text: one that starts TLS with STARTTLS (port 587 or 25) "
    'needs outbound_smtp.tls = "starttls"'
)


def tls_context(settings: OutboundSmtpSettings) -> ssl.SSLContext:
    """A verifying client context (the system CAs, or `outbound_smtp.ca_file`), made once and
    shared by every connection: loading the system's CAs costs OpenSSL about 0.1 s of CPU, in
    which nothing else in the process would run. The CAs are read at the first use (`e2a
    serve` checks `ca_file` at start); a changed bundle is read at the next start."""
    return _verifying_context(settings.ca_file)


@functools.lru_cache(maxsize=4)
def _verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """`tls_context` for a CA bundle (None: the system's)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if ca_file is None and (bundle := _system_bundle_elsewhere()) is not None:
        context.load_verify_locations(cafile=bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, Rocky, AlmaLinux
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # RHEL, CentOS
    "/etc/ssl/ca-bundle.pem",  # openSUSE, SLES
    "/etc/ssl/cert.pem",  # Alpine, Arch
)
"""Where Linux distributions keep the system's CA bundle."""


def _system_bundle_elsewhere() -> str | None:
    """The CA bundle to trust when the OpenSSL in use finds none where it looks (None when it
    does): its directory is the build machine's, so a one-file executable built on Debian
    (`/usr/lib/ssl`) would trust no relay on Fedora (`/etc/pki/tls`). The first of
    SYSTEM_CA_BUNDLES that exists, else certifi's bundle. SSL_CERT_FILE and SSL_CERT_DIR
    still choose, as OpenSSL's own paths."""
    found = ssl.get_default_verify_paths()
    if found.cafile is not None or found.capath is not None:
        return None
    for bundle in SYSTEM_CA_BUNDLES:
        if os.path.isfile(bundle):
            return bundle
    return certifi.where()


async def hand_off(settings: OutboundSmtpSettings, hostname: str, message: Outgoing) -> Outcome:
    """Deliver `message` to the relay over a connection of its own; every failure ends up in
    the returned Outcome."""
    return await RelayConnections(settings, hostname).hand_off(message)


@dataclass(eq=False)
class _Connection:
    """An open connection to the relay and the session it carries."""

    stream: trio.abc.Stream
    session: ClientSession
    reader: ReplyReader = field(default_factory=ReplyReader)
    messages: int = 0
    idle_since: float = 0.0
    answered: bool = False
    """Whether the relay has answered anything of the current message."""


class _Stale(Exception):
    """A kept connection turned out closed before the relay answered anything of the message."""


class _TimedOut(Exception):
    """A step of the hand-off outlasted its bound; the message says which."""


class _DataStalled(_TimedOut):
    """A message's data stopped going out before its end did: the relay cannot hold it."""


class _EarlyReply(ClientProtocolError):
    """The relay answered a command not yet sent (`EARLY_REPLY`): nothing more went out."""


class _ClearCredentials(Exception):
    """The relay's password would go in clear to a relay off the loopback; the message says
    what to set."""


class RelayConnections:
    """Messages handed to the relay, over connections kept open between them while
    `keep_connections` runs (otherwise each message has a connection of its own);
    `on_connect` is told of each connection opened.

    A connection is kept at most `outbound_smtp.connection_idle_seconds` without a message
    (0: never kept) and carries at most `outbound_smtp.messages_per_connection` messages."""

    def __init__(
        self,
        settings: OutboundSmtpSettings,
        hostname: str,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._hostname = hostname
        self._on_connect = on_connect
        self._credentials = (
            Credentials(settings.username, settings.password or "") if settings.username else None
        )
        self._idle: list[_Connection] = []
        self._keeping = False
        self._changed = trio.Event()
        self.connections_opened = 0
        """Connections opened to the relay so far (for tests and benchmarks)."""

    async def hand_off(self, message: Outgoing) -> Outcome:
        """Deliver `message` to the relay; every failure ends up in the returned Outcome."""
        (outcome,) = await self.hand_off_each([message])
        return outcome

    async def hand_off_each(
        self, messages: Sequence[Outgoing], stopping: Callable[[], bool] = lambda: False
    ) -> list[Outcome]:
        """Deliver `messages` to the relay one transaction after another, each over the
        connection the one before left open (a new one when the relay closed it), each step
        within its own bound. Once a step of one outlasted its bound, the messages not begun
        are deferred untried with its reason (a relay that stalls would stall each in turn);
        so are those not begun once `stopping()` (the gateway stopping: what was handed off
        must be recorded in time, or the send's lease lost). Returns their outcomes, in order;
        every failure ends up in its message's Outcome."""
        settings = self._settings
        if not settings.host:
            return [_deferred(message, "outbound_smtp.host is not set") for message in messages]
        held: list[_Connection] = []
        outcomes: list[Outcome] = []
        timed_out: str | None = None
        try:
            for message in messages:
                if timed_out is not None:
                    outcomes.append(_deferred(message, timed_out))
                elif stopping():
                    outcomes.append(_deferred(message, STOPPING))
                else:
                    outcome, timed_out = await self._hand_off_one(message, held)
                    outcomes.append(outcome)
        except BaseException:  # cancelled (shutdown): the connection is not left open
            for connection in held:
                await trio.aclose_forcefully(connection.stream)
            raise
        for connection in held:
            await self._keep_or_close(connection)
        return outcomes

    async def _hand_off_one(
        self, message: Outgoing, held: list[_Connection]
    ) -> tuple[Outcome, str | None]:
        """`message` over the connection `held` for the next one, else a kept idle one, else a
        new one; the connection it leaves open for another message goes back to `held`. Its
        outcome, and the reason when a step outlasted its bound (`_send`)."""
        while held or self._idle:
            connection = (held or self._idle).pop()
            try:
                return await self._send(connection, message, held)
            except _Stale:
                continue
        return await self._send(None, message, held)

    async def keep_connections(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep connections open between messages until cancelled, closing each once it has
        been idle `connection_idle_seconds`; then close them all."""
        self._keeping = self._settings.connection_idle_seconds > 0
        task_status.started()
        try:
            while True:
                self._changed = trio.Event()
                now = trio.current_time()
                limit = self._settings.connection_idle_seconds
                expired = [c for c in self._idle if now - c.idle_since >= limit]
                # all taken out before the first close waits: a send meanwhile must not pop one
                self._idle = [c for c in self._idle if c not in expired]
                for connection in expired:
                    await self._close(connection)
                oldest = min((c.idle_since for c in self._idle), default=math.inf)
                with trio.move_on_at(oldest + limit):
                    await self._changed.wait()
        finally:
            self._keeping = False
            idle, self._idle = self._idle, []
            with trio.CancelScope(shield=True):
                await self._close_all(idle)

    async def _send(
        self,
        connection: _Connection | None,
        message: Outgoing,
        held: list[_Connection],
    ) -> tuple[Outcome, str | None]:
        """`message` over a kept `connection`, or a new one when None; the connection goes to
        `held` when it can carry another message. Its outcome, and the reason when a step
        outlasted its bound (then the connection is closed). Raises `_Stale` when the kept
        connection turns out closed before the relay answered anything of it."""
        kept = connection is not None
        session = connection.session if connection is not None else self._new_session()
        first = session.begin(message)
        if isinstance(first, Delivered):  # refused on a kept connection, the relay not asked
            assert connection is not None
            held.append(connection)
            return first.outcome, None
        try:
            if connection is None:
                connection = await self._connect(session)
            connection.answered = False
            if first is not None:
                await self._write(connection, first)
            return await self._converse(connection, kept, held), None
        except _ClearCredentials as exc:
            outcome = _deferred(message, str(exc))
            return outcome, outcome.error
        except _Stale:
            assert connection is not None
            log.debug("a kept connection to the relay was closed; opening another")
            await self._close(connection, polite=False)
            raise
        except _TimedOut as exc:
            silent = connection is not None and not kept and not connection.answered
            if connection is not None:
                await self._close(connection, polite=False)
            outcome = session.connection_lost(data_sent=not isinstance(exc, _DataStalled))
            settings = self._settings
            outcome.error = f"relay {settings.host}:{settings.port} timed out: {exc}"
            if silent and settings.tls != "implicit":
                outcome.error += _IMPLICIT_HINT
            return outcome, outcome.error
        except (OSError, trio.BrokenResourceError, ssl.SSLError, ClientProtocolError) as exc:
            answered = connection is not None and connection.answered
            if connection is not None:
                await self._close(connection, polite=False)
            if kept and not answered and not isinstance(exc, ClientProtocolError):
                raise _Stale from exc
            # after an early reply, what the session asked to send (a message's data) was not
            outcome = session.connection_lost(data_sent=not isinstance(exc, _EarlyReply))
            cause = _first_cause(exc)
            settings = self._settings
            hint = ""
            if settings.tls == "implicit" and getattr(cause, "reason", None) in _PLAIN_REPLY:
                hint = _STARTTLS_HINT
            detail = f"relay {settings.host}:{settings.port}: {type(cause).__name__}: {cause}"
            outcome.error = detail[: 500 - len(hint)] + hint
            return outcome, None
        except BaseException:  # cancelled (shutdown): the connection is not left open
            if connection is not None:
                await trio.aclose_forcefully(connection.stream)
            raise

    async def _converse(
        self, connection: _Connection, kept: bool, held: list[_Connection]
    ) -> Outcome:
        """Feed the relay's replies to the session and do what it says until the message's
        transaction (or the session) ends; then hold the connection for the next message, or
        close it. Each reply is awaited within its bound (`_reply_seconds`), from the end of
        what was sent before it; `_TimedOut` when it is not in by then."""
        session = connection.session
        deadline: float | None = None
        while True:
            if deadline is None:
                deadline = trio.current_time() + self._reply_seconds(session)
            # A kept connection a middlebox dropped without a word answers nothing.
            stale_at = math.inf
            if kept and not connection.answered:
                stale_at = trio.current_time() + KEPT_ANSWER_SECONDS
            data: bytes | bytearray | None = None
            with trio.move_on_at(min(deadline, stale_at)):
                data = await connection.stream.receive_some(RECEIVE_BYTES)
            if data is None:
                if stale_at < deadline:
                    raise _Stale
                awaited = session.awaiting or "QUIT"
                what = "no greeting" if awaited == "greeting" else f"no reply to {awaited}"
                raise _TimedOut(f"{what} within {self._reply_seconds(session):g} s")
            if not data:
                if kept and not connection.answered:
                    raise _Stale
                outcome = session.connection_lost()
                outcome.error = outcome.error or "relay closed the connection"
                await self._close(connection, polite=False)
                return outcome
            replies = connection.reader.feed(bytes(data))
            for index, reply in enumerate(replies):
                if kept and not connection.answered and reply.code == SERVICE_CLOSING:
                    raise _Stale  # it timed the connection out while it was kept
                connection.answered = True
                deadline = None  # the next reply's bound starts once this one is dealt with
                action = session.receive_reply(reply)
                # Bytes read past this reply answer nothing sent yet (but the rest of a
                # pipelined group, which the session takes as NeedMore)
                early = index + 1 < len(replies) or connection.reader.holding
                if isinstance(action, StartTls):
                    if early:
                        raise ClientProtocolError(INJECTED_BEFORE_TLS)
                    await self._start_tls(connection)
                    break
                if isinstance(action, Delivered):
                    connection.messages += 1
                    if not early and self._can_carry_more(connection):
                        held.append(connection)
                    else:  # a relay out of step with its replies carries nothing more
                        await self._close(connection, polite=not early)
                    return action.outcome
                if isinstance(action, Finished):
                    await self._close(connection, polite=False)
                    return action.outcome
                if isinstance(action, NeedMore):
                    continue  # a pipelined command's reply; the next one follows
                if early and session.awaiting != "QUIT":
                    raise _EarlyReply(EARLY_REPLY)
                await self._write(connection, action)

    async def _start_tls(self, connection: _Connection) -> None:
        """The TLS handshake over `connection`, then EHLO again (RFC 3207 section 4.2: the
        session forgets what the relay offered in clear). Nothing the relay sent in clear is
        left to be read over TLS: `_converse` ends a session whose 220 to STARTTLS came with
        more (`INJECTED_BEFORE_TLS`)."""
        settings = self._settings
        connection.stream = trio.SSLStream(
            connection.stream, tls_context(settings), server_hostname=settings.host
        )
        with trio.move_on_after(settings.timeout_seconds) as waiting:
            await connection.stream.do_handshake()
        if waiting.cancelled_caught:
            raise _TimedOut(f"TLS handshake not done within {settings.timeout_seconds:g} s")
        await self._write(connection, connection.session.tls_started())

    def _reply_seconds(self, session: ClientSession) -> float:
        """How long the reply `session` awaits may take: `end_of_data_timeout_seconds` for the
        end of a message's data, `timeout_seconds` for any other."""
        settings = self._settings
        if session.awaiting == END_OF_DATA:
            return settings.end_of_data_timeout_seconds
        return settings.timeout_seconds

    def _new_session(self) -> ClientSession:
        return ClientSession(self._hostname, tls=self._settings.tls, credentials=self._credentials)

    async def _connect(self, session: ClientSession) -> _Connection:
        """A new connection to the relay for `session` (TLS from the first byte with
        `tls = "implicit"`). Raises `_ClearCredentials` rather than carry a password in clear
        to a relay off the loopback."""
        settings = self._settings
        assert settings.host is not None
        bound = min(CONNECT_SECONDS, settings.timeout_seconds)
        tcp: trio.SocketStream | None = None
        with trio.move_on_after(bound):
            tcp = await trio.open_tcp_stream(settings.host, settings.port)
        if tcp is None:
            raise _TimedOut(f"not connected within {bound:g} s")
        if settings.tls == "none" and self._credentials is not None:
            peer = _peer_address(tcp)
            if not ipaddress.ip_address(peer).is_loopback:
                await trio.aclose_forcefully(tcp)
                raise _ClearCredentials(
                    f"relay {settings.host}:{settings.port}: the password was not sent: "
                    'outbound_smtp.tls = "none" sends it in clear, which e2a does only to a relay '
                    f'on the loopback, and this one is at {peer} — use "starttls" or "implicit"'
                )
        self.connections_opened += 1
        if self._on_connect is not None:
            self._on_connect()
        stream: trio.abc.Stream = tcp
        if settings.tls == "implicit":
            stream = trio.SSLStream(tcp, tls_context(settings), server_hostname=settings.host)
        return _Connection(stream, session)

    async def _write(self, connection: _Connection, action: Action) -> None:
        """Send what the session asked for: a message's data (what it sends while it awaits
        END_OF_DATA) piece by piece, each within `data_timeout_seconds`; a command within
        `timeout_seconds`."""
        if not isinstance(action, SendBytes):
            raise ClientProtocolError(f"the session asked for {type(action).__name__} unexpectedly")
        settings = self._settings
        if connection.session.awaiting != END_OF_DATA:
            with trio.move_on_after(settings.timeout_seconds) as waiting:
                await connection.stream.send_all(action.data)
            if waiting.cancelled_caught:
                raise _TimedOut(f"a command not sent within {settings.timeout_seconds:g} s")
            return
        data = memoryview(action.data)
        for start in range(0, len(data), DATA_CHUNK):
            with trio.move_on_after(settings.data_timeout_seconds) as waiting:
                await connection.stream.send_all(data[start : start + DATA_CHUNK])
            if waiting.cancelled_caught:
                # Unless the stalled piece was the last, the end of data never went out.
                stalled = _DataStalled if start + DATA_CHUNK < len(data) else _TimedOut
                raise stalled(
                    f"the message's data made no progress for {settings.data_timeout_seconds:g} s"
                    f" ({start} of {len(data)} octets sent)"
                )

    def _can_carry_more(self, connection: _Connection) -> bool:
        """Whether `connection` may carry another message: `messages_per_connection`, and
        never when `connection_idle_seconds` is 0 (a relay that takes one transaction per
        connection)."""
        return (
            self._settings.connection_idle_seconds > 0
            and connection.session.idle
            and connection.messages < self._settings.messages_per_connection
        )

    async def _keep_or_close(self, connection: _Connection) -> None:
        """Keep an idle connection for the next message, or end it (QUIT)."""
        if self._keeping and self._can_carry_more(connection):
            connection.idle_since = trio.current_time()
            self._idle.append(connection)
            self._changed.set()
            return
        await self._close(connection)

    async def _close(self, connection: _Connection, *, polite: bool = True) -> None:
        """Close `connection`, saying QUIT first when `polite` and the session is idle (its
        reply is not waited for)."""
        try:
            if polite and connection.session.idle:
                with trio.move_on_after(CLOSE_SECONDS):
                    await _say_quit(connection)
        finally:
            await trio.aclose_forcefully(connection.stream)

    async def _close_all(self, connections: list[_Connection]) -> None:
        """Close idle `connections`, saying QUIT to each within CLOSE_SECONDS in all."""
        try:
            with trio.move_on_after(CLOSE_SECONDS):
                for connection in connections:
                    await _say_quit(connection)
        finally:
            for connection in connections:
                await trio.aclose_forcefully(connection.stream)


async def _say_quit(connection: _Connection) -> None:
    """QUIT, not waiting for its reply; a connection already broken is let be."""
    with contextlib.suppress(OSError, trio.BrokenResourceError, ssl.SSLError):
        await connection.stream.send_all(connection.session.quit().data)


def _peer_address(stream: trio.SocketStream) -> str:
    """The address `stream` is connected to, an IPv4 one mapped into IPv6 written as IPv4."""
    address = ipaddress.ip_address(str(stream.socket.getpeername()[0]).partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _deferred(message: Outgoing, reason: str) -> Outcome:
    """`message` not handed off, for `reason`: every recipient deferred."""
    return Outcome(deferred=dict.fromkeys(message.recipients, reason), error=reason)


def _first_cause(exc: BaseException) -> BaseException:
    """What went wrong, told plainly: the cause trio's connect error wraps, and the first
    attempt's error rather than the group of them ("ConnectionRefusedError: …")."""
    cause = exc.__cause__ or exc
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    return cause
