"""The embedded SQLite backend: stdlib `sqlite3` in WAL mode, driven from trio through threads.

One writer connection serialised by a trio lock (SQLite allows one writer at a time anyway) and
a small pool of reader connections that never block it. Every write is one `BEGIN IMMEDIATE`
transaction with `synchronous=FULL`, so a committed write survives a crash or power loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from cachetools import LRUCache

from e2a_gateway.storage.announcements import Announcement, CommitObserver
from e2a_gateway.storage.base import DiskFull, InboundMessage, InboxPage, StorageUnavailable
from e2a_gateway.storage.migrations import Migration, load_migrations
from e2a_gateway.storage.rows import raw_digest
from e2a_gateway.storage.sql.dialect import SQLITE
from e2a_gateway.storage.sql.lifecycle import (
    applied_versions,
    record_migration,
    recorded_versions,
)
from e2a_gateway.storage.sql.runner import Answer, Routing, Snapshot, Work
from e2a_gateway.storage.sql.store import SqlStorage
from e2a_gateway.storage.sql.transaction import Transaction

T = TypeVar("T")
log = logging.getLogger("e2a.storage")
READER_COUNT = 2
"""Reader connections, each used by one worker thread at a time. Reads are short (indexed
pages, remembered routing answers) and their threads contend for the interpreter with the
event loop: measured with bench/rest_read.py, 4 readers served inbox pages at 515/386/374
req/s (1/16/64 clients), 2 at 644/515/488, 1 at 713/613/530. Two keep most of that while one
slow read (a search of a large mailbox) does not hold up every other."""
ROUTING_ANSWERS_KEPT = 10_000
"""Routing answers remembered at most (the least recently used go first), so that asking for
ever new addresses or keys cannot grow the process without bound."""
ANSWER_BYTES = 16 * 1024 * 1024
"""About how much the answers remembered until the next write (inbox pages, messages with
their raw bytes) may hold; the least recently used go first."""
CHECKPOINT_SECONDS = 0.25
"""How long `upkeep` lets commits gather before it copies the log into the database: a page
written by many commits meanwhile is copied once."""
UPKEEP_CHECK_SECONDS = 5.0
"""How often `upkeep` looks again without commits to prompt it: whether the log's files are
still the ones the gateway has open (`_detached_log_files`), and copies what the log holds
(a copy an old snapshot held back)."""
CHECKPOINT_RETRY_SECONDS = 1.0
"""How long `upkeep` waits before it tries again a copy of the log that failed (a full disk);
each failure in a row doubles it, up to CHECKPOINT_RETRY_MAX_SECONDS."""
CHECKPOINT_RETRY_MAX_SECONDS = 30.0
BACKSTOP_CHECKPOINT_PAGES = 10_000
"""The writer checkpoints itself only once the log holds this many pages (about 40 MB): when
`upkeep` is not running (a command, a test) or cannot keep up. SQLite's own default is 1,000
pages, which put a checkpoint — writing and syncing the database file — inside every few
commits of a busy gateway."""
LOG_BYTES_KEPT = BACKSTOP_CHECKPOINT_PAGES * 4096
"""The most of its write-ahead log file SQLite keeps once the log has been copied into the
database and starts over (`journal_size_limit`): a log grown past it (a burst while a reader
held an old snapshot, so no checkpoint could finish) is cut back, not kept at its largest for
as long as the gateway runs."""
PRIVATE_MODE = 0o600
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")
LOG_FILE_SUFFIXES = ("-wal", "-shm")
"""The files of the write-ahead log, which the gateway keeps open while it runs."""


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first bytes of every SQLite database file."""


def _refuse_other_file(path: str) -> None:
    """StorageUnavailable when `path` is an existing file that is not an SQLite database (a
    slip in database.url naming the config file or a log): nothing about it is changed, its
    permissions included. An empty file is a database not yet written."""
    try:
        with open(path, "rb") as existing:
            header = existing.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    if header and header != SQLITE_HEADER:
        raise StorageUnavailable(
            f"database.url: cannot open sqlite:///{path}: it is not an SQLite database (left "
            "as it is) — point database.url at the gateway's database file"
        )


