"""The nursery that is `e2a serve`: SMTP listener, HTTP app on hypercorn and background workers.

Sockets are bound before anything starts, so a taken port fails fast with a one-line reason.
Everything runs in one trio nursery; cancelling it (SIGINT/SIGTERM) stops every task, waits
for database writes in flight, gives back the job leases still held, and closes storage.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config as HypercornConfig

from e2a_gateway.asgi_mount import MountedApp
from e2a_gateway.config import Settings
from e2a_gateway.cors import with_cors
from e2a_gateway.gateway import Gateway, dkim_next_key, dkim_signing_key, open_gateway
from e2a_gateway.http_app import create_app, guard_requests
from e2a_gateway.http_server import ConnectionLimits, serve_asgi
from e2a_gateway.inbound.acceptors import AcceptorPool
from e2a_gateway.inbound.pipeline import InboundMailSink
from e2a_gateway.inbound.postmaster import is_own_hostname
from e2a_gateway.mailauth.dns_answers import Resolver
from e2a_gateway.mcp.http import MOUNT_PATH as MCP_PATH
from e2a_gateway.mcp.http import McpEndpoint
from e2a_gateway.production import check_production
from e2a_gateway.redacted import redacted_url
from e2a_gateway.smtp.server import serve_smtp
from e2a_gateway.startup import (
    StartupError,
    check_dkim_pair,
    check_relay_trust,
    load_for_first_mail,
    load_then_settle,
    smtp_options,
)
from e2a_gateway.storage import POSTGRES_SCHEMES, sole_gateway
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.storage.group_commit import GroupCommitter
from e2a_gateway.workers.approvals import ApprovalWorker
from e2a_gateway.workers.certificate_watch import CertificateWatch, served_certificate
from e2a_gateway.workers.outbound import OutboundWorker
from e2a_gateway.workers.retention import RetentionWorker
from e2a_gateway.workers.supervisor import supervise
from e2a_gateway.workers.webhook_auto_disable import AutoDisableSweep

if TYPE_CHECKING:
    from e2a_gateway.workers.webhook_connections import WebhookConnections

log = logging.getLogger("e2a")

WEBSOCKET_PING_SECONDS = 30.0
MAX_CLIENT_MESSAGE_BYTES = 64 * 1024
"""The longest WebSocket message a client may send (acks are a few dozen bytes); a longer one
closes its connection with 1009 before it is all held in memory."""
LEASE_RELEASE_SECONDS = 10.0
"""Bound on giving back the job leases when the gateway stops."""


@dataclass(frozen=True)
class BoundAddresses:
    """Where the running gateway listens (useful when ports were chosen by the OS)."""

    smtp_host: str
    smtp_port: int
    http_host: str
    http_port: int

    @property
    def smtp_address(self) -> str:
        """host:port of the SMTP listener, an IPv6 host in brackets (`[::1]:2525`)."""
        return f"{_bracketed(self.smtp_host)}:{self.smtp_port}"

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP listener."""
        return f"http://{_bracketed(self.http_host)}:{self.http_port}"


def _bracketed(host: str) -> str:
    """`host` as it stands before `:port`: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class RunningGateway:
    """What `run_gateway` reports once it serves: its addresses and its shared state."""

    addresses: BoundAddresses
    gateway: Gateway


def _bind_error(key: str, listen: str, exc: OSError) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"{key} {listen}: address already in use — stop the other process or set {key} "
            "to a free port"
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"{key} {listen}: permission denied — ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE; choose a higher port or grant the capability"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"{key} {listen}: not an address of this machine — set {key} to one its "
            "interfaces have (`ip -brief address`), or 0.0.0.0 to listen on every IPv4 address"
        )
    return StartupError(f"{key} {listen}: cannot listen: {exc.strerror or exc}")


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
"""Hosts that listen on every address of the machine (IPv4 only, or IPv6 and IPv4)."""


def check_distinct_listeners(settings: Settings) -> None:
    """StartupError when `http.listen` would bind an address `smtp.listen` holds: the bind
    would fail "already in use", and point the operator at another process that is not
    there. Port 0 (any free port) never clashes."""
    smtp, http = settings.smtp, settings.http
    if smtp.port == 0 or smtp.port != http.port:
        return
    if smtp.host != http.host and not {smtp.host, http.host} & WILDCARD_HOSTS:
        return  # the same port on two addresses of this machine
    raise StartupError(
        f"http.listen {http.listen} and smtp.listen {smtp.listen} are on the same port — give "
        f"each its own port (e.g. smtp.listen on 25 and http.listen on 8080)"
    )


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
"""Host names that name this machine's loopback."""


