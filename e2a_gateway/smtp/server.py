"""Trio listener for inbound SMTP: one task per connection, each driving a `ServerSession`.

It moves bytes between sockets and sessions, secures connections that ask for STARTTLS, keeps
the connection limits, the memory all sessions may hold for messages (`MessageMemory`) and the
clocks (silence, each command line, each message as a whole), shuts down gracefully and turns
the sessions' decision requests into `MailSink` calls. Behind a load balancer it reads the
PROXY protocol header of the peers it is told to trust (parsed by proxy_header.py), and the
client it names is the session's peer. It must not interpret SMTP (protocol.py does) nor store
mail (the sink does), and nothing a client or a sink does may take the listener or another
session down.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import errno
import logging
import math
import os
import ssl
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import trio

from e2a_gateway.networks import IpNetwork, is_trusted_proxy, network_of, release
from e2a_gateway.signing.reply_tokens import redact_reply_tokens
from e2a_gateway.smtp.message_memory import MessageMemory
from e2a_gateway.smtp.protocol import (
    Awaiting,
    ConnectionClosed,
    Envelope,
    Mailbox,
    MessageReceived,
    MessageRefusal,
    Pause,
    RecipientRequested,
    Reply,
    ServerSession,
    SessionLimits,
    Timeout,
    TlsRequested,
    check_hostname,
)
from e2a_gateway.smtp.proxy_header import (
    NO_HEADER,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)

__all__ = [
    "ListenerLimits",
    "MailSink",
    "MessageNotStored",
    "RecipientNotChecked",
    "RecipientVerdict",
    "SenderNotYetAuthenticated",
    "SmtpObserver",
    "StorageFull",
    "TlsFileError",
    "client_network",
    "serve_smtp",
    "server_tls_context",
]

logger = logging.getLogger("e2a.smtp")

_RECEIVE_BYTES = 65536
_GOODBYE_SECONDS = 1.0
"""How long a client turned away (limits, expired grace period) gets to read its 421."""
_ACCEPT_RETRY_SECONDS = 0.1
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
PROXY_HEADER_SECONDS = 5.0
"""How long a trusted load balancer's connection may take to send its PROXY header, as upstream
e2a: a connection that sent nothing by then (a health check) is served as the balancer's own,
one with half a header is closed."""
SESSION_LOG_ENTRIES = 100
"""Messages and refused recipients one session log line lists at most. A session that keeps
its connection for more (an MTA sending a queue's mail) logs a line for each hundred as it
goes, `end=continues`, so a long-lived session holds no growing list and no line grows without
bound."""


class RecipientVerdict(enum.Enum):
    """The gateway's answer to `RCPT TO`."""

    ACCEPT = "accept"
    UNKNOWN_USER = "unknown_user"
    """One of our domains, but no such agent: 550 5.1.1."""
    RELAY_DENIED = "relay_denied"
    """Not one of our domains: 550 5.7.1."""


class RecipientNotChecked(Exception):
    """The sink could not decide on a recipient for a reason that passes (its database does not
    answer); the client is told to try again later (451 4.3.0), and the log says why in a line."""


class MessageNotStored(Exception):
    """The sink could not commit a message; the client is told to try again later (451 4.3.0)."""


class StorageFull(MessageNotStored):
    """The sink could not commit a message because its storage took no more (the database's
    disk is full); the client is told so and to try again later (452 4.3.1, as RFC 3463's
    "mail system full" and Postfix's "Insufficient system storage")."""


class SenderNotYetAuthenticated(MessageNotStored):
    """The sink would not take a message as its sender's authentication stands now, which a
    temporary error (DNS) decided and a later check may not: the client is told to try again
    later (451 4.7.0), nothing stored."""


class MailSink(Protocol):
    """What the listener needs from the gateway: recipient decisions and durable storage."""

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        """Whether this gateway takes mail for `mailbox`; `RecipientNotChecked` when that
        cannot be known for now."""
        ...

    async def accept_message(self, envelope: Envelope, peer: str) -> str:
        """Commit the message for all its recipients and return its id.

        The client hears 250 only after this returns. Raise `MessageNotStored` when the
        message could not be committed (`StorageFull` when storage took no more); `peer` is
        the client's IP address.
        """
        ...


class SmtpObserver(Protocol):
    """What the listener reports as it works (the gateway's metrics). Each call returns at once.

    Reasons for `mail_rejected`: `unknown_user` and `relay_denied` (550 to RCPT),
    `recipient_check_failed` (451 to RCPT), `not_stored` (451 after DATA, 452 4.3.1 when
    storage is full), `message_refused` (a message refused for what it holds), `memory_limit`
    (452 4.3.1: the memory for messages being received was full) and `connection_limit` (421
    to a connection over the listener's limits).

    Outcomes for `proxy_header`, of a connection from `smtp.proxy_trusted_cidrs`: `read` (a
    header, naming a client or not), `none` (no header: the peer spoke SMTP first, or said
    nothing for `PROXY_HEADER_SECONDS`), `malformed`, `cut_short` (the connection ended inside
    its header), `timeout` (the header incomplete after `PROXY_HEADER_SECONDS`) and
    `over_limit` (closed unread: `max_sessions` connections were waiting for theirs). A
    connection that ends before sending anything is not reported."""

    def session_started(self) -> None:
        """A connection is being served."""
        ...

    def session_ended(self) -> None:
        """A connection that was served has closed."""
        ...

    def message_accepted(self) -> None:
        """A message was committed and the client told 250."""
        ...

    def mail_rejected(self, reason: str) -> None:
        """A recipient, a message or a connection was refused for `reason`."""
        ...

    def proxy_header(self, outcome: str) -> None:
        """A trusted load balancer's connection was read for its PROXY header, with `outcome`."""
        ...


class _Unobserved:
    """The observer of a listener nobody watches."""

    def session_started(self) -> None:
        """Nothing to report to."""

    def session_ended(self) -> None:
        """Nothing to report to."""

    def message_accepted(self) -> None:
        """Nothing to report to."""

    def mail_rejected(self, reason: str) -> None:
        """Nothing to report to."""

    def proxy_header(self, outcome: str) -> None:
        """Nothing to report to."""


@dataclasses.dataclass(frozen=True)
class ListenerLimits:
    """Limits of the listener as a whole, on top of each session's `SessionLimits`."""

    max_sessions: int = 500
    """Connections served at once; more are turned away with 421 4.7.0."""
    max_sessions_per_ip: int = 50
    """Connections served at once from one client IP address; more get 421 4.7.0."""
    max_sessions_per_network: int = 100
    """Connections served at once from one network (`client_network`); more get 421 4.7.0."""
    ipv4_network_prefix: int = 24
    """The prefix length that makes an IPv4 client's network."""
    ipv6_network_prefix: int = 64
    """The prefix length that makes an IPv6 client's network (a /64 is one site's LAN)."""
    idle_timeout: float = 300.0
    """Seconds a client may stay silent, or leave replies unread, before 421 4.4.2."""
    command_timeout: float = 300.0
    """Seconds a whole command line may take, from when the server is ready for it."""
    data_timeout: float = 600.0
    """Seconds a whole message may take: DATA to its terminator, or BDAT to its LAST chunk."""
    shutdown_grace_period: float = 30.0
    """Seconds that transactions in flight get to finish once the listener is cancelled."""
    max_message_memory: int = 134_217_728
    """Octets all sessions together may hold of messages being received, from a message's
    first octet until it is answered; DATA or BDAT that would not fit gets 452 4.3.1. It should
    take one message of `SessionLimits.max_message_bytes` (`memory_for_message`)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"ListenerLimits.{field.name} must be positive, not {value}")
        if self.ipv4_network_prefix > 32 or self.ipv6_network_prefix > 128:
            raise ValueError(
                "ListenerLimits network prefixes must be at most 32 (IPv4), 128 (IPv6)"
            )


def client_network(peer: str, limits: ListenerLimits) -> str:
    """The network whose sessions `peer` counts towards, e.g. `192.0.2.0/24`, `2001:db8::/64`.

    An IPv4 address mapped into IPv6 (a dual-stack listener) counts as IPv4. A peer that is no
    IP address is a network of its own.
    """
    return network_of(peer, limits.ipv4_network_prefix, limits.ipv6_network_prefix)


class TlsFileError(ValueError):
    """A STARTTLS file cannot be used; `role` says which one ("certificate", "private key"),
    None when the two do not go together."""

    def __init__(self, message: str, role: str | None) -> None:
        super().__init__(message)
        self.role = role


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for STARTTLS from a PEM certificate chain and its key.

    Raises TlsFileError with a message naming the file when either cannot be loaded, the key's
    too when it is protected by a passphrase: the gateway starts unattended and never asks
    for one (OpenSSL would prompt on the terminal).
    """
    _check_pem(cert, b"CERTIFICATE-----", "certificate", "fullchain.pem")
    _check_pem(key, b"PRIVATE KEY-----", "private key", "privkey.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # TLS 1.2 and 1.3 with Python's forward-secret AEAD and SHA-2 suites, and no renegotiation
    # (docs/smtp.md): set here, not left to the build's Python and OpenSSL (1.1.1 lets clients
    # renegotiate).
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(
            certfile=os.fspath(cert), keyfile=os.fspath(key), password=_refuse_passphrase
        )
    except _PassphraseNeeded:
        raise TlsFileError(
            f"{key} is protected by a passphrase, which the gateway cannot be given — "
            f"decrypt it once, e.g. `openssl pkey -in {key} -out <new key file>`, and point "
            "smtp.tls_key at the result (readable by the gateway only)",
            "private key",
        ) from None
    except FileNotFoundError as error:  # removed since it was checked
        role = "certificate" if error.filename == os.fspath(cert) else "private key"
        raise TlsFileError(f"{error.filename}: no such file", role) from None
    except (ssl.SSLError, OSError) as error:
        raise TlsFileError(
            f"cannot load certificate {cert} with key {key}: {error} — both must be PEM files "
            "and the key must belong to the certificate",
            None,
        ) from None
    return context


def _check_pem(path: Path, marker: bytes, what: str, certbot_name: str) -> None:
    """TlsFileError naming `path` alone when it cannot be read or holds no PEM `what`, saying
    what belongs there (certbot's `certbot_name`)."""
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsFileError(
            f"{path}: no such file — give the path of the PEM {what} file "
            f"(certbot: {certbot_name})",
            what,
        ) from None
    except IsADirectoryError:
        raise TlsFileError(
            f"{path} is a directory — give the PEM {what} file in it (certbot: {certbot_name})",
            what,
        ) from None
    except PermissionError:
        raise TlsFileError(
            f"{path}: permission denied — make it readable by the user the gateway runs as, or "
            "under systemd hand it over with LoadCredential= (docs/deploy.md)",
            what,
        ) from None
    except OSError as error:
        raise TlsFileError(f"{path}: {error.strerror or error}", what) from None
    if marker not in content:
        raise TlsFileError(
            f"{path} holds no PEM {what} — give the {what} file here (certbot: {certbot_name})",
            what,
        )


class _PassphraseNeeded(Exception):
    """The key file is encrypted."""


def _refuse_passphrase() -> bytes:
    """OpenSSL asks for the key's passphrase: there is none to give."""
    raise _PassphraseNeeded


async def serve_smtp(
    listeners: list[trio.SocketListener],
    sink: MailSink,
    hostname: str,
    limits: SessionLimits,
    *,
    listener_limits: ListenerLimits | None = None,
    tls: ssl.SSLContext | None = None,
    observer: SmtpObserver | None = None,
    refusal: Callable[[], str | None] = lambda: None,
    proxy_trusted: Sequence[IpNetwork] = (),
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SMTP on `listeners` until cancelled, then shut down gracefully.

    `hostname` names this server in the greeting and replies; a value that cannot appear in a
    reply raises ValueError before anything is served. With `tls`, sessions offer STARTTLS.
    `observer` hears of sessions, accepted messages and refusals (for metrics). While
    `refusal` gives a reason, new connections are turned away with `421 4.3.2` (the gateway
    takes no mail for now: try another MX host, or later). A connection from a peer in
    `proxy_trusted` (load balancers) is read for a PROXY protocol header first, within
    `PROXY_HEADER_SECONDS`: the client it names is the session's peer for everything (limits,
    the sink, logs); a malformed one closes the connection. Other peers' input is SMTP.

    Cancelling this call is the shutdown signal. It returns once the listeners are closed and
    every session has ended: idle sessions get `421 4.3.2` at once, sessions with a transaction
    in flight get up to `shutdown_grace_period` seconds to finish it, and any still running
    after that get their 421 and are closed. The sessions run under a shield for that time, so
    the caller's cancellation does not cut off a message that is being committed.
    """
    check_hostname(hostname)
    listener = _Listener(
        listeners,
        sink,
        hostname,
        limits,
        listener_limits or ListenerLimits(),
        tls,
        observer or _Unobserved(),
        refusal,
        proxy_trusted,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        task_status.started(listeners)
        try:
            await trio.sleep_forever()
        finally:
            listener.shut_down()


class _Listener:
    """The accept loops and the sessions they started, with the counts the limits need."""

    def __init__(
        self,
        listeners: list[trio.SocketListener],
        sink: MailSink,
        hostname: str,
        limits: SessionLimits,
        listener_limits: ListenerLimits,
        tls: ssl.SSLContext | None,
        observer: SmtpObserver,
        refusal: Callable[[], str | None],
        proxy_trusted: Sequence[IpNetwork],
    ) -> None:
        self._listeners = listeners
        self._proxy_trusted = proxy_trusted
        self._reading_headers = 0
        """Connections whose PROXY header is being read."""
        self._refusal = refusal
        self._sink = sink
        self._hostname = hostname
        self._limits = limits
        self._listener_limits = listener_limits
        self._tls = tls
        self._observer = observer
        self._connections: set[_ClientConnection] = set()
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._per_network: collections.Counter[str] = collections.Counter()
        self._declining = 0
        self._memory = MessageMemory(listener_limits.max_message_memory)
        self._accepting = trio.CancelScope()
        self._sessions = trio.CancelScope(shield=True)
        self._shutting_down = False

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and serve until `shut_down`, shielded from the caller's cancellation."""
        with self._sessions:
            async with trio.open_nursery() as sessions:
                sessions.start_soon(self._accept_all, sessions)
                task_status.started()

    def shut_down(self) -> None:
        """Stop accepting; tell every session to finish up within the grace period."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self._accepting.cancel()
        grace = self._listener_limits.shutdown_grace_period
        self._sessions.deadline = trio.current_time() + grace + 2 * _GOODBYE_SECONDS
        for connection in list(self._connections):
            connection.shut_down(grace)
        in_flight = sum(1 for connection in self._connections if connection.in_flight)
        if in_flight:
            logger.info(
                "stopping: %s in flight %s up to %g s to finish %s (smtp.shutdown_grace_seconds)",
                "1 SMTP session" if in_flight == 1 else f"{in_flight} SMTP sessions",
                "gets" if in_flight == 1 else "get",
                grace,
                "its message" if in_flight == 1 else "their messages",
            )

    async def _accept_all(self, sessions: trio.Nursery) -> None:
        try:
            with self._accepting:
                async with trio.open_nursery() as accepting:
                    for listener in self._listeners:
                        accepting.start_soon(self._accept, listener, accepting, sessions)
        finally:
            for listener in self._listeners:
                await trio.aclose_forcefully(listener)

    async def _accept(
        self, listener: trio.SocketListener, accepting: trio.Nursery, sessions: trio.Nursery
    ) -> None:
        """Accept connections on `listener`; those of trusted load balancers have their PROXY
        header read in `accepting` (stopped on shutdown), the sessions run in `sessions`."""
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                if error.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                logger.error("SMTP accept failed: %s; retrying", os.strerror(error.errno))
                await trio.sleep(_ACCEPT_RETRY_SECONDS)
                continue
            peer = _peer_ip(stream)
            if self._proxy_trusted and is_trusted_proxy(peer, self._proxy_trusted):
                accepting.start_soon(self._admit_proxied, stream, peer, sessions)
            else:
                self._admit(stream, peer, sessions)

    async def _admit_proxied(
        self, stream: trio.SocketStream, balancer: str, sessions: trio.Nursery
    ) -> None:
        """Read the PROXY header of a trusted load balancer's connection, then admit the client
        it names with what followed the header. Closed without a word when the header is
        malformed, incomplete in time, or the connection ends first; closed too if the
        listener stops meanwhile."""
        admitted = False
        if self._reading_headers >= self._listener_limits.max_sessions:
            stream.socket.close()  # a flood: not even a header is read
            self._observer.proxy_header("over_limit")
            return
        self._reading_headers += 1
        try:
            header, early = await _read_proxy_header(stream.socket)
            if header is not None:
                self._observer.proxy_header("read" if header.length else "none")
                if not self._shutting_down:
                    self._admit(stream, header.client or balancer, sessions, early)
                    admitted = True
        except ProxyHeaderError as error:
            logger.warning("SMTP connection from %s closed: %s", balancer, error)
            self._observer.proxy_header(
                error.outcome if isinstance(error, _HeaderCutShort) else "malformed"
            )
        except trio.BrokenResourceError:
            pass  # gone before its header: nobody to tell
        finally:
            self._reading_headers -= 1
            if not admitted:
                stream.socket.close()

    def _admit(
        self, stream: trio.SocketStream, peer: str, sessions: trio.Nursery, early: bytes = b""
    ) -> None:
        """Start a session for a new connection from `peer`, which sent `early` already, or
        turn it away when over a limit."""
        network = client_network(peer, self._listener_limits)
        limits = self._listener_limits
        if self._refusal() is not None:
            # Said once, by whatever refuses (the gateway's schema watch), not per connection.
            self._turn_away(stream, sessions, "Service not available, try later", "4.3.2")
        elif len(self._connections) >= limits.max_sessions:
            self._decline(stream, peer, sessions, "Too many connections, try again later")
        elif self._per_ip[peer] >= limits.max_sessions_per_ip:
            self._decline(stream, peer, sessions, "Too many connections from your address")
        elif self._per_network[network] >= limits.max_sessions_per_network:
            self._decline(stream, peer, sessions, "Too many connections from your network")
        else:
            session = ServerSession(
                self._hostname, self._limits, tls_available=bool(self._tls), memory=self._memory
            )
            if early:
                session.receive_data(early)
            connection = _ClientConnection(
                stream,
                peer,
                network,
                session,
                self._sink,
                self._tls,
                limits,
                self._observer,
                self._memory,
            )
            self._observer.session_started()
            self._connections.add(connection)
            self._per_ip[peer] += 1
            self._per_network[network] += 1
            sessions.start_soon(self._serve, connection)

    async def _serve(self, connection: _ClientConnection) -> None:
        try:
            await connection.serve()
        finally:
            self._observer.session_ended()
            self._connections.discard(connection)
            release(self._per_ip, connection.peer)
            release(self._per_network, connection.network)

    def _decline(
        self, stream: trio.SocketStream, peer: str, sessions: trio.Nursery, reason: str
    ) -> None:
        logger.warning("SMTP client %s turned away: %s", peer, reason.lower())
        self._observer.mail_rejected("connection_limit")
        self._turn_away(stream, sessions, reason, "4.7.0")

    def _turn_away(
        self, stream: trio.SocketStream, sessions: trio.Nursery, reason: str, status: str
    ) -> None:
        """Answer a new connection `421 <status> <reason>` and close it (without a word in a
        flood of them)."""
        if self._declining >= self._listener_limits.max_sessions:
            stream.socket.close()  # a flood: not even a reply
            return
        reply = ServerSession(self._hostname, self._limits).decline(reason, status)
        self._declining += 1
        sessions.start_soon(self._send_refusal, stream, reply)

    async def _send_refusal(self, stream: trio.SocketStream, reply: bytes) -> None:
        try:
            with trio.move_on_after(_GOODBYE_SECONDS):
                await stream.send_all(reply)
        except trio.BrokenResourceError:
            pass
        finally:
            self._declining -= 1
            await trio.aclose_forcefully(stream)


class _ClientConnection:
    """One SMTP client: its stream, its session, and what its log line will say."""

    def __init__(
        self,
        stream: trio.SocketStream,
        peer: str,
        network: str,
        session: ServerSession,
        sink: MailSink,
        tls: ssl.SSLContext | None,
        limits: ListenerLimits,
        observer: SmtpObserver,
        memory: MessageMemory,
    ) -> None:
        self.peer = peer
        self.network = network
        self._stream: trio.abc.Stream = stream
        self._socket = stream.socket
        """The connection's socket, under TLS too."""
        self._session = session
        self._sink = sink
        self._tls = tls
        self._idle_timeout = limits.idle_timeout
        self._reading_timeouts = {
            Awaiting.COMMAND: limits.command_timeout,
            Awaiting.MESSAGE: limits.data_timeout,
        }
        self._reading: tuple[Awaiting, int] | None = None
        """What the session was reading when it last waited for input."""
        self._reading_deadline = math.inf
        """When that command line or message must be complete."""
        self._observer = observer
        self._memory = memory
        self._scope = trio.CancelScope()
        self._wait_scope: trio.CancelScope | None = None
        """The wait for the client, or a `Pause`, that a shutdown cuts short."""
        self._shutting_down = False
        self._tls_version = ""
        self._messages: list[str] = []
        self._refused_recipients: list[str] = []
        self._end = ""
        self._said_goodbye = False
        """The session ended the dialogue with its last reply (QUIT, a 421)."""
        self._last_reply = b""

    @property
    def in_flight(self) -> bool:
        """True while the client is in the middle of a mail transaction."""
        return self._session.in_flight

    def shut_down(self, grace_period: float) -> None:
        """The listener is stopping: 421 now if idle, else after the transaction in flight.

        After `grace_period` seconds whatever is still in flight is abandoned with a 421.
        """
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + grace_period)
        self._shutting_down = True
        self._session.shut_down()
        if not self._session.in_flight and self._wait_scope is not None:
            self._wait_scope.cancel()

    async def serve(self) -> None:
        """Hold the dialogue until either side ends it, then log one line about the session."""
        try:
            with self._scope:
                await self._converse()
            if self._scope.cancelled_caught:
                self._end = "shutdown grace period expired"
                await self._abandon()
        except trio.BrokenResourceError:
            self._end = "connection lost"
        except trio.TooSlowError:
            self._end = "client stopped reading replies"
        except Exception:
            logger.exception("SMTP session with %s failed", self.peer)
            self._end = "internal error"
        finally:
            self._session.close()  # gives back the memory of a message in flight
            self._log_session()
            await self._close()

    async def _converse(self) -> None:
        await self._send(self._session.greeting())
        outgoing = bytearray()
        while True:
            event = self._session.next_event()
            if isinstance(event, Reply):
                outgoing += event.data
                if isinstance(event, MessageRefusal):
                    self._note_refusal(event)
                continue
            if outgoing and not isinstance(event, RecipientRequested):
                # Replies wait while recipients are checked, and go out together before anything
                # else: a client that pipelines (RFC 2920) a transaction's RCPT commands gets
                # their replies in one write, not one per recipient. A message's commit never
                # holds replies back.
                await self._send(bytes(outgoing))
                outgoing.clear()
            match event:
                case None:
                    await self._receive()
                case RecipientRequested(address=mailbox):
                    await self._decide_recipient(mailbox)
                case MessageReceived():
                    # Not bound to a name of its own: the message would stay in memory until
                    # the session's next one, long after its memory was given back.
                    await self._deliver(event.envelope)
                case Pause(seconds=seconds):
                    await self._pause(seconds)
                case TlsRequested():
                    if not await self._start_tls():
                        return
                case ConnectionClosed():
                    self._end = self._end or _status_line(self._last_reply)
                    self._said_goodbye = True
                    return

    async def _close(self) -> None:
        """Close the connection (over TLS, after a close_notify); if the session ended the
        dialogue (QUIT, a 421), after the `_linger`."""
        if isinstance(self._stream, trio.SocketStream):
            try:
                if self._said_goodbye:
                    await _linger(self._socket)
            finally:
                self._socket.close()  # nothing to say at closing, unlike TLS
            return
        # Closing the TLS stream closes its socket: a duplicate keeps the connection open
        # for the linger that follows the close_notify.
        lingering = None
        if self._said_goodbye:
            with contextlib.suppress(OSError):  # out of file descriptors: no linger
                lingering = self._socket.dup()
        try:
            with trio.move_on_after(_GOODBYE_SECONDS):
                await self._stream.aclose()  # close_notify, then the socket
            await trio.aclose_forcefully(self._stream)
            if lingering is not None:
                await _linger(lingering)
        finally:
            if lingering is not None:
                lingering.close()

    async def _abandon(self) -> None:
        """The grace period is over: tell the client (if it still listens) and give up."""
        self._session.shut_down(immediately=True)
        goodbye = b""
        while isinstance(event := self._session.next_event(), Reply):
            goodbye += event.data
        with trio.move_on_after(_GOODBYE_SECONDS):
            await self._stream.send_all(goodbye)

    async def _send(self, data: bytes) -> None:
        self._last_reply = data
        if isinstance(self._stream, trio.SocketStream):
            # A reply almost always fits the socket's send buffer: written at once, it needs
            # no clock nor a wait, which send_all would set up for every reply. The next
            # receive is the checkpoint.
            try:
                sent = os.write(self._stream.socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                raise trio.BrokenResourceError(error) from error
            if sent == len(data):
                return
            data = data[sent:]
        # A bare CancelScope rather than fail_after: this runs for every reply.
        with trio.CancelScope(deadline=trio.current_time() + self._idle_timeout) as scope:
            await self._stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.TooSlowError

    async def _receive(self) -> None:
        """Wait for input, no longer than the idle timeout nor past the deadline of the command
        line or message being read, which is set when the session starts awaiting it — a
        client that sends a byte now and then keeps the first clock from running out, not
        the second. A shutdown cuts short the wait of a session with nothing in flight."""
        now = trio.current_time()
        reading = self._session.awaiting
        if reading != self._reading:
            self._reading = reading
            self._reading_deadline = now + self._reading_timeouts[reading[0]]
        data: bytes | bytearray | None = None
        deadline = min(now + self._idle_timeout, self._reading_deadline)
        with trio.CancelScope(deadline=deadline) as self._wait_scope:
            data = await self._read_some()
        self._wait_scope = None
        if data is not None:
            if not data:
                self._end = "client closed the connection"
            self._session.receive_data(bytes(data))
        elif not self._shutting_down or self._session.in_flight:
            timeout = Timeout.IDLE
            if trio.current_time() >= self._reading_deadline:
                timeout = Timeout.COMMAND if reading[0] is Awaiting.COMMAND else Timeout.MESSAGE
            self._end = f"{timeout.name.lower()} timeout"
            self._session.time_out(timeout)

    async def _pause(self, seconds: float) -> None:
        """Hold back the next reply `seconds` (a client past its errors), unless the listener
        is stopping: the client's replies so far are already written."""
        if self._shutting_down:
            return
        with trio.move_on_after(seconds) as self._wait_scope:
            await trio.sleep_forever()
        self._wait_scope = None

    async def _read_some(self) -> bytes | bytearray:
        """The next bytes from the client, b"" once it has closed. On a plain connection the
        client has usually not answered yet when this is called: it waits for the socket and
        then reads, where receive_some would try a read first, fail, and then wait."""
        if not isinstance(self._stream, trio.SocketStream):
            return await self._stream.receive_some(_RECEIVE_BYTES)
        return await _read_socket(self._socket)

    async def _start_tls(self) -> bool:
        """Secure the connection after STARTTLS's 220; False (and close) if the handshake fails."""
        if self._tls is None:
            raise RuntimeError("the session offered STARTTLS without a TLS context")
        secure = trio.SSLStream(self._stream, self._tls, server_side=True)
        self._stream = secure
        try:
            with trio.fail_after(self._idle_timeout):
                await secure.do_handshake()
        except trio.TooSlowError:
            self._end = f"TLS handshake timed out after {self._idle_timeout:g} s"
            return False
        except trio.BrokenResourceError as error:
            reason = error.__cause__ or error
            self._end = f"TLS handshake failed: {reason}"[:200]
            return False
        self._tls_version = str(secure.version())
        self._session.tls_started()
        return True

    async def _decide_recipient(self, mailbox: Mailbox) -> None:
        verdict: RecipientVerdict | None
        try:
            if mailbox.domain.startswith("["):
                verdict = RecipientVerdict.RELAY_DENIED  # an address literal is never ours
            else:
                verdict = await self._sink.check_recipient(mailbox)
        except RecipientNotChecked as error:
            logger.warning(
                "SMTP client %s: checking <%s> failed: %s",
                self.peer,
                redact_reply_tokens(mailbox.address),
                error,
            )
            verdict = None
        except Exception:
            logger.exception(
                "SMTP client %s: checking <%s> failed",
                self.peer,
                redact_reply_tokens(mailbox.address),
            )
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
        self._observer.mail_rejected(verdict.value if verdict else "recipient_check_failed")
        self._session.reject_recipient(code, enhanced, text)
        self._refused_recipients.append(
            f"<{redact_reply_tokens(mailbox.address)}> {code} {enhanced}"
        )
        self._log_when_full()

    def _note_refusal(self, refusal: MessageRefusal) -> None:
        """A message the session refused once it was read: in the log like every other."""
        status = " ".join(_status_line(refusal.data).split(" ")[:2])
        summary = _summary(refusal.mail_from, refusal.recipients)
        self._messages.append(f"{summary} refused {status}")
        if refusal.out_of_memory:
            logger.warning(
                "SMTP client %s: message refused with %s: the messages being received hold "
                "%d of the %d octets allowed (smtp.max_message_memory_bytes); the client will "
                "retry",
                self.peer,
                status,
                self._memory.held,
                self._memory.limit,
            )
            self._observer.mail_rejected("memory_limit")
        else:
            self._observer.mail_rejected("message_refused")
        self._log_when_full()

    async def _deliver(self, envelope: Envelope) -> None:
        summary = _summary(envelope.mail_from, envelope.recipients)
        reply = (451, "4.3.0", "Temporary storage failure, try again later")
        try:
            queue_id = await self._sink.accept_message(envelope, self.peer)
        except MessageNotStored as error:
            logger.warning("SMTP client %s: message not stored: %s", self.peer, error)
            if isinstance(error, StorageFull):
                reply = (452, "4.3.1", "Insufficient system storage, try again later")
            elif isinstance(error, SenderNotYetAuthenticated):
                reply = (451, "4.7.0", "Sender authentication failed for now, try again later")
        except Exception:
            logger.exception("SMTP client %s: storing a message failed", self.peer)
        else:
            self._session.message_accepted(queue_id)
            self._observer.message_accepted()
            self._messages.append(f"{summary} queued as {queue_id}")
            self._log_when_full()
            return
        self._observer.mail_rejected("not_stored")
        self._session.message_failed(*reply)
        self._messages.append(f"{summary} not stored")
        self._log_when_full()

    def _log_when_full(self) -> None:
        """Log what the session did so far once it fills a line (SESSION_LOG_ENTRIES)."""
        if len(self._messages) + len(self._refused_recipients) >= SESSION_LOG_ENTRIES:
            self._log_session("continues")

    def _log_session(self, end: str | None = None) -> None:
        """One line for the session's messages and refused recipients since its last line;
        `end` says how it ended (or that it continues)."""
        logger.info(
            "SMTP session client=%s helo=%r tls=%s messages=[%s] refused=[%s] end=%s",
            self.peer,
            self._session.helo,
            self._tls_version or "no",
            "; ".join(self._messages),
            "; ".join(self._refused_recipients),
            end or self._end or "server shutdown",
        )
        self._messages.clear()
        self._refused_recipients.clear()


async def _linger(socket: trio.socket.SocketType) -> None:
    """The session ended the dialogue (QUIT, a 421): end the server's side of the connection
    after its last reply (and close_notify, over TLS) and read and drop what the client still
    sends until it closes, for `_GOODBYE_SECONDS` at most. Closed with input unread (a client
    that pipelined past a 421), the socket would reset the connection, and the replies the
    client has not read yet would be lost, the 421 among them: the reset throws away what is
    still in the server's send buffer, and some clients' systems what they had received."""
    try:
        socket.shutdown(trio.socket.SHUT_WR)
        with trio.move_on_after(_GOODBYE_SECONDS):
            while await _read_socket(socket):
                pass
    except (OSError, trio.BrokenResourceError):
        pass  # the client is gone already


async def _read_socket(socket: trio.socket.SocketType) -> bytes:
    """The next bytes from `socket`, b"" once the client has closed (see
    `_ClientConnection._read_some`)."""
    while True:
        await trio.lowlevel.wait_readable(socket)
        try:
            return os.read(socket.fileno(), _RECEIVE_BYTES)
        except BlockingIOError:
            continue  # woken without data after all
        except OSError as error:
            raise trio.BrokenResourceError(error) from error


class _HeaderCutShort(ProxyHeaderError):
    """A PROXY header cut short by the connection's end or the clock; `outcome` says which
    (`cut_short`, `timeout`: `SmtpObserver.proxy_header`)."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


async def _read_proxy_header(socket: trio.socket.SocketType) -> tuple[ProxyHeader | None, bytes]:
    """The PROXY header a trusted load balancer's connection starts with (`NO_HEADER` when it
    starts with something else, or sent nothing in `PROXY_HEADER_SECONDS`), and the octets
    read after the header; None if the connection ended before sending anything. Raise
    ProxyHeaderError for a malformed header, `_HeaderCutShort` for one cut short by the end of
    the connection or the clock."""
    data = b""
    with trio.move_on_after(PROXY_HEADER_SECONDS):
        while True:
            received = await _read_socket(socket)
            if not received:
                if data:
                    raise _HeaderCutShort("connection ended inside its PROXY header", "cut_short")
                return None, b""
            data += received
            header = parse_proxy_header(data)
            if header is not None:
                return header, data[header.length :]
    if data:
        raise _HeaderCutShort(
            f"PROXY header incomplete after {PROXY_HEADER_SECONDS:g} s", "timeout"
        )
    return NO_HEADER, b""


def _summary(mail_from: str, recipients: Iterable[Mailbox]) -> str:
    """A transaction's envelope as the session's log line names it (reply tokens redacted)."""
    addresses = redact_reply_tokens(",".join(f"<{mailbox.address}>" for mailbox in recipients))
    return f"from=<{mail_from}> to={addresses}"


def _peer_ip(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return str(address[0]) if isinstance(address, tuple) else str(address)


def _status_line(reply: bytes) -> str:
    """The last line of a reply, e.g. "221 2.0.0 mx.example closing connection"."""
    return reply.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].decode("utf-8", "replace")
