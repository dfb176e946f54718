"""The SMTP load generator of the benchmarks: many sessions from one trio process.

Each session sends message after message without pipelining (MAIL, RCPT, DATA, content),
either on one connection it keeps (an MTA with a queue for one domain) or on a new connection
per message (greeting, EHLO, the transaction, QUIT: how MTAs deliver most mail). The latency
measured is DATA-to-250: from sending the message's last byte (its terminating ".") to reading
the 250, which is the time the server takes to commit it.

Every message sent has a Message-ID of its own, as real mail does: the template `make_message`
builds carries a placeholder that each transaction fills with a fresh id of the same length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import time

import trio

RECEIVE_BYTES = 65536
CONNECT_SECONDS = 10.0
REPLY_SECONDS = 30.0
MESSAGE_ID_PLACEHOLDER = b"<000000000000.0000000@load.example>"
"""The Message-ID of `make_message`'s template, replaced in each message sent."""
SENDER = "load@example.org"
"""The load's sender: its envelope sender and the From of `make_message`."""
_sent = itertools.count()


@dataclasses.dataclass
class LoadResult:
    """What one load run measured: completed messages, wall time, and each one's latency."""

    messages: int = 0
    seconds: float = 0.0
    latencies: list[float] = dataclasses.field(default_factory=list)
    failures: int = 0

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        """The latency (seconds) that `fraction` of messages did not exceed (nearest rank)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def make_message(size: int, recipient: str) -> bytes:
    """A plain-text message of about `size` bytes (headers included), CRLF lines of 76 chars;
    its Message-ID is a placeholder that `with_fresh_message_id` fills."""
    head = (
        f"From: Load Generator <{SENDER}>\r\n"
        f"To: <{recipient}>\r\n"
        "Subject: benchmark message\r\n"
        f"Message-ID: {MESSAGE_ID_PLACEHOLDER.decode()}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs\r\n"
    lines = max(1, (size - len(head)) // len(line))
    return head + line * lines


def with_fresh_message_id(message: bytes) -> bytes:
    """`message` with its placeholder Message-ID replaced by one no other message sent by this
    process has (same length, so every message keeps the template's size)."""
    fresh = f"<{next(_sent):012d}.{os.getpid() % 10_000_000:07d}@load.example>".encode()
    return message.replace(MESSAGE_ID_PLACEHOLDER, fresh, 1)


class SmtpClient:
    """One SMTP session for the load generator; raises on any unexpected reply."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, port: int) -> SmtpClient:
        with trio.fail_after(CONNECT_SECONDS):
            client = cls(await trio.open_tcp_stream("127.0.0.1", port))
            await client.expect(b"220")
            await client.command(b"EHLO load.example\r\n", b"250")
        return client

    async def command(self, line: bytes, code: bytes) -> None:
        await self._stream.send_all(line)
        await self.expect(code)

    async def expect(self, code: bytes) -> None:
        await self.expect_all([code])

    async def expect_all(self, codes: list[bytes]) -> None:
        """Read one reply per code, in order, within one REPLY_SECONDS deadline: a pipelined
        group's replies are read as one answer, as an MTA's client reads them (one deadline per
        reply would cost the load generator a cancel scope per recipient)."""
        with trio.fail_after(REPLY_SECONDS):
            for code in codes:
                reply = await self._reply()
                if not reply.startswith(code):
                    raise RuntimeError(f"expected {code.decode()}, got {reply[:200]!r}")

    async def send_message(
        self, sender: str, recipient: str | list[str], message: bytes, *, pipelining: bool = False
    ) -> float:
        """One transaction to one or more recipients; its DATA-to-250 latency in seconds.
        With `pipelining` (RFC 2920), MAIL, every RCPT and DATA go in one write, as MTAs send
        them to a server that offers PIPELINING."""
        recipients = [recipient] if isinstance(recipient, str) else recipient
        mail = f"MAIL FROM:<{sender}>\r\n".encode()
        rcpts = [f"RCPT TO:<{address}>\r\n".encode() for address in recipients]
        if pipelining:
            await self._stream.send_all(mail + b"".join(rcpts) + b"DATA\r\n")
            await self.expect_all([b"250", *(b"250" for _ in rcpts), b"354"])
        else:
            await self.command(mail, b"250")
            for line in rcpts:
                await self.command(line, b"250")
            await self.command(b"DATA\r\n", b"354")
        await self._stream.send_all(with_fresh_message_id(message) + b".\r\n")
        sent = time.perf_counter()
        await self.expect(b"250")
        return time.perf_counter() - sent

    async def close(self) -> None:
        """QUIT (not waiting for its reply; skipped when the connection is broken) and close."""
        with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError, OSError):
            await self._stream.send_all(b"QUIT\r\n")
        await self._stream.aclose()

    async def _reply(self) -> bytes:
        """The next whole reply (its continuation lines too); the caller bounds the wait."""
        start = 0
        while True:
            end = self._buffer.find(b"\r\n", start)
            if end == -1:
                data = await self._stream.receive_some(RECEIVE_BYTES)
                if not data:
                    raise RuntimeError("server closed the connection")
                self._buffer += data
                continue
            if self._buffer[start + 3 : start + 4] != b"-":
                reply = bytes(self._buffer[: end + 2])
                del self._buffer[: end + 2]
                return reply
            start = end + 2


_FAILURES = (RuntimeError, OSError, trio.BrokenResourceError, trio.TooSlowError)


class _MeasuredRun:
    """One run's clock and tally: transactions completed between the end of the warm-up and
    the end of the run count, each with its DATA-to-250 latency."""

    def __init__(
        self,
        message: bytes,
        recipient: str | list[str],
        *,
        warmup: float,
        duration: float,
        pipelining: bool,
    ) -> None:
        self.result = LoadResult(seconds=duration)
        self.begin = time.perf_counter() + warmup
        self.end = self.begin + duration
        self._message = message
        self._recipient = recipient
        self._pipelining = pipelining

    def running(self) -> bool:
        """Whether the run's time is not up yet."""
        return time.perf_counter() < self.end

    async def send(self, client: SmtpClient) -> bool:
        """One transaction on `client`, counted when it ends within the measured time; False
        (and a failure counted) when it failed, which leaves the session unusable."""
        try:
            latency = await client.send_message(
                SENDER, self._recipient, self._message, pipelining=self._pipelining
            )
        except _FAILURES:
            self.result.failures += 1
            return False
        if self.begin <= time.perf_counter() <= self.end:
            self.result.messages += 1
            self.result.latencies.append(latency)
        return True


async def closed_loop(
    port: int,
    sessions: int,
    message: bytes,
    recipient: str | list[str],
    *,
    warmup: float,
    duration: float,
    per_connection: bool = False,
    pipelining: bool = False,
) -> LoadResult:
    """`sessions` clients each sending as fast as the server answers; measured after warm-up.
    With `per_connection`, each message goes over a connection of its own; with `pipelining`
    each transaction's commands up to DATA go in one write."""
    run = _MeasuredRun(message, recipient, warmup=warmup, duration=duration, pipelining=pipelining)

    async def session() -> None:
        if not per_connection:
            client = await SmtpClient.connect(port)
            while run.running() and await run.send(client):
                pass
            await client.close()
            return
        while run.running():
            try:
                client = await SmtpClient.connect(port)
            except _FAILURES:
                run.result.failures += 1
                return
            sent = await run.send(client)
            await client.close()
            if not sent:
                return

    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(session)
    return run.result


async def _send_until_over(run: _MeasuredRun, client: SmtpClient, broken: list[SmtpClient]) -> None:
    """Send on `client` until `run` is over; add it to `broken` if a transaction failed."""
    while run.running():
        if not await run.send(client):
            broken.append(client)
            return


async def kept_sessions_in_turn(
    port: int,
    sessions: int,
    message: bytes,
    recipient_sets: list[list[str]],
    *,
    warmup: float,
    duration: float,
    pipelining: bool = False,
) -> list[LoadResult]:
    """`closed_loop` over `sessions` kept-open connections for each of `recipient_sets` in
    turn, on the same connections: the runs differ in their recipients alone, not in which of
    the gateway's processes the kernel gave the connections to. A session whose transaction
    failed sits out the runs after it."""
    clients: list[SmtpClient] = []

    async def connect() -> None:
        clients.append(await SmtpClient.connect(port))

    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(connect)
    results: list[LoadResult] = []
    try:
        for recipients in recipient_sets:
            run = _MeasuredRun(
                message, recipients, warmup=warmup, duration=duration, pipelining=pipelining
            )
            broken: list[SmtpClient] = []
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_send_until_over, run, client, broken)
            for client in broken:
                clients.remove(client)
                await client.close()
            results.append(run.result)
    finally:
        for client in clients:
            await client.close()
    return results


async def fixed_rate(
    port: int, rate: float, sessions: int, message: bytes, recipient: str, *, duration: float
) -> LoadResult:
    """Messages started on a fixed schedule of `rate` per second, spread over `sessions`."""
    result = LoadResult()
    clients = [await SmtpClient.connect(port) for _ in range(sessions)]
    total = int(rate * duration)
    start = trio.current_time() + 0.2
    next_index = 0

    async def run(client: SmtpClient) -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            await trio.sleep_until(start + index / rate)
            try:
                latency = await client.send_message(SENDER, recipient, message)
            except (RuntimeError, trio.BrokenResourceError, trio.TooSlowError):
                result.failures += 1
                return
            result.messages += 1
            result.latencies.append(latency)

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(run, client)
    result.seconds = time.perf_counter() - began - 0.2
    for client in clients:
        await client.close()
    return result
