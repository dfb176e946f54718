"""`e2a backup DEST`: a consistent copy of the SQLite database, made while `e2a serve` runs.

SQLite's online backup API (`sqlite3.Connection.backup`, the standard library: no `sqlite3`
program needed) copies the database from one read snapshot, held for the whole copy. In WAL
mode a reader never blocks the gateway's writer, and a snapshot held open keeps the backup from
starting over each time the gateway commits (which a backup without one does, and on a busy
gateway might never finish). The copy goes in steps of PAGES_PER_STEP pages with a short pause
between them, so a small machine's disk and CPU stay shared with the gateway. The gateway's own
hold on the file (`sqlite.sole_gateway`, a `flock`) is neither taken nor touched.

The copy is written to a temporary file in DEST's folder, switched to a single self-contained
file (rollback journal, no -wal to carry along; `e2a serve` turns WAL back on when it opens
it), checked (`PRAGMA integrity_check`, or `quick_check`), compared with the source's schema
version, synced, and only then given DEST's name: DEST is never half written. It is mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import quote

from e2a_gateway.storage.sqlite import (
    PRIVATE_MODE,
    SIDE_FILE_SUFFIXES,
    SQLITE_HEADER,
    disk_refused,
)

PAGES_PER_STEP = 1024
"""Pages copied per step of the backup: 4 MiB at SQLite's default page size."""
STEP_PAUSE_SECONDS = 0.005
"""The pause between two steps, leaving the disk to the gateway: about 1.3 s per GiB."""
BUSY_SLEEP_SECONDS = 0.05
"""How long a step waits before trying again when the database is locked (it rarely is in WAL
mode: only while a checkpoint resets the log)."""
BUSY_TIMEOUT_SECONDS = 10.0
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


class BackupError(Exception):
    """A backup that could not be made, in one line saying what to do; DEST is left as it was."""


@dataclass(frozen=True)
class Backup:
    """A backup made: where, how large (bytes), of which schema version, in how long."""

    path: str
    size: int
    schema_version: int
    seconds: float

    def line(self) -> str:
        """The one line `e2a backup` prints."""
        return (
            f"{self.path}: {self.size} bytes, schema version {self.schema_version}, "
            f"{self.seconds:.2f} s"
        )


def back_up(source: str, dest: str, *, force: bool = False, quick: bool = False) -> Backup:
    """Copy the SQLite database at `source` (a path, as in database.url) to `dest`, which must
    not exist unless `force`; its folder must. BackupError, with `dest` untouched, if not."""
    started = time.monotonic()
    dest = os.path.abspath(dest)
    folder = os.path.dirname(dest)
    _check_source(source)
    _check_dest(source, dest, folder, force)
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=folder
        )
    except PermissionError:
        raise BackupError(
            f"cannot write {dest}: this user cannot write to the folder {folder} — run e2a "
            "backup as the user e2a serve runs as, or give it a folder it may write"
        ) from None
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise BackupError(_dest_failure(dest, folder, exc)) from None
        raise BackupError(f"cannot write {dest}: {exc.strerror or exc}") from None
    os.close(descriptor)
    try:
        os.chmod(temporary, PRIVATE_MODE)
        version = _copy(source, temporary, dest, folder, quick)
        _sync(temporary)
        _put_in_place(temporary, dest, force)
        _sync(folder)
    except OSError as exc:
        _remove(temporary)
        if exc.errno in DISK_ERRNOS:
            raise BackupError(_dest_failure(dest, folder, exc)) from exc
        raise BackupError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove(temporary)
        raise
    return Backup(dest, os.stat(dest).st_size, version, time.monotonic() - started)


def _remove(temporary: str) -> None:
    """Remove the temporary copy and whatever SQLite left beside it."""
    for leftover in (temporary, *(temporary + suffix for suffix in SIDE_FILE_SUFFIXES)):
        with contextlib.suppress(OSError):
            os.unlink(leftover)


def _check_source(source: str) -> None:
    url = f"sqlite:///{source}"
    if source == ":memory:":
        raise BackupError(f"database.url: {url} is in memory: there is no file to back up")
    try:
        with open(source, "rb") as existing:
            header = existing.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise BackupError(
            f"database.url: {url} does not exist — nothing to back up (is this the gateway's "
            "config? pass it with --config, as to e2a serve)"
        ) from None
    except IsADirectoryError:
        raise BackupError(f"database.url: {url} is a folder, not the database file") from None
    except OSError as exc:
        raise BackupError(
            f"database.url: cannot read {url}: {exc.strerror} — run e2a backup as the user "
            "e2a serve runs as"
        ) from None
    if header != SQLITE_HEADER:
        raise BackupError(f"database.url: {url} is not an SQLite database: nothing to back up")


