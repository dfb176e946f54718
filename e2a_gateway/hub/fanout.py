"""Cross-replica fan-out: what other replicas commit reaches this process's `Hub` and workers.

With PostgreSQL, every commit that stores mail for a local agent, adds a job, deletes an agent
or an account, or revokes an API key also NOTIFYs (inside the same transaction, so only
committed work is announced; the payloads are `e2a_gateway.storage.notify_payloads`), and so
does every `/v1` WebSocket that claims its agent's slot (on its own, `Storage.announce`). One
task per process LISTENs on a dedicated connection and hands what it hears to the local hub and
job queue. It never holds anything storage does not: if the connection is lost, it reconnects and
makes every local WebSocket client reconnect, and clients re-drain unread mail from storage.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

import psycopg
import psycopg.pq
import trio

from e2a_gateway.hub import Hub, Revocation
from e2a_gateway.hub.job_queue import JobQueue
from e2a_gateway.storage.announcements import AccessEnded, JobsAdded, SocketClaimed
from e2a_gateway.storage.base import Storage, StorageUnavailable
from e2a_gateway.storage.notify_payloads import Resync, SchemaMigrated, decode_payload
from e2a_gateway.storage.postgres import CHECK_CHANNEL, PostgresStorage

log = logging.getLogger("e2a.hub")

KEEPALIVE_SECONDS = 30.0
"""With no notification for this long, ping the server to find a silently dead connection."""
PING_TIMEOUT_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
MAX_NOTIFIES_PER_WAKE = 10_000
"""Bounds one read of the connection; the rest are handled on the next turn."""
CHECK_SECONDS = 5.0
"""How long a new LISTEN connection has to hear a notification sent through the pool."""


class Fanout(Protocol):
    """Relays other replicas' commits into the local hub until cancelled."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay forever; report started once listening (or once the first attempt failed)."""
        ...


class ConnectionLost(Exception):
    """The LISTEN connection stopped answering or was closed."""


class Unheard(Exception):
    """The LISTEN connection did not hear a notification sent through the pool: it goes
    through a pooler in transaction mode. The message says what to set."""


def relay_payload(
    hub: Hub, origin: str, payload: str, schema_migrated: Callable[[], None] = lambda: None
) -> set[str]:
    """Hand one NOTIFY payload from a replica to `hub` (a migration of the database to
    `schema_migrated`). Returns the kinds of job it announced (the caller wakes their workers
    once per batch). Own payloads were already handled locally when the commit returned, and
    are skipped; malformed ones are logged and dropped."""
    try:
        decoded = decode_payload(payload)
    except ValueError as exc:
        # Not quoted: a stored message's payload carries its subject and sender.
        log.warning(
            "fan-out: ignoring malformed notification of %d characters (%s)", len(payload), exc
        )
        return set()
    if decoded.origin == origin:
        return set()
    job_kinds: set[str] = set()
    for news in decoded.news:
        if isinstance(news, JobsAdded):
            job_kinds.add(news.kind)
        elif isinstance(news, AccessEnded):
            hub.revoke(Revocation(news.kind, news.value))
        elif isinstance(news, Resync):
            hub.close_subscriptions(news.agent_id)
        elif isinstance(news, SocketClaimed):
            hub.sole.heard(news)
        elif isinstance(news, SchemaMigrated):
            schema_migrated()
        else:
            hub.publish_message(news.agent_id, news)
    return job_kinds


