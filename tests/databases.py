"""The databases tests run on: a SQLite file per test, or a fresh database on the throwaway
PostgreSQL cluster that `make pg` and CI start (`E2A_TEST_POSTGRES_URL`).

`E2A_TEST_BACKEND=postgres` puts every gateway the suite starts (`make_settings`) on its own
new PostgreSQL database, dropped when its test ends; the default is SQLite. The storage tests
run on both backends in either case.

A gateway's database is a copy of one migrated once per run, by the gateway's own `migrate`
in a child process: on PostgreSQL with `CREATE DATABASE … TEMPLATE`, on SQLite a copy of the
file. Migrating each of them took about 0.1 s on PostgreSQL and 0.2 s on SQLite (every step
synced to disk), which the suite's thousand-odd gateways paid in minutes. The gateway still runs
its migrations on start and finds nothing left to do; the storage tests
(`fresh_postgres_database`, their SQLite files) and tests/test_replicas.py migrate empty
databases themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from e2a_gateway.storage.sqlite import _connect as sqlite_connect

POSTGRES_URL_VAR = "E2A_TEST_POSTGRES_URL"
BACKEND_VAR = "E2A_TEST_BACKEND"
BACKENDS = ("sqlite", "postgres")

_created: list[str] = []
"""Databases made for gateways by `gateway_database_url` and not dropped yet."""
_templates: list[str] = []
"""The migrated database gateways' databases are copied from, once made (`_migrated_template`)."""
_sqlite_templates: list[Path] = []
"""The migrated SQLite file gateways' files are copied from, once made."""
_MIGRATE = """
import sys, trio
from e2a_gateway.storage import open_storage

async def migrate(url):
    storage = open_storage(url)
    try:
        await storage.migrate()
    finally:
        await storage.close()

trio.run(migrate, sys.argv[1])
"""


def postgres_url() -> str | None:
    """The throwaway PostgreSQL cluster's URL when `make pg`/CI provides one."""
    return os.environ.get(POSTGRES_URL_VAR) or None


INDEPENDENT_MARK = "backend_independent"
"""The mark of a test module whose tests start no gateway on the suite's backend: the pass
with `--backend-dependent-only` (`make test`'s second, on PostgreSQL) leaves it out."""
_running_independent: list[str] = []
"""The node id of the test under way when it carries INDEPENDENT_MARK (set by conftest)."""


def running_test(nodeid: str | None) -> None:
    """Note the test under way, when it carries INDEPENDENT_MARK (None: none of those)."""
    _running_independent[:] = [] if nodeid is None else [nodeid]


def gateway_backend() -> str:
    """The backend of the gateways the suite starts: `E2A_TEST_BACKEND`, SQLite by default.

    Asked for by a test marked INDEPENDENT_MARK, it fails that test: its module does depend on
    the backend, and the mark would keep it out of the PostgreSQL pass."""
    if _running_independent:
        pytest.fail(
            f"{_running_independent[0]} starts a gateway on the suite's backend, but its module "
            f"is marked {INDEPENDENT_MARK}: remove the mark so the PostgreSQL pass runs it",
            pytrace=False,
        )
    backend = os.environ.get(BACKEND_VAR) or "sqlite"
    if backend not in BACKENDS:
        raise pytest.UsageError(f"{BACKEND_VAR}={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "postgres" and postgres_url() is None:
        raise pytest.UsageError(
            f"{BACKEND_VAR}=postgres needs {POSTGRES_URL_VAR}=postgresql://… (a throwaway "
            "cluster): `make pg ARGS=tests` starts one"
        )
    return backend


def reported_backend() -> str:
    """The backend name the gateways under test report (`/api/health`, `/metrics`)."""
    return {"sqlite": "sqlite", "postgres": "postgresql"}[gateway_backend()]


def require_postgres() -> str:
    """The cluster URL from `make pg`/CI, or skip with a reason that says how to provide it."""
    found = postgres_url()
    if found is None:
        pytest.skip(
            f"PostgreSQL half skipped: set {POSTGRES_URL_VAR}=postgresql://… (a throwaway "
            "database) to run it — `make pg` starts one and runs these tests"
        )
    return found


def _with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _create_database(
    cluster: str, template: str | None = None, icu_locale: str | None = None
) -> str:
    import psycopg

    name = f"e2a_t_{uuid.uuid4().hex[:16]}"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    if icu_locale is not None:
        copy_of = f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}' LOCALE 'C'"
    with psycopg.connect(cluster, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy_of}')
    return name