def _make_private(path: str) -> None:
    """Create the database file readable and writable by its owner only (SQLite gives its
    -wal and -shm files the database file's mode), and take group and other permissions
    away from an existing database and its side files, saying so in the log."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    os.close(descriptor)
    for candidate in (path, *(path + suffix for suffix in SIDE_FILE_SUFFIXES)):
        try:
            mode = stat.S_IMODE(os.stat(candidate).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(candidate, mode & 0o700)
            log.warning(
                "%s: mode %04o let other users read the database; changed to %04o",
                candidate,
                mode,
                mode & 0o700,
            )


@contextmanager
def sole_gateway(path: str) -> Iterator[None]:
    """Hold the database file at `path` for one `e2a serve` while the block runs; raise
    StorageUnavailable when another gateway process holds it.

    On SQLite one process works the job queues (`release_leases` frees every lease at start),
    so a second gateway on the same file would take over the first one's sends in flight and
    send them again. The lock is the kernel's `flock`, apart from SQLite's own (POSIX) locks,
    and goes with the process however it ends. It is taken before SQLite opens the file and
    given back after SQLite has closed it: closing a descriptor of the file while SQLite holds
    it open would drop SQLite's locks with it. A path that cannot be opened is left to
    `SqliteStorage.open`, which says why."""
    if path == ":memory:":
        yield
        return
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageUnavailable(
                f"database.url: sqlite:///{path} is in use by another `e2a serve` — SQLite "
                "serves one gateway process: stop the other one, or give this one its own "
                "database.url (several replicas need PostgreSQL, docs/replicas.md)"
            ) from None
        yield
    finally:
        os.close(descriptor)


def held_by_a_gateway(path: str) -> bool:
    """Whether an `e2a serve` holds the database file at `path` now (`sole_gateway`): False
    for a file that does not exist or cannot be opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # gives back the shared lock, if taken
    return False


DISK_FAILURE_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})
"""SQLite's primary result codes for a disk that took no more: full (SQLITE_FULL, also a
database at its `max_page_count`) or failing (SQLITE_IOERR; an extended code such as
SQLITE_IOERR_WRITE, what a file-size limit gives, is SQLITE_IOERR in its low byte)."""
DISK_FAILURE_WORDS = ("disk is full", "disk I/O error")
"""How SQLite words those failures, for an error that carries no code."""


def disk_refused(error: sqlite3.Error) -> bool:
    """Whether `error` says the database's disk took no more (DISK_FAILURE_CODES), known by
    SQLite's result code; only an error without one is known by its words."""
    code: int | None = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return any(words in str(error) for words in DISK_FAILURE_WORDS)
    return code & 0xFF in DISK_FAILURE_CODES


def _absolute_hint(path: str) -> str:
    """For a relative `path` whose folder exists from the root (`sqlite:///var/lib/e2a/e2a.db`,
    meant as /var/lib/e2a): how to write the absolute path; else nothing."""
    if Path(path).is_absolute() or not Path("/", path).parent.is_dir():
        return ""
    return (
        f" (sqlite:///{path} is relative to the working folder; for the absolute path write "
        f"sqlite:////{path})"
    )


def _disk_failure(path: str, failure: StorageUnavailable, doing: str = "write") -> str:
    """What to say when the disk of the database at `path` took no more as e2a tried `doing`
    to it."""
    folder = Path(path).resolve().parent
    return (
        f"database.url: cannot {doing} sqlite:///{path}: {failure} — is its disk full "
        f"(`df -h {folder}`) or failing (`dmesg`)?"
    )


def _checkpoint_failure(path: str, failure: StorageUnavailable) -> StorageUnavailable:
    """What to say when the write-ahead log of the database at `path` could not be copied into
    the database file: DiskFull, saying to free space, when its disk took no more."""
    cause = failure.__cause__
    if isinstance(cause, sqlite3.Error) and disk_refused(cause):
        return DiskFull(
            f"{_disk_failure(path, failure, 'copy the write-ahead log into')} Free space "
            "there: mail stays in the log meanwhile, and the copy is retried by itself"
        )
    return StorageUnavailable(
        f"database.url: cannot copy the write-ahead log into sqlite:///{path}: {failure} "
        "(mail stays in the log meanwhile, and the copy is retried by itself)"
    )