def _check_dest(source: str, dest: str, folder: str, force: bool) -> None:
    if not os.path.isdir(folder):
        raise BackupError(
            f"cannot write {dest}: the folder {folder} does not exist — create it first "
            f"(install -d -m 700 {folder})"
        )
    if os.path.isdir(dest):
        raise BackupError(
            f"{dest} is a folder — name the backup file in it, e.g. "
            f"{os.path.join(dest, 'e2a-$(date +%F).db')}"
        )
    if os.path.lexists(dest):
        if not force:
            raise BackupError(f"{dest} exists: not replacing it (pass --force to replace it)")
        with contextlib.suppress(OSError):
            if os.path.samefile(source, dest):
                raise BackupError(f"{dest} is the gateway's database itself")
    for suffix in SIDE_FILE_SUFFIXES:
        if os.path.lexists(dest + suffix):
            raise BackupError(
                f"{dest + suffix} exists: SQLite would read it into the copy named {dest} — "
                "remove it if no program has that database open, or choose another DEST"
            )


def _copy(source: str, temporary: str, dest: str, folder: str, quick: bool) -> int:
    """Copy `source` into `temporary` from one snapshot and check it; the schema version."""
    url = f"sqlite:///{source}"
    try:
        # mode=rw: never creates a database that is not there.
        origin = sqlite3.connect(
            f"file:{quote(source)}?mode=rw",
            uri=True,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_SECONDS,
        )
    except sqlite3.Error as exc:
        raise BackupError(f"database.url: cannot open {url}: {exc}") from exc
    try:
        try:
            origin.execute("BEGIN")
            version = _schema_version(origin, url)  # takes the snapshot the backup copies
        except sqlite3.Error as exc:
            raise BackupError(f"database.url: cannot read {url}: {exc}") from exc
        copy = sqlite3.connect(temporary, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            try:
                origin.backup(copy, pages=PAGES_PER_STEP, progress=_pause, sleep=BUSY_SLEEP_SECONDS)
                origin.execute("COMMIT")
                # The backup copies the source's WAL mode; one file in rollback mode instead.
                copy.execute("PRAGMA journal_mode = DELETE").fetchall()
            except sqlite3.Error as exc:
                if disk_refused(exc):
                    raise BackupError(_dest_failure(dest, folder, exc)) from exc
                raise BackupError(f"cannot copy {url} to {dest}: {exc}") from exc
            check = "quick_check" if quick else "integrity_check"
            problems = [row[0] for row in copy.execute(f"PRAGMA {check}").fetchall()]
            if problems != ["ok"]:
                raise BackupError(
                    f"the copy of {url} failed PRAGMA {check} ({len(problems)} problems, the "
                    f"first: {problems[0]}): {dest} not written — the database itself may be "
                    "damaged; stop e2a serve and see docs/deploy.md, Backups"
                )
            copied = _schema_version(copy, dest)
            if copied != version:
                raise BackupError(
                    f"the copy has schema version {copied}, the database {version}: {dest} not "
                    "written"
                )
        finally:
            copy.close()
    finally:
        origin.close()
    return version


def _pause(status: int, remaining: int, total: int) -> None:
    """Between two steps of the backup, leave the disk to the gateway for a moment."""
    if remaining:
        time.sleep(STEP_PAUSE_SECONDS)


def _schema_version(connection: sqlite3.Connection, name: str) -> int:
    try:
        row = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        row = (None,)
    if row[0] is None:
        raise BackupError(
            f"{name} holds no e2a schema (no migration recorded): not an e2a database, or "
            "one e2a serve or e2a migrate never set up"
        )
    return int(row[0])


def _sync(path: str) -> None:
    """Flush `path` (a file or a folder, for the names in it) to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _put_in_place(temporary: str, dest: str, force: bool) -> None:
    """Give the finished copy DEST's name in one step: without `force`, never over a DEST
    that appeared meanwhile (a hard link fails if the name is taken; a filesystem without
    hard links, such as FAT on a USB stick, gets a last look and a rename)."""
    if force:
        os.replace(temporary, dest)
        return
    try:
        os.link(temporary, dest)
    except FileExistsError:
        raise BackupError(f"{dest} exists: not replacing it (pass --force to replace it)") from None
    except OSError:
        if os.path.lexists(dest):
            raise BackupError(
                f"{dest} exists: not replacing it (pass --force to replace it)"
            ) from None
        os.replace(temporary, dest)
        return
    os.unlink(temporary)


def _dest_failure(dest: str, folder: str, error: Exception) -> str:
    words = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return (
        f"cannot write {dest}: {words} — is the disk of {folder} full (`df -h {folder}`) or "
        f"failing (`dmesg`)? {dest} was not written"
    )
