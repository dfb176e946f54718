"""SMTP acceptor processes: inbound mail on more than one core, one writer to the database.

With `smtp.processes = N` (N > 1) `e2a serve` starts N-1 acceptor processes that accept on its
own SMTP listening socket. Each runs its own trio loop with the SMTP listener and the inbound
pipeline up to the message's delivered form (sessions, authentication, trace fields, body
hash). The recipient checks it asks of the main process (which answers from its own storage and
caches; an agent found is remembered for ROUTING_SECONDS), and it hands each message's arrival
to the main process, which looks its agents up again, threads and signs each copy, adds them to
its group commit and announces them before it answers: the client still hears 250 only after
the commit, storage has one owner, and one group commit serves every process. Once a newer e2a
migrated the database (`e2a_gateway.schema_watch`), the main process tells its acceptors, which
then turn new connections away with 421 as it does.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import pickle
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio

from e2a_gateway.config import Settings
from e2a_gateway.inbound.pipeline import Arrival
from e2a_gateway.smtp.server import MessageNotStored, SmtpObserver
from e2a_gateway.storage.base import Agent, Storage, StorageError

if TYPE_CHECKING:
    from e2a_gateway.schema_watch import SchemaWatch

__all__ = ["AcceptorPool", "acceptor_main"]

log = logging.getLogger("e2a.smtp")

Deliver = Callable[[Arrival, list[str]], Awaitable[str]]
"""Stores one arrival for the agents at its addresses (raising MessageNotStored when it
cannot); the first id (`InboundMailSink.deliver_handed_over`)."""
STORAGE_CALLS = frozenset(
    {
        "add_agent",
        "find_agent",
        "first_user",
        "is_served_domain",
        "find_reply_token",
        "get_outbound",
        "get_agent",
        "review_by_reply",
        "add_approval_answer",
        "record_bounce",
        "record_complaint",
    }
)
"""The storage methods an acceptor's pipeline calls before `deliver`: recipient checks and
postmaster's agent (e2a_gateway.inbound.pipeline, .postmaster), replies to approval notices
(.approval_replies, and the held message's agent for one past its deadline) and mail returned
to our return paths (.returned_mail)."""
ROUTING_SECONDS = 2.0
"""How long an acceptor remembers an agent or domain the main process found. Deletion within
that time is still caught: the main process looks the agents up again on delivery."""
_ROUTING_ENTRIES = 10_000
_DELIVER = "deliver"

_LENGTH = struct.Struct("!I")
_RECEIVE_BYTES = 262_144
_FLUSH_SECONDS = 0.5
"""How often an acceptor reports its SMTP counts to the main process's metrics."""
_RESTART_SECONDS = 1.0
_STOP_MARGIN_SECONDS = 5.0
"""Beyond `smtp.shutdown_grace_seconds`, how long a stopping acceptor may take to exit."""


class _Channel:
    """Length-prefixed pickles over a stream between the main process and one acceptor (both
    ends are e2a's own processes: nothing from the network is unpickled)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._sending = trio.Lock()

    async def send(self, frame: tuple[Any, ...]) -> None:
        """Write one frame; frames from concurrent tasks never interleave."""
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._sending:
            await self._stream.send_all(_LENGTH.pack(len(data)) + data)

    async def receive(self) -> tuple[Any, ...] | None:
        """The next frame, or None once the other end has closed."""
        while True:
            if len(self._buffer) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(self._buffer)
                end = _LENGTH.size + length
                if len(self._buffer) >= end:
                    frame: tuple[Any, ...] = pickle.loads(self._buffer[_LENGTH.size : end])
                    del self._buffer[:end]
                    return frame
            try:
                data = await self._stream.receive_some(_RECEIVE_BYTES)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._buffer += data

    async def aclose(self) -> None:
        """Close the stream."""
        await self._stream.aclose()


@dataclass
class _Counts:
    """SMTP events an acceptor saw since it last reported them (its `SmtpObserver`)."""

    started: int = 0
    ended: int = 0
    accepted: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    proxy_headers: collections.Counter[str] = field(default_factory=collections.Counter)

    def session_started(self) -> None:
        """Counted for the next report."""
        self.started += 1

    def session_ended(self) -> None:
        """Counted for the next report."""
        self.ended += 1

    def message_accepted(self) -> None:
        """Counted for the next report."""
        self.accepted += 1

    def mail_rejected(self, reason: str) -> None:
        """Counted for the next report."""
        self.rejected[reason] += 1

    def proxy_header(self, outcome: str) -> None:
        """Counted for the next report."""
        self.proxy_headers[outcome] += 1

    def take(self) -> _Counts | None:
        """What was counted, now reset; None when nothing was."""
        if not (self.started or self.ended or self.accepted or self.rejected or self.proxy_headers):
            return None
        taken = _Counts(self.started, self.ended, self.accepted, self.rejected, self.proxy_headers)
        self.started = self.ended = self.accepted = 0
        self.rejected = collections.Counter()
        self.proxy_headers = collections.Counter()
        return taken

    def replay(self, observer: SmtpObserver) -> None:
        """Report the counts to `observer` as if it had seen the events."""
        for _ in range(self.started):
            observer.session_started()
        for _ in range(self.ended):
            observer.session_ended()
        for _ in range(self.accepted):
            observer.message_accepted()
        for reason, count in self.rejected.items():
            for _ in range(count):
                observer.mail_rejected(reason)
        for outcome, count in self.proxy_headers.items():
            for _ in range(count):
                observer.proxy_header(outcome)


class AcceptorPool:
    """The main process's side: starts `count` acceptors on `listening`, answers their
    storage calls from `storage`, stores the arrivals they send with `deliver`, tells them
    when `schema` refuses the database (from then on they turn new connections away, as the
    main process does), restarts any that dies, and stops them on shutdown."""

    def __init__(
        self,
        settings: Settings,
        server_key: str,
        listening: socket.socket,
        count: int,
        storage: Storage,
        deliver: Deliver,
        observer: SmtpObserver,
        schema: SchemaWatch | None = None,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._server_key = server_key
        self._listening = listening
        self._count = count
        self._deliver = deliver
        self._observer = observer
        self._schema = schema
        self._stopping = trio.Event()
        self._scope = trio.CancelScope(shield=True)
        self._processes: dict[int, Any] = {}

    @property
    def pids(self) -> list[int]:
        """The process ids of the acceptors running now."""
        return [process.pid for process in self._processes.values() if process.pid]

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the acceptors until cancelled, then stop them: each finishes the transactions
        it has in flight (their commits still served here) within the shutdown grace period."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_all)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._stopping.set()
                grace = self._settings.smtp.shutdown_grace_seconds
                self._scope.deadline = trio.current_time() + grace + _STOP_MARGIN_SECONDS

    async def _run_all(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                for index in range(self._count):
                    nursery.start_soon(self._keep_running, index + 1)

    async def _keep_running(self, number: int) -> None:
        while not self._stopping.is_set():
            code = await self._run_one(number)
            if not self._stopping.is_set():
                log.error("SMTP acceptor %d exited with %s; restarting it", number, code)
                await trio.sleep(_RESTART_SECONDS)

    async def _run_one(self, number: int) -> int | None:
        ours, theirs = socket.socketpair()
        # Refused before it starts, an acceptor greets no client with 220 (told later, it
        # would accept from the shared backlog until told).
        refusal = None if self._schema is None else self._schema.refusal
        process = multiprocessing.get_context("spawn").Process(
            target=acceptor_main,
            args=(self._settings, self._server_key, self._listening, theirs, refusal),
            name=f"e2a-smtp-{number}",
        )
        try:
            process.start()
        finally:
            theirs.close()
        self._processes[number] = process
        channel = _Channel(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        open_sessions = 0
        try:
            async with trio.open_nursery() as nursery:
                watching = trio.CancelScope()
                nursery.start_soon(self._instruct, channel, process, watching)
                while (frame := await channel.receive()) is not None:
                    if frame[0] == "call":
                        nursery.start_soon(self._answer, channel, *frame[1:])
                    elif frame[0] == "counts":
                        frame[1].replay(self._observer)
                        open_sessions += frame[1].started - frame[1].ended
                # What the acceptor asked for is finished though it has ended: a message being
                # stored is stored whole, its live listeners told, as for a client gone before
                # its 250 in one process.
                watching.cancel()
        finally:
            for _ in range(open_sessions):  # reported open, ended with the process (killed)
                self._observer.session_ended()
            with trio.CancelScope(shield=True):
                await channel.aclose()
                await self._reap(process)
            del self._processes[number]
        return process.exitcode

    async def _instruct(self, channel: _Channel, process: Any, watching: trio.CancelScope) -> None:
        """Tell the acceptor when the schema is refused, and to stop on shutdown, until
        `watching` is cancelled (it has ended)."""
        with watching:
            async with trio.open_nursery() as telling:
                if self._schema is not None:
                    telling.start_soon(self._tell_refusal, channel, self._schema)
                await self._stopping.wait()
                try:
                    await channel.send(("stop",))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    process.terminate()

    async def _tell_refusal(self, channel: _Channel, schema: SchemaWatch) -> None:
        reason = await schema.refused()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await channel.send(("refuse", reason))

    async def _answer(
        self, channel: _Channel, request: int, name: str, args: tuple[Any, ...]
    ) -> None:
        ok = False
        value: Any
        try:
            if name == _DELIVER:
                value = await self._deliver(*args)
            elif name in STORAGE_CALLS:
                value = await getattr(self._storage, name)(*args)
            else:
                raise ValueError(f"an SMTP acceptor asked for {name!r}")
            ok = True
        except (MessageNotStored, StorageError) as exc:  # the acceptor's caller handles these
            value = exc
        except Exception as exc:
            log.exception("an SMTP acceptor's %s failed", name)
            value = RuntimeError(f"{name} failed in the main process: {exc}")
        # If the acceptor is gone, its client, told nothing, will send the message again.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            try:
                await channel.send(("result", request, ok, value))
            except (pickle.PicklingError, TypeError, AttributeError):  # an unpicklable exception
                failed = RuntimeError(f"{name} failed in the main process: {value!r}")
                await channel.send(("result", request, False, failed))

    async def _reap(self, process: Any) -> None:
        """Wait for the acceptor to exit after its channel closed; kill it if it lingers."""
        with trio.move_on_after(_STOP_MARGIN_SECONDS):
            await trio.lowlevel.wait_readable(process.sentinel)
        if process.exitcode is None:
            process.kill()
        await trio.to_thread.run_sync(process.join)


class _MainProcess:
    """An acceptor's side of its channel: calls sent, answers awaited, counts reported."""

    def __init__(self, channel: _Channel, refusal: str | None) -> None:
        self._channel = channel
        self._waiting: dict[int, trio.MemorySendChannel[tuple[bool, Any]]] = {}
        self._next = 0
        self.counts = _Counts()
        self.stop = trio.Event()
        self.refusal = refusal
        """Why the gateway takes no more mail, once the main process said so (its schema
        watch refused the database): new connections are turned away with 421."""

    async def call(self, name: str, *args: Any) -> Any:
        """`name(*args)` in the main process: its value, or the exception it raised there.
        MessageNotStored when the main process is gone before answering."""
        self._next += 1
        request = self._next
        send, receive = trio.open_memory_channel[tuple[bool, Any]](1)
        self._waiting[request] = send
        try:
            try:
                await self._channel.send(("call", request, name, args))
                ok, value = await receive.receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.EndOfChannel):
                raise MessageNotStored("the gateway's main process is gone") from None
        finally:
            del self._waiting[request]
        if not ok:
            raise value
        return value

    async def deliver(self, arrival: Arrival) -> str:
        """Have the main process store `arrival` (without the received message, which the
        delivered form holds, nor the envelope's recipients, which storing does not read, and
        with its agents' addresses in place of the agents, which the main process looks up
        again anyway); the first id, or MessageNotStored. A message for fifty agents would
        otherwise cost the main process fifty recipients to unpickle."""
        slim = dataclasses.replace(arrival.envelope, data=b"", recipients=[])
        addresses = [agent.email for agent in arrival.agents]
        handed = dataclasses.replace(arrival, envelope=slim, agents=[])
        stored: str = await self.call(_DELIVER, handed, addresses)
        return stored

    async def read_answers(self) -> None:
        """Hand each answer to its waiting session until the main process says stop or goes."""
        while (frame := await self._channel.receive()) is not None:
            if frame[0] == "result":
                waiting = self._waiting.get(frame[1])
                if waiting is not None:
                    waiting.send_nowait((frame[2], frame[3]))
            elif frame[0] == "refuse":
                self.refusal = frame[1]
            elif frame[0] == "stop":
                self.stop.set()
        self.stop.set()
        for waiting in self._waiting.values():
            waiting.close()  # nothing more will be answered: nothing more is stored

    async def close(self) -> None:
        """Close the channel: the main process sees this acceptor has ended."""
        await self._channel.aclose()

    async def report_counts(self) -> None:
        """Send the SMTP counts every _FLUSH_SECONDS (and once more when cancelled)."""
        try:
            while True:
                await trio.sleep(_FLUSH_SECONDS)
                await self._send_counts()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self._send_counts()

    async def _send_counts(self) -> None:
        counts = self.counts.take()
        if counts is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._channel.send(("counts", counts))