def _migrated_template(cluster: str) -> str:
    """A database migrated by e2a's own `migrate` (in a child process, which leaves no
    connection to it open, as a template requires), made on first use."""
    if not _templates:
        name = _create_database(cluster)
        done = subprocess.run(
            [sys.executable, "-c", _MIGRATE, _with_database(cluster, name)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            _drop_database(cluster, name)
            raise RuntimeError(f"migrating the template database failed:\n{done.stderr}")
        _templates.append(name)
    return _templates[0]


def _migrated_sqlite_template() -> Path:
    """A SQLite file migrated by e2a's own `migrate` in a child process (whose closing leaves
    the whole database in the file, no write-ahead log beside it), made on first use."""
    if not _sqlite_templates:
        path = Path(tempfile.mkdtemp(prefix="e2a-template-")) / "e2a.db"
        done = subprocess.run(
            [sys.executable, "-c", _MIGRATE, f"sqlite:///{path}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        log = Path(f"{path}-wal")
        if done.returncode != 0 or (log.exists() and log.stat().st_size > 0):
            shutil.rmtree(path.parent, ignore_errors=True)
            raise RuntimeError(f"migrating the template SQLite file failed:\n{done.stderr}")
        _sqlite_templates.append(path)
    return _sqlite_templates[0]


def _drop_database(cluster: str, name: str) -> None:
    import psycopg

    with psycopg.connect(cluster, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_postgres_database(icu_locale: str | None = None) -> Iterator[str]:
    """A new, empty database on the test cluster for one test, dropped afterwards; in the
    cluster's C locale, or ordering and lowercasing text as ICU's `icu_locale` does (as a
    database made in a locale such as en_US.UTF-8 does)."""
    cluster = require_postgres()
    name = _create_database(cluster, icu_locale=icu_locale)
    try:
        yield _with_database(cluster, name)
    finally:
        _drop_database(cluster, name)


def gateway_database_url(tmp_path: Path) -> str:
    """The database of a gateway under test: a SQLite file in `tmp_path` (a copy of the
    migrated template unless one is there already), or with
    `E2A_TEST_BACKEND=postgres` a new database, dropped by `drop_gateway_databases`."""
    if gateway_backend() == "sqlite":
        path = tmp_path / "e2a.db"
        if not path.exists():  # a gateway started again on the same path keeps its data
            shutil.copyfile(_migrated_sqlite_template(), path)
            path.chmod(0o600)  # as the gateway makes its database
        return f"sqlite:///{path}"
    cluster = require_postgres()
    name = _create_database(cluster, template=_migrated_template(cluster))
    _created.append(name)
    return _with_database(cluster, name)


def databases_made() -> int:
    """How many databases `gateway_database_url` has made and not dropped yet."""
    return len(_created)


def drop_gateway_databases(keep: int = 0) -> None:
    """Drop the databases `gateway_database_url` made, but the first `keep` of them (those of
    wider-scoped fixtures still in use)."""
    cluster = postgres_url()
    while len(_created) > keep and cluster is not None:
        _drop_database(cluster, _created.pop())


def drop_template() -> None:
    """Drop the migrated templates, once no gateway database is left to copy them."""
    while _sqlite_templates:
        shutil.rmtree(_sqlite_templates.pop().parent, ignore_errors=True)
    cluster = postgres_url()
    while _templates and cluster is not None:
        _drop_database(cluster, _templates.pop())


def run_out_leases(database_url: str, seconds: float) -> None:
    """Let `seconds` pass for the leases held on a gateway's PostgreSQL database (on jobs and on
    `/v1` webhook deliveries) by moving them back: leases there are timed by the database's
    clock, which a test's fake clock does not move. Nothing on SQLite, where the time a test
    passes to the claims times them."""
    if database_url.startswith("sqlite:///"):
        return
    for table in ("jobs", "webhook_deliveries"):
        query(
            database_url,
            f"UPDATE {table} SET locked_until = locked_until - ? WHERE locked_until IS NOT NULL",
            (seconds,),
        )


def age_rate_limits(database_url: str, seconds: float) -> None:
    """Let `seconds` pass for the requests counted against rate limits on a gateway's PostgreSQL
    database by moving them back: they are dated, and their windows judged, by the database's
    clock, which a test's made-up times do not move. Nothing on SQLite, where the time a test
    passes to the weighing dates them."""
    if database_url.startswith("sqlite:///"):
        return
    query(
        database_url,
        "UPDATE rate_limit_hits SET at = at - ?, expires_at = expires_at - ?",
        (seconds, seconds),
    )


def query(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query (`?` placeholders) run straight on a gateway's database, either
    backend: for tests that check what was stored, beneath the API."""
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db, db:
            return [tuple(row) for row in db.execute(sql, params).fetchall()]
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as db:
        cursor = db.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


@contextmanager
def traced_statements(storage: Any) -> Iterator[list[str]]:
    """While the block runs, the statements (SELECT, DELETE, UPDATE, WITH) a SQLite storage's
    connections run, their parameters written in: the list is filled as they run."""
    statements: list[str] = []
    connections = (storage._writer, *storage._readers)
    for connection in connections:
        connection.set_trace_callback(statements.append)
    reads: list[str] = []
    try:
        yield reads
    finally:
        for connection in connections:
            connection.set_trace_callback(None)
        reads.extend(
            sql
            for sql in statements
            if sql.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE", "WITH"))
        )


def query_plan(path: Path, sql: str) -> str:
    """SQLite's plan for `sql` on the database at `path`, its steps joined by spaces (the
    connection made as the gateway's are)."""
    with closing(sqlite_connect(str(path))) as db:
        return " ".join(str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))


def full_scans(
    path: Path, statements: list[str], partial_indexes: frozenset[str] = frozenset()
) -> list[tuple[str, list[str]]]:
    """The statements whose plan on the SQLite database at `path` reads a whole table (or a
    whole index but one of `partial_indexes`, which hold only the rows looked for), with
    their plans. The connection is made as the gateway's are (foreign keys on, so that a
    statement's plan holds its cascades too, and the gateway's SQL functions known)."""
    found = []
    with closing(sqlite_connect(str(path))) as db:
        for sql in statements:
            plan = [str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
            for step in plan:
                scan = re.fullmatch(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", step)
                if scan is not None and scan.group(2) not in partial_indexes:
                    found.append((sql, plan))
                    break
    return found


@contextmanager
def table_locked(database_url: str, table: str) -> Iterator[None]:
    """Fail the gateway's statements on `table` while the block runs, as a busy or failing
    database does: on SQLite another connection holds the database exclusively (a write gives
    up after its busy timeout, 10 s); on PostgreSQL another session holds the table locked and
    each statement waiting for it is cancelled."""
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            yield
            locker.rollback()
        return
    import psycopg

    stop = threading.Event()

    def cancel_waiters() -> None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            while not stop.wait(0.02):
                admin.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )

    with psycopg.connect(database_url) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # type: ignore[arg-type]
        canceller = threading.Thread(target=cancel_waiters)
        canceller.start()
        try:
            yield
        finally:
            stop.set()
            canceller.join()
            locker.rollback()
