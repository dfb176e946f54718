"""The gateway's HTTP/1.1 server: hypercorn's trio connection and protocol code with the fixes
e2a carries (closing, keep-alive timer, `100 Continue`, framing, reason phrases, WebSocket
handshake refusals; docs/api.md) and e2a's WebSocket keep-alive (a ping every
`websocket_ping_interval`, closed with 1001 `ping_timeout` when no pong comes within
PONG_WAIT_SECONDS). h11 and wsproto parse and frame every message: nothing here reads HTTP or
WebSocket frames itself. The listener serves at most `ConnectionLimits` connections at once, in
all and per client network; one over a limit is closed as soon as it is accepted.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from http import HTTPStatus
from time import time
from typing import Any, cast

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Body, EndBody, Request, Response, StreamClosed
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol, H11WSConnection
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.protocol.ws_stream import (
    ASGIWebsocketState,
    FrameTooLargeError,
    Handshake,
    WSStream,
)
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import (
    AppWrapper,
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    ConnectionState,
    H11SendableEvent,
    HTTPScope,
    LifespanState,
    Scope,
)
from hypercorn.utils import parse_socket_addr, wrap_app
from wsproto.connection import ConnectionState as WsState
from wsproto.events import CloseConnection, Message, Ping, Pong
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import WEBSOCKET_VERSION

from e2a_gateway.http_refusals import refusal_answer
from e2a_gateway.networks import IpNetwork, is_trusted_proxy, network_of, release

logger = logging.getLogger("e2a.http")

WRITE_CHUNK = 65536
"""The most a write waits to hand to a client in one go: each piece must be taken within the
idle timeout, so a slow reader is told from one that has stopped reading."""
PONG_WAIT_SECONDS = 10.0
"""How long a WebSocket client has to answer a ping (e2a's 10 s) before it is taken for gone."""
PING_TIMEOUT = "e2a.ping_timeout"
"""The key this server adds to a WebSocket's ASGI `extensions` when it closed the connection
for want of a pong (the app counts why its connections end: `e2a_gateway.web.socket_counts`)."""
STALLED = "e2a.stalled"
"""The key this server adds to a WebSocket's ASGI `extensions` when it dropped the connection
because the client took none of its frames for the idle timeout (it stopped reading)."""

STOPPED_MID_REQUEST = (
    "the gateway stopped before it could answer (a restart or a deploy); retry the request, "
    "with the same Idempotency-Key where it has one"
)
REFUSAL_LOG_SECONDS = 60.0
"""Connections refused within this long of the last refusal logged are counted, not logged:
one line per burst, however many connections it brings."""
AMBIGUOUS_FRAMING = (
    "Content-Length and Transfer-Encoding together leave the body's length ambiguous "
    "(RFC 9112 section 6.1); send only one of them"
)


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the HTTP listener serves at once (`http.max_connections*`)."""

    max_connections: int
    """Connections served at once, from anyone."""
    max_connections_per_ip: int
    """Connections served at once from one client network: an IPv4 address, or an IPv6
    network of `ipv6_network_prefix` bits. The peer of the TCP connection counts (a request's
    X-Forwarded-For is not read yet), so `trusted_proxies` are not held to this limit."""
    ipv6_network_prefix: int
    """The prefix length that makes an IPv6 client's network."""
    trusted_proxies: Sequence[IpNetwork] = ()
    """Reverse proxies, whose connections carry many clients' requests."""

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_ip < 1:
            raise ValueError("ConnectionLimits must allow at least one connection")


async def serve_asgi(
    app: ASGIFramework,
    config: Config,
    sock: socket.socket,
    limits: ConnectionLimits,
    *,
    refused: Callable[[str], None] = lambda limit: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` over HTTP/1.1 on the listening socket `sock` until cancelled: its lifespan
    first, then one `_Connection` per accepted connection (h2c upgrades as hypercorn does)
    within `limits`; each connection closed for a limit is reported as `refused(name)`, the
    name `max_connections` or `max_connections_per_ip`. The steps of hypercorn's
    `worker_serve`, which builds its own connection class."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = _ServingContext(config.graceful_timeout)
    listener = _CountedListener(
        trio.SocketListener(trio.socket.from_stdlib_socket(sock)), limits, refused
    )
    connection = partial(_Connection, wrapped, config, context, ConnectionState(state.copy()))
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            try:
                await connections.start(
                    partial(
                        trio.serve_listeners,
                        partial(listener.serve, connection),
                        [listener],
                        handler_nursery=connections,
                    )
                )
                task_status.started()
                await trio.sleep_forever()
            finally:
                await context.terminated.set()
                context.begin_grace()
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


class _CountedListener(trio.abc.Listener[trio.SocketStream]):
    """The listening socket, handing on only the connections within the limits: one over a
    limit is closed at once, before a byte of it is read, without a task or an answer of its
    own (a flood of them costs an accept and a close each). A client sees the connection
    dropped before any answer, which HTTP clients and SDKs retry as a failed connection, and
    a reverse proxy takes for a failed upstream (and tries another replica). A `503` written
    unasked would race the request the client is sending, and the close with the request
    unread resets the connection, often losing the answer anyway.

    Counting costs a connection a dict update when it opens and when it closes; a request,
    nothing."""

    def __init__(
        self,
        listener: trio.SocketListener,
        limits: ConnectionLimits,
        refused: Callable[[str], None],
    ) -> None:
        self._listener = listener
        self._limits = limits
        self._refused = refused
        self._open = 0
        self._per_network: collections.Counter[str] = collections.Counter()
        self._admitted: dict[trio.SocketStream, str] = {}
        self._quiet_until = -math.inf
        self._unlogged = 0

    async def accept(self) -> trio.SocketStream:
        """The next connection within the limits."""
        while True:
            stream = await self._listener.accept()
            if self._admit(stream):
                return stream

    async def aclose(self) -> None:
        """Stop listening."""
        await self._listener.aclose()

    async def serve(
        self, handler: Callable[[trio.SocketStream], Any], stream: trio.SocketStream
    ) -> None:
        """Serve a connection `accept` admitted with `handler`, and free its place after. A
        connection that fails is logged and closed: an exception escaping it would end every
        other connection and the listener with it."""
        network = self._admitted.pop(stream)
        try:
            await handler(stream)
        except Exception:
            logger.exception("HTTP connection failed; closed")
            with trio.CancelScope(shield=True):
                await stream.aclose()
        finally:
            self._open -= 1
            release(self._per_network, network)

    def _admit(self, stream: trio.SocketStream) -> bool:
        """Count `stream` in, or close it when over a limit."""
        limits = self._limits
        try:
            peer = str(stream.socket.getpeername()[0])
        except OSError:  # gone already
            stream.socket.close()
            return False
        network = network_of(peer, 32, limits.ipv6_network_prefix)
        held = self._per_network[network]
        if self._open >= limits.max_connections:
            self._refuse(stream, peer, "max_connections", self._open)
            return False
        if held >= limits.max_connections_per_ip and not is_trusted_proxy(
            peer, limits.trusted_proxies
        ):
            self._refuse(stream, peer, "max_connections_per_ip", held)
            return False
        self._open += 1
        self._per_network[network] += 1
        self._admitted[stream] = network
        return True

    def _refuse(self, stream: trio.SocketStream, peer: str, limit: str, held: int) -> None:
        """Close `stream`, count it, and say so unless a line said so moments ago."""
        stream.socket.close()
        self._refused(limit)
        now = trio.current_time()
        if now < self._quiet_until:
            self._unlogged += 1
            return
        whose = "open" if limit == "max_connections" else f"open from {peer}'s network"
        since = f"; {self._unlogged} more refused since the last line" if self._unlogged else ""
        logger.warning(
            "HTTP connection from %s closed unserved: %d connections %s, the most "
            "http.%s allows (raise it, or find the client holding them)%s; further refusals "
            "for %g s are counted in e2a_http_connections_refused_total, not logged",
            peer,
            held,
            whose,
            limit,
            since,
            REFUSAL_LOG_SECONDS,
        )
        self._quiet_until = now + REFUSAL_LOG_SECONDS
        self._unlogged = 0


class _ServingContext(WorkerContext):
    """hypercorn's worker context, with the grace a stop gives the requests being answered.

    The gateway stops by cancellation, which reaches every connection at once: hypercorn's
    `graceful_timeout` (a deadline on the connections' nursery, already cancelled) never gave
    a request the time to finish, and one in progress was cut short. Each HTTP request now runs
    shielded (`answering`) until its answer is out, or until `grace_seconds` after the stop."""

    def __init__(self, grace_seconds: float) -> None:
        super().__init__(None)
        self.grace_seconds = grace_seconds
        self._answering: set[trio.CancelScope] = set()
        self._streaming: set[trio.CancelScope] = set()
        self._grace_ends: float | None = None

    @contextmanager
    def answering(self) -> Iterator[trio.CancelScope]:
        """Run the body (one request's app) through a stop, within the grace; cancelling the
        scope it gets cuts the request short."""
        with trio.CancelScope(shield=True) as scope:
            if self._grace_ends is not None:
                scope.deadline = self._grace_ends
            self._answering.add(scope)
            try:
                yield scope
            finally:
                self._answering.discard(scope)
                self._streaming.discard(scope)

    def answer_begun(self, scope: trio.CancelScope) -> None:
        """The request run in `scope` (from `answering`) has begun its answer."""
        if scope in self._answering:
            self._streaming.add(scope)

    def begin_grace(self) -> None:
        """The gateway stops: the requests being answered have `grace_seconds` left, but for
        an answer already under way (an event stream), which ends at once as before."""
        self._grace_ends = trio.current_time() + self.grace_seconds
        for scope in self._answering:
            scope.deadline = self._grace_ends
            if scope in self._streaming:
                scope.cancel()


class _Connection(TCPServer):
    """hypercorn's trio connection, with every connection event handled to its end.

    hypercorn handles `Connection: close`, the end of an HTTP/1.0 answer and the start of the
    keep-alive timer inside the app's `send`. Quart-Trio cancels its request task as soon as
    the answer is out, so the close and the timer were cancelled before they happened and the
    connection stayed open until the client left (hypercorn issue #330). Shielded, they happen.
    """

    async def run(self) -> None:
        """hypercorn's `TCPServer.run` for plain TCP (TLS ends at the reverse proxy), with
        e2a's HTTP/1.1 protocol, and a close that cancellation cannot skip."""
        sock = self.stream.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = _Protocols(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    False,
                    client,
                    server,
                    self.protocol_send,
                    "http/1.1",
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_until_stopped()
                self._client_left = True
                await self.idle_task.stop()  # nothing more will come: no need to wait for it
        except OSError:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    _client_left = False
    """The client closed its side (or the read failed): nothing more will come."""

    async def protocol_send(self, event: Event) -> None:
        """Write, close or (re)start the idle timer, even from a cancelled request task; once
        the client has left, an idle connection is not kept (hypercorn's timer held it, and
        its file descriptor, for `keep_alive_timeout` after the client closed it)."""
        with trio.CancelScope(shield=True):
            if isinstance(event, RawData):
                await self._write(event.data)
            elif isinstance(event, Updated) and event.idle and self._client_left:
                pass  # the connection closes as soon as the answer in progress is out
            else:
                await super().protocol_send(event)

    async def _write(self, data: bytes) -> None:
        """Write `data`, giving the client `keep_alive_timeout` to take each WRITE_CHUNK of it;
        one that takes none for that long has stopped reading, and its connection is closed.
        hypercorn's shielded write waited for such a client for ever: the connection stayed
        open, and a stopping gateway could not stop."""
        async with self.send_lock:
            try:
                view = memoryview(data)
                for start in range(0, len(view), WRITE_CHUNK):
                    with trio.fail_after(self.config.keep_alive_timeout):
                        await self.stream.send_all(view[start : start + WRITE_CHUNK])
            except trio.TooSlowError:
                self._note_stalled()
                await self.stream.aclose()  # ends the read loop too
                await self.protocol.handle(Closed())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())

    async def _close(self) -> None:
        """hypercorn's close (EOF, then the socket closed), the EOF sent when no write is in
        progress: sent beside one, it made trio refuse the write (BusyResourceError)."""
        async with self.send_lock:
            await super()._close()

    def _note_stalled(self) -> None:
        """Tell the app, when the connection is a WebSocket's, that its client stopped reading
        (`STALLED` in its ASGI extensions)."""
        http11 = self.protocol.protocol
        stream = http11.stream if isinstance(http11, _Http11) else None
        if isinstance(stream, _PingedWebsocket):
            extensions = stream.scope.get("extensions")
            if extensions is not None:
                extensions[STALLED] = {}

    async def _read_data(self) -> None:
        """hypercorn's read loop, giving up on a request body that stops arriving: no byte of
        it for `keep_alive_timeout` closes the connection (the app hears the client left).
        hypercorn's idle timer stops once the request head is in, so a client that declared
        a body and sent none of it held its connection and request task for ever."""
        while True:
            try:
                with trio.fail_after(self._read_wait()):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())

    async def _read_until_stopped(self) -> None:
        """Read until the connection ends; when the gateway's stop ends it, a request whose
        body has not all come never will, and is cut short at once rather than in grace."""
        try:
            await self._read_data()
        except trio.Cancelled:
            http11 = self.protocol.protocol
            if isinstance(http11, _Http11):
                http11.cut_short_if_unreceived()
            raise

    def _read_wait(self) -> float:
        """How long the next read may wait: `keep_alive_timeout` while the client owes the
        rest of a request body it has been told to send, else without bound (the idle timer
        covers a connection between requests)."""
        http11 = self.protocol.protocol
        connection = http11.connection if isinstance(http11, _Http11) else None
        owes_body = (
            isinstance(connection, h11.Connection)
            and connection.their_state is h11.SEND_BODY
            and not connection.client_is_waiting_for_100_continue
        )
        return float(self.config.keep_alive_timeout) if owes_body else math.inf


class _Protocols(ProtocolWrapper):
    """hypercorn's protocol switch (HTTP/1.1, upgraded to h2c on request) with `_Http11` as its
    HTTP/1.1 protocol."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        task_group: TaskGroup,
        state: ConnectionState,
        ssl: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Any],
        alpn_protocol: str | None = None,
    ) -> None:
        super().__init__(
            app, config, context, task_group, state, ssl, client, server, send, alpn_protocol
        )
        if isinstance(self.protocol, H11Protocol):
            self.protocol = _Http11(
                app, config, context, task_group, state, ssl, client, server, send
            )


class _ContinueWhenAsked(h11.Connection):
    """An h11 server connection that owns up to a client waiting for `100 Continue` only once
    the app has asked for the request body (hypercorn sends 100 whenever h11 reports one)."""

    body_wanted = False
    refusal: h11.RemoteProtocolError | None = None
    """Why the client's last bytes could not be read as HTTP/1.1, once they could not."""

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        return self.body_wanted and super().they_are_waiting_for_100_continue

    def next_event(self) -> Any:
        """h11's next event, keeping the reason when the client's bytes are not HTTP/1.1.
        Bytes after a request that closes the connection (`Connection: close`, HTTP/1.0) are
        dropped unread, as RFC 9112 section 9.6 has it: h11 took them for a protocol error, and
        the request, valid, was answered 400 and cut short."""
        if self.their_state is h11.MUST_CLOSE and self._receive_buffer:
            self._receive_buffer = type(self._receive_buffer)()  # h11 offers no way to drop them
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.refusal = error
            raise

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self.body_wanted = False


class _Http11(H11Protocol):
    """hypercorn's HTTP/1.1 protocol with e2a's rules for `100 Continue`, request framing and
    status lines."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        task_group: TaskGroup,
        connection_state: ConnectionState,
        ssl: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Any],
    ) -> None:
        super().__init__(
            self._serve_request,
            config,
            context,
            task_group,
            connection_state,
            ssl,
            client,
            server,
            send,
        )
        self._app = app
        self._answering: trio.CancelScope | None = None
        self.connection = _ContinueWhenAsked(
            h11.SERVER, max_incomplete_event_size=config.h11_max_incomplete_size
        )

    async def _serve_request(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        """Run the app for one request; its first read of the body lets the body come."""
        if scope["type"] == "http" and _framing_is_ambiguous(scope["headers"]):
            await _refuse(send, scope, 400, "invalid_request", AMBIGUOUS_FRAMING)
            return

        async def receive_body() -> ASGIReceiveEvent:
            await self._let_body_come(scope)
            return await receive()

        context = self.context
        if scope["type"] == "http" and isinstance(context, _ServingContext):
            with context.answering() as answering:  # a WebSocket ends at a stop
                self._answering = answering

                async def send_answer(message: ASGISendEvent) -> None:
                    if message["type"] == "http.response.start":
                        context.answer_begun(answering)
                    await send(message)

                await self._app(scope, receive_body, send_answer, sync_spawn, call_soon)
            self._answering = None
        else:
            await self._app(scope, receive_body, send, sync_spawn, call_soon)

    def cut_short_if_unreceived(self) -> None:
        """Cut short the request being answered if part of its body has yet to come."""
        unreceived = (
            isinstance(self.connection, h11.Connection)
            and self.connection.their_state is h11.SEND_BODY
        )
        if unreceived and self._answering is not None:
            self._answering.cancel()

    async def _let_body_come(self, scope: Scope) -> None:
        """Send `100 Continue` if the client of the request `scope` still waits for it."""
        current = isinstance(self.stream, HTTPStream) and self.stream.scope is scope
        if not current or not isinstance(self.connection, _ContinueWhenAsked):
            return
        self.connection.body_wanted = True
        if self.connection.they_are_waiting_for_100_continue:
            await self._send_h11_event(
                h11.InformationalResponse(
                    status_code=100, headers=self.config.response_headers("h11")
                )
            )

    async def _create_stream(self, request: h11.Request) -> None:
        """Hand the request to a new stream: a `_PingedWebsocket` for a WebSocket upgrade (a
        GET with `Connection: upgrade` and `Upgrade: websocket`), else an HTTP stream."""
        fields = {name.lower(): value.decode("latin1").strip() for name, value in request.headers}
        upgrading = (
            request.method.upper() == b"GET"
            and fields.get(b"upgrade", "").lower() == "websocket"
            and "upgrade"
            in {token.strip() for token in fields.get(b"connection", "").lower().split(",")}
        )
        stream_class = _PingedWebsocket if upgrading else _HttpRequest
        self.stream = stream_class(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.ssl,
            self.client,
            self.server,
            self.stream_send,
            STREAM_ID,
        )
        if upgrading:
            self.connection = H11WSConnection(cast(h11.Connection, self.connection))
        headers = (
            request.headers.raw_items()
            if self.config.h11_pass_raw_headers
            else list(request.headers)
        )
        await self.stream.handle(
            Request(
                stream_id=STREAM_ID,
                headers=headers,
                http_version=request.http_version.decode(),
                method=request.method.decode("ascii").upper(),
                raw_path=request.target,
                state=self.connection_state,
            )
        )
        self.keep_alive_requests += 1
        await self.context.mark_request()

    async def _send_error_response(self, status_code: int) -> None:
        """Answer a request h11 could not read with e2a's JSON error saying why (hypercorn's
        answer had an empty body), and close the connection after it."""
        refusal = getattr(self.connection, "refusal", None)
        code, message = _unreadable_request(
            status_code, refusal, self.config.h11_max_incomplete_size
        )
        # A body h11 could not read (a chunk size that is not hex) comes after a head it
        # could: that request's face shapes the answer. A head it could not read has none.
        scope = getattr(self.stream, "scope", None)
        path, request_headers = (scope["path"], scope["headers"]) if scope else ("", [])
        headers, body = refusal_answer(path, request_headers, code, message)
        headers += self.config.response_headers("h11")
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        """Send `event`, a status line with its reason phrase (`200 OK`, not `200 `), saying
        `Connection: close` once the gateway stops."""
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            headers = event.headers.raw_items()
            if isinstance(event, h11.Response) and self.context.terminated.is_set():
                headers.append((b"connection", b"close"))
            event = type(event)(
                status_code=event.status_code,
                headers=headers,
                http_version=event.http_version,
                reason=_reason_phrase(event.status_code),
            )
        await super()._send_h11_event(event)


class _HttpRequest(HTTPStream):
    """hypercorn's HTTP stream, whose answer to an app that ended without one is e2a's JSON
    error: 503 `shutting_down` (retry) when the gateway's stop cut the request short, else
    500 `internal_error` (hypercorn's was a bare 500 either way)."""

    async def _send_error_response(self, status_code: int) -> None:
        if status_code != 500:
            await super()._send_error_response(status_code)
            return
        if trio.current_effective_deadline() == -math.inf:  # cancelled: the gateway stops
            status_code, code, message = 503, "shutting_down", STOPPED_MID_REQUEST
            extra = [(b"retry-after", b"1")]
        else:
            status_code, code, message = 500, "internal_error", "internal error; see the log"
            extra = []
        headers, body = refusal_answer(self.scope["path"], self.scope["headers"], code, message)
        headers += extra
        await self.send(
            Response(stream_id=self.stream_id, headers=headers, status_code=status_code)
        )
        await self.send(Body(stream_id=self.stream_id, data=body))
        await self.send(EndBody(stream_id=self.stream_id))
        self.state = ASGIHTTPState.CLOSED


class _PingedWebsocket(WSStream):
    """hypercorn's WebSocket stream, whose pings expect their pong: a client that leaves one
    unanswered for PONG_WAIT_SECONDS is gone (a dropped NAT mapping, a sleeping laptop), and
    its connection is closed with 1001 `ping_timeout`, as e2a does, rather than left open
    until the kernel gives up on it. Pinging stops as soon as the stream is closed: the
    connection, its socket and its place under the connection limits are let go once its
    tasks end, and hypercorn's pinger slept on to its next ping (up to the interval) after a
    client that left without a close frame."""

    def __init__(self, *args: Any) -> None:
        self._ended = trio.Event()
        super().__init__(*args)
        self._pong_due = False

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (hypercorn sets it wherever it ends the stream)."""
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value
        if value:
            self._ended.set()

    async def _send_pings(self) -> None:
        interval = self.config.websocket_ping_interval or PONG_WAIT_SECONDS
        wait = min(PONG_WAIT_SECONDS, interval)
        while not self.closed:
            self._pong_due = True
            await self._send_wsproto_event(Ping())
            await self._sleep(wait)
            if self.closed:
                return
            if self._pong_due:
                await self._close_unanswered()
                return
            await self._sleep(interval - wait)

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when the stream is closed meanwhile."""
        with trio.move_on_after(seconds):
            await self._ended.wait()

    async def _close_unanswered(self) -> None:
        """Close the connection for a missing pong, and tell the app why it ended."""
        extensions = self.scope.get("extensions")
        if extensions is not None:
            extensions[PING_TIMEOUT] = {}
        self.state = ASGIWebsocketState.CLOSED
        await self._send_wsproto_event(
            CloseConnection(code=CloseReason.GOING_AWAY, reason="ping_timeout")
        )
        await self.send(StreamClosed(stream_id=self.stream_id))

    async def _send_error_response(self, status_code: int) -> None:
        """Refuse an upgrade RFC 6455 does not allow with e2a's JSON error saying what is wrong
        with it and the version this server speaks (hypercorn's 400 had an empty body and no
        `Sec-WebSocket-Version`, which RFC 6455 §4.4 requires)."""
        if status_code != 400:
            await super()._send_error_response(status_code)
            return
        headers, body = refusal_answer(
            self.scope["path"],
            self.scope["headers"],
            "invalid_request",
            _handshake_fault(self.handshake),
        )
        headers.append((b"sec-websocket-version", WEBSOCKET_VERSION))
        await self.send(Response(stream_id=self.stream_id, status_code=400, headers=headers))
        await self.send(Body(stream_id=self.stream_id, data=body))
        await self.send(EndBody(stream_id=self.stream_id))
        await self.config.log.access(
            self.scope, {"status": 400, "headers": []}, time() - self.start_time
        )

    async def _handle_events(self) -> None:
        """hypercorn's handling of the client's frames, with its pongs heard."""
        for event in self.connection.events():
            if isinstance(event, Pong):
                self._pong_due = False
            elif isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    break
                if event.message_finished and self.app_put is not None:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == WsState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))


def _reason_phrase(status: int) -> bytes:
    """The standard reason phrase of `status`, empty for a code without one."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _unreadable_request(
    status: int, refusal: h11.RemoteProtocolError | None, max_head_bytes: int
) -> tuple[str, str]:
    """The error code and message answering a request h11 refused with `status` for
    `refusal`; a request head may have `max_head_bytes`."""
    if status == 431:
        return "invalid_request", (
            f"request line and headers too large: at most {max_head_bytes} bytes of them"
        )
    # h11's reason, without the bytes it quotes (`illegal header line: bytearray(b'…')`)
    reason = str(refusal).partition(": bytearray(")[0] if refusal else ""
    if status == 501:
        return "not_implemented", (
            f"{reason or 'unsupported transfer coding'}: send the body with Content-Length "
            "or Transfer-Encoding: chunked alone"
        )
    return "invalid_request", f"malformed HTTP/1.1 request: {reason or 'unreadable'} (RFC 9112)"


def _handshake_fault(handshake: Handshake) -> str:
    """What is wrong with a WebSocket upgrade request hypercorn refused, for its client."""
    if handshake.http_version < "1.1":
        return (
            f"a WebSocket handshake needs HTTP/1.1 (RFC 6455 §4.1); this request is "
            f"HTTP/{handshake.http_version}"
        )
    if handshake.key is None:
        return (
            "missing Sec-WebSocket-Key header: a WebSocket client sends a fresh random one "
            "with each upgrade request (RFC 6455 §4.1)"
        )
    if handshake.version != WEBSOCKET_VERSION:
        given = (
            "none" if handshake.version is None else repr(handshake.version.decode("latin-1")[:20])
        )
        return (
            f"unsupported Sec-WebSocket-Version ({given}): this server speaks version 13 "
            "(RFC 6455); send Sec-WebSocket-Version: 13"
        )
    return (
        "WebSocket data came before the handshake was answered: wait for 101 Switching "
        "Protocols before sending frames (RFC 6455 §4.1)"
    )


def _framing_is_ambiguous(headers: Any) -> bool:
    """Whether a request carries both Content-Length and Transfer-Encoding."""
    names = {bytes(name).lower() for name, _ in headers}
    return b"content-length" in names and b"transfer-encoding" in names


async def _refuse(
    send: ASGISendCallable, scope: HTTPScope, status: int, code: str, message: str
) -> None:
    """Answer the request `scope` with e2a's JSON error, in its face's shape, and close the
    connection after it."""
    headers, body = refusal_answer(scope["path"], scope["headers"], code, message)
    await send(
        {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
