"""One listening socket shared fairly by several processes (`smtp.processes`).

Every process of the gateway waits on the same SMTP socket, and the kernel wakes them all
for a new connection: the first to call accept() wins it, and a process that has just woken
takes every connection waiting. A burst of connections that an MTA then keeps open (its
connection cache) could so land in one process while the others idle. Each process writes how
many sessions it serves into a slot of a small array in shared memory; one serving more than
the least busy waits a moment before it accepts, so the least busy takes the connection. The
wait is short and bounded: a least busy process that is slow to accept (its event loop busy)
costs a connection at most `YIELD_SECONDS`.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.sharedctypes
import select
from typing import Any

import trio

YIELD_SECONDS = 0.002
"""How long a busier process leaves a waiting connection to the least busy one."""
VACANT = 2**31 - 1
"""The count in the slot of a process not serving (not started yet, or gone): never the least
busy."""
_LOOK_AGAIN_SECONDS = 0.0002
"""How often a busier process looks whether the waiting connection was taken meanwhile."""


class SessionShares:
    """The session counts of `processes` processes in shared memory (one slot each; slot 0 is
    the main process), each VACANT until its process serves. Made before the acceptors are
    started, which receive their `Seat`."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("at least one process shares the socket")
        self._counts: Any = multiprocessing.sharedctypes.RawArray(ctypes.c_int, processes)
        for index in range(processes):
            self._counts[index] = VACANT

    @property
    def processes(self) -> int:
        """How many processes share the socket."""
        return len(self._counts)

    def vacate(self, index: int) -> None:
        """Mark process `index` as not serving (it has exited)."""
        self._counts[index] = VACANT

    def seat(self, index: int) -> Seat:
        """Process `index`'s view of the counts (it writes only its own slot)."""
        if not 0 <= index < len(self._counts):
            raise IndexError(f"no process {index} among {len(self._counts)}")
        return Seat(self._counts, index)


class Seat:
    """One process's slot among the shared session counts. Picklable into a process being
    started (the counts stay shared); reads and writes are single aligned ints, so no lock."""

    def __init__(self, counts: Any, index: int) -> None:
        self._counts = counts
        self._index = index

    def record(self, sessions: int) -> None:
        """Tell the others how many sessions this process serves now."""
        self._counts[self._index] = sessions

    def busier_than_least(self) -> bool:
        """Whether another process serves fewer sessions than this one."""
        own = self._counts[self._index]
        return any(count < own for count in self._counts)

    def counts(self) -> list[int]:
        """Every process's sessions, in slot order."""
        return list(self._counts)


class Turn:
    """When a process sharing one listening socket takes a waiting connection."""

    def __init__(self, seat: Seat, listening: int) -> None:
        self._seat = seat
        self._listening = listening
        self._poller = select.poll()
        self._poller.register(listening, select.POLLIN)

    async def wait(self) -> None:
        """Return once a connection waits on the socket that this process should accept: at
        once when no other process serves fewer sessions, else when this one still waits
        after YIELD_SECONDS (the counts are read again as the others take theirs)."""
        while True:
            await trio.lowlevel.wait_readable(self._listening)
            deadline = trio.current_time() + YIELD_SECONDS
            while self._seat.busier_than_least() and trio.current_time() < deadline:
                await trio.sleep(_LOOK_AGAIN_SECONDS)
                if not self._waiting():
                    break
            if self._waiting():
                return

    def _waiting(self) -> bool:
        return bool(self._poller.poll(0))
