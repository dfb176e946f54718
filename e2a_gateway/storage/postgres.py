"""The PostgreSQL backend, for several `e2a serve` replicas sharing one database.

psycopg 3's sync API driven from trio through threads, over a small bounded pool of
connections; every call is one transaction. Nothing is cached in the process, because another
replica may change anything at any time, and every job claim is `FOR UPDATE SKIP LOCKED` under
a lease, so replicas never take the same job and take over a dead replica's once it lapses.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
import psycopg.conninfo
import trio

from e2a_gateway.redacted import redacted_url
from e2a_gateway.storage.announcements import Announcement, CommitObserver
from e2a_gateway.storage.base import DiskFull, StorageUnavailable
from e2a_gateway.storage.migrations import load_migrations
from e2a_gateway.storage.notify_payloads import encode_payloads, schema_payload
from e2a_gateway.storage.sql.dialect import POSTGRES
from e2a_gateway.storage.sql.lifecycle import applied_versions, record_migration
from e2a_gateway.storage.sql.runner import Answer, Routing, Snapshot, Work
from e2a_gateway.storage.sql.store import SqlStorage
from e2a_gateway.storage.sql.transaction import Transaction

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

log = logging.getLogger("e2a.storage")

MIGRATION_LOCK_POLL_SECONDS = 0.25
"""How often a start that waits for the migration lock (`_take_migration_lock`) asks again."""
MIGRATION_LOCK_TELL_SECONDS = 1.0
"""How long a start waits for the migration lock before the log names who holds it (shorter
waits are replicas started together, taking turns)."""

POOL_SIZE = 8
CONNECT_TIMEOUT_SECONDS = 10
# The advisory lock that migrations queue on. The SQL's own locks (e2a_gateway.storage.sql) take
# hashtext() of a name, the inboxes' in the two-key (int, int) space, which never overlaps the
# single-key (bigint) one.
MIGRATION_LOCK = 0x6532615F6D6967  # "e2a_mig"
# LISTEN/NOTIFY channel on which commits are announced to the other replicas
# (e2a_gateway.hub.fanout).
FANOUT_CHANNEL = "e2a_fanout"
# The channel on which a replica checks that its LISTEN connection hears what the pool NOTIFYs
# (e2a_gateway.hub.fanout): through a pooler in transaction mode it hears nothing.
CHECK_CHANNEL = "e2a_listen_check"
LISTENER_NAME = "e2a-fanout"
"""The `application_name` of a replica's LISTEN connection, followed by a digest of the
replica's name (`listener_name`)."""
SILENT_SERVER_SECONDS = 5
"""How long, by default, a server may stay silent before a connection to it is given up on
(`database.silent_server_seconds`, `dead_peer_settings`)."""


def listener_name(holder: str) -> str:
    """The `application_name` of the LISTEN connection of the replica named `holder`
    (`database.replica_id`, by a digest: the name may be longer than the 63 bytes PostgreSQL
    keeps of it), by which replicas find another that runs under their name."""
    if not holder:
        return LISTENER_NAME
    return f"{LISTENER_NAME} {hashlib.sha256(holder.encode()).hexdigest()[:24]}"


def dead_peer_settings(seconds: int) -> dict[str, int]:
    """libpq's TCP settings on every connection (the URL may set others) for a server silent
    for `seconds`: one that stops answering without a word — a partition, a host that died, a
    failover to another address — is given up on within about `seconds` when it leaves data
    unacknowledged (`tcp_user_timeout`, in milliseconds: a query, a COMMIT, a connection
    attempt), and a third more when the connection sits idle or waits for an answer with
    nothing unacknowledged (keepalives: the first probe after `seconds` of silence, the
    connection ended at the next one unanswered), instead of after the kernel's own retries,
    some 15 minutes in which every call on it would hang."""
    return {
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": max(1, seconds // 3),
        "keepalives_count": 3,
        "tcp_user_timeout": seconds * 1000,
    }