def _log_files_gone(path: str, suffixes: Sequence[str]) -> str:
    """What to say when the log's files `suffixes` of the database at `path` were deleted or
    replaced under the running gateway."""
    files = " and ".join(f"{path}{suffix}" for suffix in suffixes)
    were = "were" if len(suffixes) > 1 else "was"
    return (
        f"sqlite:///{path}: its write-ahead log's {files} {were} deleted or replaced while e2a "
        "runs (a clean-up or a backup tool?): e2a goes on with the files it has open, which other "
        "programs (e2a backup, a sqlite3 shell) cannot see, and copies each commit into the "
        "database file soon after it — restart e2a (it copies the log into the database file "
        "as it stops), and never delete the -wal and -shm files of a database in use"
    )


def _open_advice(path: str) -> str:
    """What to do about a database file at `path` that could not be opened: SQLite needs to
    write the file and, for its -wal and -shm files, the folder it is in."""
    if os.path.isdir(path):
        return (
            f"it is a folder — name the database file in it, e.g. sqlite:///{Path(path) / 'e2a.db'}"
        )
    folder = Path(path).resolve().parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"this user cannot write to the folder {folder}, where SQLite keeps the database's "
            "-wal and -shm files: give the user e2a runs as write permission on it"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return (
            "this user cannot read and write the file: give the user e2a runs as read and "
            "write permission on it"
        )
    return "check the path and its permissions"


BUSY_TIMEOUT_SECONDS: float = 10
"""How long a statement waits for another process's lock on the database file before it
fails (SQLITE_BUSY, `_locked`)."""
LOCKED_WAIT_SECONDS = 0.1
"""How long a write waits for that lock once a write has waited BUSY_TIMEOUT_SECONDS for it in
vain, until a write takes it again: while another program holds the file, mail is refused at
once rather than each message after the full wait in turn (an SMTP client gives up sooner)."""


def locked(error: sqlite3.Error) -> bool:
    """Whether `error` is SQLITE_BUSY: another process held the file past BUSY_TIMEOUT_SECONDS."""
    code: int | None = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _locked(path: str) -> str:
    """What to say when another process held the database at `path` too long."""
    return (
        f"database.url: sqlite:///{path} is locked by another process (waited "
        f"{BUSY_TIMEOUT_SECONDS:g} s) — end the program that holds it, such as a sqlite3 shell "
        f"or a backup left inside a transaction (`fuser -v {path}` names it); back a live "
        "database up with e2a backup (docs/deploy.md, Backups)"
    )


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
    )
    connection.execute("PRAGMA foreign_keys = ON")
    # Deleted rows' bytes are overwritten, not left in the freed pages for anyone reading the
    # file to find: what a build without SQLITE_SECURE_DELETE would do.
    connection.execute("PRAGMA secure_delete = ON")
    connection.execute("PRAGMA synchronous = FULL")
    connection.create_function("e2a_sha256", 1, raw_digest, deterministic=True)
    connection.create_function("e2a_lower", 1, _lowercase, deterministic=True)
    return connection


def _lowercase(text: str | None) -> str | None:
    """`text` lowercased as Python lowercases it (SQLite's own lower() folds ASCII alone)."""
    return None if text is None else text.lower()


def answer_weight(value: object) -> int:
    """About how many bytes a remembered answer holds: a message its raw bytes and a little,
    an inbox page a little per entry."""
    if isinstance(value, InboundMessage):
        return 2048 + len(value.raw_message)
    if isinstance(value, InboxPage):
        return 1024 + 1024 * len(value.messages)
    return 256


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Turn sqlite3 operational failures (disk full, I/O error, locked) into StorageUnavailable."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StorageUnavailable(f"sqlite: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.IntegrityError):
            raise
        raise StorageUnavailable(f"sqlite: {exc}") from exc