def check_relay_not_self(settings: Settings) -> None:
    """StartupError when `outbound_smtp` names `smtp.listen` itself — its port, at its address,
    at the loopback while the listener takes it, or at `smtp.hostname`: the gateway would hand
    its mail to its own MX, which refuses every address it does not serve (`relay access
    denied`). Port 0 (any free port) never matches."""
    relay, smtp = settings.outbound_smtp, settings.smtp
    if not relay.host or smtp.port == 0 or relay.port != smtp.port:
        return
    host = relay.host.lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in LOOPBACK_NAMES
    listener = smtp.host.lower()
    listens_on_loopback = listener in WILDCARD_HOSTS or listener in LOOPBACK_NAMES
    with contextlib.suppress(ValueError):
        listens_on_loopback = listens_on_loopback or ipaddress.ip_address(listener).is_loopback
    if host == listener or (loopback and listens_on_loopback) or is_own_hostname(settings, host):
        raise StartupError(
            f"outbound_smtp: {relay.host}:{relay.port} is this gateway's own SMTP listener "
            f"(smtp.listen {smtp.listen}, smtp.hostname {smtp.hostname}) — set "
            "outbound_smtp.host and port to the relay that carries mail to the outside "
            "(your provider's submission server, say smtp.example.com:587)"
        )