IDLE_IN_TRANSACTION_SECONDS = 10.0
"""How long the server lets a transaction of the pool sit idle (its client sending nothing)
before it ends the session, rolling the transaction back and freeing its locks
(`idle_in_transaction_session_timeout`). The gateway never leaves one idle that long: its work
runs statement after statement in a worker thread, with no network, sleep or wait of its own
in between. So only a transaction whose client is gone without the server hearing of it (a NAT
or a network that died, a host that vanished) is ended; it may hold agents' mail locks, which
a DATA whose commit's outcome is unknown waits for (`pipeline.COMMIT_SETTLE_SECONDS`, well
above this) and the agents' other mail queues on."""

LOCK_WAIT_SECONDS = 10.0
"""How long a statement of the pool waits for a lock another session holds before it fails
(`lock_timeout`; SQLite's writer waits as long, `sqlite.BUSY_TIMEOUT_SECONDS`): a session left
inside a transaction that locked a table or rows the gateway needs (an operator's `psql`, a
script) would otherwise hold every SMTP DATA and API call that needs them until their clients
gave up, with no answer and nothing in the log. Mail then hears 451 and the API 503, and the
log names what to look for (`_lock_waited`). The gateway's own transactions hold their locks
for milliseconds; migrations wait as long as they must (`migrate`)."""


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
        re.compile(r"invalid response to SSL negotiation|expected authentication request", re.I),
        "the server at that port does not answer as PostgreSQL — check the port in "
        "database.url (PostgreSQL's default is 5432)",
    ),
    (
        re.compile(r"no pg_hba.conf entry", re.I),
        "the server refuses this client — allow it in pg_hba.conf",
    ),
)


_QUOTED = re.compile(r'"([^"]*)"')


def url_parse_problem(url: str, exc: Exception) -> str:
    """libpq's reason for refusing to parse `url`, on one line, with every quoted token that
    holds or is part of the URL's user name and password, or of its query (where
    `?password=` may be), shown as `"…"`: libpq quotes the token it could not decode, which
    may be the password, and sometimes the whole URL. A bad percent sign says how to write
    one."""
    text = " ".join(str(exc).split())
    rest = url.partition("://")[2]
    private = [part for part in (rest.rpartition("@")[0], rest.partition("?")[2]) if part]

    def shown(quoted: re.Match[str]) -> str:
        token = quoted[1]
        hidden = bool(token) and any(token in part or part in token for part in private)
        return '"…"' if hidden else quoted[0]

    text = _QUOTED.sub(shown, text)
    if "percent-encoded" in text:
        text += "; a % in the user name or password is written %25 (and @ %40, / %2F, : %3A)"
    return text


def connect_error_message(display_url: str, exc: Exception, key: str = "database.url") -> str:
    """A message for an operator: which setting (`key`) and URL, what failed, what to do."""
    text = str(exc)
    for pattern, hint in _CONNECT_HINTS:
        if pattern.search(text):
            return f"{key}: cannot connect to {display_url}: {hint.replace('database.url', key)}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{key}: cannot connect to {display_url}: {first_line}"


def _takes_no_writes(display_url: str, why: str) -> str:
    """What to tell the operator of a database that refuses writes (`why`)."""
    return (
        f"postgres ({display_url}): the database takes no writes ({why}) — point database.url "
        "at the primary (a standby, or a database with default_transaction_read_only = on, is "
        "read-only)"
    )


def _disk_full(display_url: str, refusal: Exception) -> str:
    """What to tell the operator of a database whose server's disk is full (SQLSTATE 53100)."""
    why = str(refusal).strip().splitlines()[0]
    return (
        f"postgres ({display_url}): the database server's disk is full ({why}) — free space "
        "on the database host: `df -h` of its data directory (SHOW data_directory) or of the "
        "tablespace the message names"
    )