def acceptor_main(
    settings: Settings,
    server_key: str,
    listening: socket.socket,
    channel: socket.socket,
    refusal: str | None,
) -> None:
    """An acceptor process: serve SMTP on `listening` until the main process says stop (or
    is gone), or SIGTERM arrives; then shut the listener down gracefully. While the gateway
    refuses mail (`refusal`, given or told later), new connections get `421 4.3.2`. SIGINT
    and SIGHUP are ignored: a terminal's Ctrl-C or hang-up reaches every process of the
    gateway, and the main process, which may first drain (`http.drain_seconds`), stops its
    acceptors itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from e2a_gateway.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    trio.run(_serve, settings, server_key, listening, channel, refusal)


async def _serve(
    settings: Settings,
    server_key: str,
    listening: socket.socket,
    channel: socket.socket,
    refusal: str | None,
) -> None:
    from e2a_gateway.gateway import Gateway
    from e2a_gateway.hub.job_queue import JobQueue
    from e2a_gateway.inbound.pipeline import InboundMailSink
    from e2a_gateway.mailauth.resolver import DnsResolver
    from e2a_gateway.smtp.server import serve_smtp
    from e2a_gateway.startup import load_then_settle, smtp_options

    limits, listener_limits, tls = smtp_options(settings)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(channel))
    main = _MainProcess(_Channel(stream), refusal)
    storage = cast(Storage, _StorageInMain(main))
    # Jobs are committed (and their workers woken) in the main process; this queue stays idle.
    resolver = DnsResolver.from_settings(settings.dns)
    gateway = Gateway(settings, storage, server_key, resolver, JobQueue())
    sink = InboundMailSink(gateway, deliver=main.deliver)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))
    try:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(main.read_answers)
                nursery.start_soon(main.report_counts)
                nursery.start_soon(load_then_settle)
                async with trio.open_nursery() as smtp:
                    await smtp.start(
                        partial(
                            serve_smtp,
                            [listener],
                            sink,
                            settings.smtp.hostname,
                            limits,
                            listener_limits=listener_limits,
                            tls=tls,
                            observer=main.counts,
                            refusal=lambda: main.refusal,
                            proxy_trusted=settings.smtp.proxy_trusted_networks,
                        )
                    )
                    smtp.start_soon(_cancel_when_told, main.stop, signals, smtp.cancel_scope)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await main.close()


class _StorageInMain:
    """An acceptor's storage: each call its pipeline makes (STORAGE_CALLS) is answered by the
    main process; agents and domains found are remembered for ROUTING_SECONDS (what is not
    found is asked again: a new agent gets mail at once)."""

    def __init__(self, main: _MainProcess) -> None:
        self._main = main
        self._found: dict[tuple[str, str], tuple[float, Any]] = {}

    async def find_agent(self, email: str) -> Agent | None:
        """The agent at `email`, as the main process's storage has it."""
        agent: Agent | None = await self._remembered("find_agent", email)
        return agent

    async def is_served_domain(self, domain: str) -> bool:
        """Whether a user holds `domain` verified, as the main process's storage has it."""
        served: bool = await self._remembered("is_served_domain", domain)
        return served

    async def _remembered(self, name: str, key: str) -> Any:
        now = trio.current_time()
        found = self._found.get((name, key))
        if found is not None and found[0] > now:
            return found[1]
        value = await self._main.call(name, key)
        if value:
            if len(self._found) >= _ROUTING_ENTRIES:
                self._found.clear()
            self._found[(name, key)] = (now + ROUTING_SECONDS, value)
        return value

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name not in STORAGE_CALLS:
            raise AttributeError(f"an SMTP acceptor does not call storage.{name}")
        return partial(self._main.call, name)


async def _cancel_when_told(stop: trio.Event, signals: Any, scope: trio.CancelScope) -> None:
    """Cancel `scope` once `stop` is set or a signal arrives, whichever comes first."""
    async with trio.open_nursery() as waiting:

        async def on_signal() -> None:
            async for _ in signals:
                break
            waiting.cancel_scope.cancel()

        async def on_stop() -> None:
            await stop.wait()
            waiting.cancel_scope.cancel()

        waiting.start_soon(on_signal)
        waiting.start_soon(on_stop)
    scope.cancel()