class SqliteStorage(SqlStorage):
    """Storage on one SQLite file. Create with `SqliteStorage.open(path)`."""

    dialect = SQLITE

    def __init__(
        self,
        path: str,
        writer: sqlite3.Connection,
        readers: list[sqlite3.Connection],
        checkpointer: sqlite3.Connection,
        holder: str = "",
        on_commit: CommitObserver | None = None,
    ):
        super().__init__(on_commit)
        self.path = path
        self.holder = holder
        self._writer = writer
        self._write_lock = trio.Lock()
        self._readers = readers
        self._reader_count = len(readers)
        self._reader_slots = trio.Semaphore(self._reader_count)
        """A read takes a slot and a reader out of `_readers` for its worker thread, and puts
        both back when the thread is done: `close` takes every slot before it closes them."""
        # Routing answers (agent by address, served domains, newest signing seed) asked for
        # every message; only this process writes them, so each write simply clears the cache.
        self._routing: LRUCache[tuple[str, str], Any] = LRUCache(ROUTING_ANSWERS_KEPT)
        self._routing_generation = 0
        # Answers to the reads agents poll with (an inbox page, a message), until the next write
        # of any kind: a poll that finds nothing new reads nothing.
        self._answers: LRUCache[tuple[str, str], Any] = LRUCache(ANSWER_BYTES, answer_weight)
        self._write_generation = 0
        self._checkpointer = checkpointer
        self._closed = False
        self._logged_since_checkpoint = False
        self._wake_upkeep: trio.Event | None = None
        self._checkpointing = trio.Lock()
        """Held while the checkpointer copies the log (in a worker thread): `close` waits for
        it, since closing a connection another thread is using crashes the interpreter."""
        self._checkpoint_refusal: StorageUnavailable | None = None
        """Why the last copy of the log into the database file failed (`_checkpoint_failure`),
        until one succeeds: `ping` says it."""
        self._log_files: dict[str, tuple[int, int]] = {}
        """The device and inode of each of the log's files (LOG_FILE_SUFFIXES) as first seen."""
        self._log_files_gone: str | None = None
        """What to say (`_log_files_gone`) once the log's files were found deleted or replaced
        under the gateway: `ping` says it until a restart."""
        self._lock_refusal: str | None = None
        """What to say (`_locked`) while another process holds the database file: set when a
        write waited BUSY_TIMEOUT_SECONDS for it in vain, until a write takes it again. Writes
        meanwhile wait LOCKED_WAIT_SECONDS for it, and `ping` tries a write of its own."""
        self._writer_wait = BUSY_TIMEOUT_SECONDS
        """The busy timeout the writer connection has now (set in the writer's thread)."""

    @classmethod
    def open(
        cls, path: str, holder: str = "", on_commit: CommitObserver | None = None
    ) -> SqliteStorage:
        """Open (creating if needed) the database file at `path` in WAL mode; `on_commit`
        hears what each write announced once it has committed."""
        if path != ":memory:":
            if path.startswith("~"):
                raise StorageUnavailable(
                    f"database.url: cannot open sqlite:///{path}: ~ is not the home folder "
                    "here: write the whole path (sqlite:////home/you/e2a.db)"
                )
            parent = Path(path).resolve().parent
            if not parent.is_dir():
                raise StorageUnavailable(
                    f"database.url: cannot open sqlite:///{path}: directory {parent} does not "
                    f"exist — create it or point database.url elsewhere{_absolute_hint(path)}"
                )
        opened: list[sqlite3.Connection] = []
        try:
            if path != ":memory:":
                _refuse_other_file(path)
                _make_private(path)
            opened.append(writer := _connect(path))
            writer.execute("PRAGMA journal_mode = WAL")
            writer.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_PAGES}")
            writer.execute(f"PRAGMA journal_size_limit = {LOG_BYTES_KEPT}")
            for _ in range(READER_COUNT):
                opened.append(_connect(path))
            readers = opened[1:]
            opened.append(checkpointer := _connect(path))
            # Its copies never wait for a lock: a passive one waits for none anyway, and the
            # one that empties the log (`_checkpoint`) would hold every commit meanwhile.
            checkpointer.execute("PRAGMA busy_timeout = 0")
        except (sqlite3.Error, OSError) as exc:
            for connection in opened:  # not left holding the file until the process ends
                connection.close()
            raise StorageUnavailable(
                f"database.url: cannot open sqlite:///{path}: {exc} — {_open_advice(path)}"
            ) from exc
        return cls(path, writer, readers, checkpointer, holder, on_commit)

    # -- the runner -------------------------------------------------------------------------

    def _transact(self, work: Work[T], durable: bool, wait: float) -> tuple[T, list[Announcement]]:
        """Run `work` in one `BEGIN IMMEDIATE` transaction on the writer (in its thread),
        waiting at most `wait` seconds for another process's lock on the file.

        Whatever fails, the work or the COMMIT itself (a deferred constraint, a full disk, a
        busy database: SQLite then leaves the transaction open), the transaction is rolled
        back, so nothing of it is stored and the writer is ready for the next one."""
        with _translate_errors():
            if wait != self._writer_wait:
                self._writer.execute(f"PRAGMA busy_timeout = {round(wait * 1000)}")
                self._writer_wait = wait
            if not durable:
                self._writer.execute("PRAGMA synchronous = OFF")
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                transaction = Transaction(self._writer, self.dialect, sqlite3.IntegrityError)
                try:
                    result = work(transaction)
                    transaction.end()
                    self._writer.execute("COMMIT")
                except BaseException:
                    if self._writer.in_transaction:  # some failures end it themselves
                        self._writer.execute("ROLLBACK")
                    raise
                return result, transaction.announcements
            finally:
                if not durable:
                    self._writer.execute("PRAGMA synchronous = FULL")

    async def _commit(
        self, work: Work[T], *, changes_routing: bool, durable: bool
    ) -> tuple[T, list[Announcement]]:
        """Run `work` in one write transaction on the writer thread; commit or roll back.

        A write that changes any row clears the answers remembered until the next write (a
        worker's claim that found nothing to claim changes none); one that `changes_routing`
        clears the routing answers too.
        `durable=False` commits without waiting for the disk (the WAL frames reach it with the
        next durable commit).
        A disk that takes no more (full, failing, a file-size limit) raises DiskFull, which
        names it with what to check (and `ping` says the database takes no writes for a while:
        `LifecycleSql.ping`).
        A file another process held locked past BUSY_TIMEOUT_SECONDS raises StorageUnavailable
        saying so (`_locked`); until a write takes the lock again (whether it then commits or
        not), writes wait for it only LOCKED_WAIT_SECONDS and `ping` says the database takes
        no writes (`_lock_refusal`)."""
        async with self._write_lock:
            self._refuse_if_closed()
            changes = self._writer.total_changes
            wait = BUSY_TIMEOUT_SECONDS if self._lock_refusal is None else LOCKED_WAIT_SECONDS
            took_the_lock = True  # whatever else failed, it failed inside the transaction
            try:
                return await trio.to_thread.run_sync(self._transact, work, durable, wait)
            except StorageUnavailable as exc:
                cause = exc.__cause__
                if isinstance(cause, sqlite3.Error) and locked(cause):
                    took_the_lock = False
                    if self._lock_refusal is None:
                        self._lock_refusal = _locked(self.path)
                        log.warning(
                            "%s; until it lets go, writes are refused at once", self._lock_refusal
                        )
                    raise StorageUnavailable(self._lock_refusal) from exc
                if not (isinstance(cause, sqlite3.Error) and disk_refused(cause)):
                    raise
                raise DiskFull(_disk_failure(self.path, exc)) from exc
            finally:
                if self._writer.total_changes != changes:  # not a worker's empty claim
                    self._answers.clear()
                    self._write_generation += 1
                    self._logged_since_checkpoint = True
                    if self._wake_upkeep is not None:
                        self._wake_upkeep.set()
                if changes_routing:
                    self._routing.clear()
                    self._routing_generation += 1
                if took_the_lock and self._lock_refusal is not None:
                    self._lock_refusal = None
                    log.info(
                        "sqlite:///%s: the other process let go of it; writes are taken",
                        self.path,
                    )

    def _remembered(self, routing: tuple[str, str]) -> object | None:
        """The routing answer `routing` as remembered now, or None when none is."""
        return self._routing.get(routing)

    async def _read(
        self,
        work: Work[T],
        *,
        snapshot: bool = False,
        routing: Routing = None,
        answer: Answer = None,
    ) -> T:
        """Run `work` on a reader connection (it never blocks the writer). A `routing` answer
        is remembered until the next write that could change it, an `answer` until the next
        write of any kind (each began before the read is left out: it may have changed it)."""
        if routing is not None and routing in self._routing:
            cached: T = self._routing[routing]
            return cached
        if answer is not None and answer in self._answers:
            remembered: T = self._answers[answer]
            return remembered
        generation = self._routing_generation
        writes = self._write_generation
        async with self._reader_slots:
            self._refuse_if_closed()
            connection = self._readers.pop()
            try:
                value = await trio.to_thread.run_sync(_read_on, connection, work, snapshot)
            finally:
                self._readers.append(connection)
        if routing is not None and generation == self._routing_generation:
            self._routing[routing] = value
        if answer is not None and writes == self._write_generation:
            with contextlib.suppress(ValueError):  # larger than all the room there is
                self._answers[answer] = value
        return value

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Snapshot]:
        """Hold a connection of its own, opened for the block, in one read transaction while
        the block runs (its snapshot is taken by its first read). It is none of the readers
        the other reads share: a block that lasts (an export sent to a client that stopped
        reading) makes no other read wait. Meanwhile no checkpoint can copy the log past the
        snapshot (docs/architecture.md); both end with the block, a cancelled one included.
        StorageUnavailable once storage is closed, as for every other read."""
        self._refuse_if_closed()
        connection = await trio.to_thread.run_sync(_open_snapshot_connection, self.path)
        try:
            await trio.to_thread.run_sync(_begin_read, connection)
            try:
                yield _SqliteSnapshot(connection)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_end_read, connection)
        finally:
            connection.close()

    async def ping(self) -> None:
        """As `LifecycleSql.ping`; and while another process holds the file locked
        (`_lock_refusal`), raise StorageUnavailable saying so unless a write of this check's
        own (it takes the lock and commits nothing) finds it let go. Raise StorageUnavailable
        too once the log's files were deleted under the gateway, and while the log cannot be
        copied into the database file (DiskFull for a full disk): `upkeep` finds both."""
        await super().ping()
        if self._lock_refusal is not None:
            await self._write(_take_the_lock)
        if self._log_files_gone is not None:
            raise StorageUnavailable(self._log_files_gone)
        refusal = self._checkpoint_refusal
        if refusal is not None:
            raise type(refusal)(str(refusal))

    async def announce(self, news: Sequence[Announcement]) -> None:
        """Nothing to do: this process is the only one on the database, so no other replica
        has to hear of `news`."""

    # -- lifecycle --------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply each migration newer than the recorded version, one transaction each.

        Each step checks the record again in its own write transaction, so another process
        migrating the same file at the same moment (`e2a migrate` beside a starting `e2a
        serve`) applies each step once, and neither fails on a step the other applied.
        A disk that takes no more (full, failing, a file-size limit) is named with what to
        check (`_commit`): migrating is the first write of every start."""
        applied = await self._write(applied_versions)
        done: list[int] = []
        for migration in load_migrations("sqlite"):
            if migration.version in applied:
                continue

            def apply(tx: Transaction, migration: Migration = migration) -> bool:
                if migration.version in recorded_versions(tx):
                    return False  # another process applied it meanwhile
                for statement in _split_sql(migration.sql):
                    tx.execute(statement)
                record_migration(tx, migration)
                return True

            if await self._write(apply):
                done.append(migration.version)
        return done

    async def upkeep(self) -> None:
        """Copy the write-ahead log into the database in the background, CHECKPOINT_SECONDS
        after commits (a passive checkpoint on a connection of its own: the writer commits
        meanwhile and readers keep their snapshots), so commits do not copy it themselves;
        and every UPKEEP_CHECK_SECONDS without commits.

        A copy that fails (a full disk) is said in one line of the log and by `ping`, and
        tried again after CHECKPOINT_RETRY_SECONDS, twice as long after each failure in a row
        (at most CHECKPOINT_RETRY_MAX_SECONDS), commits or not; the first that succeeds ends
        it. Each time it also checks that the log's files are still those the gateway has
        open (`_detached_log_files`)."""
        retry = CHECKPOINT_RETRY_SECONDS
        while True:
            self._wake_upkeep = trio.Event()
            self._logged_since_checkpoint = False
            await self._copy_log()
            if self._checkpoint_refusal is not None:
                await trio.sleep(retry)
                retry = min(2 * retry, CHECKPOINT_RETRY_MAX_SECONDS)
                continue
            retry = CHECKPOINT_RETRY_SECONDS
            if not self._logged_since_checkpoint:
                with trio.move_on_after(UPKEEP_CHECK_SECONDS):
                    await self._wake_upkeep.wait()
            await trio.sleep(CHECKPOINT_SECONDS)

    async def _copy_log(self) -> None:
        """One round of `upkeep`: check the log's files, then copy the log into the database
        file (all of it at once, emptying it, when its files were just found gone); a failed
        copy is said once, in the log and by `ping`, until one succeeds. StorageUnavailable
        once storage is closed: upkeep ends."""
        async with self._checkpointing:
            self._refuse_if_closed()  # stopping: upkeep ends here
            try:
                await trio.to_thread.run_sync(self._checkpoint)
            except StorageUnavailable as exc:
                refusal = _checkpoint_failure(self.path, exc)
                if self._checkpoint_refusal is None:
                    log.warning("%s", refusal)
                self._checkpoint_refusal = refusal
                return
        if self._checkpoint_refusal is not None:
            self._checkpoint_refusal = None
            log.info(
                "sqlite:///%s: the write-ahead log is copied into the database file again",
                self.path,
            )

    def _checkpoint(self) -> None:
        """(In a worker thread) `_copy_log`'s checks and copy."""
        with _translate_errors():
            if self._log_files_gone is None and self._detached_log_files():
                self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                return
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _detached_log_files(self) -> bool:
        """Whether the log's files (LOG_FILE_SUFFIXES) were deleted or replaced since first
        seen, as an operator's clean-up or a backup tool may: the gateway goes on writing into
        the files it has open, which nothing else sees, and a crash would lose what they hold
        that is not yet in the database file. Said once, in the log and by `ping`
        (`_log_files_gone`). Two `stat` calls, off the commits."""
        if self.path == ":memory:":
            return False
        gone = []
        for suffix in LOG_FILE_SUFFIXES:
            try:
                found = os.stat(self.path + suffix)
            except FileNotFoundError:
                if suffix in self._log_files:
                    gone.append(suffix)
                continue
            except OSError:
                continue  # cannot tell (the folder's permissions changed): looked at next time
            seen = self._log_files.setdefault(suffix, (found.st_dev, found.st_ino))
            if seen != (found.st_dev, found.st_ino):
                gone.append(suffix)
        if not gone:
            return False
        self._log_files_gone = _log_files_gone(self.path, gone)
        log.error("%s; copying the log into the database file now", self._log_files_gone)
        return True

    async def close(self) -> None:
        """Close every connection, each once the worker thread using it is done (the writer's
        transaction, a copy of the log, the reads under way): closing a connection another
        thread is using crashes the interpreter, and one left open would keep the write-ahead
        log beside the file. Reads and writes asked for afterwards raise StorageUnavailable."""
        async with self._write_lock:
            self._closed = True
            self._writer.close()
        async with self._checkpointing:
            self._checkpointer.close()
        async with self._all_reader_slots():
            for connection in self._readers:
                connection.close()

    @asynccontextmanager
    async def _all_reader_slots(self) -> AsyncIterator[None]:
        """Hold every reader's slot while the block runs: no read is under way meanwhile."""
        held = 0
        try:
            for _ in range(self._reader_count):
                await self._reader_slots.acquire()
                held += 1
            yield
        finally:
            for _ in range(held):
                self._reader_slots.release()

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise StorageUnavailable(f"sqlite:///{self.path} is closed: e2a is stopping")


