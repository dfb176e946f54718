"""A tiny HTTP/1.1 server on loopback (trio + h11) that plays a webhook receiver in tests.

Each request is recorded, then answered as the test says: a status code with headers, a hang
(until the client gives up or the test releases it), or a closed connection without answer.
Connections are kept alive between requests, as a real receiver would. Tests only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import h11
import trio

MAX_REQUEST_BYTES = 8 * 1024 * 1024
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it. Header names are lowercased."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    at: float
    """trio.current_time() when the request was complete."""


@dataclass(frozen=True)
class Answer:
    """Answer with `status`, `headers` and `body` after `delay` seconds (a slow receiver; the
    request counts as in flight meanwhile). An `endless` answer announces a body of a gigabyte,
    sends `body` and then nothing more until the client goes away; a `broken` one announces
    it too, sends `body` and closes the connection."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    endless: bool = False
    broken: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class Trickle:
    """Send a 200 answer one byte every `seconds`, status line first, without ever finishing
    its head (a slowloris answer), until the client goes away."""

    seconds: float


class Hang:
    """Send nothing until the client closes the connection or `HttpReceiver.release()`."""


class Close:
    """Close the connection without sending a response."""


Reply = Answer | Hang | Close | Trickle
HANG = Hang()
CLOSE = Close()


class HttpReceiver:
    """Records requests and answers them with `reply(request)` (200 by default).

    Start it with `await nursery.start(receiver.serve)`; `port` is then bound. Serving again
    with the same `port` after the nursery that served it ended brings it "back up".
    """

    def __init__(self, reply: Callable[[Received], Reply] | None = None) -> None:
        self.reply: Callable[[Received], Reply] = reply or (lambda _: Answer(200))
        self.requests: list[Received] = []
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        """TCP connections accepted so far."""
        self._changed = trio.Event()
        self._released = trio.Event()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>/hook`."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (on `port` when set, else any free port) until cancelled."""
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self._serve_connection, listeners))
            task_status.started(self.port)

    def release(self) -> None:
        """Let every hanging request go (their connections are closed without answer)."""
        self._released.set()
        self._released = trio.Event()

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until at least `count` requests have arrived (at most WAIT_SECONDS)."""
        with trio.fail_after(WAIT_SECONDS):
            while len(self.requests) < count:
                await self._changed.wait()
        return list(self.requests)

    async def wait_in_flight(self, count: int) -> None:
        """Wait until exactly `count` requests are being held at once (at most WAIT_SECONDS)."""
        with trio.fail_after(WAIT_SECONDS):
            while self.in_flight != count:
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        self.connections += 1
        async with stream:
            while True:
                request = await self._read_request(stream, connection)
                if request is None:
                    return
                self.requests.append(request)
                self._notify()
                reply = self.reply(request)
                if isinstance(reply, Close):
                    return
                if isinstance(reply, Hang):
                    await self._hang(stream)
                    return
                if isinstance(reply, Trickle):
                    await self._trickle(stream, reply.seconds)
                    return
                if reply.delay:
                    await self._hold(reply.delay)
                try:
                    await self._answer(stream, connection, reply)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the client went away while the answer was delayed
                if reply.broken:
                    return
                if reply.endless:
                    await self._hang(stream)
                    return
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()

    async def _read_request(
        self, stream: trio.SocketStream, connection: h11.Connection
    ) -> Received | None:
        """The next complete request, or None when the client closed or spoke nonsense."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                connection.receive_data(data)
                if not data and connection.their_state is h11.IDLE:
                    return None
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return Received(
                    method=head.method.decode("ascii"),
                    target=head.target.decode("ascii"),
                    headers={
                        name.decode("latin-1").lower(): value.decode("latin-1")
                        for name, value in head.headers
                    },
                    body=bytes(body),
                    at=trio.current_time(),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _hold(self, seconds: float) -> None:
        """Keep a request in flight for `seconds` before it is answered."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._notify()
        try:
            await trio.sleep(seconds)
        finally:
            self.in_flight -= 1
            self._notify()

    async def _hang(self, stream: trio.SocketStream) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._notify()
        try:
            async with trio.open_nursery() as nursery:

                async def until_client_closes() -> None:
                    while await stream.receive_some(65536):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_client_closes)
                await self._released.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.in_flight -= 1
            self._notify()

    async def _trickle(self, stream: trio.SocketStream, seconds: float) -> None:
        """Send a head that never ends, a byte at a time, until the client goes away."""
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 2**20
        self.in_flight += 1
        self._notify()
        try:
            for byte in head:
                await stream.send_all(bytes([byte]))
                await trio.sleep(seconds)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client gave up
        finally:
            self.in_flight -= 1
            self._notify()

    async def _answer(
        self, stream: trio.SocketStream, connection: h11.Connection, reply: Answer
    ) -> None:
        headers = list(reply.headers.items())
        length = 2**30 if reply.endless or reply.broken else len(reply.body)
        headers.append(("Content-Length", str(length)))
        data = connection.send(h11.Response(status_code=reply.status, headers=headers)) or b""
        if reply.body:
            data += connection.send(h11.Data(data=reply.body)) or b""
        if not (reply.endless or reply.broken):
            data += connection.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)


def answer_in_turn(*replies: Reply) -> Callable[[Received], Reply]:
    """A `reply` that gives each answer in turn, then repeats the last one forever."""
    queue = list(replies)

    def reply(_: Received) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return reply