def _may_not_create(url: str, refusal: Exception) -> str:
    """What to tell the operator whose database user may not create e2a's tables (PostgreSQL
    15 and later grant CREATE on schema public to the database's owner alone)."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else "the user of database.url"
    database = unquote(parts.path.lstrip("/")) or user
    why = str(refusal).strip().splitlines()[0]
    return (
        f"database.url: user {user} may not create tables in {database} ({why}) — make it the "
        f"database's owner (ALTER DATABASE {database} OWNER TO {user}) or, connected to "
        f"{database}, GRANT CREATE ON SCHEMA public TO {user}"
    )


@contextmanager
def _quoting_no_data() -> Iterator[None]:
    """Let a server error out with its message, hint and constraint named, but without its
    DETAIL and CONTEXT: those quote the values of the row or statement refused ("Failing row
    contains (…)", "Key (…)=(…)", "JSON data, line 1: …"), which may be a message's subject,
    body or a token, and an error's message reaches the log and the traceback."""
    try:
        yield
    except psycopg.Error as exc:
        primary = exc.diag.message_primary
        if primary is not None:
            hint = exc.diag.message_hint
            exc.args = (f"{primary}\nHINT:  {hint}" if hint else primary, *exc.args[1:])
        raise


@contextmanager
def _translate_errors(display_url: str) -> Iterator[None]:
    """Turn lost connections, deadlocks, server-side failures and a database that takes no
    writes into StorageUnavailable; a server whose disk is full into DiskFull. No error leaves
    with the data PostgreSQL quotes in its details (`_quoting_no_data`).

    Integrity errors pass through for the caller to interpret; programming errors are bugs."""
    try:
        with _quoting_no_data():
            yield
    except psycopg.IntegrityError:
        raise
    except (
        psycopg.errors.DuplicatePreparedStatement,
        psycopg.errors.InvalidSqlStatementName,
    ) as exc:
        # A statement psycopg prepared on one server session, looked for (or prepared again)
        # on another: only a pooler in transaction mode swaps sessions under a connection.
        raise StorageUnavailable(
            f"postgres ({display_url}): {str(exc).strip()} — database.url goes through a "
            "connection pooler in transaction mode (PgBouncer, Supavisor, RDS Proxy): set "
            'database.pooled = true (docs/replicas.md, "Connection poolers")'
        ) from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise StorageUnavailable(_takes_no_writes(display_url, str(exc))) from exc
    except psycopg.errors.DiskFull as exc:
        raise DiskFull(_disk_full(display_url, exc)) from exc
    except psycopg.errors.LockNotAvailable as exc:
        raise StorageUnavailable(_lock_waited(display_url, exc)) from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StorageUnavailable(f"postgres ({display_url}): {exc}".strip()) from exc


class _Dropped(Exception):
    """A pooled connection the server closed while it sat idle (the database restarted, or an
    administrator or a proxy ended the session): its transaction could not begin, so nothing
    ran on it, and the work may run on another connection."""


def _bound_waits(connection: Connection, *, local: bool) -> None:
    """Have the server end the session once a transaction sits idle for longer than
    IDLE_IN_TRANSACTION_SECONDS, and fail a statement that waits for a lock for longer than
    LOCK_WAIT_SECONDS: for the session, or (`local`) for the open transaction only."""
    connection.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', %s, %s), "
        "set_config('lock_timeout', %s, %s)",
        (
            f"{round(IDLE_IN_TRANSACTION_SECONDS * 1000)}ms",
            local,
            f"{round(LOCK_WAIT_SECONDS * 1000)}ms",
            local,
        ),
    )


def _lock_waited(display_url: str, refusal: Exception) -> str:
    """What to tell the operator when a statement gave up waiting for a lock (SQLSTATE 55P03)
    that another session holds."""
    why = str(refusal).strip().splitlines()[0]
    return (
        f"postgres ({display_url}): another session holds a lock e2a needs ({why}) — "
        "`SELECT pid, state, xact_start, query FROM pg_stat_activity WHERE pid IN (SELECT "
        "unnest(pg_blocking_pids(pid)) FROM pg_stat_activity)` names it; a session of e2a's "
        "own (deleting an agent or an account of a large mailbox) ends by itself, any other "
        "should end its transaction, or `SELECT pg_terminate_backend(pid)` ends it"
    )