def bind_tcp(host: str, port: int, key: str, listen: str) -> socket.socket:
    """Bind and listen on host:port, translating failures into StartupError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"{key} {listen}: cannot resolve host {host!r}: {exc.strerror or exc} — set {key} to "
            f"an IP address of this machine, or 0.0.0.0:{port} to listen on every IPv4 address"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise _bind_error(key, listen, exc) from None
    sock.setblocking(False)
    return sock


async def serve_http(
    gateway: Gateway,
    sock: socket.socket,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    *,
    ping_seconds: float = WEBSOCKET_PING_SECONDS,
) -> None:
    """Serve the Quart-Trio app, and the MCP endpoint at /mcp, on `sock` with hypercorn's
    protocol code (`e2a_gateway.http_server`), behind CORS when `http.cors_allowed_origins` lists
    origins. The MCP session manager runs for as long as the server does. WebSockets are kept
    alive with ping frames every `ping_seconds` (the contract's 30 s) and closed when a pong
    does not come in time (`e2a_gateway.http_server`), or with 1009 when a client sends a
    message over MAX_CLIENT_MESSAGE_BYTES; an idle HTTP connection is closed after
    `http.keep_alive_seconds`. At most `http.max_connections` connections are served at
    once, `http.max_connections_per_ip` from one client network."""
    http = gateway.settings.http
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("e2a.http")
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = http.keep_alive_seconds
    config.websocket_ping_interval = ping_seconds
    config.websocket_max_message_size = MAX_CLIENT_MESSAGE_BYTES
    mcp = McpEndpoint(gateway)
    routed = MountedApp(create_app(gateway), MCP_PATH, mcp)
    async with mcp.running():
        await serve_asgi(
            with_cors(guard_requests(routed, http), http.cors_allowed_origins),
            config,
            sock,
            ConnectionLimits(
                max_connections=http.max_connections,
                max_connections_per_ip=http.max_connections_per_ip,
                ipv6_network_prefix=http.ipv6_network_prefix,
                trusted_proxies=http.trusted_networks,
            ),
            refused=gateway.metrics.http_connection_refused,
            task_status=task_status,
        )


async def _deliver_webhooks(gateway: Gateway) -> None:
    """Run the webhook workers (supervised): the legacy per-agent one and the `/v1` subscriber
    one, sharing keep-alive connections.

    The worker, its HTTP client (httpx) and the CA bundle load in a worker thread once the
    gateway is up: about a tenth of a second that start-up does not wait for and that never
    blocks the event loop."""
    connections = await trio.to_thread.run_sync(_webhook_connections)
    from e2a_gateway.workers.subscribers import SubscriberWorker
    from e2a_gateway.workers.webhooks import WebhookWorker  # loaded by _webhook_connections

    async with connections, trio.open_nursery() as nursery:
        nursery.start_soon(supervise, "webhook worker", WebhookWorker(gateway, connections).run)
        nursery.start_soon(
            supervise, "/v1 webhook worker", SubscriberWorker(gateway, connections).run
        )


def _webhook_connections() -> WebhookConnections:
    """The webhook worker's connection pool, built with everything it needs loaded."""
    from e2a_gateway.workers.webhook_connections import WebhookConnections
    from e2a_gateway.workers.webhooks import MAX_IN_FLIGHT, MAX_PER_HOST

    return WebhookConnections(per_origin=MAX_PER_HOST, max_idle=MAX_IN_FLIGHT)


async def _note_stopping(gateway: Gateway) -> None:
    """Mark the gateway stopping as soon as its tasks are cancelled."""
    try:
        await trio.sleep_forever()
    finally:
        gateway.stopping = True


@asynccontextmanager
async def leases_given_back(gateway: Gateway) -> AsyncIterator[None]:
    """On the way out, once every worker has stopped, free the job leases this replica still
    holds (what a stop cut short, or claimed and never began), so that the other replicas take
    that work at once rather than after the leases run out. Failing to (the database is away)
    only leaves the work to its leases."""
    try:
        yield
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(LEASE_RELEASE_SECONDS):
            try:
                await gateway.storage.release_leases()
            except StorageUnavailable as exc:
                log.warning("job leases not given back on the way out (%s): left to run out", exc)


async def run_gateway(
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole gateway until cancelled. Reports where it listens once ready.

    Cancellation shuts the SMTP listener down gracefully: it stops accepting, lets messages in
    flight finish within `smtp.shutdown_grace_seconds`, and storage closes only after that.
    """
    for warning in check_production(settings):
        log.warning("production: %s", warning)
    smtp_limits, smtp_listener_limits, smtp_tls = smtp_options(settings)
    smtp_certificate = served_certificate(settings)
    check_dkim_pair(settings)
    check_relay_trust(settings)
    check_distinct_listeners(settings)
    check_relay_not_self(settings)
    # Before the database is opened: a start refused for a bad key leaves it unmigrated.
    dkim_keys = dkim_signing_key(settings), dkim_next_key(settings)
    smtp_sock = bind_tcp(
        settings.smtp.host, settings.smtp.port, "smtp.listen", settings.smtp.listen
    )
    try:
        http_sock = bind_tcp(
            settings.http.host, settings.http.port, "http.listen", settings.http.listen
        )
    except StartupError:
        smtp_sock.close()
        raise
    smtp_address = smtp_sock.getsockname()
    http_address = http_sock.getsockname()
    async with (
        sole_gateway(settings.database.url),
        open_gateway(settings, resolver) as gateway,
        leases_given_back(gateway),
        trio.open_nursery() as nursery,
    ):
        gateway.adopt_dkim_keys(*dkim_keys)
        nursery.start_soon(_note_stopping, gateway)
        gateway.smtp_address = (smtp_address[0], smtp_address[1])
        if settings.database.url.startswith(POSTGRES_SCHEMES):
            # Imported here: the fan-out loads psycopg, which SQLite deployments never need.
            from e2a_gateway.hub.fanout import fanout_for
            from e2a_gateway.schema_watch import schema_watch_for

            # Once refused, the local WebSockets close: their clients reconnect to a ready
            # replica.
            schema = schema_watch_for(gateway.storage, gateway.hub.close_subscriptions)
            if schema is not None:
                # A newer e2a migrating the database takes this replica out of service.
                gateway.schema_watch = schema
                nursery.start_soon(supervise, "schema watch", schema.run)
            fanout = fanout_for(
                gateway.storage,
                gateway.hub,
                gateway.jobs,
                schema_migrated=schema.wake if schema is not None else lambda: None,
            )
            if fanout is not None:
                # Other replicas' commits reach this process's WebSocket clients and workers.
                await nursery.start(fanout.run)
        else:
            # SQLite: the write-ahead log is copied into the database off the writer's commits.
            nursery.start_soon(supervise, "storage upkeep", gateway.storage.upkeep)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(smtp_sock))
        committer = GroupCommitter(gateway.storage, observe=gateway.metrics.inbound_committed)
        sink = InboundMailSink(gateway, committer)
        # Not supervised: serve_smtp owns its listener, and a session's failure never leaves
        # it, so anything that escapes is fatal to SMTP and should stop the gateway.
        await nursery.start(
            partial(
                serve_smtp,
                [listener],
                sink,
                settings.smtp.hostname,
                smtp_limits,
                listener_limits=smtp_listener_limits,
                tls=smtp_tls,
                observer=gateway.metrics,
                refusal=lambda: gateway.schema_refusal,
                proxy_trusted=settings.smtp.proxy_trusted_networks,
            )
        )
        if settings.smtp.processes > 1:
            acceptors = AcceptorPool(
                settings,
                gateway.server_key,
                smtp_sock,
                settings.smtp.processes - 1,
                gateway.storage,
                sink.deliver_handed_over,
                gateway.metrics,
                gateway.schema_watch,
            )
            await nursery.start(acceptors.serve)
        # Jobs this replica held when it last stopped are free again before its workers start.
        await gateway.storage.release_leases()
        # HTTP last, nothing awaited after it: once /api/health answers, the start is over,
        # and a stop signal drains (serve_until_signal) rather than cutting a start short.
        await nursery.start(serve_http, gateway, http_sock)
        nursery.start_soon(_deliver_webhooks, gateway)
        nursery.start_soon(supervise, "outbound worker", OutboundWorker(gateway).run)
        nursery.start_soon(supervise, "approval worker", ApprovalWorker(gateway).run)
        nursery.start_soon(supervise, "retention worker", RetentionWorker(gateway).run)
        nursery.start_soon(supervise, "webhook auto-disable", AutoDisableSweep(gateway).run)
        if smtp_certificate is not None:
            watch = CertificateWatch(gateway, smtp_certificate)
            nursery.start_soon(supervise, "certificate watch", watch.run)
        bound = BoundAddresses(
            smtp_host=smtp_address[0],
            smtp_port=smtp_address[1],
            http_host=http_address[0],
            http_port=http_address[1],
        )
        log.info(
            "e2a ready: SMTP %s, HTTP %s (database %s)",
            bound.smtp_address,
            bound.http_url,
            redacted_url(settings.database.url),  # never its password
        )
        # Off the loop once the listeners are up: not during start-up, nor on the first mail.
        nursery.start_soon(
            partial(trio.to_thread.run_sync, load_for_first_mail, abandon_on_cancel=True)
        )
        task_status.started(RunningGateway(bound, gateway))


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop the gateway cleanly: SIGINT, SIGTERM and SIGHUP. SIGHUP is a
    terminal's hang-up (the SSH session `e2a serve` ran in has ended), or an operator used to
    it meaning "reload": settings are read at start only, so it stops as SIGTERM does rather
    than killing the process mid-work. Started with SIGHUP ignored (`nohup e2a serve`), the
    gateway leaves it ignored."""
    hang_up = () if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hang_up)


ECHO_SECONDS = 0.5
"""How soon after the signal that began a drain the same signal is taken for an echo of it,
not a second one: a Ctrl-C in a terminal reaches the whole process group, so the one-file
executable's launcher gets it too and passes it on to the gateway a moment later."""


async def serve_until_signal(settings: Settings) -> None:
    """Run the gateway until one of `stop_signals`, drain for `http.drain_seconds` (a
    second signal ends the drain, but not the same signal again within ECHO_SECONDS), then
    shut it down cleanly. A signal while it starts stops the start, whatever it waits for.
    Signals that come while it stops are taken (and told of) rather than acted on once it has
    stopped."""
    with trio.open_signal_receiver(*stop_signals()) as signals:
        async with trio.open_nursery() as stopping:
            async with trio.open_nursery() as nursery:
                firsts: list[int] = []
                arrived = trio.Event()
                with trio.CancelScope() as starting:
                    nursery.start_soon(_first_signal, signals, firsts, arrived, starting)
                    running: RunningGateway = await nursery.start(run_gateway, settings)
                if starting.cancelled_caught:
                    # A start that waits (for the database, its migration lock) does not make
                    # a stop wait for it.
                    log.info("received %s while starting, stopping", _name(firsts[0]))
                else:
                    nursery.start_soon(load_then_settle)
                    await arrived.wait()
                    log.info("received %s, shutting down", _name(firsts[0]))
                    await _drain(running, signals, firsts[0], settings.http.drain_seconds)
                stopping.start_soon(_note_signals_while_stopping, signals, settings)
                nursery.cancel_scope.cancel()
            stopping.cancel_scope.cancel()
    log.info("e2a stopped")


async def _drain(
    running: RunningGateway, signals: AsyncIterator[int], first: int, drain: float
) -> None:
    """Serve `drain` seconds more with GET /readyz answering 503 (none when 0), or until a
    second signal (not `first` again within ECHO_SECONDS: the same Ctrl-C, passed on)."""
    if drain <= 0:
        return
    first_at = trio.current_time()
    running.gateway.draining = True
    log.info(
        "draining for %g s: GET /readyz answers 503 while requests and mail "
        "are still served; a second signal stops at once",
        drain,
    )
    with trio.move_on_after(drain):
        async for received in signals:
            if received == first and trio.current_time() - first_at < ECHO_SECONDS:
                continue  # the same Ctrl-C, passed on by the launcher
            log.info("received %s again, stopping now", _name(received))
            break


def _name(number: int) -> str:
    return signal.Signals(number).name


async def _first_signal(
    signals: AsyncIterator[int],
    received: list[int],
    arrived: trio.Event,
    starting: trio.CancelScope,
) -> None:
    """Wait for the first of `signals`: note it in `received`, set `arrived`, and cancel
    `starting`, the gateway's start (nothing once it has started)."""
    async for number in signals:
        received.append(number)
        arrived.set()
        starting.cancel()
        return


async def _note_signals_while_stopping(signals: AsyncIterator[int], settings: Settings) -> None:
    """Say that the stop goes on whatever signal comes while it does (a Ctrl-C passed on by
    the executable's launcher, an impatient one): left pending, it would be delivered again
    once the receiver closes, and end a clean stop as if interrupted."""
    async for received in signals:
        log.info(
            "received %s while stopping: mail in flight gets up to %g s to finish "
            "(smtp.shutdown_grace_seconds)",
            signal.Signals(received).name,
            settings.smtp.shutdown_grace_seconds,
        )
