"""`e2a serve` on SQLite whose disk takes no more while it runs (here a file-size limit, which
SQLite meets as a failing disk, SQLITE_IOERR_WRITE; or SQLite's own limit on the database's
size, which it meets as a full disk, SQLITE_FULL): mail is answered 452 4.3.1 (insufficient
system storage) and nothing of it is stored, the health and readiness checks say the database
takes no writes and what to check, and once the disk takes writes again both come up by
themselves and mail is stored again. SQLite's failures are known by their result codes, never
by their words. The metric `e2a_storage_up` follows the same verdict.

A PostgreSQL server whose disk is full (SQLSTATE 53100, raised here by a trigger, as filling a
real server's disk needs root) is answered and reported the same way."""

from __future__ import annotations

import logging
import os
import resource
import smtplib
import sqlite3
import subprocess
import time
from contextlib import closing
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage import sqlite as sqlite_backend
from e2a_gateway.storage.base import DiskFull, StorageUnavailable
from e2a_gateway.storage.sql import lifecycle
from e2a_gateway.storage.sql.lifecycle import DISK_REFUSAL_SECONDS
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.sqlite import SqliteStorage, disk_refused
from tests.conftest import make_settings
from tests.databases import fresh_postgres_database, query
from tests.delivery_support import create_agent, open_account
from tests.test_cli import E2A, free_port, run_e2a, wait_healthy, write_config
from tests.test_commit_failures import stored_subjects
from tests.test_metrics import samples_of, value

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

LIMIT_BYTES = 3 * 1024 * 1024
"""The most any file of the gateway may hold: room for the schema and a few messages."""
BODY = ("x" * 76 + "\r\n") * 8000
"""About 600 kB: the limit is met within a few messages."""


def smtp_reply(port: int, subject: str) -> str:
    """The reply to DATA of one message to bot@agents.test: `250`, or the refusal's code and
    enhanced status code (`452 4.3.1`)."""
    raw = f"From: a@example.org\r\nTo: bot@agents.test\r\nSubject: {subject}\r\n\r\n{BODY}"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        try:
            client.sendmail("a@example.org", ["bot@agents.test"], raw.encode())
        except smtplib.SMTPDataError as refused:
            return f"{refused.smtp_code} {refused.smtp_error.decode().split()[0]}"
    return "250"


def storage_up(url: str) -> float:
    """`e2a_storage_up` as `GET /metrics` reports it now."""
    scraped = httpx.get(f"{url}/metrics", timeout=10)
    assert scraped.status_code == 200, scraped.text
    return value(samples_of(scraped.text), "e2a_storage_up")


