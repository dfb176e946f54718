"""What the SQL of every aggregate runs on: a backend that runs a unit of work in a transaction.

The aggregates' mixins (`e2a.storage.sql.*`) call `_read` and `_write`; the SQLite and
PostgreSQL backends implement them with their connections, threads and locks, and nothing else.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar, TypeVar

from e2a.storage.sql.dialect import Dialect
from e2a.storage.sql.transaction import Transaction

T = TypeVar("T")
Work = Callable[[Transaction], T]
"""A unit of work: statements run on one transaction, returning what the caller wants."""
Routing = tuple[str, str] | None
"""The key of a routing answer that `_read` may remember (what it asks, of what), or None."""


class Runner(abc.ABC):
    """A backend, as the SQL sees it: a dialect, and somewhere to run units of work."""

    dialect: ClassVar[Dialect]
    holder: str
    """Stamped on the job leases this process takes."""

    @abc.abstractmethod
    async def _read(self, work: Work[T], *, snapshot: bool = False, routing: Routing = None) -> T:
        """Run `work`, which only reads, on a connection that sees everything committed before.

        `snapshot` puts every statement of `work` in one consistent snapshot. `routing` names
        a routing answer (an agent by address, a served domain, a newest signing seed) that the
        backend may remember until a write marked `changes_routing` (`_write`)."""

    @abc.abstractmethod
    async def _write(
        self, work: Work[T], *, changes_routing: bool = False, durable: bool = True
    ) -> T:
        """Run `work` in one write transaction: commit its effects, or none if it raises.

        `changes_routing` marks writes to agents, verified domains or signing secrets.
        `durable=False` may commit without waiting for the disk: only for job leases, which
        every start frees anyway."""
