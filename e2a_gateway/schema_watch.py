"""Notices, while a replica runs, that a newer e2a migrated the shared PostgreSQL database,
and takes the replica out of service before its SQL runs on a schema it does not know.

The check is one small query (`Lifecycle.unknown_migrations`), made when another replica
announces a migration, every SCHEMA_CHECK_SECONDS and on each `GET /readyz`. It never changes
the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from e2a_gateway.storage.base import Storage, StorageUnavailable
from e2a_gateway.storage.postgres import PostgresStorage

log = logging.getLogger("e2a")

SCHEMA_CHECK_SECONDS = 30.0
"""The longest a replica runs on a database a newer e2a migrated without noticing, should it
miss the migration's announcement (its LISTEN connection was down)."""


REFUSED_CALL = (
    "database.url: a newer e2a migrated the database; this replica no longer uses it — "
    "upgrade this replica"
)
"""What every storage call says once the schema is refused (the log says the rest once)."""


def newer_schema_refusal(newer: list[int]) -> str:
    """What a replica that found the schema versions `newer` in its database says, and does."""
    return (
        "database.url: a newer e2a migrated the database while this replica ran (schema "
        f"versions {', '.join(map(str, newer))} are unknown to this one): it takes no more "
        "mail, requests or jobs, which it would store by a schema it does not know — upgrade "
        "this replica to the e2a that migrated the database and restart it "
        '(docs/replicas.md, "Starting and upgrading")'
    )


class SchemaWatch:
    """Checks that the database's schema is one this e2a knows; once it is not, refuses every
    storage call (SMTP then answers 421 and 451, the API 503, the job workers claim nothing:
    they read `refusal`, as `Gateway.schema_refusal`; the SMTP acceptor processes are told,
    awaiting `refused`), calls `on_refused` (the gateway closes its local WebSockets), for
    good: the process stays up, unready, until it is stopped and upgraded."""

    def __init__(
        self,
        storage: PostgresStorage,
        on_refused: Callable[[], None],
        interval: float = SCHEMA_CHECK_SECONDS,
    ) -> None:
        self._storage = storage
        self._on_refused = on_refused
        self._interval = interval
        self._wake = trio.Event()
        self._refused = trio.Event()
        self.refusal: str | None = None
        """Why this replica takes no more work, once the schema is refused."""

    async def refused(self) -> str:
        """Wait until the schema is refused (at once if it is); why, as `refusal`."""
        while self.refusal is None:
            await self._refused.wait()
        return self.refusal

    def wake(self) -> None:
        """Check now (another replica announced a migration)."""
        self._wake.set()

    async def check(self) -> None:
        """Look at the database's schema versions once; refuse service when a newer e2a
        migrated it. A database that does not answer is left to `ping` to report."""
        if self.refusal is not None:
            return
        try:
            newer = await self._storage.unknown_migrations()
        except StorageUnavailable:
            return
        if newer and self.refusal is None:
            self._refuse(newer_schema_refusal(newer))

    def _refuse(self, reason: str) -> None:
        self.refusal = reason
        self._storage.refuse(REFUSED_CALL)
        self._refused.set()
        self._on_refused()
        log.error("%s", reason)

    async def run(self) -> None:
        """Check when woken and every SCHEMA_CHECK_SECONDS, until the schema is refused."""
        while self.refusal is None:
            with trio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.check()


def schema_watch_for(storage: Storage, on_refused: Callable[[], None]) -> SchemaWatch | None:
    """The schema watch of a gateway's `storage` on PostgreSQL; None on SQLite, whose file no
    other process migrates while a gateway holds it (`e2a migrate` refuses to, beside one)."""
    if isinstance(storage, PostgresStorage):
        return SchemaWatch(storage, on_refused)
    return None