def test_a_full_disk_refuses_mail_shows_in_health_and_recovers(tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port, http_port)
    config.write_text(config.read_text() + "[metrics]\nenabled = true\n")
    boot = run_e2a("bootstrap", "--email", "me@example.com", "--config", str(config), cwd=tmp_path)
    assert boot.returncode == 0, boot.stderr
    headers = {"Authorization": f"Bearer {boot.stdout.strip()}"}

    def small_disk() -> None:
        # the soft limit only: lifting it later (freeing space) needs no privilege
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, resource.RLIM_INFINITY))

    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    process = subprocess.Popen(
        [*E2A, "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=small_disk,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(url, process)
        assert storage_up(url) == 1
        agent = {"slug": "bot", "agent_mode": "local"}
        created = httpx.post(f"{url}/api/v1/agents", headers=headers, json=agent, timeout=10)
        assert created.status_code == 201, created.text
        answers = []
        while answers[-1:] in ([], ["250"]):
            assert len(answers) < 40, "the file-size limit was never met"
            answers.append(smtp_reply(smtp_port, f"m{len(answers)}"))
        accepted = [f"m{number}" for number, code in enumerate(answers) if code == "250"]
        assert accepted and set(answers) == {"250", "452 4.3.1"}

        health = httpx.get(f"{url}/api/health", timeout=10)
        assert health.status_code == 503, health.text
        storage = health.json()["storage"]
        assert storage["state"] == "down"
        assert "is its disk full" in storage["detail"] and f"df -h {tmp_path}" in storage["detail"]
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json() == {"status": "not_ready", "reason": storage["detail"]}
        assert storage_up(url) == 0

        # Room again (the operator freed space): up within DISK_REFUSAL_SECONDS, without
        # waiting for mail to show that the disk takes writes.
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, unlimited)
        deadline = time.monotonic() + DISK_REFUSAL_SECONDS + 10
        while httpx.get(f"{url}/api/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the health check did not come up again"
            time.sleep(0.5)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        assert storage_up(url) == 1
        assert smtp_reply(smtp_port, "after") == "250"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    stderr = process.stderr.read() if process.stderr else ""
    assert f"df -h {tmp_path}" in stderr  # the log of the refused mail says what to check
    assert BODY[:200] not in stderr
    assert stored_subjects(f"sqlite:///{tmp_path / 'e2a.db'}") == [*accepted, "after"]


ROOMY_PAGE_COUNT = 1073741823
"""SQLite's default `max_page_count`: as many pages as a database file may have."""


async def test_a_database_out_of_pages_refuses_mail_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's own limit on the database's size, met as a full disk is (SQLITE_FULL): the
    # gateway knows it by that code, whatever the words of the error.
    database = f"sqlite:///{tmp_path / 'e2a.db'}"
    async with trio.open_nursery() as gateway_nursery:
        settings = make_settings(tmp_path, database={"url": database})
        running: RunningGateway = await gateway_nursery.start(
            partial(run_gateway, settings, resolver=FixtureResolver())
        )
        storage = running.gateway.storage
        assert isinstance(storage, SqliteStorage)
        url = running.addresses.http_url
        account = await open_account(running.gateway, url, "o@example.com")
        async with account.http:
            assert await create_agent(account, "bot") == "bot@agents.test"
        port = running.addresses.smtp_port
        assert await trio.to_thread.run_sync(smtp_reply, port, "before") == "250"

        async def pages_allowed(pages: int | None) -> None:
            """Let the database grow to `pages` more pages than it has (None: no limit)."""
            async with storage._write_lock:  # no write runs on the writer meanwhile
                (used,) = storage._writer.execute("PRAGMA page_count").fetchone()
                limit = ROOMY_PAGE_COUNT if pages is None else used + pages
                storage._writer.execute(f"PRAGMA max_page_count = {limit}")

        await pages_allowed(2)
        assert await trio.to_thread.run_sync(smtp_reply, port, "refused") == "452 4.3.1"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            health = await http.get("/api/health")
            assert health.status_code == 503, health.text
            detail = health.json()["storage"]["detail"]
            assert "is its disk full" in detail and f"df -h {tmp_path}" in detail

            await pages_allowed(None)  # the space freed
            monkeypatch.setattr(lifecycle, "DISK_REFUSAL_SECONDS", 0.0)  # probe at once
            assert (await http.get("/api/health")).status_code == 200
        assert await trio.to_thread.run_sync(smtp_reply, port, "after") == "250"
        gateway_nursery.cancel_scope.cancel()
    assert stored_subjects(database) == ["before", "after"]


async def test_a_full_disk_is_known_by_sqlites_code_not_its_words(tmp_path: Path) -> None:
    storage = SqliteStorage.open(str(tmp_path / "e2a.db"))
    try:

        def read_table(name: str) -> object:
            def work(tx: Transaction) -> object:
                return tx.all(f'SELECT * FROM "{name}"')

            return work

        # An error worded like a full disk, SQLITE_ERROR by its code: not a full disk.
        with pytest.raises(StorageUnavailable) as refused:
            await storage._write(read_table("disk is full"))
        assert not isinstance(refused.value, DiskFull)
        with pytest.raises(StorageUnavailable) as refused:
            await storage._write(read_table("disk I/O error"))
        assert not isinstance(refused.value, DiskFull)
        await storage.ping()  # the database takes writes: nothing was taken for a full disk
    finally:
        await storage.close()

    full = sqlite3.connect(":memory:")
    full.execute("CREATE TABLE filler (data BLOB)")
    full.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as really_full:
        full.execute("INSERT INTO filler VALUES (zeroblob(100000))")
    full.close()
    assert really_full.value.sqlite_errorcode == sqlite3.SQLITE_FULL
    assert disk_refused(really_full.value)
    # A file-size limit is met as a failing disk, by an extended code (SQLITE_IOERR_WRITE).
    failing = sqlite3.connect(tmp_path / "small.db", isolation_level=None)
    failing.execute("CREATE TABLE filler (data BLOB)")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, limits[1]))
    try:
        with pytest.raises(sqlite3.OperationalError) as really_failing:
            failing.execute("INSERT INTO filler VALUES (zeroblob(100000))")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        failing.close()
    assert really_failing.value.sqlite_errorcode == sqlite3.SQLITE_IOERR_WRITE
    assert disk_refused(really_failing.value)
    # An error that carries no code is known by SQLite's words.
    assert disk_refused(sqlite3.OperationalError("database or disk is full"))
    assert disk_refused(sqlite3.OperationalError("disk I/O error"))
    assert not disk_refused(sqlite3.OperationalError("database is locked"))


