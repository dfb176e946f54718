"""Storage closed while calls are under way in worker threads (the gateway stopping, or the
database taken away under a running gateway): a connection is never closed beneath the thread
using it, which crashes the interpreter on SQLite; each call under way ends as it would have,
its connection is closed with the rest rather than left open, and calls asked for afterwards
are refused. On SQLite the last connection's close copies the write-ahead log into the
database file and removes it, so a stopped gateway leaves no `-wal` file behind.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import Storage, StorageUnavailable
from e2a_gateway.storage.postgres import PostgresStorage
from e2a_gateway.storage.sql.runner import Work
from e2a_gateway.storage.sql.store import SqlStorage
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.sqlite import READER_COUNT, SqliteStorage
from tests.test_storage import (  # noqa: F401  (postgres_db and storage_url are fixtures)
    add_user,
    postgres_db,
    storage_url,
)

pytestmark = [pytest.mark.backend_independent]

WAIT_SECONDS = 5.0
"""The longest any call below may take."""
SLOW_SECONDS = 0.3
"""How long a slowed write keeps its connection in its worker thread (a read twice as long, so
that it is still under way once the write let the close go on): the close is asked for
meanwhile."""


def closed(connection: Any) -> bool:
    """Whether `connection` (sqlite3's or psycopg's) is closed."""
    if isinstance(connection, psycopg.Connection):
        return connection.closed
    try:
        connection.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def log_file_left(url: str) -> bool:
    """Whether a SQLite database at `url` has its `-wal` file beside it."""
    return url.startswith("sqlite:///") and Path(f"{url.removeprefix('sqlite:///')}-wal").exists()


class SlowWork:
    """Work for a storage call that holds its connection for `seconds` in its worker
    thread, and notes which connection it ran on and when it began."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.began = trio.Event()
        self.connections: list[Any] = []
        self._token = trio.lowlevel.current_trio_token()

    def __call__(self, tx: Transaction) -> int:
        self.connections.append(tx._connection)
        self._token.run_sync_soon(self.began.set)
        time.sleep(self.seconds)
        return int(tx.one("SELECT 1")[0])


@pytest.fixture
async def store(storage_url: str) -> AsyncIterator[SqlStorage]:  # noqa: F811
    """A migrated storage of each backend, which the test closes itself."""
    storage = open_storage(storage_url)
    await storage.migrate()
    assert isinstance(storage, SqlStorage)
    yield storage
    await storage.close()


async def test_calls_under_way_at_close_end_and_leave_no_connection_open(
    store: SqlStorage,
    storage_url: str,  # noqa: F811
) -> None:
    """A read and a write running in worker threads when storage closes both end with their
    answers; their connections are closed once they are done (SQLite: its reader was put back
    in the pool after the pool was closed, and stayed open, holding the write-ahead log beside
    the database file); and calls afterwards are refused."""
    await add_user(store)
    read, write = SlowWork(2 * SLOW_SECONDS), SlowWork(SLOW_SECONDS)
    answers: list[int] = []

    async def call(slow: SlowWork, writes: bool) -> None:
        answers.append(await (store._write(slow) if writes else store._read(slow)))

    with trio.fail_after(WAIT_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, read, False)
            nursery.start_soon(call, write, True)
            await read.began.wait()
            await write.began.wait()
            await store.close()
    assert answers == [1, 1]
    for connection in (*read.connections, *write.connections):
        assert closed(connection)
    assert not log_file_left(storage_url)
    with pytest.raises(StorageUnavailable, match="closed"):
        await store._read(lambda tx: tx.one("SELECT 1"))
    with pytest.raises(StorageUnavailable, match="closed"):
        await store._write(lambda tx: tx.one("SELECT 1"))


async def test_an_export_asked_for_after_close_is_refused(store: Storage) -> None:
    """An account's export asked for once storage is closed is refused as every other read
    is, rather than opening a connection of its own to a database the gateway let go of."""
    user = await add_user(store)
    await store.close()
    with pytest.raises(StorageUnavailable, match="closed"):
        async with store.export_user(user):
            pass


async def read_noting(storage: Any, work: Work[int], answers: list[object]) -> None:
    """Read `work` on `storage`, noting its answer, or StorageUnavailable when refused."""
    try:
        answers.append(await storage._read(work))
    except StorageUnavailable as exc:
        answers.append(type(exc))


async def test_reads_waiting_for_a_reader_at_close_are_refused(tmp_path: Path) -> None:
    """SQLite: reads queued for a reader (every one busy) when storage closes are refused
    once one is free, and the close, which waits for the reads under way, ends."""
    storage = SqliteStorage.open(str(tmp_path / "e2a.db"))
    busy = [SlowWork(SLOW_SECONDS) for _ in range(READER_COUNT)]
    answers: list[object] = []

    with trio.fail_after(WAIT_SECONDS):
        async with trio.open_nursery() as nursery:
            for slow in busy:
                nursery.start_soon(read_noting, storage, slow, answers)
                await slow.began.wait()
            nursery.start_soon(read_noting, storage, lambda tx: tx.one("SELECT 1")[0], answers)
            await trio.testing.wait_all_tasks_blocked()
            await storage.close()
    assert Counter(answers) == {1: READER_COUNT, StorageUnavailable: 1}
    assert all(closed(connection) for connection in storage._readers)


async def test_postgres_calls_waiting_for_a_connection_at_close_are_refused(
    postgres_db: str,  # noqa: F811
) -> None:
    """PostgreSQL: a call queued for a pooled connection (every one busy) when storage closes
    is refused once one is free, as on SQLite, rather than opening a new session to the
    database after the close."""
    storage = PostgresStorage(postgres_db, pool_size=1)
    busy = SlowWork(SLOW_SECONDS)
    answers: list[object] = []
    queued: list[Any] = []

    def noted(tx: Transaction) -> int:
        queued.append(tx._connection)
        return 1

    with trio.fail_after(WAIT_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_noting, storage, busy, answers)
            await busy.began.wait()
            nursery.start_soon(read_noting, storage, noted, answers)
            await trio.testing.wait_all_tasks_blocked()
            await storage.close()
    assert Counter(answers) == {1: 1, StorageUnavailable: 1}
    assert queued == []
    assert all(closed(connection) for connection in busy.connections)


@pytest.mark.parametrize("failing_call", [2, 3, READER_COUNT + 2])
def test_a_sqlite_open_that_fails_part_way_closes_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """A connection that cannot be opened after others were (a reader, the checkpointer: too
    many open files, say) is refused as StorageUnavailable, and the ones opened before it are
    closed, not left holding the file until the process ends."""
    from e2a_gateway.storage import sqlite as sqlite_module

    opened: list[sqlite3.Connection] = []
    connect = sqlite_module._connect

    def failing_connect(path: str) -> sqlite3.Connection:
        if len(opened) + 1 == failing_call:
            raise sqlite3.OperationalError("unable to open database file")
        opened.append(connect(path))
        return opened[-1]

    monkeypatch.setattr(sqlite_module, "_connect", failing_connect)
    with pytest.raises(StorageUnavailable, match="unable to open database file"):
        SqliteStorage.open(str(tmp_path / "e2a.db"))
    assert len(opened) == failing_call - 1
    assert all(closed(connection) for connection in opened)
