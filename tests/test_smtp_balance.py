"""Sharing one SMTP listening socket between processes fairly (`e2a_gateway.smtp.balance`).

Two listeners in this process stand for two processes: each serves its own duplicate of one
listening socket (as the acceptors' are), with its own seat among shared session counts.
Connections kept open, as an MTA's connection cache keeps them, must end up spread evenly.
"""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio

from e2a_gateway.smtp.balance import VACANT, SessionShares
from e2a_gateway.smtp.protocol import SessionLimits
from e2a_gateway.smtp.server import ListenerLimits, serve_smtp
from tests.delivery_support import wait_until
from tests.test_smtp_server import HOST, MemorySink

TIMEOUT = 10


class SessionCount:
    """An SmtpObserver counting the sessions its listener started."""

    def __init__(self) -> None:
        self.started = 0

    def session_started(self) -> None:
        self.started += 1

    def session_ended(self) -> None:
        pass

    def message_accepted(self) -> None:
        pass

    def mail_rejected(self, reason: str) -> None:
        pass


def test_a_seat_is_busier_only_when_another_serves_fewer() -> None:
    shares = SessionShares(3)
    first, second, third = (shares.seat(index) for index in range(3))
    assert first.counts() == [VACANT, VACANT, VACANT]  # none serving yet
    first.record(0)
    assert not first.busier_than_least()  # the others are not serving
    first.record(2)
    second.record(2)
    third.record(1)
    assert first.busier_than_least() and second.busier_than_least()
    assert not third.busier_than_least()
    third.record(2)
    assert not first.busier_than_least()
    assert shares.processes == 3
    assert first.counts() == [2, 2, 2]
    shares.vacate(2)  # its process exited: never the least busy
    first.record(3)
    assert first.busier_than_least()  # than the second, not than the vacant third
    second.record(3)
    assert not first.busier_than_least()


def test_seats_exist_only_for_the_processes_sharing() -> None:
    with pytest.raises(IndexError):
        SessionShares(2).seat(2)
    with pytest.raises(ValueError):
        SessionShares(0)


async def open_sessions(port: int, count: int) -> list[trio.SocketStream]:
    """`count` connections, one after another, each open once its greeting has come."""
    streams = []
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            greeting += await stream.receive_some(1024)
        assert greeting.startswith(b"220 ")
        streams.append(stream)
    return streams


async def serve_shared(
    nursery: trio.Nursery, seated: bool
) -> tuple[int, list[SessionCount], SessionShares]:
    """Two listeners on one listening socket; with `seated`, sharing session counts."""
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    port = listening.getsockname()[1]
    shares = SessionShares(2)
    observers = [SessionCount(), SessionCount()]
    for index, sock in enumerate((listening, listening.dup())):
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        await nursery.start(
            partial(
                serve_smtp,
                [listener],
                MemorySink(),
                HOST,
                SessionLimits(),
                listener_limits=ListenerLimits(),
                observer=observers[index],
                seat=shares.seat(index) if seated else None,
            )
        )
    return port, observers, shares


async def test_sessions_kept_open_are_spread_evenly(nursery: trio.Nursery) -> None:
    port, observers, shares = await serve_shared(nursery, seated=True)
    with trio.fail_after(TIMEOUT):
        streams = await open_sessions(port, 8)
    assert [observer.started for observer in observers] == [4, 4]
    assert shares.seat(0).counts() == [4, 4]
    for stream in streams[:3]:  # three sessions of one listener or the other end...
        await stream.aclose()
    await wait_until(lambda: sum(shares.seat(0).counts()) == 5)
    with trio.fail_after(TIMEOUT):
        more = await open_sessions(port, 3)  # ...and the next ones go where there is room
    assert shares.seat(0).counts() == [4, 4]
    for stream in streams[3:] + more:
        await stream.aclose()


async def test_a_burst_of_connections_is_spread_evenly(nursery: trio.Nursery) -> None:
    """Connections that arrive together (an MTA opening its cache at once): the first listener
    to wake would accept them all; the counts leave each its share."""
    port, observers, _ = await serve_shared(nursery, seated=True)
    with trio.fail_after(TIMEOUT):
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(10)]
    await wait_until(lambda: sum(observer.started for observer in observers) == 10)
    assert sorted(observer.started for observer in observers) == [5, 5]
    for stream in streams:
        await stream.aclose()