NO_ROOM = (
    """CREATE FUNCTION no_room() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'could not extend file "base/16384/16385": No space left on device'
            USING ERRCODE = 'disk_full', HINT = 'Check free disk space.';
    END $$""",
    "CREATE TRIGGER no_room BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION no_room()",
)
"""Every message refused as a PostgreSQL server whose disk is full refuses it (SQLSTATE 53100,
with the server's own words); dropping the trigger is freeing the space."""


async def test_a_full_postgresql_disk_is_named_in_smtp_health_and_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fresh_postgres_database() as database:
        async with trio.open_nursery() as gateway_nursery:
            settings = make_settings(
                tmp_path, database={"url": database}, metrics={"enabled": True}
            )
            running: RunningGateway = await gateway_nursery.start(
                partial(run_gateway, settings, resolver=FixtureResolver())
            )
            url = running.addresses.http_url
            account = await open_account(running.gateway, url, "o@example.com")
            async with account.http:
                assert await create_agent(account, "bot") == "bot@agents.test"
            port = running.addresses.smtp_port
            assert await trio.to_thread.run_sync(smtp_reply, port, "before") == "250"

            for statement in NO_ROOM:
                query(database, statement)
            with caplog.at_level(logging.WARNING, logger="e2a"):
                answer = await trio.to_thread.run_sync(smtp_reply, port, "refused")
            assert answer == "452 4.3.1"
            assert "No space left on device" in caplog.text and "df -h" in caplog.text
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                health = await http.get("/api/health")
                assert health.status_code == 503, health.text
                detail = health.json()["storage"]["detail"]
                assert "No space left on device" in detail and "df -h" in detail
                ready = await http.get("/readyz")
                assert ready.json() == {"status": "not_ready", "reason": detail}
                scraped = samples_of((await http.get("/metrics")).text)
                assert value(scraped, "e2a_storage_up") == 0

                query(database, "DROP TRIGGER no_room ON messages")  # the space freed
                monkeypatch.setattr(lifecycle, "DISK_REFUSAL_SECONDS", 0.0)  # probe at once
                assert (await http.get("/api/health")).status_code == 200
            assert await trio.to_thread.run_sync(smtp_reply, port, "after") == "250"
            assert stored_subjects(database) == ["before", "after"]
            gateway_nursery.cancel_scope.cancel()


