"""Storage: the `Storage` protocol and the backend chosen by `database.url`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from e2a_gateway.storage.announcements import CommitObserver
from e2a_gateway.storage.base import Storage, StorageUnavailable

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(
    url: str,
    holder: str = "",
    on_commit: CommitObserver | None = None,
    *,
    pooled: bool = False,
    listen_url: str = "",
    silent_server_seconds: int | None = None,
) -> Storage:
    """The backend for `url`, not yet migrated; StorageUnavailable if it cannot open.

    `holder` names this replica on the job leases it takes (see `Storage.release_leases`);
    `on_commit` hears, on the event loop, what each write announced once it has committed
    (e.g. jobs added, to wake this process's workers). PostgreSQL only: `pooled` says `url`
    goes through a pooler in transaction mode, and `listen_url` (empty: `url`) is where the
    other replicas' news is heard (`database.pooled`, `database.listen_url`), and a server
    silent for `silent_server_seconds` (None: the default) is given up on
    (`database.silent_server_seconds`)."""
    if url.startswith("sqlite:///"):
        from e2a_gateway.storage.sqlite import SqliteStorage

        return SqliteStorage.open(url.removeprefix("sqlite:///"), holder, on_commit)
    if url.startswith(POSTGRES_SCHEMES):
        from e2a_gateway.storage.postgres import SILENT_SERVER_SECONDS, PostgresStorage

        return PostgresStorage.open(
            url,
            holder,
            on_commit,
            pooled=pooled,
            listen_url=listen_url,
            silent_server_seconds=silent_server_seconds or SILENT_SERVER_SECONDS,
        )
    raise StorageUnavailable(
        f"database.url: {url.split('://')[0]} is not supported — use sqlite:///path/to/e2a.db "
        "or postgresql://user:password@host:5432/dbname"
    )


@asynccontextmanager
async def sole_gateway(url: str) -> AsyncIterator[None]:
    """Around a gateway's whole use of the database at `url`: on SQLite, hold the file for
    this process alone (`sqlite.sole_gateway`; StorageUnavailable when another gateway holds
    it). PostgreSQL takes replicas (docs/replicas.md)."""
    if not url.startswith("sqlite:///"):
        yield
        return
    from e2a_gateway.storage.sqlite import sole_gateway as hold_file

    with hold_file(url.removeprefix("sqlite:///")):
        yield


async def refuse_migrating_under_a_gateway(url: str) -> None:
    """Before a command other than `e2a serve` opens the database at `url` (which migrates
    it): on SQLite, raise StorageUnavailable when a running `e2a serve` holds the file and
    this e2a has migrations to apply, which that gateway would not know of: it would go on
    running its older SQL on the newer schema. PostgreSQL replicas watch for a newer schema
    themselves (docs/replicas.md)."""
    if not url.startswith("sqlite:///"):
        return
    from e2a_gateway.storage.sqlite import SqliteStorage, held_by_a_gateway

    path = url.removeprefix("sqlite:///")
    if not held_by_a_gateway(path):
        return
    storage = SqliteStorage.open(path)
    try:
        pending = await storage.pending_migrations()
    finally:
        await storage.close()
    if pending:
        raise StorageUnavailable(
            f"database.url: sqlite:///{path} is in use by a running `e2a serve`, and this e2a "
            f"would migrate it (schema versions {', '.join(map(str, pending))}), which that "
            "gateway would misread: stop it, run this command again, then start the new e2a "
            "(docs/deploy.md, Upgrades)"
        )