def _transact(
    connection: Connection,
    display_url: str,
    work: Callable[[Connection], T],
    reused: bool,
    *,
    bound_waits: bool,
) -> T:
    """Run `work` in one transaction on `connection` (in a worker thread); _Dropped when the
    `reused` connection turns out broken before the transaction began. `bound_waits`: set the
    bounds on idling in a transaction and on lock waits for this transaction (a round trip
    more), where the session is a pooler's (`PostgresStorage._run`)."""
    with _translate_errors(display_url), ExitStack() as transaction:
        try:
            transaction.enter_context(connection.transaction())
        except psycopg.OperationalError as exc:
            if reused and connection.broken:
                raise _Dropped from exc
            raise
        if bound_waits:
            _bound_waits(connection, local=True)
        return work(connection)


def _begin_snapshot(connection: Connection, display_url: str) -> None:
    """Open a REPEATABLE READ, READ ONLY transaction on `connection` (in a worker thread) and
    take its snapshot."""
    with _translate_errors(display_url):
        connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        connection.execute("SELECT 1")  # the snapshot is taken by the first statement


def _end_snapshot(connection: Connection) -> None:
    """End the transaction `_begin_snapshot` opened, and close `connection`."""
    try:
        connection.execute("ROLLBACK")
    except psycopg.Error:
        pass  # closing it ends the transaction on the server all the same
    finally:
        connection.close()


class _PostgresSnapshot(Snapshot):
    """Reads on one connection inside the transaction `_snapshot` holds."""

    def __init__(self, connection: Connection, display_url: str) -> None:
        self._connection = connection
        self._display_url = display_url

    async def read(self, work: Work[T]) -> T:
        """Run `work` in the held snapshot, in a worker thread."""
        return await trio.to_thread.run_sync(self._read, work)

    def _read(self, work: Work[T]) -> T:
        with _translate_errors(self._display_url):
            return work(Transaction(self._connection, POSTGRES, psycopg.IntegrityError))


