"""Storage: the `Storage` protocol and the backend chosen by `database.url`."""

from __future__ import annotations

from e2a_gateway.storage.announcements import CommitObserver
from e2a_gateway.storage.base import Storage, StorageUnavailable

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(url: str, holder: str = "", on_commit: CommitObserver | None = None) -> Storage:
    """The backend for `url`, not yet migrated; StorageUnavailable if it cannot open.

    `holder` names this replica on the job leases it takes (see `Storage.release_leases`);
    `on_commit` hears, on the event loop, what each write announced once it has committed
    (e.g. jobs added, to wake this process's workers)."""
    if url.startswith("sqlite:///"):
        from e2a_gateway.storage.sqlite import SqliteStorage

        return SqliteStorage.open(url.removeprefix("sqlite:///"), holder, on_commit)
    if url.startswith(POSTGRES_SCHEMES):
        from e2a_gateway.storage.postgres import PostgresStorage

        return PostgresStorage.open(url, holder, on_commit)
    raise StorageUnavailable(
        f"database.url: {url.split('://')[0]} is not supported — use sqlite:///path/to/e2a.db "
        "or postgresql://user:password@host:5432/dbname"
    )
