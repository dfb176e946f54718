"""Inbound mail whose commit fails, or whose commit's outcome is unknown: the sender hears 250
only for mail that is stored, and 451 only for mail that is not (its retry must not store it
twice); and the gateway goes on storing the mail that follows.

The failures are real: on SQLite a deferred foreign key that breaks at COMMIT; on PostgreSQL a
connection that drops right after the server committed (a proxy between the gateway and the
server swallows the answer to COMMIT and closes)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import make_settings
from tests.databases import query
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
