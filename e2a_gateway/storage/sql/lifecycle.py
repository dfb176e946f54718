"""The SQL of the store itself: the schema's version record, the liveness check, the server secret.

Each backend applies its own migration files its own way (one statement at a time on SQLite,
whole scripts under an advisory lock on PostgreSQL); the record of what was applied is shared.
"""

from __future__ import annotations

import contextlib

import trio

from e2a_gateway.storage.base import DiskFull, StorageUnavailable
from e2a_gateway.storage.migrations import Migration, load_migrations
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction

SERVER_SECRET = "hmac_secret"
"""The `server_state` row of the development server secret."""
DISK_REFUSAL_SECONDS = 10.0
"""How long `ping` says the database takes no writes after its disk refused one, before it
tries a write of its own to see: a small write may still fit where a message did not."""
DISK_PROBE = "disk_probe"
"""The `server_state` row `ping`'s probe writes (the time of the last probe)."""


def applied_versions(tx: Transaction) -> set[int]:
    """The schema versions applied so far (creating their record on a new database)."""
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    return recorded_versions(tx)


def _probe_disk(tx: Transaction) -> None:
    """A write that changes a row, so the database has to write to disk to commit it."""
    tx.execute(
        f"INSERT INTO server_state (name, value) VALUES (?, {tx.dialect.utc_now}) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (DISK_PROBE,),
    )


def recorded_versions(tx: Transaction) -> set[int]:
    """The schema versions the database records as applied (its record must exist)."""
    return {row[0] for row in tx.all("SELECT version FROM schema_migrations")}


def record_migration(tx: Transaction, migration: Migration) -> None:
    """Record `migration` as applied now, in the transaction that applied it."""
    tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) "
        f"VALUES (?, ?, {tx.dialect.utc_now})",
        (migration.version, migration.name),
    )


class LifecycleSql(Runner):
    """`Lifecycle` in SQL, but for `migrate` and `close`, which each backend does its own way."""

    async def ping(self) -> None:
        """Raise StorageUnavailable unless a trivial query answers, DiskFull while the disk
        refuses writes (`_disk_takes_writes`)."""
        await self._read(lambda tx: tx.first("SELECT 1"))
        await self._disk_takes_writes()

    async def _disk_takes_writes(self) -> None:
        """Raise DiskFull, saying what the disk said, while the database's disk is taken for
        full: a full disk answers reads while every message is refused. After it refused a
        write (`_write`) it is taken for full for DISK_REFUSAL_SECONDS, then until a write of
        this check's own succeeds (each refused one starts the wait again)."""
        if self._disk_refusal is None:
            return
        if trio.current_time() - self._disk_refused_at >= DISK_REFUSAL_SECONDS:
            with contextlib.suppress(StorageUnavailable):  # refused again: said below
                await self._write(_probe_disk)
                self._disk_refusal = None
                return
        raise DiskFull(self._disk_refusal)

    async def pending_migrations(self) -> list[int]:
        """The versions of this code's migrations the database has not recorded."""

        def read(tx: Transaction) -> list[int]:
            applied = recorded_versions(tx)
            known = load_migrations(tx.dialect.name)
            return [migration.version for migration in known if migration.version not in applied]

        return await self._read(read)

    async def unknown_migrations(self) -> list[int]:
        """The schema versions the database records that this code's migrations do not hold
        (a newer e2a applied them)."""

        def read(tx: Transaction) -> list[int]:
            known = {migration.version for migration in load_migrations(tx.dialect.name)}
            return sorted(recorded_versions(tx) - known)

        return await self._read(read)

    async def server_secret(self, candidate: str) -> str:
        """The development server secret, storing `candidate` on first use."""

        def get_or_store(tx: Transaction) -> str:
            tx.execute(
                "INSERT INTO server_state (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (SERVER_SECRET, candidate),
            )
            return str(tx.one("SELECT value FROM server_state WHERE name = ?", (SERVER_SECRET,))[0])

        return await self._write(get_or_store)
