"""The PostgreSQL backend, for several `e2a serve` replicas sharing one database.

psycopg 3's sync API driven from trio through threads, over a small bounded pool of
connections; every call is one transaction. Nothing is cached in the process, because another
replica may change anything at any time, and every job claim is `FOR UPDATE SKIP LOCKED` under
a lease, so replicas never take the same job and take over a dead replica's once it lapses.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
import trio

from e2a_gateway.storage import redacted_url
from e2a_gateway.storage.announcements import Announcement, CommitObserver
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.storage.migrations import load_migrations
from e2a_gateway.storage.notify_payloads import encode_payloads
from e2a_gateway.storage.sql.dialect import POSTGRES
from e2a_gateway.storage.sql.lifecycle import applied_versions, record_migration
from e2a_gateway.storage.sql.runner import Answer, Routing, Work
from e2a_gateway.storage.sql.store import SqlStorage
from e2a_gateway.storage.sql.transaction import Transaction

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

POOL_SIZE = 8
CONNECT_TIMEOUT_SECONDS = 10
# The advisory lock that migrations queue on. The SQL's own locks (e2a_gateway.storage.sql) take
# hashtext() of a name, the inboxes' in the two-key (int, int) space, which never overlaps the
# single-key (bigint) one.
MIGRATION_LOCK = 0x6532615F6D6967  # "e2a_mig"
# LISTEN/NOTIFY channel on which commits are announced to the other replicas
# (e2a_gateway.hub.fanout).
FANOUT_CHANNEL = "e2a_fanout"
DEAD_PEER_SETTINGS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}
"""libpq's TCP settings on every connection (the URL may set others): a server that stops
answering without a word — a partition, a host that died, a failover to another address —
is given up on within about 25 s, whether the connection sits idle (keepalives) or waits for a
query's answer (`tcp_user_timeout`, in milliseconds), instead of after the kernel's own
retries, some 15 minutes in which every call on it would hang."""


_CONNECT_HINTS = (
    (re.compile(r"connection refused", re.I), "connection refused — is PostgreSQL running?"),
    (
        re.compile(r"password authentication failed|no password supplied", re.I),
        "password authentication failed — check the user and password in database.url",
    ),
    (
        re.compile(r'database "([^"]+)" does not exist', re.I),
        "database does not exist — create it (createdb) or fix the name in database.url",
    ),
    (
        re.compile(r'role "([^"]+)" does not exist', re.I),
        "that user (role) does not exist — create it or fix the user in database.url",
    ),
    (
        re.compile(r"could not translate host name|name or service not known", re.I),
        "unknown host — check the host name in database.url",
    ),
    (
        re.compile(r"timeout expired|timed out", re.I),
        "timed out — check the host, the port and any firewall between",
    ),
    (
        re.compile(r"no pg_hba.conf entry", re.I),
        "the server refuses this client — allow it in pg_hba.conf",
    ),
)


def connect_error_message(display_url: str, exc: Exception) -> str:
    """A message for an operator: which URL, what failed, what to do about it."""
    text = str(exc)
    for pattern, hint in _CONNECT_HINTS:
        if pattern.search(text):
            return f"database.url: cannot connect to {display_url}: {hint}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"database.url: cannot connect to {display_url}: {first_line}"


def _takes_no_writes(display_url: str, why: str) -> str:
    """What to tell the operator of a database that refuses writes (`why`)."""
    return (
        f"postgres ({display_url}): the database takes no writes ({why}) — point database.url "
        "at the primary (a standby, or a database with default_transaction_read_only = on, is "
        "read-only)"
    )


@contextmanager
def _translate_errors(display_url: str) -> Iterator[None]:
    """Turn lost connections, deadlocks, server-side failures and a database that takes no
    writes into StorageUnavailable.

    Integrity errors pass through for the caller to interpret; programming errors are bugs."""
    try:
        yield
    except psycopg.IntegrityError:
        raise
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise StorageUnavailable(_takes_no_writes(display_url, str(exc))) from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StorageUnavailable(f"postgres ({display_url}): {exc}".strip()) from exc


class _Dropped(Exception):
    """A pooled connection the server closed while it sat idle (the database restarted, or an
    administrator or a proxy ended the session): its transaction could not begin, so nothing
    ran on it, and the work may run on another connection."""


def _transact(
    connection: Connection, display_url: str, work: Callable[[Connection], T], reused: bool
) -> T:
    """Run `work` in one transaction on `connection` (in a worker thread); _Dropped when the
    `reused` connection turns out broken before the transaction began."""
    with _translate_errors(display_url), ExitStack() as transaction:
        try:
            transaction.enter_context(connection.transaction())
        except psycopg.OperationalError as exc:
            if reused and connection.broken:
                raise _Dropped from exc
            raise
        return work(connection)


class PostgresStorage(SqlStorage):
    """Storage on a PostgreSQL database. Create with `PostgresStorage.open(url)`."""

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        holder: str = "",
        pool_size: int = POOL_SIZE,
        on_commit: CommitObserver | None = None,
    ):
        super().__init__(on_commit)
        self.url = url
        self.holder = holder
        self.display_url = redacted_url(url)
        self._idle: list[Connection] = []
        self._slots = trio.Semaphore(pool_size)
        self._closed = False
        self.process_tag = secrets.token_hex(8)
        """Tags this process's NOTIFY payloads, so its own fan-out listener can skip them."""

    @classmethod
    def open(
        cls, url: str, holder: str = "", on_commit: CommitObserver | None = None
    ) -> PostgresStorage:
        """Check `url` and return a backend that connects on first use (not yet migrated);
        `on_commit` hears what each write announced once it has committed."""
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StorageUnavailable(
                f"database.url: {redacted_url(url)} is not a valid PostgreSQL URL ({exc}) — "
                "use postgresql://user:password@host:5432/dbname"
            ) from exc
        return cls(url, holder, on_commit=on_commit)

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> Connection:
        """A new connection in autocommit mode (transactions are explicit), in a thread; a
        server that stops answering fails its calls within DEAD_PEER_SETTINGS' bound."""
        params = psycopg.conninfo.conninfo_to_dict(self.url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        params.setdefault("application_name", "e2a")
        for key, value in DEAD_PEER_SETTINGS.items():
            params.setdefault(key, value)
        try:
            return psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StorageUnavailable(connect_error_message(self.display_url, exc)) from exc

    def connect_listener(self) -> Connection:
        """A dedicated connection (outside the pool) that LISTENs on FANOUT_CHANNEL; blocking,
        so call it in a thread. TCP keepalives let a silently dead peer be noticed."""
        params = psycopg.conninfo.conninfo_to_dict(self.url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        params.setdefault("application_name", "e2a-fanout")
        for key, value in DEAD_PEER_SETTINGS.items():
            params.setdefault(key, value)
        try:
            connection = psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StorageUnavailable(connect_error_message(self.display_url, exc)) from exc
        try:
            connection.execute(f"LISTEN {FANOUT_CHANNEL}")
        except psycopg.Error as exc:
            connection.close()
            raise StorageUnavailable(f"postgres ({self.display_url}): LISTEN: {exc}") from exc
        return connection

    def _give_back(self, connection: Connection) -> None:
        """Keep a healthy connection for the next call; close a broken one."""
        if self._closed or connection.closed or connection.broken:
            connection.close()
        else:
            self._idle.append(connection)

    async def _run(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction on a pooled connection, in a worker thread. Idle
        connections the server dropped meanwhile (a restart of the database) are closed and
        passed over, so the work runs once, on a live one."""
        if self._closed:
            raise StorageUnavailable(f"postgres ({self.display_url}): storage is closed")
        async with self._slots:
            while True:
                reused = bool(self._idle)
                if reused:
                    connection = self._idle.pop()
                else:
                    connection = await trio.to_thread.run_sync(self._connect)
                try:
                    return await trio.to_thread.run_sync(
                        _transact, connection, self.display_url, work, reused
                    )
                except _Dropped:
                    continue  # closed below; the next idle one, or a new one, takes the work
                finally:
                    self._give_back(connection)

    async def _read(
        self,
        work: Work[T],
        *,
        snapshot: bool = False,
        routing: Routing = None,
        answer: Answer = None,
    ) -> T:
        """Run `work` in one transaction (REPEATABLE READ for a `snapshot`). Nothing is
        remembered for `routing` or `answer`: other replicas may change anything at any
        time."""
        result, _ = await self._run(partial(self._unit, work, snapshot))
        return result

    async def _commit(
        self, work: Work[T], *, changes_routing: bool, durable: bool
    ) -> tuple[T, list[Announcement]]:
        """Run `work` in one transaction; every commit waits for the disk."""
        return await self._run(partial(self._unit, work, False))

    def _unit(
        self, work: Work[T], snapshot: bool, connection: Connection
    ) -> tuple[T, list[Announcement]]:
        """Run `work` inside the open transaction of `connection`, then NOTIFY what it
        announced (delivered to the listeners only if the transaction commits)."""
        if snapshot:
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        transaction = Transaction(connection, self.dialect, psycopg.IntegrityError)
        result = work(transaction)
        transaction.end()
        _notify(connection, *encode_payloads(self.process_tag, transaction.announcements))
        return result, transaction.announcements

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers and takes writes (a standby
        answers reads, but every message, job and key would be refused)."""
        refuses, recovering = await self._read(
            lambda tx: tx.one(
                "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery()"
            )
        )
        if refuses or recovering:
            why = "it is a standby, in recovery" if recovering else "transaction_read_only is on"
            raise StorageUnavailable(_takes_no_writes(self.display_url, why))

    async def announce(self, news: Sequence[Announcement]) -> None:
        """NOTIFY the other replicas of `news` at once, in a transaction of its own that
        writes nothing."""
        payloads = encode_payloads(self.process_tag, news)
        await self._run(lambda connection: _notify(connection, *payloads))

    # -- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply each migration newer than the recorded versions, one transaction each.

        Replicas starting together queue on an advisory lock, so each step runs once."""
        migrations = load_migrations("postgres")

        def apply_pending(db: Connection) -> list[int]:
            tx = Transaction(db, self.dialect, psycopg.IntegrityError)
            tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            applied = applied_versions(tx)
            done: list[int] = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                with db.transaction():  # a savepoint: the step and its record together
                    db.execute(migration.sql)  # the whole script, as one simple query
                    record_migration(tx, migration)
                done.append(migration.version)
            return done

        return await self._run(apply_pending)

    async def upkeep(self) -> None:
        """Nothing to do: PostgreSQL keeps its own log (its checkpointer and autovacuum)."""

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their call ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await trio.to_thread.run_sync(connection.close)


def _notify(db: Connection, *payloads: str) -> None:
    """Announce `payloads` on FANOUT_CHANNEL, in one round trip, when (and only if) the
    transaction commits."""
    if payloads:
        db.execute(
            "SELECT pg_notify(%s, payload) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY n",
            (FANOUT_CHANNEL, list(payloads)),
        )
