"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way: a relay that is
`delay` seconds away (a round trip of twice that), for benchmarks of what round trips cost.

It runs its own trio loop in a thread, so both trio code and blocking clients (smtplib) can
use it: `with LatencyProxy(upstream_port, 0.010) as port: ...`.
"""

from __future__ import annotations

import threading
from functools import partial
from types import TracebackType

import trio

CHUNK = 65536
QUEUED_CHUNKS = 1024


class LatencyProxy:
    """Forwards connections on a free loopback port to `upstream_port`, each chunk delivered
    `delay` seconds after it was read, in order."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self._upstream_port = upstream_port
        self._delay = delay
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self.port = 0

    def __enter__(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self.port

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None and self._cancel is not None:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self._thread.join(10)

    def _run(self) -> None:
        trio.run(self._serve)

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    partial(trio.serve_tcp, host="127.0.0.1"), self._proxy, 0
                )
                self.port = listeners[0].socket.getsockname()[1]
                self._ready.set()

    async def _proxy(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self._upstream_port)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, target: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        """Copy `source` to `target` through a delay line; end both ways when one side ends."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](QUEUED_CHUNKS)

        async def deliver() -> None:
            try:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    await target.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                done.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver)
            try:
                while data := await source.receive_some(CHUNK):
                    await send.send((trio.current_time() + self._delay, data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await send.aclose()
        done.cancel()
