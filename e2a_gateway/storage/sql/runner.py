"""What the SQL of every aggregate runs on: a backend that runs a unit of work in a transaction.

The aggregates' mixins (`e2a_gateway.storage.sql.*`) call `_read` and `_write`; the SQLite and
PostgreSQL backends implement them with their connections, threads and locks, and nothing else.
What a write announces reaches the commit observer only once the write has committed.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import ClassVar, TypeVar

import trio

from e2a_gateway.storage.announcements import Announcement, CommitObserver
from e2a_gateway.storage.base import DiskFull
from e2a_gateway.storage.sql.dialect import Dialect
from e2a_gateway.storage.sql.transaction import Transaction

T = TypeVar("T")
Work = Callable[[Transaction], T]
"""A unit of work: statements run on one transaction, returning what the caller wants."""
Routing = tuple[str, str] | None
"""The key of a routing answer that `_read` may remember (what it asks, of what), or None."""
Answer = tuple[str, str] | None
"""The key of a read's answer that `_read` may remember until the next write of any kind (what
it asks, of what: every value the query depends on, its owner's scope included), or None."""


class Snapshot(abc.ABC):
    """Reads in one consistent snapshot held open between them, on one connection: a document
    read page by page (an account's export) sees no commit made after its first read."""

    @abc.abstractmethod
    async def read(self, work: Work[T]) -> T:
        """Run `work`, which only reads, in the snapshot."""


class Runner(abc.ABC):
    """A backend, as the SQL sees it: a dialect, and somewhere to run units of work."""

    dialect: ClassVar[Dialect]
    holder: str
    """Stamped on the job leases this process takes."""

    def __init__(self, on_commit: CommitObserver | None = None) -> None:
        self._on_commit = on_commit
        self._disk_refusal: str | None = None
        """What the database's disk said when it last refused a write (DiskFull), until a
        write of `ping`'s own succeeds (`LifecycleSql.ping`)."""
        self._disk_refused_at = 0.0

    @abc.abstractmethod
    async def _read(
        self,
        work: Work[T],
        *,
        snapshot: bool = False,
        routing: Routing = None,
        answer: Answer = None,
    ) -> T:
        """Run `work`, which only reads, on a connection that sees everything committed before.

        `snapshot` puts every statement of `work` in one consistent snapshot. `routing` names
        a routing answer (an agent by address, a served domain, a newest signing seed) that the
        backend may remember until a write marked `changes_routing` (`_write`); `answer` names
        one it may remember until the next write of any kind (an inbox page, a message)."""

    @abc.abstractmethod
    def _snapshot(self) -> AbstractAsyncContextManager[Snapshot]:
        """Hold one connection in one read-only snapshot while the block runs, however it ends
        (an exception, a cancellation); the connection is free again afterwards."""

    def _remembered(self, routing: tuple[str, str]) -> object | None:
        """The routing answer `routing` as remembered now, or None when none is (a backend
        that remembers none always answers None)."""
        return None

    async def _write(
        self, work: Work[T], *, changes_routing: bool = False, durable: bool = True
    ) -> T:
        """Run `work` in one write transaction: commit its effects, or none if it raises.
        Once committed, what it announced goes to the commit observer.

        `changes_routing` marks writes to agents, verified domains or signing secrets.
        `durable=False` may commit without waiting for the disk: only for job leases, which
        every start frees anyway, and kept readings, which are computed again when lost.
        A write the database's disk refused (DiskFull) is remembered for `ping`."""
        try:
            result, announcements = await self._commit(
                work, changes_routing=changes_routing, durable=durable
            )
        except DiskFull as exc:
            self._disk_refusal = str(exc)
            self._disk_refused_at = trio.current_time()
            raise
        if announcements and self._on_commit is not None:
            self._on_commit(announcements)
        return result

    @abc.abstractmethod
    async def _commit(
        self, work: Work[T], *, changes_routing: bool, durable: bool
    ) -> tuple[T, list[Announcement]]:
        """Run `work` in one write transaction and commit it (as `_write` says); its result
        and what it announced."""