class PostgresFanout:
    """LISTENs on the database of a `PostgresStorage` and relays into a `Hub` and a `JobQueue`.

    The connection's socket is awaited with `trio.lowlevel.wait_readable` and read with
    libpq's non-blocking calls, so waiting costs no thread. Connection loss is retried with
    capped exponential backoff; after every reconnect, and on first listening when the first
    attempt failed (started was reported without it), all local subscriptions are closed (the
    clients reconnect and re-drain), and the job workers are woken to look for missed work.
    `schema_migrated` is called when a replica announces that it migrated the database, and
    after every LISTEN but the first (such an announcement may have been missed meanwhile).
    """

    def __init__(
        self,
        storage: PostgresStorage,
        hub: Hub,
        jobs: JobQueue,
        *,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
        schema_migrated: Callable[[], None] = lambda: None,
    ) -> None:
        self._storage = storage
        self._schema_migrated = schema_migrated
        self._hub = hub
        self._jobs = jobs
        self._origin = storage.process_tag
        self._keepalive = keepalive_seconds
        self._max_backoff = max_backoff_seconds

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and relay until cancelled, reconnecting whenever the connection is lost.

        A LISTEN connection that does not hear what the pool NOTIFYs (a pooler in transaction
        mode) is refused: the first time with StorageUnavailable, before reporting started, so
        the gateway does not start; later with an error in the log, and tried again."""
        backoff = FIRST_BACKOFF_SECONDS
        reported = False
        while True:
            try:
                connection = await self._listen()
            except Unheard as exc:
                if not reported:
                    raise StorageUnavailable(str(exc)) from None
                log.error("fan-out: %s; retrying in %.1f s", exc, backoff)
            except (StorageUnavailable, ConnectionLost, psycopg.Error, OSError) as exc:
                log.warning("fan-out: cannot LISTEN (%s); retrying in %.1f s", exc, backoff)
            else:
                if reported:
                    # Started was reported before this LISTEN (the last one was lost, or the
                    # first attempt failed): sockets opened since may have missed news.
                    log.info("fan-out: listening now; local WebSocket clients will re-drain")
                    self._hub.close_subscriptions()
                    self._jobs.jobs_added()
                    self._schema_migrated()
                backoff = FIRST_BACKOFF_SECONDS
                if not reported:
                    task_status.started()
                    reported = True
                try:
                    await self._relay(connection)
                except (ConnectionLost, psycopg.Error, OSError) as exc:
                    log.warning("fan-out: LISTEN connection lost (%s); reconnecting", exc)
                finally:
                    connection.close()
            if not reported:
                task_status.started()
                reported = True
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _listen(self) -> psycopg.Connection[Any]:
        """A new LISTEN connection, once it has heard a token NOTIFYed through the pool (what
        else it hears meanwhile is relayed); Unheard when nothing came within CHECK_SECONDS."""
        connection = await trio.to_thread.run_sync(self._storage.connect_listener)
        try:
            pgconn = connection.pgconn
            pgconn.nonblocking = 1
            fileno = connection.fileno()
            token = secrets.token_hex(8)
            await self._storage.notify_check(token)
            with trio.move_on_after(CHECK_SECONDS):
                while not self._dispatch(pgconn, token):
                    await trio.lowlevel.wait_readable(fileno)
                    _consume(pgconn)
                await self._tell_namesake()
                return connection
            raise Unheard(self._storage.unheard(CHECK_SECONDS))
        except BaseException:
            connection.close()
            raise

    async def _tell_namesake(self) -> None:
        """Log an error when another session listens under this replica's name (the same
        `database.replica_id` twice: `PostgresStorage.namesake`)."""
        try:
            namesake = await self._storage.namesake()
        except StorageUnavailable:
            return  # the next LISTEN, or the leases' release, asks again
        if namesake is not None:
            log.error("fan-out: %s", namesake)

    async def _relay(self, connection: psycopg.Connection[Any]) -> None:
        """Relay notifications from `connection` until it fails (raises) or we are cancelled."""
        pgconn = connection.pgconn
        pgconn.nonblocking = 1
        fileno = connection.fileno()
        while True:
            with trio.move_on_after(self._keepalive) as idle:
                await trio.lowlevel.wait_readable(fileno)
            if idle.cancelled_caught:
                await _ping(pgconn, fileno)
            else:
                _consume(pgconn)
            self._dispatch(pgconn)

    def _dispatch(self, pgconn: psycopg.pq.abc.PGconn, token: str = "") -> bool:
        """Relay every notification already read from the server; whether `token` came on
        CHECK_CHANNEL among them (other replicas' checks are dropped)."""
        job_kinds: set[str] = set()
        heard = False
        for _ in range(MAX_NOTIFIES_PER_WAKE):
            notify = pgconn.notifies()
            if notify is None:
                break
            if notify.relname.decode() == CHECK_CHANNEL:
                heard |= bool(token) and notify.extra.decode() == token
                continue
            job_kinds |= relay_payload(
                self._hub, self._origin, notify.extra.decode(), self._schema_migrated
            )
        if job_kinds:
            self._jobs.jobs_added(job_kinds)
        return heard


def _consume(pgconn: psycopg.pq.abc.PGconn) -> None:
    """Read what the server sent; a closed or broken connection raises ConnectionLost."""
    try:
        pgconn.consume_input()
    except psycopg.OperationalError as exc:
        raise ConnectionLost(str(exc).strip() or "connection closed") from exc
    if pgconn.status != psycopg.pq.ConnStatus.OK:
        raise ConnectionLost("connection closed")


async def _ping(pgconn: psycopg.pq.abc.PGconn, fileno: int) -> None:
    """Round-trip `SELECT 1` without blocking; ConnectionLost if no answer in time."""
    with trio.move_on_after(PING_TIMEOUT_SECONDS) as waited:
        pgconn.send_query(b"SELECT 1")
        while pgconn.flush():
            await trio.lowlevel.wait_writable(fileno)
        _consume(pgconn)
        while pgconn.is_busy():
            await trio.lowlevel.wait_readable(fileno)
            _consume(pgconn)
        ok = True
        for _ in range(8):
            result = pgconn.get_result()
            if result is None:
                break
            ok &= result.status == psycopg.pq.ExecStatus.TUPLES_OK
    if waited.cancelled_caught:
        raise ConnectionLost(f"no answer to a ping in {PING_TIMEOUT_SECONDS:.0f} s")
    if not ok:
        raise ConnectionLost("ping failed")


def fanout_for(
    storage: Storage,
    hub: Hub,
    jobs: JobQueue,
    schema_migrated: Callable[[], None] = lambda: None,
) -> Fanout | None:
    """The cross-replica fan-out for `storage`, or None when one process is the only writer
    (SQLite): then the hub's in-process publishing is all there is. `schema_migrated` hears
    of another replica's migration (`PostgresFanout`)."""
    if isinstance(storage, PostgresStorage):
        return PostgresFanout(storage, hub, jobs, schema_migrated=schema_migrated)
    return None
