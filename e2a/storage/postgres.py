"""The PostgreSQL backend, for several `e2a serve` replicas sharing one database.

psycopg 3's sync API driven from trio through threads, over a small bounded pool of
connections; every call is one transaction. Nothing is cached in the process, because another
replica may change anything at any time, and every job claim is `FOR UPDATE SKIP LOCKED` under
a lease, so replicas never take the same job and take over a dead replica's once it lapses.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.conninfo
import trio

from e2a.clock import format_timestamp
from e2a.storage.base import (
    NewInboundMessage,
    NotPending,
    OutboundEdits,
    OutboundMessage,
    SendOutcome,
    StorageUnavailable,
)
from e2a.storage.migrations import load_migrations
from e2a.storage.rows import (
    EXPIRABLE_MESSAGE,
    OUTBOUND_COLUMNS,
    OUTBOUND_INSERT_COLUMNS,
    OUTBOUND_JOB,
    OUTBOUND_STATUS_INDEX,
    RATE_LIMIT_PRUNE_BATCH,
    decode_outbound,
    edit_assignments,
    merged_recipient_results,
    outbound_job_kind,
    outbound_params,
    rate_verdict,
    rate_window,
    recipient_results,
)
from e2a.storage.sql.dialect import POSTGRES
from e2a.storage.sql.runner import Work
from e2a.storage.sql.store import SqlStorage
from e2a.storage.sql.transaction import AccessEnded, Announcement, JobsAdded, Transaction

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

POOL_SIZE = 8
CONNECT_TIMEOUT_SECONDS = 10
# Advisory lock keys. The single-key (bigint) and two-key (int, int) spaces never overlap.
MIGRATION_LOCK = 0x6532615F6D6967  # "e2a_mig"
AGENT_INBOX_LOCK = 0x653261  # first key of (AGENT_INBOX_LOCK, hashtext(agent_email))
# LISTEN/NOTIFY channel on which commits are announced to the other replicas (e2a.hub.fanout).
FANOUT_CHANNEL = "e2a_fanout"
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; ours stay well below.
MAX_NOTIFY_PAYLOAD_BYTES = 7000
JOBS_ADDED_PAYLOAD = '{"jobs": true}'
LISTEN_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
_SCRUB = "body_text = NULL, body_html = NULL, attachments_json = NULL"


def redacted_url(url: str) -> str:
    """`url` without its password (and without query parameters that could carry one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://")[0] + "://…"
    user = f"{parts.username}@" if parts.username else ""
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))


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


@contextmanager
def _translate_errors(display_url: str) -> Iterator[None]:
    """Turn lost connections, deadlocks and server-side failures into StorageUnavailable.

    Integrity errors pass through for the caller to interpret; programming errors are bugs."""
    try:
        yield
    except psycopg.IntegrityError:
        raise
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StorageUnavailable(f"postgres ({display_url}): {exc}".strip()) from exc