class PostgresStorage(SqlStorage):
    """Storage on a PostgreSQL database. Create with `PostgresStorage.open(url)`."""

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        holder: str = "",
        pool_size: int = POOL_SIZE,
        on_commit: CommitObserver | None = None,
        *,
        pooled: bool = False,
        listen_url: str = "",
        silent_server_seconds: int = SILENT_SERVER_SECONDS,
    ):
        super().__init__(on_commit)
        self.url = url
        self.holder = holder
        self.display_url = redacted_url(url)
        self.pooled = pooled
        """`url` goes through a pooler in transaction mode: prepare nothing on the server."""
        self.listen_url = listen_url or url
        self.listen_key = "database.listen_url" if listen_url else "database.url"
        """The setting that names `listen_url`, for messages to the operator."""
        self.listen_display_url = redacted_url(self.listen_url)
        self.dead_peer = dead_peer_settings(silent_server_seconds)
        """libpq's TCP settings on each connection, unless the URL sets them."""
        self._idle: list[Connection] = []
        self._slots = trio.Semaphore(pool_size)
        self._closed = False
        self._refusal: str | None = None
        """Why every call is refused without touching the database (`refuse`), if it is."""
        self.process_tag = secrets.token_hex(8)
        """Tags this process's NOTIFY payloads, so its own fan-out listener can skip them."""
        self._listener_pid = 0
        """The server process of this replica's latest LISTEN connection (0: none yet)."""

    @classmethod
    def open(
        cls,
        url: str,
        holder: str = "",
        on_commit: CommitObserver | None = None,
        *,
        pooled: bool = False,
        listen_url: str = "",
        silent_server_seconds: int = SILENT_SERVER_SECONDS,
    ) -> PostgresStorage:
        """Check `url` (and `listen_url`) and return a backend that connects on first use (not
        yet migrated); `on_commit` hears what each write announced once it has committed; a
        server silent for `silent_server_seconds` is given up on (`dead_peer_settings`)."""
        for key, value in (("database.url", url), ("database.listen_url", listen_url)):
            try:
                psycopg.conninfo.conninfo_to_dict(value)
            except psycopg.ProgrammingError as exc:
                raise StorageUnavailable(
                    f"{key}: {redacted_url(value)} is not a valid PostgreSQL URL "
                    f"({url_parse_problem(value, exc)}) — use "
                    "postgresql://user:password@host:5432/dbname"
                ) from exc
        return cls(
            url,
            holder,
            on_commit=on_commit,
            pooled=pooled,
            listen_url=listen_url,
            silent_server_seconds=silent_server_seconds,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _connection_params(self, url: str, application_name: str) -> dict[str, Any]:
        """libpq's parameters for a connection to `url`: the URL's own, then a connect timeout,
        `application_name` and the `dead_peer` settings where the URL sets none of its own."""
        params = psycopg.conninfo.conninfo_to_dict(url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        params.setdefault("application_name", application_name)
        for key, value in self.dead_peer.items():
            params.setdefault(key, value)
        return params

    def _connect(self) -> Connection:
        """A new connection in autocommit mode (transactions are explicit), in a thread; a
        server that stops answering fails its calls within `dead_peer`'s bound. Behind
        a pooler in transaction mode (`pooled`) it prepares no statement on the server: the
        next transaction may run on a server session that does not have it, or has another
        client's under the same name."""
        params = self._connection_params(self.url, "e2a")
        prepare: dict[str, Any] = {"prepare_threshold": None} if self.pooled else {}
        try:
            return psycopg.connect(**params, autocommit=True, **prepare)
        except psycopg.Error as exc:
            raise StorageUnavailable(connect_error_message(self.display_url, exc)) from exc

    def _connect_to_pool(self) -> Connection:
        """A new connection for the pool (`_connect`), in a thread, whose transactions the
        server ends once idle for IDLE_IN_TRANSACTION_SECONDS and whose statements wait for a
        lock LOCK_WAIT_SECONDS at most (`_bound_waits`): set here for the session, one round
        trip for the connection's life, or behind a pooler in transaction mode in each write
        transaction (`_run`)."""
        connection = self._connect()
        if self.pooled:
            return connection
        try:
            with _translate_errors(self.display_url):
                _bound_waits(connection, local=False)
        except BaseException:
            connection.close()
            raise
        return connection

    def connect_listener(self) -> Connection:
        """A dedicated connection (outside the pool) to `listen_url` that LISTENs on
        FANOUT_CHANNEL and CHECK_CHANNEL; blocking, so call it in a thread. TCP keepalives let
        a silently dead peer be noticed. Its `application_name` names this replica
        (`listener_name`, whatever the URL sets), for `namesake`."""
        params = self._connection_params(self.listen_url, "")
        params["application_name"] = listener_name(self.holder)
        try:
            connection = psycopg.connect(**params, autocommit=True)
        except psycopg.Error as exc:
            raise StorageUnavailable(
                connect_error_message(self.listen_display_url, exc, self.listen_key)
            ) from exc
        try:
            connection.execute(f"LISTEN {FANOUT_CHANNEL}; LISTEN {CHECK_CHANNEL}")
        except psycopg.Error as exc:
            connection.close()
            raise StorageUnavailable(
                f"postgres ({self.listen_display_url}): LISTEN: {exc}"
            ) from exc
        self._listener_pid = connection.info.backend_pid
        return connection

    async def namesake(self) -> str | None:
        """What to tell the operator when another session listens under this replica's name
        (`listener_name`) — another replica running with the same `database.replica_id`, or
        this replica's own LISTEN session from before a crash, which the server has not yet
        found dead — else None. This replica's own latest LISTEN connection does not count."""
        if not self.holder:
            return None
        row = await self._read(
            lambda tx: tx.first(
                "SELECT pid, host(client_addr), "
                "to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                "FROM pg_stat_activity WHERE application_name = ? AND pid <> ? "
                "AND datname = current_database() ORDER BY backend_start LIMIT 1",
                (listener_name(self.holder), self._listener_pid),
            )
        )
        if row is None:
            return None
        pid, client, since = row
        return (
            f"database.replica_id: another session listens on this database under this "
            f"replica's name {self.holder!r} (PostgreSQL session {pid}"
            f"{f' from {client}' if client else ''}, connected {since} UTC): another replica "
            "runs with the same database.replica_id, or this replica's own session from before "
            "a crash lingers on the server. Job leases held under the name are not given back "
            "while it is there (they would be taken from under the other replica, and its "
            "work done twice): give every replica a name of its own "
            '(docs/replicas.md, "Jobs")'
        )

    async def release_leases(self) -> None:
        """Free the leases held under this replica's name (`SqlStorage.release_leases`),
        unless another session runs under that name (`namesake`): they are then left to run
        out, and the log says why."""
        if (namesake := await self.namesake()) is not None:
            log.warning("%s; job leases not given back", namesake)
            return
        await super().release_leases()

    async def notify_check(self, token: str) -> None:
        """NOTIFY `token` on CHECK_CHANNEL through the pool, as commits announce their news:
        a listener that hears it hears the other replicas."""
        await self._run(lambda connection: _notify_on(connection, CHECK_CHANNEL, token))

    def unheard(self, seconds: float) -> str:
        """What to tell the operator when the LISTEN connection did not hear `notify_check`'s
        token within `seconds`."""
        if self.listen_key == "database.url":
            cause = ""
            fix = (
                "set database.listen_url to a direct connection to PostgreSQL (or a pooler in "
                "session mode), and database.pooled = true"
            )
        else:
            cause = ", or it is not the database of database.url"
            fix = (
                "point it at the database of database.url, directly or through a pooler in "
                "session mode"
            )
        return (
            f"{self.listen_key}: the LISTEN connection to {self.listen_display_url} heard "
            f"nothing of a notification within {seconds:g} s, so this replica would miss the "
            "other replicas' news (mail for its WebSocket clients, revoked keys): it goes "
            "through a connection pooler in transaction mode (PgBouncer, Supavisor, RDS "
            f"Proxy), which lends its LISTEN session to other clients{cause} — {fix} "
            '(docs/replicas.md, "Connection poolers")'
        )

    def _give_back(self, connection: Connection) -> None:
        """Keep a healthy connection for the next call; close a broken one."""
        if self._closed or connection.closed or connection.broken:
            connection.close()
        else:
            self._idle.append(connection)

    async def _run(self, work: Callable[[Connection], T], *, writes: bool = False) -> T:
        """Run `work` in one transaction on a pooled connection, in a worker thread. Idle
        connections the server dropped meanwhile (a restart of the database) are closed and
        passed over, so the work runs once, on a live one.

        The server ends the transaction should it sit idle for IDLE_IN_TRANSACTION_SECONDS,
        and a statement that waits for a lock past LOCK_WAIT_SECONDS (`_connect_to_pool`).
        Behind a pooler in transaction mode the session is the pooler's, so those bounds are
        set in each transaction that `writes` (and may hold locks that other writes wait for),
        a round trip more; reads, the most frequent, go without them (a read waits only for a
        table another session locked whole). A call that waited for a connection while
        storage closed is refused, as one asked for afterwards is."""
        bound_waits = self.pooled and writes
        async with self._slots:
            self._check_open()
            connection, result = await self._started(
                lambda connection, reused: _transact(
                    connection, self.display_url, work, reused, bound_waits=bound_waits
                )
            )
            self._give_back(connection)
            return result

    def _check_open(self) -> None:
        """Raise StorageUnavailable once storage is closed, or refuses every call (`refuse`)."""
        if self._refusal is not None:
            raise StorageUnavailable(self._refusal)
        if self._closed:
            raise StorageUnavailable(f"postgres ({self.display_url}): storage is closed")

    def refuse(self, reason: str) -> None:
        """From now on refuse every call with StorageUnavailable(`reason`) before it reaches
        the database (the database holds a schema this code would misread: a newer e2a
        migrated it). Calls already running finish."""
        self._refusal = reason

    async def _started(self, start: Callable[[Connection, bool], T]) -> tuple[Connection, T]:
        """A pooled connection (an idle one, else a new one) on which `start` ran, in a worker
        thread (told whether the connection was used before), and what it returned; the caller
        holds a slot and gives the connection back. An idle connection the server dropped
        meanwhile (a restart of the database, a partition: `_Dropped`) is closed, and with it
        every connection that sat idle beside it (`_close_idle`), so `start` runs once, on a
        new one; on any other failure the connection is given back here."""
        while True:
            reused = bool(self._idle)
            idle_beside: list[Connection] = []
            if reused:
                connection = self._idle.pop()
                idle_beside = list(self._idle)
            else:
                connection = await trio.to_thread.run_sync(self._connect_to_pool)
            try:
                return connection, await trio.to_thread.run_sync(start, connection, reused)
            except _Dropped:
                self._give_back(connection)  # closed
                await self._close_idle(idle_beside)
            except BaseException:
                self._give_back(connection)
                raise

    async def _close_idle(self, connections: list[Connection]) -> None:
        """Close those of `connections` that are still idle. They sat idle beside one the
        server dropped, so they are most likely dropped too: a restart ends every session, and
        a partition silences them all, where finding that out costs a silent server's whole
        bound (`dead_peer`) on each in turn."""
        stale = {id(connection) for connection in connections}
        closing = [connection for connection in self._idle if id(connection) in stale]
        self._idle = [connection for connection in self._idle if id(connection) not in stale]
        for connection in closing:
            await trio.to_thread.run_sync(connection.close)

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

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Snapshot]:
        """Hold a connection of its own, opened for the block (none of the pool's: a block that
        lasts, an export sent to a client that stopped reading, makes no other work wait for
        a connection), in one REPEATABLE READ, READ ONLY transaction while the block runs; it
        is rolled back and the connection closed however the block ends, a cancelled one
        included. Its transaction may sit idle as long as the block waits (for a client reading
        an export), so it has no IDLE_IN_TRANSACTION_SECONDS bound; it reads only, and takes
        no lock the gateway's writes wait for."""
        self._check_open()
        connection = await trio.to_thread.run_sync(self._connect)
        try:
            await trio.to_thread.run_sync(_begin_snapshot, connection, self.display_url)
            yield _PostgresSnapshot(connection, self.display_url)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_end_snapshot, connection)

    async def _commit(
        self, work: Work[T], *, changes_routing: bool, durable: bool
    ) -> tuple[T, list[Announcement]]:
        """Run `work` in one transaction; every commit waits for the disk."""
        return await self._run(partial(self._unit, work, False), writes=True)

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
        answers reads, but every message, job and key would be refused); DiskFull while the
        server's disk is taken for full (`LifecycleSql._disk_takes_writes`)."""
        refuses, recovering = await self._read(
            lambda tx: tx.one(
                "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery()"
            )
        )
        if refuses or recovering:
            why = "it is a standby, in recovery" if recovering else "transaction_read_only is on"
            raise StorageUnavailable(_takes_no_writes(self.display_url, why))
        await self._disk_takes_writes()

    async def announce(self, news: Sequence[Announcement]) -> None:
        """NOTIFY the other replicas of `news` at once, in a transaction of its own that
        writes nothing."""
        payloads = encode_payloads(self.process_tag, news)
        await self._run(lambda connection: _notify(connection, *payloads))

    # -- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply each migration newer than the recorded versions, all in one transaction (a
        savepoint each): a start that fails or is killed half way leaves the version it found.

        Replicas starting together queue on an advisory lock, so each step runs once. A
        migration that applied anything announces the new version to the running replicas
        (`schema_payload`), delivered when it commits. A step waits for the tables it alters
        as long as it must (no LOCK_WAIT_SECONDS): what holds them is a running replica's
        export or a session an operator can end, and a start that gave up would only be
        tried again."""
        migrations = load_migrations("postgres")

        def apply_pending(db: Connection) -> list[int]:
            tx = Transaction(db, self.dialect, psycopg.IntegrityError)
            tx.execute("SET LOCAL lock_timeout = 0")
            _take_migration_lock(tx)
            applied = applied_versions(tx)
            done: list[int] = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                with db.transaction():  # a savepoint: the step and its record together
                    db.execute(migration.sql)  # the whole script, as one simple query
                    record_migration(tx, migration)
                done.append(migration.version)
            if done:  # running replicas check at once that they know the schema
                _notify(db, schema_payload(self.process_tag, done[-1]))
            return done

        try:
            return await self._run(apply_pending, writes=True)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StorageUnavailable(_may_not_create(self.url, exc)) from None

    async def upkeep(self) -> None:
        """Nothing to do: PostgreSQL keeps its own log (its checkpointer and autovacuum)."""

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their call ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await trio.to_thread.run_sync(connection.close)


def _take_migration_lock(tx: Transaction) -> None:
    """Hold MIGRATION_LOCK until `tx` ends (in a thread trio started), waiting while another
    session holds it: replicas starting together queue here and migrate one at a time. A wait
    of over MIGRATION_LOCK_TELL_SECONDS is told in the log, naming the session that holds the
    lock and how to end it (an `e2a migrate` that hangs, a session left open, would hold the
    start without a word); a cancelled start (SIGTERM, Ctrl-C) ends the wait."""
    told = False
    tell_at = time.monotonic() + MIGRATION_LOCK_TELL_SECONDS
    while not tx.one("SELECT pg_try_advisory_xact_lock(?)", (MIGRATION_LOCK,))[0]:
        if not told and time.monotonic() >= tell_at:
            holder = _migration_lock_holder(tx)
            if holder is not None:
                log.warning("%s", holder)
                told = True
        trio.from_thread.check_cancelled()
        time.sleep(MIGRATION_LOCK_POLL_SECONDS)
    if told:
        log.info("database.url: the migration lock is free, migrating")


def _migration_lock_holder(tx: Transaction) -> str | None:
    """What to tell the operator of the session that holds MIGRATION_LOCK; None once none
    does. Its application and client show to a superuser, to pg_read_all_stats or to the
    same user; its process id to anyone."""
    row = tx.first(
        "SELECT a.pid, a.application_name, host(a.client_addr), a.state,"
        " to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::bigint = ? AND l.objid::bigint = ?",
        (MIGRATION_LOCK >> 32, MIGRATION_LOCK & 0xFFFFFFFF),
    )
    if row is None:
        return None
    pid, application, client, state, since = row
    about = [
        f"application {application!r}" if application else "",
        f"from {client}" if client else "",
    ]
    if state:
        about.append(f"{state} since {since} UTC" if since else state)
    described = ", ".join(part for part in about if part)
    return (
        f"database.url: waiting for e2a's migration lock, held by session {pid}"
        f"{f' ({described})' if described else ''} — another e2a migrating this database holds "
        f"it until it is done; if none is, end that session (SELECT pg_terminate_backend({pid}))"
    )


def _notify(db: Connection, *payloads: str) -> None:
    """Announce `payloads` on FANOUT_CHANNEL, in one round trip, when (and only if) the
    transaction commits."""
    _notify_on(db, FANOUT_CHANNEL, *payloads)


def _notify_on(db: Connection, channel: str, *payloads: str) -> None:
    """NOTIFY `payloads` on `channel`, in one round trip, when the transaction commits."""
    if payloads:
        db.execute(
            "SELECT pg_notify(%s, payload) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY n",
            (channel, list(payloads)),
        )
