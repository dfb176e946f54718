"""Storage: the `Storage` protocol and the backend chosen by `database.url`."""

from __future__ import annotations

from e2a.storage.base import Storage, StorageUnavailable

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(url: str, holder: str = "") -> Storage:
    """The backend for `url`, not yet migrated; StorageUnavailable if it cannot open.

    `holder` names this replica on the job leases it takes (see `Storage.release_leases`)."""
    if url.startswith("sqlite:///"):
        from e2a.storage.sqlite import SqliteStorage

        return SqliteStorage.open(url.removeprefix("sqlite:///"), holder)
    if url.startswith(POSTGRES_SCHEMES):
        from e2a.storage.postgres import PostgresStorage

        return PostgresStorage.open(url, holder)
    raise StorageUnavailable(
        f"database.url: {url.split('://')[0]} is not supported — use sqlite:///path/to/e2a.db "
        "or postgresql://user:password@host:5432/dbname"
    )
