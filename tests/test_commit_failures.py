"""Inbound mail whose commit fails, or whose commit's outcome is unknown: the sender hears 250
only for mail that is stored, and 451 only for mail that is not (its retry must not store it
twice); and the gateway goes on storing the mail that follows.

The failures are real: on SQLite a deferred foreign key that breaks at COMMIT; on PostgreSQL a
connection that drops right after the server committed (a proxy between the gateway and the
server swallows the answer to COMMIT and closes), or while the server is still committing (the
proxy closes as soon as COMMIT has gone to the server, which a deferred trigger keeps busy), or
one the server never hears of: the proxy swallows COMMIT and closes the gateway's side only, so
the server's side stays open and silent (a NAT or a network that died) and the transaction
stays idle in it, its locks held, until the server ends it."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.inbound import pipeline
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage import postgres
from tests.conftest import make_settings
from tests.databases import fresh_postgres_database, query
from tests.delivery_support import create_agent, open_account
from tests.test_read_only_database import smtp_answer

pytestmark = pytest.mark.backend_independent

FAILS_AT_COMMIT = """
CREATE TABLE commit_parent (id TEXT PRIMARY KEY);
CREATE TABLE commit_child (
    parent TEXT REFERENCES commit_parent (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TRIGGER commit_fails AFTER INSERT ON messages WHEN NEW.subject = 'doomed'
BEGIN
    INSERT INTO commit_child VALUES ('nowhere');
END;
"""
"""Mail with the subject `doomed` breaks a deferred foreign key: its transaction fails at
COMMIT, after every statement in it succeeded."""


def stored_subjects(database_url: str) -> list[str]:
    """The subjects of the inbound mail stored, in arrival order."""
    rows = query(
        database_url,
        "SELECT subject FROM messages_with_content WHERE direction = 'inbound' ORDER BY seq",
    )
    return [str(subject) for (subject,) in rows]


async def test_sqlite_a_commit_that_fails_stores_nothing_and_the_next_mail_is_stored(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "e2a.db"
    url = f"sqlite:///{path}"
    settings = make_settings(tmp_path, database={"url": url})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    account = await open_account(running.gateway, running.addresses.http_url, "o@example.com")
    async with account.http:
        agent = await create_agent(account, "bot")
    with closing(sqlite3.connect(path)) as db:
        db.executescript(FAILS_AT_COMMIT)
    port = running.addresses.smtp_port

    assert await trio.to_thread.run_sync(smtp_answer, port, agent, "before") == 250
    assert await trio.to_thread.run_sync(smtp_answer, port, agent, "doomed") == 451
    assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250
    assert await trio.to_thread.run_sync(smtp_answer, port, agent, "doomed") == 451
    assert await trio.to_thread.run_sync(smtp_answer, port, agent, "last") == 250
    assert stored_subjects(url) == ["before", "after", "last"]
    assert query(url, "SELECT count(*) FROM commit_child") == [(0,)]


SLOW_COMMIT_SECONDS = 1.0
COMMITS_SLOWLY = f"""
CREATE FUNCTION commit_slowly() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep({SLOW_COMMIT_SECONDS});
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER commit_slowly AFTER INSERT ON messages
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (starts_with(NEW.subject, 'slow'))
    EXECUTE FUNCTION commit_slowly();
"""
"""Mail whose subject starts with `slow` keeps the server busy at COMMIT for
SLOW_COMMIT_SECONDS (each copy) before it commits."""


def commit_slowly(database_url: str) -> None:
    """Install COMMITS_SLOWLY in the database of `database_url`."""
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(COMMITS_SLOWLY)


class CommitDropper:
    """A TCP proxy between the gateway and PostgreSQL that, once `doom`ed, lets the server
    commit the first transaction carrying `marker` and then drops that connection before its
    client hears the answer to COMMIT: the outcome of the commit is unknown to the gateway,
    though the mail is stored. Doomed `early`, it drops the connection as soon as COMMIT has
    gone to the server, which may still be committing when the gateway hears of the loss.
    Doomed `unheard`, it swallows that COMMIT and closes the gateway's side only: the server's
    side stays open and says nothing (until `close`), as when a NAT or the network between
    died, and the server sees a transaction idle, holding its locks."""

    COMMIT = b"COMMIT\x00"
    """COMMIT as it goes over the wire: the query sent, and the server's answer's tag."""

    def __init__(self, server: tuple[str, int]) -> None:
        self._server = server
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._early = False
        self._unheard = False
        self._silenced: list[socket.socket] = []
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def doom(self, marker: bytes, *, early: bool = False, unheard: bool = False) -> None:
        """Drop, after its commit (or, `early`, once its COMMIT is sent; or, `unheard`, in
        place of its COMMIT), the next transaction that carries `marker`."""
        with self._lock:
            self._marker, self._early, self._unheard = marker, early, unheard

    def close(self) -> None:
        self._listener.close()
        _close(*self._silenced)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._server)
            doomed = threading.Event()
            threading.Thread(
                target=self._to_server, args=(client, server, doomed), daemon=True
            ).start()
            threading.Thread(
                target=self._to_client, args=(server, client, doomed), daemon=True
            ).start()

    def _to_server(
        self, client: socket.socket, server: socket.socket, doomed: threading.Event
    ) -> None:
        carries = False
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._marker is not None and self._marker in data:
                        carries, self._marker = True, None
                if carries and self.COMMIT in data:
                    doomed.set()  # before the server can answer
                    if self._unheard:
                        self.dropped += 1
                        self._silenced.append(server)
                        _close(client)
                        return  # the server waits, in the transaction, for what never comes
                server.sendall(data)
                if doomed.is_set() and self._early:
                    self.dropped += 1
                    break  # the server has COMMIT to run; its client hears nothing more
        _close(client, server)

    def _to_client(
        self, server: socket.socket, client: socket.socket, doomed: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if doomed.is_set() and not self._early and self.COMMIT in data:
                    self.dropped += 1
                    break  # the server committed; its client never hears so
                client.sendall(data)
        _close(client, server)


def _close(*sockets: socket.socket) -> None:
    for each in sockets:
        with contextlib.suppress(OSError):
            each.shutdown(socket.SHUT_RDWR)
        each.close()


@contextmanager
def commit_dropper(database_url: str) -> Iterator[tuple[CommitDropper, str]]:
    """A `CommitDropper` in front of the server of `database_url`, and the URL through it."""
    parts = urlsplit(database_url)
    assert parts.hostname is not None and parts.port is not None
    dropper = CommitDropper((parts.hostname, parts.port))
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{dropper.port}")
    query_string = "&".join(filter(None, [parts.query, "sslmode=disable"]))
    try:
        yield dropper, urlunsplit((parts.scheme, netloc, parts.path, query_string, ""))
    finally:
        dropper.close()


@asynccontextmanager
async def agent_served_on(tmp_path: Path, url: str) -> AsyncIterator[tuple[int, str]]:
    """A gateway on the database at `url` (through the test's proxy), serving one agent of a
    new account: its SMTP port and the agent's address; stopped after the block."""
    async with trio.open_nursery() as gateway_nursery:
        settings = make_settings(tmp_path, database={"url": url})
        running: RunningGateway = await gateway_nursery.start(
            partial(run_gateway, settings, resolver=FixtureResolver())
        )
        account = await open_account(running.gateway, running.addresses.http_url, "o@example.com")
        async with account.http:
            agent = await create_agent(account, "bot")
        yield running.addresses.smtp_port, agent
        gateway_nursery.cancel_scope.cancel()


async def test_postgres_mail_committed_by_a_commit_whose_answer_was_lost_gets_250_once(
    tmp_path: Path,
) -> None:
    with fresh_postgres_database() as url, commit_dropper(url) as (dropper, proxied):
        async with agent_served_on(tmp_path, proxied) as (port, agent):
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "before") == 250
            dropper.doom(b"committed-unheard")
            answer = await trio.to_thread.run_sync(smtp_answer, port, agent, "committed-unheard")
            assert answer == 250 and dropper.dropped == 1
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250
            assert stored_subjects(url) == ["before", "committed-unheard", "after"]


async def test_postgres_mail_whose_lost_commit_the_server_is_still_running_gets_250_once(
    tmp_path: Path,
) -> None:
    with fresh_postgres_database() as url, commit_dropper(url) as (dropper, proxied):
        async with agent_served_on(tmp_path, proxied) as (port, agent):
            commit_slowly(url)

            dropper.doom(b"slow-unheard", early=True)
            answer = await trio.to_thread.run_sync(smtp_answer, port, agent, "slow-unheard")
            assert dropper.dropped == 1
            assert answer == 250  # stored once the server finished; a 451 would store it twice
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250
            assert stored_subjects(url) == ["slow-unheard", "after"]


async def test_postgres_mail_whose_lost_commit_outlasts_the_wait_gets_451(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "COMMIT_SETTLE_SECONDS", SLOW_COMMIT_SECONDS / 5)
    with fresh_postgres_database() as url, commit_dropper(url) as (dropper, proxied):
        async with agent_served_on(tmp_path, proxied) as (port, agent):
            commit_slowly(url)

            dropper.doom(b"slow-unsettled", early=True)
            answer = await trio.to_thread.run_sync(smtp_answer, port, agent, "slow-unsettled")
            assert answer == 451 and dropper.dropped == 1
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250


async def test_postgres_mail_whose_commit_the_server_never_heard_frees_its_agent_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server never hears of the gateway's loss: it ends the transaction left idle (and
    frees its agent's mail lock) well within the wait, so the DATA is checked, and answered
    451 because nothing was stored; the retry, and the agent's other mail, are stored at once
    and once."""
    monkeypatch.setattr(postgres, "IDLE_IN_TRANSACTION_SECONDS", SLOW_COMMIT_SECONDS)
    monkeypatch.setattr(pipeline, "COMMIT_SETTLE_SECONDS", SLOW_COMMIT_SECONDS * 5)
    with fresh_postgres_database() as url, commit_dropper(url) as (dropper, proxied):
        async with agent_served_on(tmp_path, proxied) as (port, agent):
            dropper.doom(b"never-heard", unheard=True)
            answer = await trio.to_thread.run_sync(smtp_answer, port, agent, "never-heard")
            assert answer == 451 and dropper.dropped == 1
            assert "could not check whether" not in caplog.text  # the wait did not run out
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "after") == 250
            assert await trio.to_thread.run_sync(smtp_answer, port, agent, "never-heard") == 250
            assert stored_subjects(url) == ["after", "never-heard"]
