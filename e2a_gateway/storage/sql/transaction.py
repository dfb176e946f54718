"""One unit of work's view of its transaction: statements in the dialect, and announcements.

A backend opens the transaction on its DB-API connection, hands a `Transaction` to the work and
commits afterwards; the work runs its statements here, written once with `?` placeholders, and
says what should be told once it commits (`announce`). Never commits itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from typing import Any, Protocol

from e2a_gateway.storage.announcements import Announcement
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.storage.sql.dialect import Dialect


class Cursor(Protocol):
    """What the work needs of a DB-API cursor (sqlite3's and psycopg's alike)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def executemany(self, query: str, rows: Iterable[Sequence[Any]], /) -> object: ...

    def close(self) -> object: ...


class Connection(Protocol):
    """What the work needs of a DB-API connection (sqlite3's and psycopg's alike)."""

    def execute(self, query: str, params: Sequence[Any], /) -> Cursor: ...

    def cursor(self) -> Cursor: ...


class Transaction:
    """Runs a unit of work's statements on `connection`, in `dialect`, inside the transaction
    its backend opened; `integrity_error` is the driver's exception for a broken constraint."""

    def __init__(
        self,
        connection: Connection,
        dialect: Dialect,
        integrity_error: type[Exception],
    ) -> None:
        self.dialect = dialect
        self.announcements: list[Announcement] = []
        """What the work announced, in order, for the backend to tell once it commits."""
        self._connection = connection
        self._integrity_error = integrity_error
        self._gathered: dict[str, tuple[list[Any], Callable[[list[Any]], None]]] = {}

    def execute(
        self, query: str, params: Sequence[Any] = (), *, conflict: Exception | None = None
    ) -> Cursor:
        """Run one statement; raise `conflict`, when given, instead of the driver's error for
        a broken constraint (the transaction is then over: let the exception end the work)."""
        try:
            return self._connection.execute(self.dialect.sql(query), params)
        except self._integrity_error:
            if conflict is None:
                raise
            raise conflict from None

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once for each parameter row of `rows`."""
        with closing(self._connection.cursor()) as cursor:
            cursor.executemany(self.dialect.sql(query), rows)

    def first(self, query: str, params: Sequence[Any] = ()) -> Any:
        """The first row `query` returns, or None."""
        return self.execute(query, params).fetchone()

    def one(self, query: str, params: Sequence[Any] = ()) -> Any:
        """The single row `query` must return (StorageUnavailable if there is none)."""
        row = self.first(query, params)
        if row is None:
            raise StorageUnavailable(f"{self.dialect.name}: no row where one was certain: {query}")
        return row

    def all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row `query` returns."""
        return self.execute(query, params).fetchall()

    def lock(self, name: str, space: int | None = None, *, within: float | None = None) -> None:
        """Hold a lock on `name` (in the key `space`) until the transaction ends, so other
        replicas' transactions on the same name take turns; nothing under a single writer.
        `within`: StorageUnavailable when the lock is not had within that many seconds (the
        bound then holds for every lock the rest of the transaction waits for)."""
        statement, params = self.dialect.advisory_lock(name, space)
        if not statement:
            return
        if within is not None:
            self.execute(*self.dialect.lock_timeout(within))
        self.execute(statement, params)

    def lock_row(self, table: str, key: str, value: Any) -> None:
        """Lock the row of `table` whose `key` is `value` until the transaction ends, so other
        replicas' changes depending on it take turns; nothing under a single writer."""
        if not self.dialect.single_writer:
            self.execute(
                f"SELECT 1 FROM {table} WHERE {key} = ?{self.dialect.for_update()}", (value,)
            )

    def gathered(self, name: str, at_end: Callable[[list[Any]], None]) -> list[Any]:
        """The list of what the work gathers under `name`, to add to: once the work is done,
        right before the commit (`end`), `at_end` (the first call's) is given all of it, in
        order, as the transaction's last statements."""
        if name not in self._gathered:
            self._gathered[name] = ([], at_end)
        return self._gathered[name][0]

    def end(self) -> None:
        """Hand what was `gathered` to its `at_end`; the backend calls it once the work is
        done, before it commits."""
        while self._gathered:
            items, at_end = self._gathered.pop(next(iter(self._gathered)))
            at_end(items)

    def announce(self, announcement: Announcement) -> None:
        """Have `announcement` told to this process's commit observer and to the other
        replicas if (and when) the work commits."""
        self.announcements.append(announcement)
