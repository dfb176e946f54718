"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way: a relay that is
`delay` seconds away (a round trip of twice that), for benchmarks of what round trips cost.

It runs its own trio loop in a thread, so both trio code and blocking clients (smtplib) can
use it: `with latency_proxy(upstream_port, 0.010) as port: ...`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import trio

CHUNK = 65536
QUEUED_CHUNKS = 1024


@contextmanager
def latency_proxy(upstream_port: int, delay: float) -> Iterator[int]:
    """Forward connections on a free loopback port (yielded) to `upstream_port`, each chunk
    delivered `delay` seconds after it was read, in order; stop when the block ends."""
    proxy = _DelayLine(upstream_port, delay)
    thread = threading.Thread(target=trio.run, args=(proxy.serve,), daemon=True)
    thread.start()
    if not proxy.ready.wait(10) or proxy.token is None or proxy.cancel is None:
        raise RuntimeError("the latency proxy did not start")
    try:
        yield proxy.port
    finally:
        trio.from_thread.run_sync(proxy.cancel.cancel, trio_token=proxy.token)
        thread.join(10)


class _DelayLine:
    """The proxy's trio side: serves until `cancel` is cancelled."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self._upstream_port = upstream_port
        self._delay = delay
        self.ready = threading.Event()
        self.token: trio.lowlevel.TrioToken | None = None
        self.cancel: trio.CancelScope | None = None
        self.port = 0

    async def serve(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self.cancel:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    partial(trio.serve_tcp, host="127.0.0.1"), self._proxy, 0
                )
                self.port = listeners[0].socket.getsockname()[1]
                self.ready.set()

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