def _transact(connection: Connection, display_url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` in one transaction on `connection` (in a worker thread)."""
    with _translate_errors(display_url), connection.transaction():
        return work(connection)


class PostgresStorage(SqlStorage):
    """Storage on a PostgreSQL database. Create with `PostgresStorage.open(url)`."""

    dialect = POSTGRES

    def __init__(self, url: str, holder: str = "", pool_size: int = POOL_SIZE):
        self.url = url
        self.holder = holder
        self.display_url = redacted_url(url)
        self._idle: list[Connection] = []
        self._slots = trio.Semaphore(pool_size)
        self._closed = False
        self.process_tag = secrets.token_hex(8)
        """Tags this process's NOTIFY payloads, so its own fan-out listener can skip them."""

    @classmethod
    def open(cls, url: str, holder: str = "") -> PostgresStorage:
        """Check `url` and return a backend that connects on first use (not yet migrated)."""
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StorageUnavailable(
                f"database.url: {redacted_url(url)} is not a valid PostgreSQL URL ({exc}) — "
                "use postgresql://user:password@host:5432/dbname"
            ) from exc
        return cls(url, holder)

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> Connection:
        """A new connection in autocommit mode (transactions are explicit), in a thread."""
        params = psycopg.conninfo.conninfo_to_dict(self.url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        params.setdefault("application_name", "e2a")
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
        for key, value in LISTEN_KEEPALIVES.items():
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
        """Run `work` in one transaction on a pooled connection, in a worker thread."""
        if self._closed:
            raise StorageUnavailable(f"postgres ({self.display_url}): storage is closed")
        async with self._slots:
            if self._idle:
                connection = self._idle.pop()
            else:
                connection = await trio.to_thread.run_sync(self._connect)
            try:
                return await trio.to_thread.run_sync(_transact, connection, self.display_url, work)
            finally:
                self._give_back(connection)

    async def _read(
        self,
        work: Work[T],
        *,
        snapshot: bool = False,
        routing: tuple[str, str] | None = None,
    ) -> T:
        """Run `work` in one transaction (REPEATABLE READ for a `snapshot`). Nothing is
        remembered for `routing`: other replicas may change anything at any time."""
        return await self._run(partial(self._unit, work, snapshot))

    async def _write(
        self, work: Work[T], *, changes_routing: bool = False, durable: bool = True
    ) -> T:
        """Run `work` in one transaction; every commit waits for the disk."""
        return await self._run(partial(self._unit, work, False))

    def _unit(self, work: Work[T], snapshot: bool, connection: Connection) -> T:
        """Run `work` inside the open transaction of `connection`, then NOTIFY what it
        announced (delivered to the listeners only if the transaction commits)."""
        if snapshot:
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        transaction = Transaction(connection, self.dialect, psycopg.IntegrityError)
        result = work(transaction)
        payloads = dict.fromkeys(self._payload(item) for item in transaction.announcements)
        _notify(connection, *payloads)
        return result

    def _payload(self, announcement: Announcement) -> str:
        """The NOTIFY payload that tells other replicas of `announcement`."""
        if isinstance(announcement, JobsAdded):
            return JOBS_ADDED_PAYLOAD
        if isinstance(announcement, AccessEnded):
            return revocation_payload(self.process_tag, announcement.kind, announcement.value)
        return stored_message_payload(self.process_tag, announcement.agent_id, announcement.message)

    # -- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply each migration newer than the recorded versions, one transaction each.

        Replicas starting together queue on an advisory lock, so each step runs once."""
        migrations = load_migrations("postgres")

        def apply_pending(db: Connection) -> list[int]:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            done: list[int] = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                with db.transaction():  # a savepoint: the step and its record together
                    db.execute(migration.sql)
                    db.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES "
                        "(%s, %s, to_char(now() AT TIME ZONE 'UTC', "
                        '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\'))',
                        (migration.version, migration.name),
                    )
                done.append(migration.version)
            return done

        return await self._run(apply_pending)

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their call ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await trio.to_thread.run_sync(connection.close)

    # -- users and credentials --------------------------------------------------------------

    # -- domains ----------------------------------------------------------------------------

    # -- agents -----------------------------------------------------------------------------

    # -- messages ---------------------------------------------------------------------------

    # -- jobs -------------------------------------------------------------------------------

    # -- outbound ---------------------------------------------------------------------------

    async def add_outbound(self, message: OutboundMessage) -> None:
        """Insert an outbound message (and its send or approval-notice job)."""

        def insert(db: Connection) -> None:
            db.execute(
                f"INSERT INTO messages ({OUTBOUND_INSERT_COLUMNS}) VALUES "
                "(%s, %s, %s, 'outbound', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "'{}', '{}', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                outbound_params(message),
            )
            job_kind = outbound_job_kind(message)
            if job_kind is not None:
                _add_job(db, job_kind, message.id, message.created_epoch)

        await self._run(insert)

    async def count_recent_outbound(self, agent_email: str, since: float) -> int:
        """Outbound messages the agent created since `since` (shared by every replica)."""
        row = await self._run(
            lambda db: _one(
                db,
                "SELECT count(*) FROM messages WHERE agent_email = %s "
                "AND direction = 'outbound' AND created_epoch >= %s",
                (agent_email, since),
            )
        )
        return int(row[0])

    # -- rate limits ------------------------------------------------------------------------

    async def hit_rate_limit(
        self, key: str, window_seconds: int, limit: int, now: float
    ) -> float | None:
        """Count one request in `key`'s current window: an atomic upsert, so concurrent
        replicas never lose a hit; expired windows are pruned a batch at a time, skipping rows
        another transaction is already deleting."""
        start, end = rate_window(now, window_seconds)

        def hit(db: Connection) -> int:
            db.execute(
                "DELETE FROM rate_limits WHERE (key, window_start) IN ("
                "SELECT key, window_start FROM rate_limits WHERE expires_at <= %s "
                "LIMIT %s FOR UPDATE SKIP LOCKED)",
                (now, RATE_LIMIT_PRUNE_BATCH),
            )
            row = _one(
                db,
                "INSERT INTO rate_limits (key, window_start, expires_at, hits) "
                "VALUES (%s, %s, %s, 1) "
                "ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1 "
                "RETURNING hits",
                (key, start, end),
            )
            return int(row[0])

        return rate_verdict(await self._run(hit), limit, end, now)

    async def list_outbound(
        self, user_id: str, status: str, agent_email: str | None
    ) -> list[OutboundMessage]:
        """The user's outbound messages in `status`."""
        query = (
            f"SELECT {OUTBOUND_COLUMNS} FROM messages WHERE user_id = %s "
            "AND direction = 'outbound' AND status = %s"
        )
        params: list[Any] = [user_id, status]
        if agent_email is not None:
            query += " AND agent_email = %s"
            params.append(agent_email)
        query += " ORDER BY coalesce(approval_expires_at, created_epoch), seq LIMIT 500"
        rows = await self._run(lambda db: db.execute(query, params).fetchall())
        return [decode_outbound(row) for row in rows]

    async def get_outbound(self, user_id: str | None, message_id: str) -> OutboundMessage | None:
        """One outbound message (scoped to `user_id` unless None)."""
        row = await self._run(lambda db: _outbound_row(db, user_id, message_id))
        return decode_outbound(row) if row else None

    async def review_outbound(
        self,
        user_id: str | None,
        message_id: str,
        approve: bool,
        edits: OutboundEdits | None,
        reason: str | None,
        now: float,
    ) -> OutboundMessage | None:
        """Approve or reject a pending message, exactly once (the row is locked meanwhile)."""
        reviewed_at = format_timestamp(now)

        def review(db: Connection) -> OutboundMessage | None:
            row = _outbound_row(db, user_id, message_id, lock=True)
            if row is None:
                return None
            if row[OUTBOUND_STATUS_INDEX] != "pending_approval":
                raise NotPending(row[OUTBOUND_STATUS_INDEX])
            if approve:
                changes = edit_assignments(edits)
                columns = "".join(f", {column} = %s" for column in changes)
                db.execute(
                    f"UPDATE messages SET status = 'queued', reviewed_at = %s, edited = %s"
                    f"{columns} WHERE id = %s",
                    (reviewed_at, bool(changes), *changes.values(), message_id),
                )
                _add_job(db, OUTBOUND_JOB, message_id, now)
            else:
                db.execute(
                    "UPDATE messages SET status = 'rejected', reviewed_at = %s, "
                    f"rejection_reason = %s, {_SCRUB} WHERE id = %s",
                    (reviewed_at, reason, message_id),
                )
            return decode_outbound(_existing_outbound_row(db, message_id))

        return await self._run(review)

    async def expire_outbound(self, now: float) -> list[OutboundMessage]:
        """Apply the agents' expiration actions to overdue pending messages.

        Messages another replica is expiring or reviewing right now are left to it."""
        reviewed_at = format_timestamp(now)

        def expire(db: Connection) -> list[OutboundMessage]:
            due = db.execute(
                "SELECT m.id, a.hitl_expiration_action FROM messages m "
                "JOIN agents a ON a.email = m.agent_email WHERE m.direction = 'outbound' "
                "AND m.status = 'pending_approval' AND m.approval_expires_at <= %s "
                "ORDER BY m.approval_expires_at, m.seq LIMIT 500 FOR UPDATE OF m SKIP LOCKED",
                (now,),
            ).fetchall()
            for message_id, action in due:
                if action == "approve":
                    db.execute(
                        "UPDATE messages SET status = 'expired_approved', reviewed_at = %s "
                        "WHERE id = %s",
                        (reviewed_at, message_id),
                    )
                    _add_job(db, OUTBOUND_JOB, message_id, now)
                else:
                    db.execute(
                        "UPDATE messages SET status = 'expired_rejected', reviewed_at = %s, "
                        f"rejection_reason = 'approval expired', {_SCRUB} WHERE id = %s",
                        (reviewed_at, message_id),
                    )
            return [
                decode_outbound(_existing_outbound_row(db, message_id)) for message_id, _ in due
            ]

        return await self._run(expire)

    async def finish_outbound(
        self,
        job_id: int,
        message_id: str,
        outcome: SendOutcome,
        method: Literal["smtp", "local"],
        error: str | None,
        retry_at: float | None,
    ) -> None:
        """Record the result of a send attempt."""

        def finish(db: Connection) -> None:
            if outcome == "retry":
                db.execute(
                    "UPDATE jobs SET run_at = %s, attempts = attempts + 1, locked_until = NULL "
                    "WHERE id = %s",
                    (retry_at, job_id),
                )
                db.execute(
                    "UPDATE messages SET send_error = %s, method = %s WHERE id = %s",
                    (error, method, message_id),
                )
                return
            db.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
            status = "sent" if outcome == "sent" else "failed"
            db.execute(
                "UPDATE messages SET status = CASE WHEN %s = 'failed' AND status = "
                "'expired_approved' THEN 'expired_rejected' ELSE %s END, method = %s, "
                f"send_error = %s, {_SCRUB} WHERE id = %s",
                (status, status, method, error, message_id),
            )

        await self._run(finish)

    # As on SQLite, an outbound row's `auth_results_json` holds its per-recipient hand-off
    # results (authentication results only ever describe inbound senders).
    async def record_recipient_results(self, message_id: str, results: Mapping[str, str]) -> None:
        """Merge `results` into the message's per-recipient results (row locked meanwhile)."""

        def record(db: Connection) -> None:
            row = db.execute(
                "SELECT auth_results_json FROM messages WHERE id = %s AND direction = 'outbound' "
                "FOR UPDATE",
                (message_id,),
            ).fetchone()
            if row is None:
                return
            db.execute(
                "UPDATE messages SET auth_results_json = %s WHERE id = %s",
                (merged_recipient_results(row[0], results), message_id),
            )

        await self._run(record)

    async def recipient_results(self, message_id: str) -> dict[str, str]:
        """The outbound message's settled recipients (empty when none or no such message)."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT auth_results_json FROM messages WHERE id = %s AND direction = 'outbound'",
                (message_id,),
            ).fetchone()
        )
        return recipient_results(row[0]) if row else {}

    # -- retention and queue depth ----------------------------------------------------------

    async def delete_messages_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` expired messages, oldest first (attempts go by cascade); rows
        another replica's sweep holds are skipped, not waited for."""

        def delete(db: Connection) -> int:
            return db.execute(
                "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m "
                f"WHERE m.created_at < %s AND {EXPIRABLE_MESSAGE} ORDER BY m.created_at "
                "LIMIT %s FOR UPDATE SKIP LOCKED)",
                (cutoff, limit),
            ).rowcount

        return await self._run(delete)

    async def delete_webhook_attempts_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` webhook attempts made before `cutoff`, oldest first."""

        def delete(db: Connection) -> int:
            return db.execute(
                "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts "
                "WHERE attempted_at < %s ORDER BY attempted_at LIMIT %s FOR UPDATE SKIP LOCKED)",
                (cutoff, limit),
            ).rowcount

        return await self._run(delete)


def _one(db: Connection, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The single row `query` must return."""
    row = db.execute(query, params).fetchone()
    if row is None:
        raise StorageUnavailable(f"postgres: no row where one was certain: {query}")
    return row


def _lease(db: Connection, job_ids: list[int], until: float, holder: str) -> None:
    if job_ids:
        db.execute(
            "UPDATE jobs SET locked_until = %s, locked_by = %s WHERE id = ANY(%s::bigint[])",
            (until, holder, job_ids),
        )


def _add_job(
    db: Connection, kind: str, message_id: str, now: float, *, announce: bool = True
) -> None:
    """Queue a job; `announce` wakes every replica's workers once the transaction commits
    (identical notifications in one transaction are delivered once)."""
    db.execute(
        "INSERT INTO jobs (kind, message_id, run_at, created_at) VALUES (%s, %s, %s, %s)",
        (kind, message_id, now, now),
    )
    if announce:
        _notify(db, JOBS_ADDED_PAYLOAD)


def _notify(db: Connection, *payloads: str) -> None:
    """Announce `payloads` on FANOUT_CHANNEL, in one round trip, when (and only if) the
    transaction commits."""
    if payloads:
        db.execute(
            "SELECT pg_notify(%s, payload) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS p(payload, n) ORDER BY n",
            (FANOUT_CHANNEL, list(payloads)),
        )


def stored_message_payload(origin: str, agent_id: str, message: NewInboundMessage) -> str:
    """The NOTIFY payload for a message stored for the local agent `agent_id`: what its
    WebSocket frame is built from. A payload too big for NOTIFY (a huge subject) says `resync`
    instead, and the listener makes that agent's clients reconnect and read it from storage."""
    summary: dict[str, Any] = {
        "origin": origin,
        "agent_id": agent_id,
        "agent": message.agent_email,
        "id": message.id,
        "from": message.from_addr,
        "subject": message.subject,
        "received_at": message.received_at,
        "conversation_id": message.conversation_id,
    }
    payload = json.dumps(summary)
    if len(payload.encode()) <= MAX_NOTIFY_PAYLOAD_BYTES:
        return payload
    return json.dumps({"origin": origin, "agent_id": agent_id, "resync": True})


def revocation_payload(origin: str, kind: Literal["agent", "key", "user"], value: str) -> str:
    """The NOTIFY payload saying that access ended — an agent deleted (its id), an API key
    revoked (its hash), an account deleted (its id) — so every replica ends the live
    subscriptions that depended on it."""
    return json.dumps({"origin": origin, "revoke": kind, "id": value})


def _outbound_row(
    db: Connection, user_id: str | None, message_id: str, *, lock: bool = False
) -> tuple[Any, ...] | None:
    query = f"SELECT {OUTBOUND_COLUMNS} FROM messages WHERE id = %s AND direction = 'outbound'"
    params: tuple[str, ...] = (message_id,)
    if user_id is not None:
        query += " AND user_id = %s"
        params = (message_id, user_id)
    if lock:
        query += " FOR UPDATE"
    return db.execute(query, params).fetchone()


def _existing_outbound_row(db: Connection, message_id: str) -> tuple[Any, ...]:
    row = _outbound_row(db, None, message_id)
    if row is None:
        raise StorageUnavailable(f"outbound message {message_id} vanished inside a transaction")
    return row