async def test_postmaster_mail_while_another_process_holds_the_database_is_451_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first mail to postmaster creates its inbox, a write: with the file held by another
    program (a sqlite3 shell in a transaction) the sender hears 451 4.3.0 and the log says
    which file is locked and what to do, in a line, not a traceback."""
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_SECONDS", 0.2)
    path = tmp_path / "e2a.db"
    async with trio.open_nursery() as gateway_nursery:
        settings = make_settings(tmp_path, database={"url": f"sqlite:///{path}"})
        running: RunningGateway = await gateway_nursery.start(
            partial(run_gateway, settings, resolver=FixtureResolver())
        )
        await open_account(running.gateway, running.addresses.http_url, "o@example.com")
        port = running.addresses.smtp_port
        raw = b"From: a@example.org\r\nTo: postmaster@agents.test\r\nSubject: x\r\n\r\nhi\r\n"

        def send() -> str:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                try:
                    client.sendmail("a@example.org", ["postmaster@agents.test"], raw)
                except smtplib.SMTPDataError as refused:
                    return f"{refused.smtp_code} {refused.smtp_error.decode().split()[0]}"
            return "250"

        with closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            caplog.clear()
            assert await trio.to_thread.run_sync(send) == "451 4.3.0"
        gateway_nursery.cancel_scope.cancel()
    assert not [record for record in caplog.records if record.exc_info], caplog.text
    assert f"sqlite:///{path} is locked by another process" in caplog.text, caplog.text


LOCK_WAIT_SECONDS = 3.0
"""The busy timeout of the test below (10 s in service): long enough to tell a write that
waited it from one that failed fast."""
FAST_SECONDS = 1.5
"""How soon a write must be refused once the gateway knows the database is locked."""


@pytest.mark.parametrize("begin", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
async def test_a_database_locked_by_another_process_fails_fast_shows_in_readyz_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, begin: str
) -> None:
    """Another program holds the write lock on the database (a sqlite3 shell left inside a
    transaction): the first write waits the busy timeout and fails; from then on writes fail
    at once while the lock is held (SMTP 451 4.3.0, the API 503 in its error envelope),
    `/readyz` and `/api/health` say which file is locked and how to find the holder, and
    once it lets go both come up by themselves within a few seconds and mail is stored."""
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_SECONDS", LOCK_WAIT_SECONDS)
    path = tmp_path / "e2a.db"
    database = f"sqlite:///{path}"
    async with trio.open_nursery() as gateway_nursery:
        settings = make_settings(tmp_path, database={"url": database})
        running: RunningGateway = await gateway_nursery.start(
            partial(run_gateway, settings, resolver=FixtureResolver())
        )
        url = running.addresses.http_url
        port = running.addresses.smtp_port
        account = await open_account(running.gateway, url, "o@example.com")
        async with account.http:
            assert await create_agent(account, "bot") == "bot@agents.test"
            assert await trio.to_thread.run_sync(smtp_reply, port, "before") == "250"

            async def timed_reply(subject: str) -> tuple[str, float]:
                started = time.monotonic()
                answer = await trio.to_thread.run_sync(smtp_reply, port, subject)
                return answer, time.monotonic() - started

            with closing(sqlite3.connect(path, isolation_level=None)) as holder:
                holder.execute(begin)
                # the first write meets the lock: it waits the busy timeout, then fails
                answer, _ = await timed_reply("first")
                assert answer == "451 4.3.0"
                # known to be locked now: each further write fails fast
                for number in range(3):
                    answer, took = await timed_reply(f"locked{number}")
                    assert answer == "451 4.3.0"
                    assert took < FAST_SECONDS, f"451 came after {took:.1f} s"
                started = time.monotonic()
                with caplog.at_level(logging.ERROR, logger="e2a"):
                    made = await account.http.post(
                        "/api/v1/agents", json={"slug": "other", "agent_mode": "local"}
                    )
                assert time.monotonic() - started < FAST_SECONDS
                assert made.status_code == 503, made.text
                assert made.json()["error"]["code"] == "storage_unavailable"
                assert made.headers["Retry-After"] == "5"
                # the log's line names the request as a field of its own (a JSON log's key)
                (logged,) = [r for r in caplog.records if r.getMessage().startswith("storage un")]
                assert logged.__dict__["request_id"] == made.headers["X-Request-Id"]

                started = time.monotonic()
                ready = await account.http.get("/readyz")
                assert time.monotonic() - started < FAST_SECONDS
                assert ready.status_code == 503, ready.text
                reason = ready.json()["reason"]
                assert ready.json() == {"status": "not_ready", "reason": reason}
                assert f"sqlite:///{path} is locked by another process" in reason
                assert f"fuser -v {path}" in reason
                health = await account.http.get("/api/health")
                assert health.status_code == 503, health.text
                assert health.json()["storage"]["detail"] == reason
                # reads go on meanwhile (WAL: the holder does not block readers)
                listed = await account.http.get("/api/v1/agents")
                assert listed.status_code == 200, listed.text
                holder.execute("ROLLBACK")

            # let go: ready again within a few seconds, without mail to show it
            deadline = time.monotonic() + 5
            while (await account.http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "/readyz did not come up again"
                await trio.sleep(0.2)
            assert (await account.http.get("/api/health")).status_code == 200
            answer, took = await timed_reply("after")
            assert answer == "250"
            assert took < FAST_SECONDS
        gateway_nursery.cancel_scope.cancel()
    assert stored_subjects(database) == ["before", "after"]


async def test_a_write_recovers_from_a_released_lock_without_a_health_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the lock is given back the next write simply succeeds (nobody has to ask
    `/readyz` first), and the write after it waits the full busy timeout again if needed."""
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_SECONDS", LOCK_WAIT_SECONDS)
    path = tmp_path / "e2a.db"
    storage = SqliteStorage.open(str(path))
    try:
        await storage.migrate()
        with closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            started = trio.current_time()
            with pytest.raises(StorageUnavailable, match="locked by another process"):
                await storage._write(lifecycle._probe_disk)
            assert trio.current_time() - started >= LOCK_WAIT_SECONDS - 0.5
            started = trio.current_time()
            with pytest.raises(StorageUnavailable, match="locked by another process"):
                await storage._write(lifecycle._probe_disk)
            assert trio.current_time() - started < FAST_SECONDS
            with pytest.raises(StorageUnavailable, match=f"fuser -v {path}"):
                await storage.ping()
            holder.execute("ROLLBACK")
        await storage._write(lifecycle._probe_disk)  # taken at once
        await storage.ping()
        # a lock held again later is waited for in full before it is reported
        with closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")

            async def release_soon() -> None:
                await trio.sleep(1.0)
                holder.execute("ROLLBACK")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_soon)
                await storage._write(lifecycle._probe_disk)  # waits 1 s, then commits
    finally:
        await storage.close()