def _take_the_lock(tx: Transaction) -> None:
    """Nothing: the write `ping` tries only to see whether it gets the lock on the file."""


def _read_on(connection: sqlite3.Connection, work: Work[T], snapshot: bool) -> T:
    """Run `work` on a reader `connection` (in a worker thread); in one snapshot if asked."""
    with _translate_errors():
        transaction = Transaction(connection, SQLITE, sqlite3.IntegrityError)
        if not snapshot:
            return work(transaction)
        connection.execute("BEGIN")
        try:
            return work(transaction)
        finally:
            connection.execute("COMMIT")


class _SqliteSnapshot(Snapshot):
    """Reads on one reader connection inside the read transaction `_snapshot` holds."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def read(self, work: Work[T]) -> T:
        """Run `work` in the held snapshot, in a worker thread."""
        return await trio.to_thread.run_sync(_read_on, self._connection, work, False)


def _open_snapshot_connection(path: str) -> sqlite3.Connection:
    """A new connection to `path` for one snapshot (`SqliteStorage._snapshot`)."""
    with _translate_errors():
        return _connect(path)


def _begin_read(connection: sqlite3.Connection) -> None:
    with _translate_errors():
        connection.execute("BEGIN")


def _end_read(connection: sqlite3.Connection) -> None:
    with _translate_errors():
        if connection.in_transaction:
            connection.execute("COMMIT")


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements, as SQLite itself reads them (so a trigger's
    body, with its own semicolons, stays one statement); comment lines are dropped."""
    statements: list[str] = []
    pending: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        pending.append(line)
        text = "\n".join(pending).strip()
        if text and sqlite3.complete_statement(text):
            statements.append(text.removesuffix(";").strip())
            pending = []
    unfinished = "\n".join(pending).strip()
    if unfinished:
        raise ValueError(f"migration ends inside a statement: {unfinished[:200]}")
    return statements
