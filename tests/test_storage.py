"""The Storage protocol, tested against every backend available (SQLite always)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import stat
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import ANY
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest
import trio

import e2a_gateway.storage.postgres
import e2a_gateway.storage.sqlite
from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import run_gateway
from e2a_gateway.clock import format_timestamp, parse_timestamp
from e2a_gateway.events import derived_event_id, new_event
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.rate_windows import RateCount, RateLimit
from e2a_gateway.storage import open_storage
from e2a_gateway.storage.base import (
    Agent,
    AgentChanges,
    AgentPurge,
    AlreadyExists,
    ApiKey,
    ApprovalAnswer,
    AttachmentInfo,
    BouncedRecipient,
    ClaimLost,
    ConversationClaim,
    Domain,
    DomainNotHeld,
    EmailTemplate,
    EventFilter,
    FiledMessage,
    FinishedAttempt,
    HeldKey,
    IdempotencyClaim,
    InUse,
    Job,
    JobQueueState,
    LastOne,
    LimitReached,
    MessageFilters,
    NotPending,
    OutboundEdits,
    OutboundMessage,
    OutboundSummary,
    RecipientsSuppressed,
    ReplyToken,
    SendAttempt,
    SigningSecret,
    StatusFilter,
    Storage,
    StorageUnavailable,
    SubscriberAttempt,
    TemplateChanges,
    Webhook,
    WebhookAttempt,
    jobs_per_kind,
)
from e2a_gateway.storage.group_commit import GroupCommitter
from e2a_gateway.storage.migrations import Migration, load_migrations
from e2a_gateway.storage.new_inbound import ByContent, NewInboundMessage
from e2a_gateway.storage.sql.messages import _inbox_query
from e2a_gateway.storage.sql.transaction import Transaction
from tests.conftest import make_settings
from tests.databases import (
    age_rate_limits,
    fresh_postgres_database,
    query,
    query_plan,
    traced_statements,
)
from tests.delivery_support import wait_until
from tests.export_support import whole_export
from tests.test_signing_identity import claim_for

pytestmark = pytest.mark.backend_independent

NOW = "2026-01-01T00:00:00Z"


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database URL of each backend, empty for each test (a sync fixture, so a skip keeps
    its reason): a SQLite file in the test's directory, or a new database on the cluster
    (`postgres-en-US`, which a test asks for with `ANY_COLLATION`: one that orders and
    lowercases text as the en_US locale does)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    icu_locale = "en-US" if request.param == "postgres-en-US" else None
    with fresh_postgres_database(icu_locale) as url:
        yield url


ANY_COLLATION = pytest.mark.parametrize(
    "storage_url", ["sqlite", "postgres", "postgres-en-US"], indirect=True
)
"""Run a test on each backend and on a PostgreSQL database in a locale other than C."""


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database for the tests of that backend alone."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    """A migrated, empty storage of each backend."""
    store = open_storage(storage_url)
    await store.migrate()
    yield store
    await store.close()


async def add_user(storage: Storage, email: str = "owner@example.com") -> str:
    user, _ = await storage.ensure_user(f"usr_{email.split('@')[0]}", email, NOW)
    return user.id


def make_webhook(
    user_id: str, name: str = "1", url: str = "https://hooks.example.com/x"
) -> Webhook:
    """An enabled webhook `wh_<name>` of the user's for `email.received`, on no filters."""
    return Webhook(
        id=f"wh_{name}",
        user_id=user_id,
        url=url,
        description="",
        events=["email.received"],
        agent_emails=[],
        conversation_ids=[],
        enabled=True,
        seed="seed",
        created_at=NOW,
    )


def make_agent(user_id: str, email: str, mode: str = "local") -> Agent:
    return Agent(
        email=email,
        user_id=user_id,
        domain=email.split("@")[1],
        name=email.split("@")[0],
        webhook_url="https://hooks.example.com/x" if mode == "cloud" else None,
        agent_mode=mode,  # type: ignore[arg-type]
        hitl_enabled=False,
        hitl_ttl_seconds=604800,
        hitl_expiration_action="reject",
        created_at=NOW,
    )


def make_message(
    message_id: str, agent_email: str, raw: bytes = b"Subject: hi\r\n\r\nbody\r\n"
) -> NewInboundMessage:
    return NewInboundMessage(
        id=message_id,
        agent_email=agent_email,
        envelope_from="sender@example.org",
        from_addr="sender@example.org",
        reply_to=None,
        to=[agent_email],
        cc=[],
        subject="hi",
        conversation_id=None,
        rfc_message_id=f"<{message_id}@example.org>",
        raw_message=raw,
        auth_headers={},
        authentication_results={},
        received_at=NOW,
    )


def test_a_copy_for_another_agent_is_the_message_with_its_own_fields_only() -> None:
    """`copy_for` gives what the constructor gives with the copy's own fields, leaves the
    first copy as it was, takes none of the shared fields, and hands on the content key."""
    first = make_message("msg_first", "a@agents.test")
    own = {
        "id": "msg_second",
        "agent_email": "b@agents.test",
        "conversation_id": "cnv_1",
        "auth_headers": {"X-E2A-Auth-Message-Id": "msg_second"},
        "hold_expires_at": 99.0,
        "flag_reason": "not on the allowlist",
        "blocked": False,
    }
    copy = first.copy_for(**own)
    assert copy == replace(first, **own)
    assert (copy.raw_message is first.raw_message) and not copy.delivered
    # the content key is worked out once and handed on; it tells copies by their shared fields
    assert copy.content_key is first.content_key
    assert replace(first, **own).content_key == first.content_key
    assert replace(first, subject="other").content_key != first.content_key
    assert first == make_message("msg_first", "a@agents.test")
    with pytest.raises(TypeError, match="subject"):
        first.copy_for(subject="changed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.id = "msg_third"  # type: ignore[misc]


def test_values_by_content_are_shared_by_equal_content_whatever_the_object() -> None:
    """`ByContent`: a copy made by `copy_for`, an equal message made apart and the first share
    one value; another content gets its own; values come in the order contents were met."""
    first = make_message("msg_first", "a@agents.test")
    other = replace(first, id="msg_other", subject="other")
    table: ByContent[list[str]] = ByContent(list)
    for message in (
        first,
        other,
        first.copy_for(id="msg_copy", agent_email="b@agents.test"),
        replace(first, id="msg_apart", agent_email="c@agents.test"),
    ):
        table.of(message).append(message.id)
    assert table.values() == [["msg_first", "msg_copy", "msg_apart"], ["msg_other"]]


async def test_migrations_are_numbered_and_idempotent(storage: Storage) -> None:
    assert [m.version for m in load_migrations("sqlite")] == list(
        range(1, len(load_migrations("sqlite")) + 1)
    )
    assert await storage.migrate() == []


_SQLITE_FOREIGN_KEYS = (
    'SELECT t.name, f.id, f."from", f."table" FROM sqlite_master t '
    "JOIN pragma_foreign_key_list(t.name) f WHERE t.type = 'table' ORDER BY t.name, f.id, f.seq"
)
_SQLITE_INDEXES = (
    "SELECT t.name, l.name, c.name, s.sql FROM sqlite_master t "
    "JOIN pragma_index_list(t.name) l JOIN pragma_index_info(l.name) c "
    "LEFT JOIN sqlite_master s ON s.name = l.name AND l.partial "
    "WHERE t.type = 'table' ORDER BY t.name, l.name, c.seqno"
)
_POSTGRES_FOREIGN_KEYS = (
    "SELECT c.conrelid::regclass::text, c.conname, a.attname, c.confrelid::regclass::text "
    "FROM pg_constraint c CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, position) "
    "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
    "WHERE c.contype = 'f' "
    "AND c.connamespace = current_schema()::regnamespace ORDER BY 1, 2, k.position"
)
_POSTGRES_INDEXES = (  # key columns only (not INCLUDE); an expression's column has no name
    "SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, a.attname, "
    "pg_get_expr(i.indpred, i.indrelid) FROM pg_index i "
    "JOIN pg_class t ON t.oid = i.indrelid "
    "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, position) "
    "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE t.relnamespace = current_schema()::regnamespace AND k.position <= i.indnkeyatts "
    "ORDER BY 1, 2, k.position"
)


def _foreign_keys(url: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Every foreign key of the schema at `url`: (table, its columns in order, parent)."""
    sql = _SQLITE_FOREIGN_KEYS if url.startswith("sqlite:") else _POSTGRES_FOREIGN_KEYS
    keys: dict[tuple[str, Any], tuple[list[str], str]] = {}
    for table, key, column, parent in query(url, sql):
        keys.setdefault((table, key), ([], parent))[0].append(column)
    return [(table, tuple(columns), parent) for (table, _), (columns, parent) in keys.items()]


def _indexes(url: str) -> dict[str, list[tuple[tuple[str | None, ...], str | None]]]:
    """Each table's indexes at `url`: (key columns in order, the WHERE of a partial index)."""
    sql = _SQLITE_INDEXES if url.startswith("sqlite:") else _POSTGRES_INDEXES
    found: dict[tuple[str, str], tuple[list[str | None], str | None]] = {}
    for table, index, column, definition in query(url, sql):
        where = definition
        if where is not None and url.startswith("sqlite:"):
            where = re.split(r"\bWHERE\b", where, maxsplit=1, flags=re.IGNORECASE)[1]
        found.setdefault((table, index), ([], where))[0].append(column)
    tables: dict[str, list[tuple[tuple[str | None, ...], str | None]]] = {}
    for (table, _), (columns, where) in found.items():
        tables.setdefault(table, []).append((tuple(columns), where))
    return tables


def _serves_lookups_by(
    columns: tuple[str, ...], index: tuple[tuple[str | None, ...], str | None]
) -> bool:
    """Whether the index finds the rows naming a parent row by `columns`: they lead its key
    in that order, and it holds every row, or every row whose `columns` are all set (a
    lookup `column = value` never matches NULL, and both databases use such an index for
    it)."""
    leading, where = index
    if leading[: len(columns)] != columns:
        return False
    if where is None:
        return True
    words = " ".join(where.replace("(", " ").replace(")", " ").lower().split())
    return words == " and ".join(f"{column} is not null" for column in columns)


UNINDEXED_BY_CHOICE = {"messages(user_id) -> users"}
"""Foreign keys left without an index on purpose. `messages.user_id`: an index by user would
cost storing inbound mail an entry per copy (the fan-out path docs/performance-history.md
measures), for the one statement that needs it, deleting an account's row, which reads
`messages` once after its mail went agent by agent (4.3 ms at 20,000 messages of other
accounts on PostgreSQL, 44 ms at 200,000; docs/architecture.md)."""


async def test_every_foreign_key_is_served_by_an_index_of_its_table(
    storage: Storage, storage_url: str
) -> None:
    """Deleting or changing a parent row looks up the rows naming it in each table whose
    foreign key points at it (to cascade, or to refuse). Neither database indexes a foreign
    key's columns by itself: without an index led by them, in their order, deleting a row
    that is named by few walks every row of that table. Every key has one, but those left
    without by choice (`UNINDEXED_BY_CHOICE`)."""
    indexes = _indexes(storage_url)
    keys = _foreign_keys(storage_url)
    assert len(keys) >= 20, keys
    unserved = {
        f"{table}({', '.join(columns)}) -> {parent}"
        for table, columns, parent in keys
        if not any(_serves_lookups_by(columns, index) for index in indexes.get(table, []))
    }
    assert unserved == UNINDEXED_BY_CHOICE, (
        "foreign keys no index of their table is led by: " + "; ".join(sorted(unserved))
    )


async def test_sqlite_records_applied_versions(tmp_path: Path) -> None:
    store = open_storage(f"sqlite:///{tmp_path / 'v.db'}")
    applied = await store.migrate()
    await store.close()
    assert applied == [m.version for m in load_migrations("sqlite")]
    with sqlite3.connect(tmp_path / "v.db") as db:
        recorded = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert recorded == applied


async def test_sqlite_migrations_run_once_when_two_processes_migrate_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`e2a migrate` run while `e2a serve` starts on the same file: a process that read the
    record of applied steps before the other applied them skips each step the other applied
    meanwhile, instead of failing on it."""
    url = f"sqlite:///{tmp_path / 'both.db'}"
    other, late = open_storage(url), open_storage(url)
    try:
        everything = await other.migrate()
        read_before_the_other: set[int] = set()
        monkeypatch.setattr(
            e2a_gateway.storage.sqlite, "applied_versions", lambda tx: read_before_the_other
        )
        assert await late.migrate() == []
    finally:
        await other.close()
        await late.close()
    assert everything == [m.version for m in load_migrations("sqlite")]
    with contextlib.closing(sqlite3.connect(tmp_path / "both.db")) as db:
        recorded = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
    assert recorded == everything


async def test_sqlite_locked_by_another_process_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that holds the file in a write transaction (a sqlite3 shell, a backup tool):
    the write that waited out the lock says which file and what to do, not only "database is
    locked"."""
    path = tmp_path / "held.db"
    first = open_storage(f"sqlite:///{path}")
    await first.migrate()
    await first.close()
    monkeypatch.setattr(e2a_gateway.storage.sqlite, "BUSY_TIMEOUT_SECONDS", 0.2)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        storage = open_storage(f"sqlite:///{path}")
        try:
            with pytest.raises(StorageUnavailable) as refused:
                await storage.migrate()
        finally:
            await storage.close()
    message = str(refused.value)
    assert f"database.url: sqlite:///{path} is locked by another process" in message, message
    assert f"fuser -v {path}" in message, message


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run with the process umask set to `mask` (restored afterwards)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_files_are_private_under_a_permissive_umask(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The database (and in development the server key in it) is readable by its owner only:
    the file, its -wal and its -shm are 0600 even under umask 022."""
    settings = make_settings(tmp_path, database={"url": f"sqlite:///{tmp_path / 'e2a.db'}"})
    with umask(0o022):
        running = await nursery.start(partial(run_gateway, settings, resolver=FixtureResolver()))
        await bootstrap_user(running.gateway.storage, running.gateway.server_key, "a@example.com")
    database = tmp_path / "e2a.db"
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        assert path.exists(), path
        assert file_mode(path) == 0o600, f"{path.name}: {oct(file_mode(path))}"


async def test_an_existing_readable_database_is_made_private_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "old.db"
    store = open_storage(f"sqlite:///{database}")
    await store.migrate()
    await store.close()
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.exists():
            path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="e2a.storage"):
        store = open_storage(f"sqlite:///{database}")
        await store.migrate()
    await store.close()
    assert file_mode(database) == 0o600
    told = f"{database}: mode 0644 let other users read the database; changed to 0600"
    assert told in caplog.text


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A database.url that names some other file (a typo: the config file, a log) is refused
    with one line, and that file keeps its permissions and its bytes."""
    other = tmp_path / "e2a.toml"
    other.write_text('shared_domain = "agents.example.com"\n')
    other.chmod(0o644)
    with pytest.raises(StorageUnavailable, match="is not an SQLite database") as refused:
        open_storage(f"sqlite:///{other}")
    assert "database.url" in str(refused.value) and "\n" not in str(refused.value)
    assert file_mode(other) == 0o644
    assert other.read_text() == 'shared_domain = "agents.example.com"\n'
    assert not Path(f"{other}-wal").exists() and not Path(f"{other}-shm").exists()


async def migrated_to(url: str, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create the schema of `version` at `url` (an older database, to migrate further)."""
    backend = "sqlite" if url.startswith("sqlite") else "postgres"
    module = e2a_gateway.storage.sqlite if backend == "sqlite" else e2a_gateway.storage.postgres
    older = [m for m in load_migrations(backend) if m.version <= version]
    with monkeypatch.context() as patch:
        patch.setattr(module, "load_migrations", lambda _: older)
        store = open_storage(url)
        try:
            assert await store.migrate() == list(range(1, version + 1))
        finally:
            await store.close()


def run_sql(url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement (`?` placeholders) straight on the database at `url`; its rows."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            return db.execute(statement, params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


async def test_open_in_missing_directory_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'nope' / 'e2a.db'}")


async def test_ensure_user_is_idempotent(storage: Storage) -> None:
    first, created = await storage.ensure_user("usr_1", "a@example.com", NOW)
    again, created_again = await storage.ensure_user("usr_2", "a@example.com", NOW)
    assert created and not created_again
    assert again.id == first.id == "usr_1"


async def test_first_user_is_the_earliest_created(storage: Storage) -> None:
    assert await storage.first_user() is None
    await storage.ensure_user("usr_b", "later@example.com", "2026-01-02T00:00:00Z")
    await storage.ensure_user("usr_z", "first@example.com", NOW)
    await storage.ensure_user("usr_a", "same-second@example.com", "2026-01-02T00:00:00Z")
    first = await storage.first_user()
    assert first is not None and first.email == "first@example.com"
    await storage.delete_user("usr_z")
    second = await storage.first_user()
    assert second is not None and second.id == "usr_a"  # same second: the smaller id


async def test_api_keys_resolve_until_revoked(storage: Storage) -> None:
    user_id = await add_user(storage)
    key = ApiKey("apk_1", user_id, "k", "e2a_abcdefgh", NOW, None, None)
    await storage.add_api_key(key, "hash-1")
    found = await storage.user_for_key_hash("hash-1")
    assert found is not None and found.id == user_id
    assert await storage.user_for_key_hash("hash-2") is None
    other = await add_user(storage, "other@example.com")
    assert not await storage.revoke_api_key(other, "apk_1", NOW)
    assert await storage.revoke_api_key(user_id, "apk_1", NOW)
    assert not await storage.revoke_api_key(user_id, "apk_1", NOW)
    assert await storage.user_for_key_hash("hash-1") is None
    (listed,) = await storage.api_key_page(user_id, 100, None, revoked=True)
    assert listed.revoked_at == NOW


async def test_a_key_holder_names_scope_and_bound_agent(storage: Storage) -> None:
    alice = await add_user(storage)
    agent = make_agent(alice, "a@agents.test")
    await storage.add_agent(agent)
    await storage.add_api_key(ApiKey("apk_acct", alice, "k", "e2a_1", NOW, None, None), "h-acct")
    bound = ApiKey("apk_agt", alice, "k", "e2a_2", NOW, None, None, "agent", agent.id)
    await storage.add_api_key(bound, "h-agent")
    account = await storage.key_holder("h-acct")
    assert account is not None and account.user.id == alice
    assert (account.scope, account.agent_id, account.agent_email) == ("account", None, None)
    assert await storage.key_holder("h-agent") == replace(
        account, scope="agent", agent_id=agent.id, agent_email="a@agents.test"
    )
    listed = {key.id: key for key in await storage.api_key_page(alice, 100, None, revoked=True)}
    bound_listed = listed["apk_agt"]
    assert (bound_listed.scope, bound_listed.agent_id) == ("agent", agent.id)
    assert bound_listed.agent_email == "a@agents.test"
    assert listed["apk_acct"].scope == "account" and listed["apk_acct"].agent_id is None

    # The agent goes: its keys are refused, and revoked for good (a new agent at the same
    # address is another agent).
    assert await storage.delete_agent(alice, "a@agents.test") == agent.id
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    assert await storage.key_holder("h-agent") is None
    assert await storage.user_for_key_hash("h-agent") is None
    revoked = {key.id: key for key in await storage.api_key_page(alice, 100, None, revoked=True)}[
        "apk_agt"
    ]
    assert revoked.revoked_at is not None and revoked.agent_email is None
    assert await storage.key_holder("h-acct") is not None


async def test_a_key_past_its_expiry_is_refused_but_still_listed(storage: Storage) -> None:
    alice = await add_user(storage)
    past = ApiKey("apk_old", alice, "k", "e2a_1", NOW, None, None, expires_at=NOW)
    future = ApiKey(
        "apk_new", alice, "k", "e2a_2", NOW, None, None, expires_at="2999-01-01T00:00:00Z"
    )
    await storage.add_api_key(past, "h-old")
    await storage.add_api_key(future, "h-new")
    assert await storage.key_holder("h-old") is None
    assert await storage.user_for_key_hash("h-old") is None
    holder = await storage.key_holder("h-new")
    assert holder is not None and holder.user.id == alice
    # Listed as e2a lists keys, expired or not (its expiry shows it); a revoked one is not.
    listed = await storage.api_key_page(alice, 10, None)
    assert [(key.id, key.expires_at) for key in listed] == [
        ("apk_old", NOW),
        ("apk_new", "2999-01-01T00:00:00Z"),
    ]
    await storage.revoke_api_key(alice, "apk_new", NOW)
    assert [key.id for key in await storage.api_key_page(alice, 10, None)] == ["apk_old"]
    assert await storage.key_holder("h-old") is None


async def test_a_key_answer_asked_for_again_still_ends_at_once(storage: Storage) -> None:
    """Key holders are asked on every request (and remembered where the backend can): a
    revocation, the bound agent going, a new key or the expiry passing are seen at once."""
    alice = await add_user(storage)
    agent = make_agent(alice, "a@agents.test")
    await storage.add_agent(agent)
    assert await storage.key_holder("h-acct") is None
    await storage.add_api_key(ApiKey("apk_acct", alice, "k", "e2a_1", NOW, None, None), "h-acct")
    bound = ApiKey("apk_agt", alice, "k", "e2a_2", NOW, None, None, "agent", agent.id)
    await storage.add_api_key(bound, "h-agent")
    expiry = int(time.time()) + 2
    soon = format_timestamp(expiry)
    await storage.add_api_key(
        ApiKey("apk_soon", alice, "k", "e2a_3", NOW, None, None, expires_at=soon), "h-soon"
    )
    for _ in range(2):
        for key_hash in ("h-acct", "h-agent", "h-soon"):
            assert await storage.key_holder(key_hash) is not None
    await storage.revoke_api_key(alice, "apk_acct", NOW)
    assert await storage.key_holder("h-acct") is None
    await storage.trash_agent(alice, "a@agents.test", NOW)
    assert await storage.key_holder("h-agent") is None
    await trio.sleep(max(0.0, expiry - time.time()) + 0.05)
    assert await storage.key_holder("h-soon") is None


async def test_inbox_pages_read_an_index_in_order_without_sorting(tmp_path: Path) -> None:
    """A page costs the page, however much mail the agent has: no walk or sort of all its
    mail. A page of one status reads the status index from the page's start; a page of all
    mail merges the first rows of the unread and the settled indexes (sorting only those)."""
    storage = open_storage(f"sqlite:///{tmp_path / 'e2a.db'}")
    await storage.migrate()
    await storage.close()
    with sqlite3.connect(tmp_path / "e2a.db") as db:

        def plan(status: str) -> str:
            query, params = _inbox_query("m.id", "u", "a@agents.test", status, 20, None)
            return " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", params))

        by_status = "INDEX messages_agent_status (agent_email=? AND status=? AND seq>?)"
        for status in ("unread", "read"):
            assert by_status in plan(status) and "TEMP B-TREE" not in plan(status), plan(status)
        merged = plan("all")
        assert by_status in merged, merged
        assert "INDEX messages_agent_seq_settled (agent_email=? AND seq>?)" in merged, merged
        assert "MERGE (UNION ALL)" in merged and "SCAN m" not in merged, merged


async def test_a_page_of_conversations_sums_only_the_conversations_it_lists(
    tmp_path: Path,
) -> None:
    """A page of an agent's conversations walks its mail newest first from the cursor and
    sums only the conversations met, each looked up in `messages_agent_conversation`: never a
    scan or a sum of all of the agent's mail, however much it holds."""
    storage = open_storage(f"sqlite:///{tmp_path / 'e2a.db'}")
    await storage.migrate()
    try:
        assert isinstance(storage, e2a_gateway.storage.sqlite.SqliteStorage)
        alice = await add_user(storage)
        await storage.add_agent(make_agent(alice, "a@agents.test"))
        mail = [
            replace(make_message(f"msg_{n}", "a@agents.test"), conversation_id=f"cnv_{n % 3}")
            for n in range(6)
        ]
        await storage.store_inbound(mail, time.time())
        with traced_statements(storage) as reads:
            page = await storage.conversation_page(alice, "a@agents.test", None, None, 2, None)
        assert [c.id for c in page] == ["cnv_2", "cnv_1"]
    finally:
        await storage.close()
    assert any("GROUP BY conversation_id" in sql for sql in reads), reads
    for sql in reads:
        plan = query_plan(tmp_path / "e2a.db", sql)
        assert "SCAN m " not in f"{plan} " and "SCAN messages" not in plan, plan
        if "GROUP BY conversation_id" in sql:
            by_conversation = "messages_agent_conversation (agent_email=? AND conversation_id=?)"
            assert by_conversation in plan, plan


async def test_conversation_pages_span_many_walked_batches(storage: Storage) -> None:
    """A conversation whose mail fills many batches of the newest-first walk is listed once,
    in its place, and the pages after it give the older conversations, whose own newer
    mail was trashed or whose mail is all in the trash as before."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))

    def message(n: int, conversation: str | None) -> NewInboundMessage:
        return replace(make_message(f"msg_{n:04d}", "a@agents.test"), conversation_id=conversation)

    oldest = [message(0, "cnv_old"), message(1, "cnv_gone"), message(2, None)]
    busy = [message(n, "cnv_busy") for n in range(3, 600)]
    newest = [message(600, "cnv_mid"), message(601, "cnv_old"), message(602, "cnv_gone")]
    for batch in (oldest, busy, newest):
        await storage.store_inbound(batch, time.time())
    for trashed in ("msg_0601", "msg_0001", "msg_0602"):
        assert await storage.trash_message(alice, "a@agents.test", trashed, NOW)
    await storage.store_inbound([message(603, "cnv_busy")], time.time())
    pages: list[list[tuple[str, int]]] = []
    before = None
    for _ in range(5):
        page = await storage.conversation_page(alice, "a@agents.test", None, None, 1, before)
        if not page:
            break
        pages.append([(c.id, c.message_count) for c in page])
        before = page[-1].last_seq
    assert pages == [[("cnv_busy", 598)], [("cnv_old", 1)], [("cnv_mid", 1)]]


async def test_mail_is_found_by_message_id_through_its_index(tmp_path: Path) -> None:
    """Threading a reply and quoting earlier mail look the Message-IDs up in `messages_rfc_id`
    and, for copies sharing a content row, `message_contents_rfc_id` then `messages_content`
    (a few rows) instead of walking all of the agent's mail in order."""
    storage = open_storage(f"sqlite:///{tmp_path / 'e2a.db'}")
    await storage.migrate()
    try:
        assert isinstance(storage, e2a_gateway.storage.sqlite.SqliteStorage)
        alice = await add_user(storage)
        await storage.add_agent(make_agent(alice, "a@agents.test"))
        ids = ["<one@example.org>", "<two@example.org>"]
        with traced_statements(storage) as reads:
            assert await storage.conversation_for(alice, "a@agents.test", ids) is None
            assert await storage.earlier_messages(alice, "a@agents.test", ids) == []
    finally:
        await storage.close()
    by_id = [sql for sql in reads if "rfc_message_id IN" in sql]
    assert len(by_id) == 2, reads
    for sql in by_id:
        plan = query_plan(tmp_path / "e2a.db", sql)
        assert "INDEX messages_rfc_id (rfc_message_id=? AND agent_email=?)" in plan, plan
        assert "INDEX message_contents_rfc_id (rfc_message_id=?)" in plan, plan
        assert "INDEX messages_content (content_seq=?)" in plan, plan
        assert "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan  # by its seq
        assert "SCAN m" not in plan and "SCAN s" not in plan and "SCAN w" not in plan, plan


async def test_events_of_a_message_are_found_through_their_index(tmp_path: Path) -> None:
    """Listing the events of one message reads its rows from `events_message` and the row its
    copy's `email.received` is folded into by that event's id, never the account's whole log
    in order (`events_user`): a page costs the message's few rows, whatever the log holds."""
    storage = open_storage(f"sqlite:///{tmp_path / 'e2a.db'}")
    await storage.migrate()
    try:
        assert isinstance(storage, e2a_gateway.storage.sqlite.SqliteStorage)
        alice = await add_user(storage)
        query = EventFilter(message_id="msg_one", since=0.0)
        with traced_statements(storage) as traced:
            assert await storage.list_events(alice, query, 10, None) == []
            assert await storage.list_events(alice, query, 10, (5, 1)) == []
    finally:
        await storage.close()
    reads = [sql for sql in traced if "FROM events e " in sql]
    assert len(reads) == 2, traced
    for sql in reads:
        plan = query_plan(tmp_path / "e2a.db", sql)
        assert "INDEX events_message (user_id=? AND message_id=?)" in plan, plan
        assert "SEARCH c USING PRIMARY KEY (id=?)" in plan, plan
        assert "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
        assert "events_user" not in plan and "SCAN" not in plan, plan


async def test_inbound_mail_enters_only_the_indexes_it_is_found_by(tmp_path: Path) -> None:
    """The outbound indexes hold no inbound mail, the conversation index no mail that is in
    no conversation, and of the two indexes led by the agent's address new (unread) mail
    enters one: storing one message for many agents touches fewer scattered pages. Read, it
    moves to the settled index."""
    storage = open_storage(f"sqlite:///{tmp_path / 'e2a.db'}")
    await storage.migrate()
    indexes = (
        "messages_agent_sent",
        "messages_outbound_status",
        "messages_agent_conversation",
        "messages_agent_status",
        "messages_agent_seq_settled",
    )

    def entries() -> dict[str, int]:
        with sqlite3.connect(tmp_path / "e2a.db") as db:
            return {
                index: db.execute(
                    "SELECT coalesce(sum(ncell), 0) FROM dbstat "
                    "WHERE name = ? AND pagetype = 'leaf'",
                    (index,),
                ).fetchone()[0]
                for index in indexes
            }

    try:
        alice = await add_user(storage)
        await storage.add_agent(make_agent(alice, "a@agents.test"))
        await storage.store_inbound([make_message("msg_in", "a@agents.test")], time.time())
        assert entries() == dict.fromkeys(indexes, 0) | {"messages_agent_status": 1}
        assert await storage.mark_read(alice, "a@agents.test", "msg_in")
        assert entries() == dict.fromkeys(indexes, 0) | {
            "messages_agent_status": 1,
            "messages_agent_seq_settled": 1,
        }
    finally:
        await storage.close()


async def test_routing_answers_kept_are_bounded(tmp_path: Path) -> None:
    """Asking for ever new keys or addresses cannot grow the process without bound."""
    storage = open_storage(f"sqlite:///{tmp_path / 'e2a.db'}")
    await storage.migrate()
    try:
        assert isinstance(storage, e2a_gateway.storage.sqlite.SqliteStorage)
        kept = e2a_gateway.storage.sqlite.ROUTING_ANSWERS_KEPT
        for index in range(kept + 50):
            assert await storage.find_agent(f"nobody{index}@agents.test") is None
        assert len(storage._routing) == kept
    finally:
        await storage.close()


async def test_key_pages_run_newest_first_with_or_without_revoked_keys(storage: Storage) -> None:
    alice = await add_user(storage)
    bob = await add_user(storage, "bob@example.com")
    for index, created in enumerate(["2026-01-01T00:00:01Z"] * 3 + ["2026-01-01T00:00:02Z"] * 2):
        await storage.add_api_key(
            ApiKey(f"apk_{index}", alice, "k", "e2a_x", created, None, None), f"h{index}"
        )
    await storage.add_api_key(ApiKey("apk_bob", bob, "k", "e2a_y", NOW, None, None), "hb")
    await storage.revoke_api_key(alice, "apk_3", NOW)
    first = await storage.api_key_page(alice, 2, None)
    assert [key.id for key in first] == ["apk_4", "apk_2"]
    last = first[-1]
    second = await storage.api_key_page(alice, 2, (last.created_at, last.id))
    assert [key.id for key in second] == ["apk_1", "apk_0"]
    assert await storage.api_key_page(alice, 2, ("2026-01-01T00:00:01Z", "apk_0")) == []
    # With revoked keys too (the dashboard's list): apk_3 in its place, bob's never.
    with_revoked = await storage.api_key_page(alice, 3, None, revoked=True)
    assert [key.id for key in with_revoked] == ["apk_4", "apk_3", "apk_2"]
    last = with_revoked[-1]
    rest = await storage.api_key_page(alice, 3, (last.created_at, last.id), revoked=True)
    assert [key.id for key in rest] == ["apk_1", "apk_0"]


async def test_an_idempotency_key_is_claimed_once_and_replays(storage: Storage) -> None:
    alice = await add_user(storage)
    bob = await add_user(storage, "bob@example.com")
    first = await storage.claim_idempotency_key(alice, "k1", "req-a", 100.0, 0.0)
    assert first.outcome == "acquired" and first.token
    assert (await storage.claim_idempotency_key(alice, "k1", "req-a", 101.0, 0.0)).outcome == (
        "in_flight"
    )
    # The same key of another user is theirs alone.
    assert (await storage.claim_idempotency_key(bob, "k1", "req-b", 101.0, 0.0)).outcome == (
        "acquired"
    )
    await storage.complete_idempotency_key(alice, "k1", "not-the-token", 201, b"no", 102.0)
    assert (await storage.claim_idempotency_key(alice, "k1", "req-a", 103.0, 0.0)).outcome == (
        "in_flight"
    )
    await storage.complete_idempotency_key(alice, "k1", first.token, 201, b"sealed", 104.0)
    replay = await storage.claim_idempotency_key(alice, "k1", "req-a", 105.0, 0.0)
    assert (replay.outcome, replay.status, replay.answer) == ("replay", 201, b"sealed")
    assert (await storage.claim_idempotency_key(alice, "k1", "req-c", 105.0, 0.0)).outcome == (
        "mismatch"
    )


async def test_an_idempotency_claim_is_released_or_taken_over_once_stale(storage: Storage) -> None:
    alice = await add_user(storage)
    claim = await storage.claim_idempotency_key(alice, "k1", "req-a", 100.0, 0.0)
    assert claim.token is not None
    await storage.release_idempotency_key(alice, "k1", claim.token)
    again = await storage.claim_idempotency_key(alice, "k1", "req-b", 110.0, 0.0)
    assert again.outcome == "acquired" and again.token is not None
    # Left unfinished (its request died): in flight until it is stale, then taken over.
    assert (await storage.claim_idempotency_key(alice, "k1", "req-b", 200.0, 109.0)).outcome == (
        "in_flight"
    )
    taken = await storage.claim_idempotency_key(alice, "k1", "req-c", 400.0, 111.0)
    assert taken.outcome == "acquired" and taken.token not in (None, again.token)
    await storage.complete_idempotency_key(alice, "k1", again.token, 200, b"late", 401.0)
    await storage.release_idempotency_key(alice, "k1", again.token)
    assert (await storage.claim_idempotency_key(alice, "k1", "req-c", 402.0, 0.0)).outcome == (
        "in_flight"
    )
    await storage.complete_idempotency_key(alice, "k1", taken.token, 200, b"mine", 403.0)
    replay = await storage.claim_idempotency_key(alice, "k1", "req-c", 404.0, 0.0)
    assert replay.answer == b"mine"


async def test_a_claim_let_go_while_another_waits_for_it_is_claimed_again(
    storage: Storage, storage_url: str
) -> None:
    """Replicas on PostgreSQL: a retry that finds the key claimed waits for the claim's row; if
    the first request lets go of its claim meanwhile (it failed), the retry claims the key
    rather than answering 503 for a row that is no longer there."""
    if storage_url.startswith("sqlite:"):
        pytest.skip("one writer: a claim never waits for another")
    alice = await add_user(storage)
    first = await storage.claim_idempotency_key(alice, "k1", "req-a", 100.0, 0.0)
    assert first.outcome == "acquired"
    with psycopg.connect(storage_url) as holder, psycopg.connect(storage_url) as admin:
        admin.autocommit = True
        holder.execute("SELECT 1 FROM idempotency_keys WHERE key_hash = 'k1' FOR UPDATE")
        found: list[IdempotencyClaim] = []

        async def retry() -> None:
            found.append(await storage.claim_idempotency_key(alice, "k1", "req-a", 101.0, 0.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(retry)
            await wait_until(
                lambda: bool(
                    admin.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    ).fetchall()
                )
            )
            holder.execute("DELETE FROM idempotency_keys WHERE key_hash = 'k1'")
            holder.commit()
    (claim,) = found
    assert claim.outcome == "acquired" and claim.token not in (None, first.token)


async def test_a_send_settles_its_idempotency_claim_with_its_message(storage: Storage) -> None:
    """The message and its record on the claim commit together: the request dying before its
    answer is kept leaves a claim that answers the message, never one a retry takes over."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    claim = await storage.claim_idempotency_key(alice, "k1", "req-a", 100.0, 0.0)
    assert claim.token is not None
    held = HeldKey(alice, "k1", claim.token)
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"), held)
    await storage.release_idempotency_key(alice, "k1", claim.token)  # kept: the message is in
    stored = await storage.claim_idempotency_key(alice, "k1", "req-a", 900.0, 800.0)  # stale
    assert (stored.outcome, stored.made_id, stored.token) == ("made", "msg_1", None)
    assert (await storage.claim_idempotency_key(alice, "k1", "req-b", 900.0, 800.0)).outcome == (
        "mismatch"
    )
    await storage.complete_idempotency_key(alice, "k1", claim.token, 200, b"sent", 901.0)
    replay = await storage.claim_idempotency_key(alice, "k1", "req-a", 902.0, 0.0)
    assert (replay.outcome, replay.answer) == ("replay", b"sent")
    # Refused for good once stored (nothing sent): released all the same.
    refused = await storage.claim_idempotency_key(alice, "k3", "req-a", 903.0, 0.0)
    assert refused.token is not None
    held = HeldKey(alice, "k3", refused.token)
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_3", "queued"), held)
    await storage.release_idempotency_key(alice, "k3", refused.token, refused=True)
    assert (await storage.claim_idempotency_key(alice, "k3", "req-a", 904.0, 0.0)).outcome == (
        "acquired"
    )
    # A claim no longer held (taken over, or never taken) stores nothing.
    with pytest.raises(ClaimLost):
        await storage.add_outbound(
            make_outbound(alice, "a@agents.test", "msg_2", "queued"), HeldKey(alice, "k2", "t")
        )
    assert await storage.get_outbound(alice, "msg_2") is None
    assert len(await storage.claim_jobs("outbound", 1000.0, 10, 60)) == 2  # msg_1's, msg_3's
    assert await storage.claim_jobs("outbound", 1000.0, 10, 60) == []


async def test_a_webhook_settles_its_idempotency_claim_with_itself(storage: Storage) -> None:
    alice = await add_user(storage)
    claim = await storage.claim_idempotency_key(alice, "k1", "req-a", 100.0, 0.0)
    assert claim.token is not None
    webhook = make_webhook(alice)
    await storage.add_webhook(webhook, 20, HeldKey(alice, "k1", claim.token))
    made = await storage.claim_idempotency_key(alice, "k1", "req-a", 900.0, 800.0)
    assert (made.outcome, made.made_id) == ("made", "wh_1")
    with pytest.raises(ClaimLost):
        await storage.add_webhook(replace(webhook, id="wh_2"), 20, HeldKey(alice, "k2", "t"))
    assert await storage.get_webhook(alice, "wh_2") is None


async def test_idempotency_keys_are_swept_a_window_after_completion(storage: Storage) -> None:
    alice = await add_user(storage)
    for key, claimed in [("old", 10.0), ("late", 10.0), ("new", 500.0), ("stuck", 20.0)]:
        claim = await storage.claim_idempotency_key(alice, key, "r", claimed, 0.0)
        assert claim.token is not None
        if key != "stuck":
            done = 600.0 if key == "late" else claimed + 1
            await storage.complete_idempotency_key(alice, key, claim.token, 200, b"x", done)
    assert await storage.delete_idempotency_keys_before(100.0, 10) == 2  # old, stuck
    assert await storage.delete_idempotency_keys_before(100.0, 10) == 0
    assert (await storage.claim_idempotency_key(alice, "late", "r", 700.0, 0.0)).outcome == "replay"
    assert await storage.delete_idempotency_keys_before(1000.0, 1) == 1
    assert await storage.delete_idempotency_keys_before(1000.0, 10) == 1


async def test_signed_out_sessions_are_kept_per_user_until_they_expire(storage: Storage) -> None:
    alice = await add_user(storage)
    bob = await add_user(storage, "bob@example.com")
    assert not await storage.session_signed_out(alice, "sess_1")  # remembered (SQLite) …
    await storage.sign_out_session(alice, "sess_1", 100.0)  # … until this write
    await storage.sign_out_session(alice, "sess_1", 100.0)  # twice: nothing new
    for number, expires_at in [(2, 110.0), (3, 120.0), (4, 500.0)]:
        await storage.sign_out_session(alice, f"sess_{number}", expires_at)
    assert await storage.session_signed_out(alice, "sess_1")
    assert not await storage.session_signed_out(bob, "sess_1")  # another user's id
    assert not await storage.session_signed_out(alice, "sess_5")
    assert await storage.delete_signouts_before(100.0, 10) == 0  # expiring at 100 is not before
    assert await storage.delete_signouts_before(200.0, 2) == 2  # in batches, soonest first
    assert await storage.session_signed_out(alice, "sess_3")
    assert await storage.delete_signouts_before(200.0, 2) == 1
    assert not await storage.session_signed_out(alice, "sess_1")
    assert await storage.session_signed_out(alice, "sess_4")
    await storage.delete_user(alice)
    assert await storage.delete_signouts_before(1000.0, 10) == 0  # went with its user


async def test_signing_secrets_limit_order_and_last_one(storage: Storage) -> None:
    user_id = await add_user(storage)
    for index in range(3):
        await storage.add_signing_secret(
            SigningSecret(f"wsec_{index}", user_id, f"s{index}", f"seed{index}", "p", NOW, None),
            max_per_user=3,
        )
    with pytest.raises(LimitReached):
        await storage.add_signing_secret(
            SigningSecret("wsec_x", user_id, "x", "seedx", "p", NOW, None), max_per_user=3
        )
    assert [s.id for s in await storage.list_signing_secrets(user_id)] == [
        "wsec_2",
        "wsec_1",
        "wsec_0",
    ]
    other = await add_user(storage, "other@example.com")
    assert not await storage.delete_signing_secret(other, "wsec_0")
    assert await storage.delete_signing_secret(user_id, "wsec_0")
    assert await storage.delete_signing_secret(user_id, "wsec_1")
    with pytest.raises(LastOne):
        await storage.delete_signing_secret(user_id, "wsec_2")


async def test_domain_verified_by_one_user_only(storage: Storage) -> None:
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    for owner in (alice, bob):
        await storage.add_domain(Domain(owner, "corp.example", f"tok-{owner}", False, NOW, None))
    with pytest.raises(AlreadyExists):
        await storage.add_domain(Domain(alice, "corp.example", "again", False, NOW, None))
    assert not await storage.is_served_domain("corp.example")
    verified = await storage.mark_domain_verified(alice, "corp.example", NOW)
    assert verified is not None and verified.verified and verified.verified_at == NOW
    assert await storage.is_served_domain("corp.example")
    with pytest.raises(AlreadyExists):
        await storage.mark_domain_verified(bob, "corp.example", NOW)
    carol = await add_user(storage, "carol@example.com")
    with pytest.raises(AlreadyExists):
        await storage.add_domain(Domain(carol, "corp.example", "tok", False, NOW, None))


async def test_a_domain_remembers_when_its_records_were_last_checked(storage: Storage) -> None:
    alice = await add_user(storage, "alice@example.com")
    await storage.add_domain(Domain(alice, "corp.example", "tok", False, NOW, None))
    assert (await storage.get_domain(alice, "corp.example")).last_checked_at is None  # type: ignore[union-attr]
    later = "2026-01-02T00:00:00Z"
    checked = await storage.record_domain_check(alice, "corp.example", later)
    assert checked is not None and checked.last_checked_at == later and not checked.verified
    assert await storage.record_domain_check(alice, "other.example", later) is None
    assert [d.last_checked_at for d in await storage.list_domains(alice)] == [later]


async def test_domain_in_use_cannot_be_deleted(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_domain(Domain(alice, "corp.example", "tok", False, NOW, None))
    await storage.mark_domain_verified(alice, "corp.example", NOW)
    await storage.add_agent(make_agent(alice, "bot@corp.example"))
    with pytest.raises(InUse):
        await storage.delete_domain(alice, "corp.example")
    assert await storage.delete_agent(alice, "bot@corp.example")
    assert await storage.delete_domain(alice, "corp.example")
    assert await storage.get_domain(alice, "corp.example") is None


async def test_an_agent_on_an_owned_domain_needs_it_verified_by_its_owner(
    storage: Storage,
) -> None:
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    bot = make_agent(alice, "bot@corp.example")
    with pytest.raises(DomainNotHeld):
        await storage.add_agent(bot, on_owned_domain=True)
    await storage.add_domain(Domain(alice, "corp.example", "tok", False, NOW, None))
    await storage.add_domain(Domain(bob, "corp.example", "tok", False, NOW, None))
    await storage.mark_domain_verified(bob, "corp.example", NOW)
    with pytest.raises(DomainNotHeld):  # registered by alice, verified by bob
        await storage.add_agent(bot, on_owned_domain=True)
    assert await storage.find_agent("bot@corp.example") is None
    await storage.add_agent(make_agent(bob, "bot@corp.example"), on_owned_domain=True)
    assert await storage.find_agent("bot@corp.example") is not None


async def test_an_address_registered_again_is_another_agent(storage: Storage) -> None:
    """Live subscriptions are bound to an agent's id: deleting an agent returns it, and the
    same address registered again (here by another user) gets a new one."""
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    first = make_agent(alice, "handover@agents.test")
    await storage.add_agent(first)
    found = await storage.find_agent("handover@agents.test")
    assert found is not None and found.id == first.id and first.id.startswith("agt_")
    assert await storage.delete_agent(bob, "handover@agents.test") is None
    assert await storage.delete_agent(alice, "handover@agents.test") == first.id
    assert await storage.delete_agent(alice, "handover@agents.test") is None
    second = make_agent(bob, "handover@agents.test")
    await storage.add_agent(second)
    found = await storage.find_agent("handover@agents.test")
    assert found is not None and (found.id, found.user_id) == (second.id, bob)
    assert second.id != first.id


async def test_revoking_a_key_returns_its_hash_once(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_api_key(ApiKey("apk_1", alice, "k", "e2a_0000", NOW, None, None), "h" * 64)
    assert await storage.revoke_api_key(alice, "apk_1", NOW) == "h" * 64
    assert await storage.revoke_api_key(alice, "apk_1", NOW) is None


async def test_a_migration_that_fails_half_way_leaves_the_older_schema_and_runs_again(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that fails after some of its statements (a full disk, a row the step did not
    expect) leaves the database at the previous version, none of its statements kept, and
    the next start applies it whole."""
    backend = "sqlite" if storage_url.startswith("sqlite") else "postgres"
    module = e2a_gateway.storage.sqlite if backend == "sqlite" else e2a_gateway.storage.postgres
    every = load_migrations(backend)
    latest = every[-1].version
    step = "CREATE TABLE half_done (x INTEGER);\nALTER TABLE agents ADD COLUMN half_done TEXT;\n"
    failing = Migration(latest + 1, "half_done", step + "INSERT INTO no_such_table VALUES (1);\n")
    await migrated_to(storage_url, latest, monkeypatch)
    monkeypatch.setattr(module, "load_migrations", lambda _: [*every, failing])
    store = open_storage(storage_url)
    try:
        with pytest.raises(Exception, match="no_such_table"):
            await store.migrate()
    finally:
        await store.close()
    assert run_sql(storage_url, "SELECT max(version) FROM schema_migrations") == [(latest,)]
    names = "SELECT count(*) FROM {} WHERE name = 'half_done'"
    if backend == "sqlite":
        assert run_sql(storage_url, names.format("sqlite_master")) == [(0,)]
        assert run_sql(storage_url, names.format("pragma_table_info('agents')")) == [(0,)]
    else:
        tables = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'half_done'"
        assert run_sql(storage_url, tables) == [(0,)]
        assert run_sql(storage_url, "SELECT to_regclass('half_done') IS NULL") == [(True,)]
    fixed = Migration(latest + 1, "half_done", step)
    monkeypatch.setattr(module, "load_migrations", lambda _: [*every, fixed])
    store = open_storage(storage_url)
    try:
        assert await store.migrate() == [latest + 1]
    finally:
        await store.close()
    assert run_sql(storage_url, "SELECT count(*) FROM half_done") == [(0,)]


async def test_migration_8_gives_existing_agents_distinct_ids(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrated_to(storage_url, 7, monkeypatch)
    run_sql(storage_url, "INSERT INTO users VALUES ('usr_1', 'o@x', ?)", NOW)
    for address in ("one@agents.test", "two@agents.test"):
        run_sql(
            storage_url,
            "INSERT INTO agents (email, user_id, domain, name, agent_mode, created_at) "
            "VALUES (?, 'usr_1', 'agents.test', 'n', 'local', ?)",
            address,
            NOW,
        )
    store = open_storage(storage_url)
    try:
        assert await store.migrate() == list(range(8, len(load_migrations("sqlite")) + 1))
        agents = await store.list_agents("usr_1")
    finally:
        await store.close()
    ids = {agent.id for agent in agents}
    assert len(ids) == 2 and all(id_.startswith("agt_") and len(id_) == 28 for id_ in ids)


async def test_migration_27_keeps_agents_holding_every_send_held(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await migrated_to(storage_url, 26, monkeypatch)
    run_sql(storage_url, "INSERT INTO users VALUES ('usr_1', 'o@x', ?)", NOW)
    for address, held in (("held@agents.test", True), ("free@agents.test", False)):
        run_sql(
            storage_url,
            "INSERT INTO agents (email, user_id, domain, name, agent_mode, created_at, id, "
            "hitl_enabled) VALUES (?, 'usr_1', 'agents.test', 'n', 'local', ?, ?, ?)",
            address,
            NOW,
            f"agt_{address[:4]}",
            held,
        )
    store = open_storage(storage_url)
    try:
        assert await store.migrate() == list(range(27, len(load_migrations("sqlite")) + 1))
        agents = {agent.email: agent for agent in await store.list_agents("usr_1")}
    finally:
        await store.close()
    held_gate = agents["held@agents.test"]
    assert held_gate.hitl_enabled
    assert (held_gate.outbound_gate_policy, held_gate.outbound_gate_allowlist) == ("allowlist", ())
    assert held_gate.outbound_gate_action == "review"
    free = agents["free@agents.test"]
    assert not free.hitl_enabled
    assert (free.outbound_gate_policy, free.outbound_gate_action) == ("open", "flag")


async def test_migration_38_gives_agents_a_hold_ttl_of_zero_the_default_week(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TTL of 0 stored by `/v1` protection (which held nothing: every hold expired as it was
    made) becomes the default 604800, what 0 means there now."""
    await migrated_to(storage_url, 37, monkeypatch)
    run_sql(storage_url, "INSERT INTO users VALUES ('usr_1', 'o@x', ?)", NOW)
    for address, ttl in (("zero@agents.test", 0), ("hour@agents.test", 3600)):
        run_sql(
            storage_url,
            "INSERT INTO agents (email, user_id, domain, name, agent_mode, created_at, id, "
            "hitl_ttl_seconds) VALUES (?, 'usr_1', 'agents.test', 'n', 'local', ?, ?, ?)",
            address,
            NOW,
            f"agt_{address[:4]}",
            ttl,
        )
    store = open_storage(storage_url)
    try:
        assert await store.migrate() == list(range(38, len(load_migrations("sqlite")) + 1))
        agents = {agent.email: agent for agent in await store.list_agents("usr_1")}
    finally:
        await store.close()
    assert agents["zero@agents.test"].hitl_ttl_seconds == 604800
    assert agents["hour@agents.test"].hitl_ttl_seconds == 3600


async def test_agents_are_scoped_to_their_owner(storage: Storage) -> None:
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    await storage.add_agent(make_agent(alice, "bot@agents.test"))
    with pytest.raises(AlreadyExists):
        await storage.add_agent(make_agent(bob, "bot@agents.test"))
    assert await storage.get_agent(bob, "bot@agents.test") is None
    assert await storage.list_agents(bob) == []
    assert await storage.update_agent(bob, "bot@agents.test", AgentChanges(name="x")) is None
    assert not await storage.delete_agent(bob, "bot@agents.test")
    updated = await storage.update_agent(
        alice, "bot@agents.test", AgentChanges(hitl_enabled=True, hitl_ttl_seconds=60)
    )
    assert updated is not None and updated.hitl_enabled and updated.hitl_ttl_seconds == 60
    assert updated.name == "bot"
    found = await storage.find_agent("bot@agents.test")
    assert found is not None and found.user_id == alice


async def test_the_trash_keeps_an_agent_out_of_service_until_restored_or_purged(
    storage: Storage,
) -> None:
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    await storage.add_agent(make_agent(alice, "bot@agents.test"))
    await storage.add_agent(make_agent(alice, "old@agents.test"))
    await storage.store_inbound([make_message("msg_1", "bot@agents.test")], 0.0)
    assert await storage.trash_agent(bob, "bot@agents.test", "2026-01-01T00:00:00Z") is None
    trashed = await storage.trash_agent(alice, "bot@agents.test", "2026-01-10T00:00:00Z")
    assert trashed is not None and trashed.deleted_at == "2026-01-10T00:00:00Z"
    assert await storage.trash_agent(alice, "bot@agents.test", "2026-01-11T00:00:00Z") is None
    await storage.trash_agent(alice, "old@agents.test", "2026-01-01T00:00:00Z")
    # Out of service: not found, not listed, not routed, not changed; its address still taken.
    assert await storage.get_agent(alice, "bot@agents.test") is None
    assert await storage.find_agent("bot@agents.test") is None
    assert await storage.list_agents(alice) == []
    assert [a.email for a in await storage.list_agents(alice, trashed=True)] == [
        "bot@agents.test",
        "old@agents.test",
    ]
    assert await storage.update_agent(alice, "bot@agents.test", AgentChanges(name="x")) is None
    with pytest.raises(AlreadyExists):
        await storage.add_agent(make_agent(bob, "bot@agents.test"))
    assert await storage.restore_agent(bob, "bot@agents.test") is None
    # The purge takes only what was trashed before the cutoff.
    assert await storage.purge_agents_trashed_before("2026-01-05T00:00:00Z", 10) == AgentPurge(1)
    assert await storage.get_agent(alice, "old@agents.test", trashed=True) is None
    restored = await storage.restore_agent(alice, "bot@agents.test")
    assert restored is not None and restored.deleted_at is None and restored.name == "bot"
    assert await storage.restore_agent(alice, "bot@agents.test") is None
    assert await storage.find_agent("bot@agents.test") is not None
    page = await storage.list_inbound(alice, "bot@agents.test", "all", 10, None)
    assert [m.id for m in page.messages] == ["msg_1"]
    assert await storage.purge_agents_trashed_before("2027-01-01T00:00:00Z", 10) == AgentPurge()


async def test_a_trashed_agents_webhook_jobs_wait_for_its_restore(storage: Storage) -> None:
    """A cloud agent in the trash receives no mail: its webhook jobs are not claimed while it
    is there, and restore resumes them, their schedule moved on by the time it spent there
    (as its held mail's deadlines are)."""
    alice = await add_user(storage)
    for agent in ("hook@agents.test", "live@agents.test"):
        await storage.add_agent(make_agent(alice, agent, mode="cloud"))
    await storage.store_inbound(
        [make_message("msg_1", "hook@agents.test"), make_message("msg_2", "live@agents.test")],
        100.0,
    )
    trashed_at = "2026-01-10T00:00:00Z"
    await storage.trash_agent(alice, "hook@agents.test", trashed_at)
    restore_at = parse_timestamp(trashed_at).timestamp() + 3600
    claimed = await storage.claim_webhook_jobs(restore_at, None, 60, {}, 1000)
    assert [job.message_id for job in claimed] == ["msg_2"]

    await storage.restore_agent(alice, "hook@agents.test", restore_at)
    (resumed,) = await storage.claim_webhook_jobs(restore_at, None, 60, {}, 1000)
    assert resumed.message_id == "msg_1"
    assert (resumed.attempts, resumed.run_at, resumed.created_at) == (0, 3700.0, 3700.0)


async def test_store_inbound_is_all_or_nothing(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    batch = [make_message("msg_1", "a@agents.test"), make_message("msg_2", "ghost@agents.test")]
    with pytest.raises(StorageUnavailable):
        await storage.store_inbound(batch, 0.0)
    page = await storage.list_inbound(alice, "a@agents.test", "all", 10, None)
    assert page.messages == []


async def test_reading_a_trashed_message_where_allowed_marks_it_read(storage: Storage) -> None:
    """`trashed_too` (`/v1` opens trashed mail by id): the message is marked read in storage,
    not only in the answer; without it the trashed message is not found and stays unread."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.store_inbound([make_message("msg_1", "a@agents.test")], 0.0)
    await storage.trash_message(alice, "a@agents.test", "msg_1", NOW)
    assert await storage.read_inbound(alice, "a@agents.test", "msg_1") is None
    unread = await storage.filed_message(alice, "a@agents.test", "msg_1", mark_read=False)
    assert unread is not None and unread.status == "unread"
    opened = await storage.read_inbound(alice, "a@agents.test", "msg_1", trashed_too=True)
    assert opened is not None and opened.status == "read"
    stored = await storage.filed_message(alice, "a@agents.test", "msg_1", mark_read=False)
    assert stored is not None and stored.status == "read"


async def test_inbound_round_trip_is_byte_exact_and_marks_read(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test", mode="cloud"))
    raw = bytes(range(256)) + b"\r\n.\r\n\x00end"
    await storage.store_inbound([make_message("msg_1", "a@agents.test", raw)], 0.0)
    bob = await add_user(storage, "bob@example.com")
    assert await storage.read_inbound(bob, "a@agents.test", "msg_1") is None
    message = await storage.read_inbound(alice, "a@agents.test", "msg_1")
    assert message is not None
    assert message.raw_message == raw
    assert message.status == "read"
    assert message.delivery_status == "pending"
    assert (await storage.list_inbound(alice, "a@agents.test", "unread", 10, None)).messages == []
    (read,) = (await storage.list_inbound(alice, "a@agents.test", "read", 10, None)).messages
    assert read.id == "msg_1"


async def test_signed_headers_are_kept_without_their_names_and_read_back_whole(
    storage: Storage, storage_url: str
) -> None:
    """A copy's nine signed headers are stored as their values alone (its message id is its
    own id), and read back whole and in order wherever a message is read; any other set of
    headers, and a row written before, read back as they were."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    claim = replace(claim_for(b"Subject: hi\r\n\r\nbody\r\n"), message_id="msg_signed")
    signed = claim.signed_headers("secret")
    partial = {"X-E2A-Auth-Verified": "false"}
    await storage.store_inbound(
        [
            replace(make_message("msg_signed", "a@agents.test"), auth_headers=signed),
            replace(make_message("msg_other", "a@agents.test"), auth_headers=partial),
        ],
        0.0,
    )
    ((stored,),) = run_sql(
        storage_url, "SELECT auth_headers_json FROM messages WHERE id = ?", "msg_signed"
    )
    assert json.loads(stored) == [
        value for name, value in signed.items() if name != "X-E2A-Auth-Message-Id"
    ]
    assert len(stored) <= len(orjson.dumps(signed)) - 200  # what the object took
    message = await storage.read_inbound(alice, "a@agents.test", "msg_signed")
    assert message is not None and list(message.auth_headers.items()) == list(signed.items())
    other = await storage.read_inbound(alice, "a@agents.test", "msg_other")
    assert other is not None and other.auth_headers == partial
    earlier = await storage.earlier_messages(alice, "a@agents.test", ["<msg_signed@example.org>"])
    assert [found.auth_headers for found in earlier] == [signed]

    run_sql(  # as a row stored before the values alone were kept
        storage_url,
        "UPDATE messages SET auth_headers_json = ? WHERE id = ?",
        json.dumps(signed),
        "msg_signed",
    )
    again = await storage.read_inbound(alice, "a@agents.test", "msg_signed")
    assert again is not None and again.auth_headers == signed


async def test_pagination_is_stable_under_concurrent_inserts(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    for index in range(5):
        await storage.store_inbound([make_message(f"msg_{index}", "a@agents.test")], 0.0)
    seen: list[str] = []
    after = None
    inserted = 5
    while True:
        page = await storage.list_inbound(alice, "a@agents.test", "all", 2, after)
        seen.extend(message.id for message in page.messages)
        if inserted < 8:
            await storage.store_inbound([make_message(f"msg_{inserted}", "a@agents.test")], 0.0)
            inserted += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"msg_{index}" for index in range(inserted)]


async def test_pages_of_all_mail_merge_unread_and_settled_mail_in_arrival_order(
    storage: Storage,
) -> None:
    """Unread and settled mail (read, or sent) are found by two indexes (migration 0034); a
    page of all of an agent's mail, inbox or `/v1` mailbox, either way round and paged two at a
    time, is every message once, in arrival order, whatever each one's status."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_agent(make_agent(alice, "b@agents.test"))
    order = []
    for index in range(9):
        if index in (2, 6):
            await storage.add_outbound(
                make_outbound(alice, "a@agents.test", f"out_{index}", "sent")
            )
        else:
            await storage.store_inbound([make_message(f"msg_{index}", "a@agents.test")], 0.0)
        await storage.store_inbound([make_message(f"other_{index}", "b@agents.test")], 0.0)
        order.append(f"out_{index}" if index in (2, 6) else f"msg_{index}")
    for read in ("msg_0", "msg_4", "msg_5", "msg_8"):
        assert await storage.mark_read(alice, "a@agents.test", read)
    inbound = [name for name in order if name.startswith("msg_")]

    async def inbox(status: StatusFilter) -> list[str]:
        seen: list[str] = []
        after = None
        for _ in range(10):
            page = await storage.list_inbound(alice, "a@agents.test", status, 2, after)
            seen += [message.id for message in page.messages]
            if page.next_after is None:
                return seen
            after = page.next_after
        raise AssertionError("the pages never ended")

    async def mailbox(filters: MessageFilters) -> list[str]:
        seen: list[str] = []
        after = None
        for _ in range(10):
            page = await storage.filed_page(alice, "a@agents.test", filters, 2, after)
            if not page:
                return seen
            seen += [message.id for message in page]
            after = page[-1].seq
        raise AssertionError("the pages never ended")

    assert await inbox("all") == inbound
    assert await inbox("unread") == ["msg_1", "msg_3", "msg_7"]
    assert await inbox("read") == ["msg_0", "msg_4", "msg_5", "msg_8"]
    assert await mailbox(MessageFilters(newest_first=False)) == order
    assert await mailbox(MessageFilters()) == order[::-1]
    assert await mailbox(MessageFilters(read_status="unread", newest_first=False)) == [
        "msg_1",
        "out_2",
        "msg_3",
        "out_6",
        "msg_7",
    ]
    assert await mailbox(MessageFilters(directions=("inbound",))) == inbound[::-1]


@pytest.mark.parametrize("by_expiry", [False, True])
async def test_a_released_hold_takes_the_next_place_in_its_agents_mail(
    storage: Storage, storage_url: str, by_expiry: bool
) -> None:
    """Held mail, released by a reviewer or by its agent's expiration action, comes after all
    of its agent's mail so far, as if it arrived then: a page after the last one read before
    the release finds it, and `since` the release time too (`created_at` is the release;
    `received_at` stays its arrival). No place is given twice: mail stored later comes after
    it, even once the released message is gone."""
    alice = await add_user(storage)
    agent = make_agent(alice, "a@agents.test")
    await storage.add_agent(replace(agent, hitl_expiration_action="approve"))
    arrived = parse_timestamp(NOW).timestamp()
    deadline = arrived + 7200
    held = replace(make_message("msg_held", "a@agents.test"), hold_expires_at=deadline)
    await storage.store_inbound([held], 1.0)
    await storage.store_inbound([make_message("msg_after", "a@agents.test")], 2.0)
    (read,) = (await storage.list_inbound(alice, "a@agents.test", "all", 10, None)).messages
    assert read.id == "msg_after"

    released_at = deadline if by_expiry else arrived + 3600
    if by_expiry:
        assert (await storage.expire_inbound_holds(released_at)).resolved == 1
    else:
        assert await storage.release_inbound(alice, "msg_held", True, released_at) is not None
    page = await storage.list_inbound(alice, "a@agents.test", "all", 10, read.seq)
    (released,) = page.messages
    assert released.id == "msg_held" and released.seq > read.seq
    assert released.created_at == format_timestamp(released_at)
    assert released.received_at == NOW
    since = MessageFilters(since=format_timestamp(released_at), newest_first=False)
    listed = await storage.filed_page(alice, "a@agents.test", since, 10, None)
    assert [message.id for message in listed] == ["msg_held"]

    query(storage_url, "DELETE FROM messages WHERE id = ?", ("msg_held",))
    await storage.store_inbound([make_message("msg_later", "a@agents.test")], 3.0)
    (later,) = (await storage.list_inbound(alice, "a@agents.test", "all", 10, read.seq)).messages
    assert later.id == "msg_later" and later.seq > released.seq


async def test_an_inbox_page_is_the_owners_agent_and_the_same_mail_as_the_full_listing(
    storage: Storage,
) -> None:
    alice = await add_user(storage)
    bob = await add_user(storage, "bob@example.com")
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    for index in range(3):
        await storage.store_inbound([make_message(f"msg_{index}", "a@agents.test")], 0.0)
    await storage.read_inbound(alice, "a@agents.test", "msg_1")
    assert await storage.inbox_page(bob, "a@agents.test", "all", 10, None) is None
    assert await storage.inbox_page(alice, "ghost@agents.test", "all", 10, None) is None
    for status in ("all", "unread", "read"):
        full = await storage.list_inbound(alice, "a@agents.test", status, 2, None)
        page = await storage.inbox_page(alice, "a@agents.test", status, 2, None)
        assert page is not None and page.agent.email == "a@agents.test"
        assert page.agent.user_id == alice
        assert page.next_after == full.next_after
        assert [
            (e.id, e.seq, e.from_addr, e.to, e.cc, e.subject, e.conversation_id, e.status,
             e.delivery_status, e.received_at, e.created_at)
            for e in page.messages
        ] == [
            (m.id, m.seq, m.from_addr, m.to, m.cc, m.subject, m.conversation_id, m.status,
             m.delivery_status, m.received_at, m.created_at)
            for m in full.messages
        ]  # fmt: skip
    first = await storage.inbox_page(alice, "a@agents.test", "all", 2, None)
    assert first is not None and first.next_after is not None
    rest = await storage.inbox_page(alice, "a@agents.test", "all", 2, first.next_after)
    assert rest is not None and [e.id for e in rest.messages] == ["msg_2"]
    assert rest.next_after is None
    # The agent as remembered by a routing answer serves the page, until a write changes it.
    assert await storage.get_agent(alice, "a@agents.test") is not None
    await storage.update_agent(alice, "a@agents.test", AgentChanges(name="Renamed"))
    renamed = await storage.inbox_page(alice, "a@agents.test", "all", 10, None)
    assert renamed is not None and renamed.agent.name == "Renamed"
    assert await storage.get_agent(alice, "a@agents.test") is not None
    await storage.trash_agent(alice, "a@agents.test", "2026-01-01T00:00:00Z")
    assert await storage.inbox_page(alice, "a@agents.test", "all", 10, None) is None


async def test_deleting_an_agent_deletes_its_messages(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test", mode="cloud"))
    await storage.store_inbound([make_message("msg_1", "a@agents.test")], 0.0)
    assert await storage.delete_agent(alice, "a@agents.test")
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    assert (await storage.list_inbound(alice, "a@agents.test", "all", 10, None)).messages == []


BIG = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 65_536  # 1 MiB of body


def raw_table(url: str) -> tuple[int, int]:
    """Rows in `raw_messages` and the bytes they hold."""
    ((rows, size),) = run_sql(
        url, "SELECT count(*), coalesce(sum(length(raw)), 0) FROM raw_messages"
    )
    return int(rows), int(size)


async def test_one_message_to_many_agents_stores_its_bytes_once(
    storage: Storage, storage_url: str
) -> None:
    """One DATA to five agents of two users: one copy of the bytes, which every agent reads
    back exactly; it goes only with the last message that points at it."""
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    owners = {f"a{n}@agents.test": alice for n in range(4)} | {"b0@agents.test": bob}
    for address, owner in owners.items():
        await storage.add_agent(make_agent(owner, address))
    await storage.add_agent(make_agent(alice, "other@agents.test"))
    await storage.store_inbound(
        [make_message(f"msg_{n}", address, BIG) for n, address in enumerate(owners)], 0.0
    )
    await storage.store_inbound([make_message("msg_other", "other@agents.test")], 0.0)
    assert raw_table(storage_url) == (2, len(BIG) + len(make_message("x", "x").raw_message))
    for n, (address, owner) in enumerate(owners.items()):
        read = await storage.read_inbound(owner, address, f"msg_{n}")
        assert read is not None and read.raw_message == BIG
    # The same bytes arriving again (another DATA, another object) are not stored again.
    await storage.store_inbound([make_message("msg_again", "a0@agents.test", bytes(BIG))], 0.0)
    assert raw_table(storage_url)[0] == 2

    assert await storage.delete_agent(alice, "a1@agents.test")
    assert (await storage.delete_user(bob))["messages"] == 1
    assert raw_table(storage_url)[0] == 2
    read = await storage.read_inbound(alice, "a2@agents.test", "msg_2")
    assert read is not None and read.raw_message == BIG
    for address in ("a0@agents.test", "a2@agents.test"):
        assert await storage.delete_agent(alice, address)
    assert raw_table(storage_url)[0] == 2  # a3 still points at it
    assert await storage.delete_agent(alice, "a3@agents.test")
    assert raw_table(storage_url) == (1, len(make_message("x", "x").raw_message))
    other = await storage.read_inbound(alice, "other@agents.test", "msg_other")
    assert other is not None and other.raw_message == make_message("x", "x").raw_message
    await storage.delete_user(alice)
    assert raw_table(storage_url) == (0, 0)


def copies_of(base: NewInboundMessage, agents: list[str]) -> list[NewInboundMessage]:
    """One arrival's copies for `agents`, as the inbound pipeline makes them: the same
    recipient lists, results and bytes (the same objects), an id and a signature each."""
    return [
        replace(base, id=f"msg_copy{n}", agent_email=agent, auth_headers={"X-Copy": str(n)})
        for n, agent in enumerate(agents)
    ]


async def test_copies_of_one_message_share_one_content_row(
    storage: Storage, storage_url: str
) -> None:
    """One DATA to three agents of two users: one `message_contents` row holds what the copies
    share, each copy a narrow row of its own; every read gives each agent the whole message,
    with its own id and signature. Deleting copies one by one leaves the others whole; the
    content and the raw bytes go with the last."""
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    owners = {"a0@agents.test": alice, "a1@agents.test": alice, "b0@agents.test": bob}
    for address, owner in owners.items():
        await storage.add_agent(make_agent(owner, address))
    base = replace(
        make_message("msg_base", "a0@agents.test", BIG),
        to=list(owners),
        cc=["cc@example.org"],
        reply_to="replies@example.org",
        subject="One for all",
        rfc_message_id="<shared@example.org>",
        authentication_results={"spf": "pass"},
        client_ip="192.0.2.7",
        helo="mx.example.org",
    )
    copies = copies_of(base, list(owners))
    await storage.store_inbound(copies, 0.0)
    await storage.store_inbound([make_message("msg_alone", "a0@agents.test")], 0.0)

    assert run_sql(storage_url, "SELECT count(*) FROM message_contents") == [(1,)]
    layout = run_sql(
        storage_url,
        "SELECT id, content_seq IS NOT NULL, raw_digest IS NULL, subject FROM messages "
        "ORDER BY seq",
    )
    assert layout == [(copy.id, True, True, "") for copy in copies] + [
        ("msg_alone", False, False, "hi")
    ]
    for n, (address, owner) in enumerate(owners.items()):
        read = await storage.read_inbound(owner, address, f"msg_copy{n}")
        assert read is not None
        assert (read.id, read.agent_email, read.raw_message) == (f"msg_copy{n}", address, BIG)
        assert (read.subject, read.to, read.cc, read.reply_to) == (
            "One for all",
            list(owners),
            ["cc@example.org"],
            "replies@example.org",
        )
        assert (read.rfc_message_id, read.authentication_results, read.from_addr) == (
            "<shared@example.org>",
            {"spf": "pass"},
            "sender@example.org",
        )
        assert read.auth_headers == {"X-Copy": str(n)}
        page = await storage.inbox_page(owner, address, "all", 10, None)
        assert page is not None and [entry.subject for entry in page.messages][:1] == [
            "One for all"
        ]
        filed = await storage.filed_message(owner, address, f"msg_copy{n}", mark_read=False)
        assert filed is not None and (filed.subject, filed.size) == ("One for all", len(BIG))
    # found by its Message-ID for each agent, and only for the agents it went to
    earlier = await storage.earlier_messages(alice, "a1@agents.test", ["<shared@example.org>"])
    assert [message.id for message in earlier] == ["msg_copy1"]
    assert await storage.earlier_messages(bob, "a0@agents.test", ["<shared@example.org>"]) == []
    found = await storage.filed_page(
        alice, "a0@agents.test", MessageFilters(subject_text="for all"), 10, None
    )
    assert [message.id for message in found] == ["msg_copy0"]
    exported = await whole_export(storage, bob)
    assert [(m["id"], m["subject"]) for m in exported["messages"]] == [("msg_copy2", "One for all")]

    assert await storage.delete_agent(alice, "a0@agents.test")
    assert (await storage.delete_user(bob))["messages"] == 1
    read = await storage.read_inbound(alice, "a1@agents.test", "msg_copy1")
    assert read is not None and (read.subject, read.raw_message) == ("One for all", BIG)
    assert run_sql(storage_url, "SELECT count(*) FROM message_contents") == [(1,)]
    assert raw_table(storage_url)[0] == 1  # msg_alone went with a0; BIG stays for a1
    assert await storage.delete_agent(alice, "a1@agents.test")
    assert run_sql(storage_url, "SELECT count(*) FROM message_contents") == [(0,)]
    assert raw_table(storage_url) == (0, 0)


async def test_copies_received_events_fold_into_one_row(storage: Storage, storage_url: str) -> None:
    """The `email.received` events of one message's copies for three agents of one account are
    one row of the log: listed as three events in order (paged one by one, filtered by agent,
    message and an agent key's scope), each read by its id, its envelope its own; another
    account's copy has its own row and none of the first account's events. Swept, the row
    takes its copies' ids with it."""
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    owners = {
        "a0@agents.test": alice,
        "a1@agents.test": alice,
        "a2@agents.test": alice,
        "b0@agents.test": bob,
    }
    for address, owner in owners.items():
        await storage.add_agent(make_agent(owner, address))
    copies = copies_of(make_message("msg_base", "a0@agents.test"), list(owners))
    copies = [replace(copy, to=list(owners)) for copy in copies]
    await storage.store_inbound(copies, 0.0)
    assert run_sql(storage_url, "SELECT count(*) FROM events") == [(2,)]
    assert run_sql(storage_url, "SELECT count(*) FROM event_copies") == [(2,)]

    ids = {copy.agent_email: derived_event_id(copy.id, "email.received") for copy in copies}
    listed = await storage.list_events(alice, EventFilter(), 10, None)
    assert [(event.id, event.ordinal) for event in listed] == [
        (ids["a2@agents.test"], 2),
        (ids["a1@agents.test"], 1),
        (ids["a0@agents.test"], 0),
    ]
    for event, copy in zip(listed, copies[2::-1], strict=True):
        data = json.loads(event.envelope)["data"]
        assert json.loads(event.envelope)["id"] == event.id
        assert (data["message_id"], data["agent_email"], data["delivered_to"]) == (
            copy.id,
            copy.agent_email,
            copy.agent_email,
        )
        assert (event.message_id, event.agent_email) == (copy.id, copy.agent_email)
    paged, before = [], None
    for _ in range(4):
        page = await storage.list_events(alice, EventFilter(), 1, before)
        if not page:
            break
        paged += page
        before = (page[-1].seq, page[-1].ordinal)
    assert [event.id for event in paged] == [event.id for event in listed]

    by_agent = await storage.list_events(alice, EventFilter(agent_email="a1@agents.test"), 10, None)
    assert [event.id for event in by_agent] == [ids["a1@agents.test"]]
    by_message = EventFilter(message_id=copies[0].id)
    assert [e.id for e in await storage.list_events(alice, by_message, 10, None)] == [
        ids["a0@agents.test"]
    ]
    assert (
        await storage.list_events(alice, EventFilter(agent_email="b0@agents.test"), 10, None) == []
    )
    assert [e.id for e in await storage.list_events(bob, EventFilter(), 10, None)] == [
        ids["b0@agents.test"]
    ]

    read = await storage.get_event(alice, ids["a1@agents.test"])
    assert read is not None and (read.agent_email, read.ordinal) == ("a1@agents.test", 1)
    assert read.envelope == listed[1].envelope
    assert await storage.get_event(bob, ids["a1@agents.test"]) is None
    assert await storage.redeliver_event(alice, ids["a2@agents.test"], None, 0.0) == []
    assert await storage.redeliver_event(bob, ids["a2@agents.test"], None, 0.0) is None

    assert await storage.delete_events_before(time.time() + 60, 100) == 4  # two rows
    assert run_sql(storage_url, "SELECT count(*) FROM event_copies") == [(0,)]
    assert await storage.get_event(alice, ids["a1@agents.test"]) is None


async def test_a_folded_copys_events_are_found_by_its_message_id(storage: Storage) -> None:
    """Listed by a further copy's message id, the account gets that copy's `email.received`
    (folded into the first copy's row) and the copy's later events (rows of their own),
    newest first, paged by the same cursors, filtered by type; the first copy's and the
    other copies' events are not among them, nor anything for another account."""
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    owners = {"a0@agents.test": alice, "a1@agents.test": alice, "a2@agents.test": alice,
              "b0@agents.test": bob}  # fmt: skip
    for address, owner in owners.items():
        await storage.add_agent(make_agent(owner, address))
    copies = copies_of(make_message("msg_base", "a0@agents.test"), list(owners))
    copies = [replace(copy, to=list(owners)) for copy in copies]
    await storage.store_inbound(copies, 0.0)
    folded = copies[1]
    later = new_event(alice, "email.flagged", {}, 1.0, agent_email=folded.agent_email,
                      message_id=folded.id, event_id="evt_later")  # fmt: skip
    unrelated = new_event(alice, "email.flagged", {}, 2.0, message_id=copies[2].id)
    await storage.log_events([later, unrelated])
    received = derived_event_id(folded.id, "email.received")

    by_message = EventFilter(message_id=folded.id)
    listed = await storage.list_events(alice, by_message, 10, None)
    assert [(event.id, event.message_id) for event in listed] == [
        ("evt_later", folded.id),
        (received, folded.id),
    ]
    assert listed[1].ordinal == 1 and listed[1].agent_email == "a1@agents.test"
    paged, before = [], None
    for _ in range(3):
        page = await storage.list_events(alice, by_message, 1, before)
        if not page:
            break
        paged += page
        before = (page[-1].seq, page[-1].ordinal)
    assert [event.id for event in paged] == ["evt_later", received]
    only_received = EventFilter(type="email.received", message_id=folded.id)
    assert [e.id for e in await storage.list_events(alice, only_received, 10, None)] == [received]
    assert [e.id for e in await storage.list_events(alice, EventFilter(message_id=copies[2].id),
                                                    10, None)] == [
        unrelated.id, derived_event_id(copies[2].id, "email.received")
    ]  # fmt: skip
    assert await storage.list_events(bob, by_message, 10, None) == []
    assert [e.id for e in await storage.list_events(bob, EventFilter(message_id=copies[3].id),
                                                    10, None)] == [
        derived_event_id(copies[3].id, "email.received")
    ]  # fmt: skip


async def test_migration_9_moves_raw_bytes_out_merging_copies(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, each recipient's row held its own copy: after, one copy per distinct message,
    every row reading back exactly its bytes; outbound rows (no bytes) point nowhere."""
    await migrated_to(storage_url, 8, monkeypatch)
    run_sql(storage_url, "INSERT INTO users VALUES ('usr_1', 'o@x', ?)", NOW)
    columns = (
        "id, user_id, agent_email, direction, envelope_from, from_addr, to_json, cc_json, "
        "subject, raw_message, auth_headers_json, auth_results_json, received_at, created_at"
    )
    rows = {
        "msg_1": ("one@agents.test", "inbound", BIG),
        "msg_2": ("two@agents.test", "inbound", BIG),
        "msg_3": ("two@agents.test", "inbound", b"Subject: small\r\n\r\nhi\r\n"),
        "out_1": ("one@agents.test", "outbound", b""),
    }
    for address in ("one@agents.test", "two@agents.test"):
        run_sql(
            storage_url,
            "INSERT INTO agents (email, user_id, domain, name, agent_mode, created_at, id) "
            "VALUES (?, 'usr_1', 'agents.test', 'n', 'local', ?, ?)",
            address,
            NOW,
            f"agt_{address[:3]}",
        )
    for message_id, (address, direction, raw) in rows.items():
        run_sql(
            storage_url,
            f"INSERT INTO messages ({columns}) "
            "VALUES (?, 'usr_1', ?, ?, 's@x', 's@x', '[]', '[]', 's', ?, '{}', '{}', ?, ?)",
            message_id,
            address,
            direction,
            raw,
            NOW,
            NOW,
        )
    store = open_storage(storage_url)
    try:
        assert 9 in await store.migrate()
        for message_id, (address, direction, raw) in rows.items():
            if direction == "inbound":
                read = await store.read_inbound("usr_1", address, message_id)
                assert read is not None and read.raw_message == raw, message_id
    finally:
        await store.close()
    assert raw_table(storage_url) == (2, len(BIG) + len(rows["msg_3"][2]))
    assert run_sql(storage_url, "SELECT raw_digest FROM messages WHERE id = 'out_1'") == [(None,)]
    with pytest.raises(Exception, match="raw_message"):
        run_sql(storage_url, "SELECT raw_message FROM messages")


async def test_concurrent_writers_do_not_lose_messages(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))

    async def write(index: int) -> None:
        await storage.store_inbound([make_message(f"msg_{index:03}", "a@agents.test")], 0.0)

    async with trio.open_nursery() as nursery:
        for index in range(50):
            nursery.start_soon(write, index)
    page = await storage.list_inbound(alice, "a@agents.test", "all", 100, None)
    assert sorted(message.id for message in page.messages) == [f"msg_{i:03}" for i in range(50)]


async def test_server_secret_is_generated_once(storage: Storage) -> None:
    first = await storage.server_secret("candidate-1")
    second = await storage.server_secret("candidate-2")
    assert first == second == "candidate-1"


async def test_routing_answers_follow_every_change(storage: Storage) -> None:
    alice = await add_user(storage)
    assert await storage.find_agent("a@agents.test") is None
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    found = await storage.find_agent("a@agents.test")
    assert found is not None and found.agent_mode == "local"
    await storage.update_agent(
        alice, "a@agents.test", AgentChanges(agent_mode="cloud", webhook_url="https://h.example/x")
    )
    found = await storage.find_agent("a@agents.test")
    assert found is not None and found.agent_mode == "cloud"
    await storage.delete_agent(alice, "a@agents.test")
    assert await storage.find_agent("a@agents.test") is None

    await storage.add_domain(Domain(alice, "corp.example", "tok", False, NOW, None))
    assert not await storage.is_served_domain("corp.example")
    await storage.mark_domain_verified(alice, "corp.example", NOW)
    assert await storage.is_served_domain("corp.example")
    await storage.delete_domain(alice, "corp.example")
    assert not await storage.is_served_domain("corp.example")

    assert await storage.newest_signing_seed(alice) is None
    for index in range(2):
        await storage.add_signing_secret(
            SigningSecret(f"wsec_{index}", alice, "s", f"seed{index}", "p", NOW, None), 5
        )
        assert await storage.newest_signing_seed(alice) == f"seed{index}"
    await storage.delete_signing_secret(alice, "wsec_1")
    assert await storage.newest_signing_seed(alice) == "seed0"


def make_outbound(
    user_id: str, agent_email: str, message_id: str, status: str, expires: float | None = None
) -> OutboundMessage:
    return OutboundMessage(
        id=message_id,
        user_id=user_id,
        agent_email=agent_email,
        kind="send",
        to=["x@example.org"],
        cc=[],
        bcc=["hidden@example.org"],
        subject="s",
        body_text="draft body",
        body_html="<p>draft</p>",
        attachments=[{"filename": "a.txt", "content_type": "text/plain", "data": "aGk="}],
        conversation_id=None,
        in_reply_to=None,
        references=[],
        email_message_id=f"<{message_id}@agents.test>",
        status=status,  # type: ignore[arg-type]
        approval_expires_at=expires,
        created_at=NOW,
        created_epoch=100.0,
    )


async def test_two_copies_of_one_report_recorded_at_once_are_recorded_once(
    storage: Storage, storage_url: str
) -> None:
    """Two gateways (replicas, on PostgreSQL) record the same bounce and the same complaint at
    the same moment: each copy's transaction succeeds, and each is recorded once."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "bot@agents.test"))
    other = open_storage(storage_url)
    bounced = [BouncedRecipient("x@example.org", "permanent", "550 5.1.1 no such user")]
    try:
        for index in range(10):
            message_id = f"msg_{index}"
            await storage.add_outbound(make_outbound(alice, "bot@agents.test", message_id, "sent"))
            async with trio.open_nursery() as nursery:
                for copy in (storage, other):
                    nursery.start_soon(copy.record_bounce, message_id, bounced, 200.0)
                    nursery.start_soon(
                        copy.record_complaint, message_id, ["hidden@example.org"], "abuse", 200.0
                    )
            events = await storage.list_events(alice, EventFilter(message_id=message_id), 10, None)
            about = Counter(event.type for event in events)
            assert about == {
                "email.bounced": 1,
                "email.complained": 1,
                **({"domain.suppression_added": 2} if index == 0 else {}),
            }
    finally:
        await other.close()


async def test_outbound_expiry_applies_each_agents_action(storage: Storage) -> None:
    alice = await add_user(storage)
    for email, action in (("keep@agents.test", "approve"), ("drop@agents.test", "reject")):
        await storage.add_agent(make_agent(alice, email))
        await storage.update_agent(alice, email, AgentChanges(hitl_expiration_action=action))
    await storage.add_outbound(
        make_outbound(alice, "keep@agents.test", "msg_keep", "pending_approval", 200.0)
    )
    await storage.add_outbound(
        make_outbound(alice, "drop@agents.test", "msg_drop", "pending_approval", 200.0)
    )
    await storage.add_outbound(
        make_outbound(alice, "drop@agents.test", "msg_later", "pending_approval", 900.0)
    )
    assert len(await storage.claim_jobs("approval_notice", 1000.0, 10, 60)) == 3
    assert await storage.expire_outbound(199.0) == []
    expired = {message.id: message for message in await storage.expire_outbound(200.0)}
    assert set(expired) == {"msg_keep", "msg_drop"}
    assert expired["msg_keep"].status == "expired_approved"
    assert expired["msg_keep"].body_text == "draft body"
    assert expired["msg_drop"].status == "expired_rejected"
    assert (expired["msg_drop"].body_text, expired["msg_drop"].attachments) == (None, None)
    (job,) = await storage.claim_jobs("outbound", 1000.0, 10, 60)
    assert job.message_id == "msg_keep"
    later = await storage.get_outbound(alice, "msg_later")
    assert later is not None and later.status == "pending_approval"


async def test_outbound_summaries_leave_bodies_and_attachment_data_out(storage: Storage) -> None:
    """A page of outbound mail as lists show it is bounded however large the mail: at most
    the page size, with no body or attachment contents, only the beginning of the text (in
    characters) when asked for; other users' mail and trashed agents' are never in it."""
    alice, bob = await add_user(storage), await add_user(storage, "bob@example.com")
    for user, email in ((alice, "a@agents.test"), (alice, "gone@agents.test"), (bob, "b@x.test")):
        await storage.add_agent(make_agent(user, email))
    huge = "é" * 300_000
    data = "QUJD" * 250_000  # a megabyte of attachment
    deadlines = [500.0, 300.0, 900.0, 100.0, 700.0]
    for index, deadline in enumerate(deadlines):
        await storage.add_outbound(
            replace(
                make_outbound(alice, "a@agents.test", f"held_{index}", "pending_approval"),
                approval_expires_at=deadline,
                body_text=f"START{index}" + huge,
                body_html="<p>" + huge + "</p>",
                attachments=[
                    {"filename": "big.bin", "content_type": "application/pdf", "data": data},
                    {"filename": "note.txt", "content_type": "text/plain", "data": "aGk="},
                ],
            )
        )
    await storage.add_outbound(
        replace(
            make_outbound(alice, "a@agents.test", "plain", "pending_approval", 1000.0),
            body_text=None,
            body_html=None,
            attachments=None,
        )
    )
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "queued_1", "queued"))
    await storage.add_outbound(make_outbound(alice, "gone@agents.test", "gone_1", "queued"))
    await storage.add_outbound(make_outbound(bob, "b@x.test", "bobs", "pending_approval", 50.0))
    await storage.trash_agent(alice, "gone@agents.test", "2026-01-02T00:00:00Z")

    def bounded(summaries: list[OutboundSummary]) -> None:
        for summary in summaries:
            shown = repr(summary)
            assert len(shown) < 3_000, shown[:200]
            assert "QUJD" not in shown and "<p>" not in shown

    first = await storage.outbound_summaries(
        alice, "pending_approval", None, 2, None, by_deadline=True, preview_chars=2_000
    )
    bounded(first)
    assert [summary.id for summary in first] == ["held_3", "held_1"]
    preview = first[0].preview
    assert preview is not None
    assert preview.text == "START3" + "é" * 1_994
    assert preview.text_length == 300_006
    assert preview.has_html is True
    assert preview.attachment_names == ["big.bin", "note.txt"]
    assert (first[0].to, first[0].bcc, first[0].approval_expires_at) == (
        ["x@example.org"],
        ["hidden@example.org"],
        100.0,
    )
    rest = await storage.outbound_summaries(
        alice, "pending_approval", None, 10, first[-1].seq, by_deadline=True, preview_chars=2_000
    )
    bounded(rest)
    assert [summary.id for summary in rest] == ["held_0", "held_4", "held_2", "plain"]
    plain = rest[-1].preview
    assert plain is not None
    assert (plain.text, plain.text_length, plain.has_html, plain.attachment_names) == (
        None,
        0,
        False,
        [],
    )

    newest = await storage.outbound_summaries(alice, None, None, 3, None)
    bounded(newest)
    assert [summary.id for summary in newest] == ["queued_1", "plain", "held_4"]
    assert all(summary.preview is None for summary in newest)
    older = await storage.outbound_summaries(alice, None, "a@agents.test", 10, newest[-1].seq)
    assert [summary.id for summary in older] == ["held_3", "held_2", "held_1", "held_0"]
    queued = await storage.outbound_summaries(alice, "queued", None, 10, None)
    assert [(summary.id, summary.status) for summary in queued] == [("queued_1", "queued")]
    assert await storage.outbound_summaries(bob, "queued", None, 10, None) == []
    assert [s.id for s in await storage.outbound_summaries(bob, None, None, 10, None)] == ["bobs"]


async def test_outbound_summaries_carry_bodies_cut_and_attachment_sizes(storage: Storage) -> None:
    """Asked for bodies, a page of outbound mail carries each body cut in the database to as
    many characters as asked for, and each attachment's name, type and decoded size computed
    there too: never an attachment's contents, nor more of a body than asked for."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    big = "QUJD" * 250_000  # 750,000 bytes once decoded
    await storage.add_outbound(
        replace(
            make_outbound(alice, "a@agents.test", "held_big", "pending_approval", 100.0),
            kind="reply",
            conversation_id="conv_1",
            body_text="START" + "é" * 300_000,
            body_html="<p>" + "ü" * 300_000 + "</p>",
            attachments=[
                {"filename": "big.bin", "content_type": "application/pdf", "data": big},
                {"filename": "one.txt", "content_type": "text/plain", "data": "QQ=="},
                {"filename": "two.txt", "content_type": "text/plain", "data": "QUI="},
                {"filename": "empty.txt", "content_type": "text/plain", "data": ""},
                {
                    "filename": "logo.png",
                    "content_type": "image/png",
                    "data": "iVBORw0K",
                    "content_id": "logo@example.org",
                },
            ],
        )
    )
    await storage.add_outbound(
        replace(
            make_outbound(alice, "a@agents.test", "held_plain", "pending_approval", 200.0),
            body_text="short",
            body_html=None,
            attachments=None,
        )
    )
    await storage.add_outbound(
        replace(
            make_outbound(alice, "a@agents.test", "held_html", "pending_approval", 300.0),
            body_text=None,
            body_html="",
            attachments=[],
        )
    )
    found = await storage.outbound_summaries(
        alice, "pending_approval", None, 10, None, by_deadline=True, body_chars=1_001
    )
    for summary in found:
        assert "QUJD" not in repr(summary) and len(repr(summary)) < 6_000, repr(summary)[:200]
        assert summary.preview is None
    assert [summary.id for summary in found] == ["held_big", "held_plain", "held_html"]
    first = found[0]
    assert (first.kind, first.conversation_id, first.email_message_id) == (
        "reply",
        "conv_1",
        "<held_big@agents.test>",
    )
    assert first.content is not None
    assert first.content.text == "START" + "é" * 996
    assert first.content.html == "<p>" + "ü" * 998
    assert first.content.attachments == [
        AttachmentInfo("big.bin", "application/pdf", 750_000),
        AttachmentInfo("one.txt", "text/plain", 1),
        AttachmentInfo("two.txt", "text/plain", 2),
        AttachmentInfo("empty.txt", "text/plain", 0),
        AttachmentInfo("logo.png", "image/png", 6),
    ]
    plain, html_only = found[1].content, found[2].content
    assert plain is not None and html_only is not None
    assert (plain.text, plain.html, plain.attachments) == ("short", None, [])
    assert (html_only.text, html_only.html, html_only.attachments) == (None, "", [])
    both = await storage.outbound_summaries(
        alice, "pending_approval", None, 1, None, by_deadline=True, preview_chars=3, body_chars=4
    )
    assert both[0].preview is not None and both[0].preview.text == "STA"
    assert both[0].preview.attachment_names[0] == "big.bin"
    assert both[0].content is not None and both[0].content.text == "STAR"
    bare = await storage.outbound_summaries(
        alice, "pending_approval", None, 1, None, by_deadline=True
    )
    assert bare[0].content is None and bare[0].kind == "reply"


async def approved_at_its_deadline(storage: Storage) -> tuple[str, Job]:
    """A user's message `msg_keep`, held for review and approved when its deadline passed (its
    agent's expiration action), and its send job, claimed; the user's id and the job."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "keep@agents.test"))
    await storage.update_agent(
        alice, "keep@agents.test", AgentChanges(hitl_expiration_action="approve")
    )
    await storage.add_outbound(
        make_outbound(alice, "keep@agents.test", "msg_keep", "pending_approval", 200.0)
    )
    assert [m.id for m in await storage.expire_outbound(200.0)] == ["msg_keep"]
    (job,) = await storage.claim_jobs("outbound", 1000.0, 10, 60)
    return alice, job


async def test_a_bounce_report_after_an_auto_approved_message_went_out_bounces_it(
    storage: Storage,
) -> None:
    """A message approved at its review deadline stays `expired_approved` once handed on; a
    permanent bounce report that comes back for it afterwards makes it `bounced`, as it does a
    `sent` one (no send job is left to settle it later)."""
    alice, job = await approved_at_its_deadline(storage)
    await storage.finish_outbound(
        [SendAttempt(job.id, "msg_keep", "sent", "smtp", None, None, {"x@example.org": "accepted"})]
    )
    handed_on = await storage.get_outbound(alice, "msg_keep")
    assert handed_on is not None and handed_on.status == "expired_approved"

    bounced = [BouncedRecipient("x@example.org", "permanent", "550 5.1.1 no such user")]
    assert await storage.record_bounce("msg_keep", bounced, 1100.0)
    reported = await storage.get_outbound(alice, "msg_keep")
    assert reported is not None and reported.status == "bounced"


async def test_a_bounce_reported_while_an_auto_approved_message_is_retried_bounces_it_after(
    storage: Storage,
) -> None:
    """Mail approved at its review deadline, taken for one recipient and deferred for the
    other: a permanent bounce report for the first leaves the other's retries be, and the
    message is `bounced` once the retry hands it on."""
    alice, job = await approved_at_its_deadline(storage)
    taken = {"x@example.org": "accepted"}
    await storage.finish_outbound(
        [SendAttempt(job.id, "msg_keep", "retry", "smtp", "451 busy", 1100.0, taken)]
    )
    bounced = [BouncedRecipient("x@example.org", "permanent", "550 5.1.1 no such user")]
    assert await storage.record_bounce("msg_keep", bounced, 1050.0)
    waiting = await storage.get_outbound(alice, "msg_keep")
    assert waiting is not None and waiting.status == "expired_approved"

    (again,) = await storage.claim_jobs("outbound", 1100.0, 10, 60)
    rest = {"hidden@example.org": "accepted"}
    await storage.finish_outbound(
        [SendAttempt(again.id, "msg_keep", "sent", "smtp", None, None, rest)]
    )
    settled = await storage.get_outbound(alice, "msg_keep")
    assert settled is not None and settled.status == "bounced"


async def test_a_bounce_reported_before_the_hand_off_is_recorded_is_kept(
    storage: Storage,
) -> None:
    """The relay took the message and its bounce report came back before the attempt's
    outcome was written: the outcome's `accepted` does not overwrite the report, and the
    message ends `bounced`."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    (job,) = await storage.claim_jobs("outbound", 100.0, 10, 60)
    bounced = [BouncedRecipient("x@example.org", "permanent", "550 5.1.1 no such user")]
    assert await storage.record_bounce("msg_1", bounced, 100.0)
    taken = {"x@example.org": "accepted", "hidden@example.org": "accepted"}
    await storage.finish_outbound([SendAttempt(job.id, "msg_1", "sent", "smtp", None, None, taken)])
    settled = await storage.get_outbound(alice, "msg_1")
    assert settled is not None and settled.status == "bounced"
    results = await storage.recipient_results("msg_1")
    assert results["x@example.org"].startswith("bounced: ")


async def test_a_bounce_reported_before_any_result_is_kept_as_the_message_names_them(
    storage: Storage,
) -> None:
    """A report for a recipient the message spells in capitals, before any result was
    recorded for them, is kept under that spelling: the send worker reads it as settled."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    message = replace(
        make_outbound(alice, "a@agents.test", "msg_1", "queued"), to=["Carol@Example.org"]
    )
    await storage.add_outbound(message)
    bounced = [BouncedRecipient("carol@example.org", "permanent", "550 5.1.1 no such user")]
    assert await storage.record_bounce("msg_1", bounced, 100.0)
    assert list(await storage.recipient_results("msg_1")) == ["Carol@Example.org"]


async def test_outbound_finish_states_and_scrubbing(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    (job,) = await storage.claim_jobs("outbound", 100.0, 10, 60)
    assert await storage.claim_jobs("outbound", 100.0, 10, 60) == []
    await storage.finish_outbound(
        [SendAttempt(job.id, "msg_1", "retry", "smtp", "451 busy", 160.0)]
    )
    retried = await storage.get_outbound(alice, "msg_1")
    assert retried is not None and retried.status == "queued" and retried.send_error == "451 busy"
    assert await storage.claim_jobs("outbound", 159.0, 10, 60) == []
    (again,) = await storage.claim_jobs("outbound", 160.0, 10, 60)
    assert again.attempts == 1
    await storage.finish_outbound([SendAttempt(again.id, "msg_1", "sent", "smtp", None, None)])
    sent = await storage.get_outbound(alice, "msg_1")
    assert sent is not None and sent.status == "sent" and sent.method == "smtp"
    assert (sent.body_text, sent.body_html, sent.attachments) == (None, None, None)
    assert sent.bcc == ["hidden@example.org"]
    assert await storage.claim_jobs("outbound", 1e9, 10, 60) == []


BRIEF = 0.3
"""A lease short enough to run out within a test. Leases are timed by the database's clock on
PostgreSQL, whatever time a test passes, so tests that let one run out pass the real time and
wait for it."""


async def outlast(until: float) -> None:
    """Wait until a lease until `until` (real time) has run out."""
    await trio.sleep(max(0.0, until - time.time()) + 0.05)


async def test_a_job_finished_under_a_lease_it_no_longer_holds_is_left_to_its_new_claim(
    storage: Storage,
) -> None:
    """An approval notice's or answer's lease ran out while it waited and another claim took
    the job: the first claim's finish (done, or due again later) changes nothing, and the
    job's current claim finishes it."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "out_1", "pending_approval"))
    (first,) = await storage.claim_jobs("approval_notice", time.time(), 10, BRIEF)
    await outlast(first.leased_until)
    (second,) = await storage.claim_jobs("approval_notice", time.time(), 10, 60)
    assert second.id == first.id
    assert not await storage.finish_job(first.id, None, first.leased_until)
    assert not await storage.finish_job(first.id, time.time() + 3600, first.leased_until)
    assert await storage.claim_jobs("approval_notice", time.time(), 10, 60) == []  # still held
    assert await storage.finish_job(second.id, None, second.leased_until)
    assert await storage.claim_jobs("approval_notice", 1e12, 10, 60) == []

    await storage.add_reply_token(ReplyToken("token", "out_1", "owner@example.com", "<n@x>", 1.0))
    answer = ApprovalAnswer("out_1", "e2a@x", "owner@example.com", b"answer")
    assert await storage.add_approval_answer(answer, "token", 5, time.time())
    (late,) = await storage.claim_jobs("approval_answer", time.time(), 10, BRIEF)
    await outlast(late.leased_until)
    (current,) = await storage.claim_jobs("approval_answer", time.time(), 10, 60)
    taken = await storage.next_approval_answer("out_1", late.id)
    assert taken is not None
    assert not await storage.finish_approval_answer(late.id, taken.id, late.leased_until)
    assert await storage.next_approval_answer("out_1", current.id) == taken
    assert await storage.finish_approval_answer(current.id, taken.id, current.leased_until)
    assert await storage.next_approval_answer("out_1", current.id) is None


async def test_a_send_outcome_after_its_job_passed_to_another_claim_is_not_written(
    storage: Storage,
) -> None:
    """A send's lease ran out mid-send and another claim took the job and recorded the message
    `sent`. The first claim's late outcome (`failed`) is not written over it (the message stays
    `sent`, with one `email.sent` and no `email.failed`) and is named in the answer. While the
    job is still to be done, the late attempt's results are kept for the recipients the
    message has none for, so the next attempt does not hand it to them again."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    (first,) = await storage.claim_jobs("outbound", time.time(), 10, BRIEF)
    await outlast(first.leased_until)
    (second,) = await storage.claim_jobs("outbound", time.time(), 10, 60)
    assert second.id == first.id and second.leased_until > first.leased_until
    taken = SendAttempt(
        first.id, "msg_1", "sent", "smtp", None, None,
        {"x@example.org": "accepted"}, 170.0, leased_until=second.leased_until,
    )  # fmt: skip
    late = SendAttempt(
        first.id, "msg_1", "failed", "smtp", "554 refused", None,
        {"x@example.org": "refused: 554", "hidden@example.org": "accepted"}, 180.0,
        leased_until=first.leased_until,
    )  # fmt: skip
    assert await storage.finish_outbound([taken]) == []
    assert await storage.finish_outbound([late]) == ["msg_1"]
    sent = await storage.get_outbound(alice, "msg_1")
    assert sent is not None and (sent.status, sent.send_error) == ("sent", None)
    events = await storage.list_events(alice, EventFilter(), 10, None)
    assert sorted(event.type for event in events) == ["email.delivered", "email.sent"]
    # the results are the attempt's that settled it (what /v1's rollup reads), none of the late
    assert await storage.recipient_results("msg_1") == {"x@example.org": "accepted"}

    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_2", "queued"))
    (job,) = await storage.claim_jobs("outbound", time.time(), 10, BRIEF)
    await outlast(job.leased_until)
    (taken_over,) = await storage.claim_jobs("outbound", time.time(), 10, 60)
    await storage.record_recipient_results(
        "msg_2", {"x@example.org": "refused: 550"}, job.id, taken_over.leased_until
    )
    retry_at = time.time() + 3600
    current = SendAttempt(
        job.id, "msg_2", "retry", "smtp", "452 full", retry_at,
        leased_until=taken_over.leased_until,
    )  # fmt: skip
    retry = SendAttempt(
        job.id, "msg_2", "retry", "smtp", "451 busy", time.time(),
        {"x@example.org": "accepted", "hidden@example.org": "accepted"},
        leased_until=job.leased_until,
    )  # fmt: skip
    assert await storage.finish_outbound([current, retry]) == ["msg_2"]
    queued = await storage.get_outbound(alice, "msg_2")
    assert queued is not None and queued.send_error == "452 full"
    assert await storage.recipient_results("msg_2") == {
        "x@example.org": "refused: 550",
        "hidden@example.org": "accepted",
    }
    assert await storage.claim_jobs("outbound", retry_at - 1, 10, 60) == []
    (again,) = await storage.claim_jobs("outbound", retry_at, 10, 60)
    assert (again.id, again.attempts) == (job.id, 1)


async def test_recipient_results_saved_for_a_retry_under_a_lost_lease_leave_the_claim_s(
    storage: Storage,
) -> None:
    """A send's lease ran out mid-send and another claim took the job: it handed the message
    to x, deferred y and saved x's result for its retry. The first claim, late, saves its
    own results for the retry (the relay refused x, took z): they do not overwrite x's, whose
    copy went out and would otherwise be reported refused; z, which the message has no
    result for yet, is kept so that no retry sends it to z again."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    (late,) = await storage.claim_jobs("outbound", time.time(), 10, BRIEF)
    await outlast(late.leased_until)
    (current,) = await storage.claim_jobs("outbound", time.time(), 10, 60)
    await storage.record_recipient_results(
        "msg_1", {"x@example.org": "accepted"}, current.id, current.leased_until
    )
    await storage.record_recipient_results(
        "msg_1",
        {"x@example.org": "refused: 550 mailbox full", "z@example.org": "accepted"},
        late.id,
        late.leased_until,
    )
    assert await storage.recipient_results("msg_1") == {
        "x@example.org": "accepted",
        "z@example.org": "accepted",
    }
    await storage.record_recipient_results(
        "msg_1", {"y@example.org": "refused: 550 no such user"}, current.id, current.leased_until
    )
    assert await storage.recipient_results("msg_1") == {
        "x@example.org": "accepted",
        "y@example.org": "refused: 550 no such user",
        "z@example.org": "accepted",
    }


async def test_job_queue_states_by_kind(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    assert await storage.job_queue_states(1e9) == []
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    await storage.add_outbound(make_outbound(alice, "a@agents.test", "msg_2", "queued"))
    (queued,) = await storage.job_queue_states(1e9)
    due = queued.earliest_run_at
    assert (queued.kind, queued.state, queued.count) == ("outbound", "available", 2)
    assert await storage.job_queue_states(due - 1) == [  # not due yet, never tried
        JobQueueState("outbound", "scheduled", 2, due)
    ]
    first, second = await storage.claim_jobs("outbound", 1e9, 10, 60)
    assert await storage.job_queue_states(1e9) == [JobQueueState("outbound", "running", 2, due)]
    await storage.finish_job(first.id, 2e9)  # to be tried again later
    await storage.release_jobs([second])  # given back: due again since it fell due
    assert await storage.job_queue_states(1e9) == [
        JobQueueState("outbound", "available", 1, due),
        JobQueueState("outbound", "retryable", 1, 2e9),
    ]
    assert jobs_per_kind(await storage.job_queue_states(1e9)) == {"outbound": 2}
    assert await storage.job_queue_states(2e9) == [JobQueueState("outbound", "available", 2, due)]
    await storage.finish_job(second.id, None)
    assert await storage.job_queue_states(2e9) == [JobQueueState("outbound", "available", 1, 2e9)]


async def test_a_webhook_job_taken_by_another_claim_keeps_that_claim_s_outcome(
    storage: Storage,
) -> None:
    """Each claim or renewal leases until a later time: whoever held the lease before can
    neither move it on nor write its attempt's outcome over the new claim's."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "hook@agents.test", mode="cloud"))
    await storage.store_inbound([make_message("msg_1", "hook@agents.test")], 0.0)
    (job,) = await storage.claim_webhook_jobs(time.time(), None, BRIEF, {}, 16)
    renewed = await storage.renew_job_lease(job.id, job.leased_until, time.time() + 0.01, BRIEF)
    assert renewed is not None and renewed > job.leased_until
    assert await storage.renew_job_lease(job.id, job.leased_until, time.time(), 60) is None
    url = "https://hooks.example.com/x"
    assert await storage.webhook_job_due(job.id, renewed, url)
    assert not await storage.webhook_job_due(job.id, renewed, "https://hooks.example.com/y")
    await outlast(renewed)
    (taken,) = await storage.claim_webhook_jobs(time.time(), None, 60, {}, 16)
    assert taken.id == job.id and taken.leased_until > renewed
    assert await storage.renew_job_lease(job.id, renewed, time.time(), 60) is None
    assert not await storage.webhook_job_due(job.id, renewed, url)  # passed to another claim
    assert await storage.webhook_job_due(job.id, taken.leased_until, url)
    late = FinishedAttempt(
        job.id, "msg_1", WebhookAttempt(1, NOW, 200, None, 5), "delivered", None, renewed
    )
    await storage.finish_webhook_attempts([late])
    assert await storage.webhook_attempts(alice, "msg_1") == []
    assert await storage.claim_webhook_jobs(time.time(), None, 60, {}, 16) == []  # still leased

    retry_at = time.time()
    current = FinishedAttempt(
        job.id,
        "msg_1",
        WebhookAttempt(1, NOW, 500, None, 5),
        "retrying",
        retry_at,
        taken.leased_until,
    )
    await storage.finish_webhook_attempts([late, current])
    assert [attempt.status_code for attempt in await storage.webhook_attempts(alice, "msg_1")] == [
        500
    ]
    message = await storage.peek_inbound(alice, "hook@agents.test", "msg_1")
    assert message is not None and message.delivery_status == "retrying"
    (again,) = await storage.claim_webhook_jobs(retry_at, None, 60, {}, 16)
    assert (again.id, again.attempts) == (job.id, 1)


async def test_a_delivery_taken_by_another_claim_keeps_that_claim_s_outcome(
    storage: Storage,
) -> None:
    """As for webhook jobs, for `/v1` deliveries; and one given back is free at once."""
    alice = await add_user(storage)
    webhook = await _webhook_with_deliveries(storage, alice, 0)
    delivery_id = await storage.add_test_delivery(
        alice, webhook.id, "evt_1", "email.received", b"{}", 10.0
    )
    assert delivery_id is not None

    async def shown() -> tuple[str, int, int | None]:
        (delivery,) = await storage.delivery_page(alice, webhook.id, None, 10, None) or []
        return delivery.status, delivery.attempts, delivery.last_status_code

    (claimed,) = await storage.claim_subscriber_deliveries(time.time(), None, 60, {}, 16)
    await storage.release_subscriber_deliveries([claimed])
    (claimed,) = await storage.claim_subscriber_deliveries(time.time(), None, BRIEF, {}, 16)
    assert claimed.delivery.id == delivery_id
    leased = claimed.leased_until
    renewed = await storage.renew_delivery_lease(delivery_id, leased, time.time() + 0.01, BRIEF)
    assert renewed is not None and renewed > leased
    assert await storage.renew_delivery_lease(delivery_id, leased, time.time(), 60) is None
    assert await storage.subscriber_delivery_due(delivery_id, renewed, claimed.url)
    assert not await storage.subscriber_delivery_due(delivery_id, renewed, claimed.url + "/y")
    await outlast(renewed)
    (taken,) = await storage.claim_subscriber_deliveries(time.time(), None, 60, {}, 16)
    assert await storage.renew_delivery_lease(delivery_id, renewed, time.time(), 60) is None
    assert not await storage.subscriber_delivery_due(delivery_id, renewed, claimed.url)
    assert await storage.subscriber_delivery_due(delivery_id, taken.leased_until, claimed.url)
    late = SubscriberAttempt(delivery_id, 1, 90.0, 200, None, 5, "delivered", None, renewed)
    await storage.finish_subscriber_attempts([late])
    assert await shown() == ("pending", 0, None)
    assert await storage.claim_subscriber_deliveries(time.time(), None, 60, {}, 16) == []

    current = SubscriberAttempt(
        delivery_id, 1, 150.0, 500, "HTTP 500", 5, "pending", 400.0, taken.leased_until
    )
    await storage.finish_subscriber_attempts([late, current])
    assert await shown() == ("pending", 1, 500)
    stored = await storage.get_webhook(alice, webhook.id)
    assert stored is not None and stored.last_delivered_at is None


async def test_failed_auto_approval_ends_expired_rejected(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.update_agent(
        alice, "a@agents.test", AgentChanges(hitl_expiration_action="approve")
    )
    await storage.add_outbound(
        make_outbound(alice, "a@agents.test", "msg_1", "pending_approval", 10.0)
    )
    await storage.expire_outbound(20.0)
    (job,) = await storage.claim_jobs("outbound", 20.0, 10, 60)
    await storage.finish_outbound(
        [SendAttempt(job.id, "msg_1", "failed", "smtp", "554 refused", None)]
    )
    failed = await storage.get_outbound(None, "msg_1")
    assert failed is not None and failed.status == "expired_rejected"
    assert failed.send_error == "554 refused"


async def test_a_review_past_the_deadline_is_refused_before_the_sweep_comes(
    storage: Storage,
) -> None:
    """From its deadline on, a pending message is its agent's expiration action's to decide,
    not a late reviewer's, even before the sweep has run."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(
        make_outbound(alice, "a@agents.test", "msg_1", "pending_approval", 10.0)
    )
    for approve in (True, False):
        with pytest.raises(NotPending, match="past its review deadline"):
            await storage.review_outbound(alice, "msg_1", approve, None, None, 10.0)
    still = await storage.get_outbound(alice, "msg_1")
    assert still is not None and still.status == "pending_approval"
    assert await storage.claim_jobs("outbound", 10.0, 10, 60) == []
    (expired,) = await storage.expire_outbound(10.0)
    assert expired.status == "expired_rejected"


async def test_approving_refuses_a_recipient_suppressed_while_the_message_waited(
    storage: Storage,
) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(
        make_outbound(alice, "a@agents.test", "msg_1", "pending_approval", 10.0)
    )
    await storage.add_suppression(alice, None, "hidden@example.org", "hard bounce", 4.0)
    with pytest.raises(RecipientsSuppressed) as refused:
        await storage.review_outbound(alice, "msg_1", True, None, None, 5.0)
    assert refused.value.addresses == ["hidden@example.org"]
    edit = OutboundEdits(to=["X@Example.org", "new@example.org"])
    await storage.add_suppression(alice, "a@agents.test", "new@example.org", None, 5.0)
    with pytest.raises(RecipientsSuppressed) as refused:  # the agent's own list, an edit's address
        await storage.review_outbound(alice, "msg_1", True, replace(edit, bcc=[]), None, 5.0)
    assert refused.value.addresses == ["new@example.org"]
    still = await storage.get_outbound(alice, "msg_1")
    assert still is not None and still.status == "pending_approval"
    assert await storage.claim_jobs("outbound", 5.0, 10, 60) == []
    approved = await storage.review_outbound(alice, "msg_1", True, OutboundEdits(bcc=[]), None, 5.0)
    assert approved is not None and approved.status == "queued" and approved.bcc == []
    # rejecting is never refused for a suppressed recipient
    await storage.add_outbound(
        make_outbound(alice, "a@agents.test", "msg_2", "pending_approval", 10.0)
    )
    rejected = await storage.review_outbound(alice, "msg_2", False, None, "no", 5.0)
    assert rejected is not None and rejected.status == "rejected"


async def test_approval_by_expiry_sends_to_no_suppressed_address(storage: Storage) -> None:
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.update_agent(
        alice, "a@agents.test", AgentChanges(hitl_expiration_action="approve")
    )
    for message_id in ("msg_1", "msg_2"):
        await storage.add_outbound(
            make_outbound(alice, "a@agents.test", message_id, "pending_approval", 10.0)
        )
    await storage.add_suppression(alice, None, "hidden@example.org", "hard bounce", 4.0)
    expired = {message.id: message for message in await storage.expire_outbound(20.0)}
    assert {message.status for message in expired.values()} == {"expired_rejected"}
    assert "hidden@example.org is on the suppression list" in (
        expired["msg_1"].rejection_reason or ""
    )
    assert await storage.claim_jobs("outbound", 20.0, 10, 60) == []


async def test_review_acts_once(storage: Storage) -> None:
    alice = await add_user(storage)
    bob = await add_user(storage, "bob@example.com")
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.add_outbound(
        make_outbound(alice, "a@agents.test", "msg_1", "pending_approval", 10.0)
    )
    assert await storage.review_outbound(bob, "msg_1", True, None, None, 5.0) is None
    approved = await storage.review_outbound(
        alice, "msg_1", True, OutboundEdits(subject="edited", to=["y@example.org"]), None, 5.0
    )
    assert approved is not None and approved.status == "queued" and approved.edited
    assert (approved.subject, approved.to) == ("edited", ["y@example.org"])
    with pytest.raises(NotPending):
        await storage.review_outbound(alice, "msg_1", False, None, "late", 6.0)
    assert len(await storage.claim_jobs("outbound", 5.0, 10, 60)) == 1


# -- PostgreSQL only: migrations, errors and several replicas on one database ---------------


def test_postgres_migrations_mirror_sqlite_numbering() -> None:
    sqlite_steps = [(m.version, m.name) for m in load_migrations("sqlite")]
    assert [(m.version, m.name) for m in load_migrations("postgres")] == sqlite_steps


async def test_postgres_cannot_connect_says_how_to_fix_without_password() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_storage(f"postgresql://e2a:s3cret-pw@127.0.0.1:{port}/e2a")
    with pytest.raises(StorageUnavailable) as raised:
        await store.ping()
    message = str(raised.value)
    assert message == (
        f"database.url: cannot connect to postgresql://e2a@127.0.0.1:{port}/e2a: "
        "connection refused — is PostgreSQL running?"
    )
    await store.close()


async def test_postgres_user_that_may_not_create_tables_is_told_the_grant(
    postgres_db: str,
) -> None:
    """PostgreSQL 15 and later let no user but the database's owner create tables in schema
    public: a user made with CREATE USER for a database someone else owns gets one line saying
    which grant it lacks (never its password), not psycopg's traceback."""
    role = f"e2a_r_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(postgres_db)
    database = parts.path.lstrip("/")
    with psycopg.connect(postgres_db, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 's3cret-pw'")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    store = open_storage(f"postgresql://{role}:s3cret-pw@{host}/{database}")
    try:
        with pytest.raises(StorageUnavailable) as raised:
            await store.migrate()
    finally:
        await store.close()
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")
    message = str(raised.value)
    assert message.startswith(f"database.url: user {role} may not create tables in {database}")
    assert f"ALTER DATABASE {database} OWNER TO {role}" in message
    assert f"GRANT CREATE ON SCHEMA public TO {role}" in message
    assert "s3cret-pw" not in message


async def test_postgres_replicas_migrate_once_and_record_versions(postgres_db: str) -> None:
    import psycopg

    stores = [open_storage(postgres_db) for _ in range(4)]
    applied: list[list[int]] = []

    async def migrate(store: Storage) -> None:
        applied.append(await store.migrate())

    async with trio.open_nursery() as nursery:
        for store in stores:
            nursery.start_soon(migrate, store)
    everything = [m.version for m in load_migrations("postgres")]
    assert sorted(applied) == [[], [], [], everything]
    for store in stores:
        await store.close()
    with psycopg.connect(postgres_db) as db:
        recorded = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
    assert sorted(recorded) == everything


@pytest.fixture
async def replicas(postgres_db: str) -> AsyncIterator[tuple[Storage, Storage]]:
    """Two backends on one migrated database, as two `e2a serve` processes would have."""
    first, second = open_storage(postgres_db, "host-a/8080"), open_storage(postgres_db, "host-b")
    await first.migrate()
    yield first, second
    await first.close()
    await second.close()


async def test_replicas_racing_over_shared_raw_bytes_neither_lose_nor_leak_them(
    replicas: tuple[Storage, Storage], postgres_db: str
) -> None:
    """Round after round, two replicas each delete one of the last two agents pointing at a
    message's bytes at the same moment (the bytes must go), then one deletes the last agent
    pointing at them while the other stores the same bytes for another agent (which must then
    read them back)."""
    first, second = replicas
    alice = await add_user(first)
    for round_ in range(30):
        raw = b"Subject: race\r\n\r\n%d\r\n" % round_
        a, b, c, d = (f"{name}{round_}@agents.test" for name in "abcd")
        for address in (a, b, c, d):
            await first.add_agent(make_agent(alice, address))
        await first.store_inbound(
            [make_message(f"msg_{round_}_a", a, raw), make_message(f"msg_{round_}_b", b, raw)],
            0.0,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.delete_agent, alice, a)
            nursery.start_soon(second.delete_agent, alice, b)
        assert raw_table(postgres_db) == (0, 0), round_

        await first.store_inbound([make_message(f"msg_{round_}_a2", c, raw)], 0.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.delete_agent, alice, c)
            nursery.start_soon(second.store_inbound, [make_message(f"msg_{round_}_d", d, raw)], 0.0)
        kept = await second.read_inbound(alice, d, f"msg_{round_}_d")
        assert kept is not None and kept.raw_message == raw, round_
        assert raw_table(postgres_db) == (1, len(raw)), round_
        assert await first.delete_agent(alice, d)
        assert raw_table(postgres_db) == (0, 0), round_


async def test_replicas_never_claim_the_same_job(replicas: tuple[Storage, Storage]) -> None:
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    await first.add_agent(make_agent(alice, "hook@agents.test", mode="cloud"))
    for index in range(60):
        await first.add_outbound(make_outbound(alice, "a@agents.test", f"out_{index}", "queued"))
    await first.store_inbound(
        [make_message(f"in_{index}", "hook@agents.test") for index in range(60)], 0.0
    )
    claimed: list[str] = []

    async def drain(store: Storage) -> None:
        while True:
            jobs = await store.claim_jobs("outbound", 100.0, 3, 60)
            jobs += await store.claim_webhook_jobs(100.0, 3, 60, {}, 1000)
            if not jobs:
                return
            claimed.extend(job.message_id for job in jobs)

    async with trio.open_nursery() as nursery:
        for store in (first, second, first, second):
            nursery.start_soon(drain, store)
    assert len(claimed) == len(set(claimed)) == 120


async def test_connections_the_database_dropped_are_replaced_without_failing_a_call(
    replicas: tuple[Storage, Storage], postgres_db: str
) -> None:
    """The database restarted (every session ended) while a replica's pooled connections sat
    idle: the calls that come next still answer, each on a new connection, rather than fail
    once for every connection the pool held."""
    first, _ = replicas
    alice = await add_user(first)
    async with trio.open_nursery() as nursery:  # several connections, idle in the pool after
        for _ in range(4):
            nursery.start_soon(first.ping)
    ended = run_sql(
        postgres_db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert len(ended) >= 4
    for _ in range(6):
        await first.ping()
        assert (await first.get_user(alice)) is not None
    await first.add_suppression(alice, None, "gone@example.org", None, 1.0)


async def test_replica_start_keeps_other_leases(replicas: tuple[Storage, Storage]) -> None:
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    await first.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    (job,) = await first.claim_jobs("outbound", time.time(), 10, BRIEF)
    await second.release_leases()
    assert await second.claim_jobs("outbound", time.time(), 10, 60) == []
    await outlast(job.leased_until)
    (taken_over,) = await second.claim_jobs("outbound", time.time(), 10, 60)
    assert taken_over.id == job.id


async def test_a_replica_whose_clock_runs_ahead_takes_no_lease_another_holds(
    replicas: tuple[Storage, Storage],
) -> None:
    """Replica B's clock runs 90 s ahead of A's. The outbound send, webhook POST and `/v1`
    delivery that A has just claimed for 60 s are not taken by B (which would send the mail or
    POST a second time): leases are timed by the database's clock. Nor does B, its agent
    going to the trash, cancel the send A holds. Once A's lease has run out by the
    database's clock, B takes them, whatever A's clock says."""
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    await first.add_agent(make_agent(alice, "hook@agents.test", mode="cloud"))
    await first.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    await first.store_inbound([make_message("msg_2", "hook@agents.test")], 0.0)
    webhook = await _webhook_with_deliveries(first, alice, 0)
    await first.add_test_delivery(alice, webhook.id, "evt_1", "email.received", b"{}", 10.0)
    now = time.time()
    (send,) = await first.claim_jobs("outbound", now, 10, 60)
    (post,) = await first.claim_webhook_jobs(now, None, 60, {}, 16)
    (delivery,) = await first.claim_subscriber_deliveries(now, None, 60, {}, 16)

    ahead = now + 90
    assert await second.claim_jobs("outbound", ahead, 10, 60) == []
    assert await second.claim_webhook_jobs(ahead, None, 60, {}, 16) == []
    assert await second.claim_subscriber_deliveries(ahead, None, 60, {}, 16) == []
    assert await second.trash_agent(alice, "a@agents.test", format_timestamp(ahead))
    held = await first.get_outbound(None, "msg_1")
    assert held is not None and held.status == "queued"
    assert {state.kind: state.state for state in await second.job_queue_states(ahead)} == {
        "outbound": "running",
        "webhook": "running",
    }

    renewed = await first.renew_job_lease(post.id, post.leased_until, now, BRIEF)
    assert renewed is not None
    await first.release_jobs([send])
    await first.release_subscriber_deliveries([delivery])
    await outlast(renewed)
    behind = time.time() - 90
    (taken,) = await second.claim_webhook_jobs(behind, None, 60, {}, 16)
    assert taken.id == post.id


async def test_work_given_back_after_its_lease_passed_to_another_replica_stays_with_it(
    replicas: tuple[Storage, Storage],
) -> None:
    """Replica A claims a webhook job, a send and a `/v1` delivery and stalls past their
    leases before it gives back those its receivers have no room for; replica B has claimed
    them meanwhile and is posting and sending. A's late give-back leaves B's leases alone:
    no third claim takes the work while B holds it (which would POST or send it twice)."""
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    await first.add_agent(make_agent(alice, "hook@agents.test", mode="cloud"))
    await first.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    await first.store_inbound([make_message("msg_2", "hook@agents.test")], 0.0)
    webhook = await _webhook_with_deliveries(first, alice, 0)
    await first.add_test_delivery(alice, webhook.id, "evt_1", "email.received", b"{}", 10.0)
    now = time.time()
    sends = await first.claim_jobs("outbound", now, 10, BRIEF)
    posts = await first.claim_webhook_jobs(now, None, BRIEF, {}, 16)
    deliveries = await first.claim_subscriber_deliveries(now, None, BRIEF, {}, 16)
    await outlast(max(claim.leased_until for claim in (*sends, *posts, *deliveries)))

    later = time.time()
    assert len(await second.claim_jobs("outbound", later, 10, 60)) == 1
    assert len(await second.claim_webhook_jobs(later, None, 60, {}, 16)) == 1
    assert len(await second.claim_subscriber_deliveries(later, None, 60, {}, 16)) == 1
    await first.release_jobs([*sends, *posts])
    await first.release_subscriber_deliveries(deliveries)

    assert await first.claim_jobs("outbound", later, 10, 60) == []
    assert await first.claim_webhook_jobs(later, None, 60, {}, 16) == []
    assert await first.claim_subscriber_deliveries(later, None, 60, {}, 16) == []


async def test_restarted_replica_frees_only_the_leases_held_under_its_name(
    replicas: tuple[Storage, Storage], postgres_db: str
) -> None:
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    for message_id in ("msg_1", "msg_2"):
        await first.add_outbound(make_outbound(alice, "a@agents.test", message_id, "queued"))
    (held_by_first,) = await first.claim_jobs("outbound", 100.0, 1, 60)
    (held_by_second,) = await second.claim_jobs("outbound", 100.0, 1, 60)
    restarted = open_storage(postgres_db, "host-a/8080")  # replica A, back after a crash
    try:
        await restarted.release_leases()
        (reclaimed,) = await restarted.claim_jobs("outbound", 101.0, 10, 60)
    finally:
        await restarted.close()
    assert reclaimed.id == held_by_first.id
    assert held_by_second.id != held_by_first.id


async def test_a_replica_started_under_a_running_ones_name_frees_none_of_its_leases(
    replicas: tuple[Storage, Storage], postgres_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas given the same `database.replica_id` (a copied config): the one that
    starts (or stops) while the other runs and holds jobs frees none of them, where it would
    hand the other's send in flight to a third replica and the mail would go out twice; the
    log names the setting. Once the other is gone, its leases are freed as before."""
    first, _ = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    await first.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    assert isinstance(first, e2a_gateway.storage.postgres.PostgresStorage)
    listening = await trio.to_thread.run_sync(first.connect_listener)  # replica A runs
    (held,) = await first.claim_jobs("outbound", 100.0, 1, 60)
    namesake = open_storage(postgres_db, "host-a/8080")  # another replica, named as A
    try:
        assert isinstance(namesake, e2a_gateway.storage.postgres.PostgresStorage)
        assert await first.namesake() is None  # its own LISTEN connection does not count
        await namesake.release_leases()
        assert await namesake.claim_jobs("outbound", 101.0, 10, 60) == []
        assert "database.replica_id" in caplog.text and "'host-a/8080'" in caplog.text
        listening.close()  # A stops
        with trio.fail_after(5):
            while await namesake.namesake() is not None:  # noqa: ASYNC110 (the server ends A's session)
                await trio.sleep(0.05)
        await namesake.release_leases()
        (reclaimed,) = await namesake.claim_jobs("outbound", 101.0, 10, 60)
    finally:
        listening.close()
        await namesake.close()
    assert reclaimed.id == held.id


async def test_restarted_replica_frees_its_own_v1_webhook_deliveries_at_once(
    replicas: tuple[Storage, Storage], postgres_db: str
) -> None:
    """`/v1` webhook deliveries a replica held when it crashed are free as soon as it starts
    again (not only once their lease lapses); those another replica holds stay its own."""
    first, second = replicas
    alice = await add_user(first)
    await _webhook_with_deliveries(first, alice, 2)
    (held_by_first,) = await first.claim_subscriber_deliveries(10.0, 1, 60, {}, 16)
    (held_by_second,) = await second.claim_subscriber_deliveries(10.0, 1, 60, {}, 16)
    restarted = open_storage(postgres_db, "host-a/8080")  # replica A, back after a crash
    try:
        await restarted.release_leases()
        (reclaimed,) = await restarted.claim_subscriber_deliveries(11.0, None, 60, {}, 16)
    finally:
        await restarted.close()
    assert reclaimed.delivery.id == held_by_first.delivery.id
    assert held_by_second.delivery.id != held_by_first.delivery.id


async def test_a_restart_frees_the_v1_webhook_deliveries_held_before_it(storage_url: str) -> None:
    """One process, crashed while it held `/v1` deliveries: started again, it sends them at
    once rather than after their lease."""
    store = open_storage(storage_url, "host-a")
    await store.migrate()
    alice = await add_user(store)
    await _webhook_with_deliveries(store, alice, 1)
    (held,) = await store.claim_subscriber_deliveries(10.0, None, 60, {}, 16)
    await store.close()
    restarted = open_storage(storage_url, "host-a")
    try:
        await restarted.release_leases()
        (reclaimed,) = await restarted.claim_subscriber_deliveries(11.0, None, 60, {}, 16)
    finally:
        await restarted.close()
    assert reclaimed.delivery.id == held.delivery.id


async def _webhook_with_deliveries(storage: Storage, user_id: str, count: int) -> Webhook:
    """A webhook `wh_1` of the user's with `count` test deliveries due at 10.0."""
    webhook = make_webhook(user_id)
    await storage.add_webhook(webhook, 20)
    for index in range(count):
        await storage.add_test_delivery(
            user_id, webhook.id, f"evt_{index}", "email.received", b"{}", 10.0
        )
    return webhook


PAUSE_SECONDS = 10.0


class PauseAfter:
    """Holds the transaction that runs a statement beginning with `prefix` in its worker thread,
    right after that statement, until `resume()`: another replica acts in between."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prefix: str, *, once: bool = False) -> None:
        """`once`: only the first transaction to run the statement is held."""
        self.reached = threading.Event()
        self._resumed = threading.Event()
        execute = Transaction.execute

        def pause_after(query: str) -> None:
            if query.startswith(prefix) and not (once and self.reached.is_set()):
                self.reached.set()
                self._resumed.wait(PAUSE_SECONDS)

        def execute_then_pause(tx: Transaction, query: str, *args: Any, **kwargs: Any) -> Any:
            cursor = execute(tx, query, *args, **kwargs)
            pause_after(query)
            return cursor

        def executemany_then_pause(tx: Transaction, query: str, rows: Any) -> None:
            executemany(tx, query, rows)
            pause_after(query)

        executemany = Transaction.executemany
        monkeypatch.setattr(Transaction, "execute", execute_then_pause)
        monkeypatch.setattr(Transaction, "executemany", executemany_then_pause)

    async def wait(self) -> None:
        """Return once the statement has run, its transaction held."""
        with trio.fail_after(PAUSE_SECONDS):
            await trio.to_thread.run_sync(self.reached.wait)

    def resume(self) -> None:
        """Let the held transaction go on."""
        self._resumed.set()


async def done_or_waiting_for_a_lock(postgres_db: str, done: Callable[[], bool]) -> None:
    """Return once `done()` holds or a transaction on the database waits for a lock."""
    waiting = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    await wait_until(lambda: done() or run_sql(postgres_db, waiting) != [(0,)], PAUSE_SECONDS)


async def test_an_event_committed_late_is_listed_above_those_seen_before(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas log an event of one account at once, the first held in its transaction
    after its insert: whatever a reader listed meanwhile, the events it did not see yet are
    all listed above (newer than) those it saw, so a reader paging down to the newest event it
    had seen misses none. (PostgreSQL numbers a row when it is inserted, not when it commits.)"""
    first, second = replicas
    alice = await add_user(first)
    pause = PauseAfter(monkeypatch, "INSERT INTO events", once=True)

    logged: list[str] = []

    async def log(storage: Storage, name: str) -> None:
        data = {"message_id": f"msg_{name}"}
        await storage.log_events([new_event(alice, "email.sent", data, 0.0, event_id=name)])
        logged.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(log, first, "evt_first")
        try:
            await pause.wait()
            nursery.start_soon(log, second, "evt_second")
            await done_or_waiting_for_a_lock(postgres_db, lambda: "evt_second" in logged)
            seen = [event.id for event in await second.list_events(alice, EventFilter(), 10, None)]
        finally:
            pause.resume()
    listed = [event.id for event in await second.list_events(alice, EventFilter(), 10, None)]
    assert sorted(listed) == ["evt_first", "evt_second"]
    assert listed[len(listed) - len(seen) :] == seen


async def _trashed_bot(storage: Storage) -> str:
    """A user whose agent bot@agents.test, holding one message, is in the trash; its id."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "bot@agents.test"))
    await storage.store_inbound([make_message("msg_1", "bot@agents.test")], 0.0)
    await storage.trash_agent(alice, "bot@agents.test", "2026-01-10T00:00:00Z")
    return alice


async def _race(
    postgres_db: str,
    pause: PauseAfter,
    leading: Callable[[], Awaitable[None]],
    following: Callable[[], Awaitable[None]],
    settled: Callable[[], bool],
) -> None:
    """Run `leading` up to its pause, then `following` until it has `settled` or waits for a
    lock `leading` holds; then let `leading` go on, and wait for both."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leading)
        try:
            await pause.wait()
            nursery.start_soon(following)
            await done_or_waiting_for_a_lock(postgres_db, settled)
        finally:
            pause.resume()


async def _purge_and_restore(
    replicas: tuple[Storage, Storage],
    alice: str,
    postgres_db: str,
    pause: PauseAfter,
    *,
    purge_first: bool,
) -> dict[str, Any]:
    """Replica A purging and replica B restoring alice's trashed bot, the first paused by
    `pause` while the other starts; what each answered (`purged`, `restored`)."""
    first, second = replicas
    outcome: dict[str, Any] = {}

    async def purge() -> None:
        outcome["purged"] = await first.purge_agents_trashed_before("2026-02-01T00:00:00Z", 10)

    async def restore() -> None:
        outcome["restored"] = await second.restore_agent(alice, "bot@agents.test")

    leading, following, waited = (
        (purge, restore, "restored") if purge_first else (restore, purge, "purged")
    )
    await _race(postgres_db, pause, leading, following, lambda: waited in outcome)
    return outcome


async def test_a_purge_never_deletes_an_agent_restored_after_it_chose_it(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A's purge has chosen a trashed agent and not deleted it yet when replica B
    restores it: the restore waits for the purge and finds the agent gone, rather than
    answering with an agent the purge then deletes, mail and all."""
    alice = await _trashed_bot(replicas[0])
    pause = PauseAfter(monkeypatch, "SELECT id, user_id, email FROM agents WHERE deleted_at")
    outcome = await _purge_and_restore(replicas, alice, postgres_db, pause, purge_first=True)
    assert outcome == {"purged": AgentPurge(agents=1, messages=1), "restored": None}
    assert await replicas[0].get_agent(alice, "bot@agents.test") is None
    assert run_sql(postgres_db, "SELECT count(*) FROM messages") == [(0,)]


async def test_a_purge_passes_over_an_agent_being_restored(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica B is restoring a trashed agent (its row changed, not committed yet) when
    replica A purges: the purge passes over it, and the restored agent keeps its mail."""
    alice = await _trashed_bot(replicas[0])
    pause = PauseAfter(monkeypatch, "UPDATE agents SET deleted_at = NULL")
    outcome = await _purge_and_restore(replicas, alice, postgres_db, pause, purge_first=False)
    assert outcome["purged"] == AgentPurge() and outcome["restored"] is not None
    assert await replicas[0].get_agent(alice, "bot@agents.test") is not None
    page = await replicas[0].list_inbound(alice, "bot@agents.test", "all", 10, None)
    assert [message.id for message in page.messages] == ["msg_1"]


async def test_mail_stored_while_its_account_is_deleted_takes_turns_with_the_deletion(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A is storing mail for alice's agent (the agent found and held, nothing written
    yet) when replica B deletes alice's account: the deletion waits for the mail and then
    erases it too, rather than both waiting for each other until PostgreSQL breaks the
    deadlock by failing the deletion (the owner's `DELETE /users/me` answered 503) or the mail.
    Nothing of alice is left."""
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "bot@agents.test"))
    await first.store_inbound([make_message("msg_1", "bot@agents.test")], 0.0)
    pause = PauseAfter(monkeypatch, "SELECT email, user_id, agent_mode, id, inbound_gate_policy")
    outcome: dict[str, Any] = {}

    async def store() -> None:
        message = make_message("msg_2", "bot@agents.test", raw=b"Subject: later\r\n\r\nb\r\n")
        await first.store_inbound([message], 1.0)
        outcome["stored"] = True

    async def delete() -> None:
        try:
            outcome["deleted"] = await second.delete_user(alice)
        except StorageUnavailable as exc:
            outcome["deleted"] = exc

    await _race(postgres_db, pause, store, delete, lambda: "deleted" in outcome)
    assert outcome["stored"] is True
    assert isinstance(outcome["deleted"], dict), outcome["deleted"]
    assert outcome["deleted"]["users"] == 1 and outcome["deleted"]["agents"] == 1
    for table in ("users", "agents", "messages", "raw_messages", "jobs", "events"):
        assert run_sql(postgres_db, f"SELECT count(*) FROM {table}") == [(0,)], table


async def test_an_agent_deleted_while_its_send_is_recorded_takes_turns_with_the_record(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A's send worker is recording a send of alice's agent (its job taken, the
    message not yet updated) when replica B deletes the agent for good: the deletion waits for
    the record and then deletes the message, rather than both waiting for each other until
    PostgreSQL fails the deletion (`DELETE /v1/agents/{email}?permanent=true` answered 503)."""
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    await first.add_outbound(make_outbound(alice, "a@agents.test", "msg_1", "queued"))
    (job,) = await first.claim_jobs("outbound", 100.0, 10, 60)
    pause = PauseAfter(monkeypatch, "DELETE FROM jobs WHERE id = ?")
    outcome: dict[str, Any] = {}

    async def record() -> None:
        await first.finish_outbound([SendAttempt(job.id, "msg_1", "sent", "smtp", None, None)])
        outcome["recorded"] = True

    async def delete() -> None:
        try:
            outcome["deleted"] = await second.delete_agent(alice, "a@agents.test")
        except StorageUnavailable as exc:
            outcome["deleted"] = exc

    await _race(postgres_db, pause, record, delete, lambda: "deleted" in outcome)
    assert outcome["recorded"] is True
    assert isinstance(outcome["deleted"], str), outcome["deleted"]
    for table in ("agents", "messages", "jobs"):
        assert run_sql(postgres_db, f"SELECT count(*) FROM {table}") == [(0,)], table


async def test_replicas_suppressing_one_address_at_once_both_answer_it(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A has added a suppression (not committed yet) when replica B adds the same one:
    B waits for A and answers the suppression A added, rather than failing on the duplicate."""
    first, second = replicas
    alice = await add_user(first)
    pause = PauseAfter(monkeypatch, "INSERT INTO suppressions")
    added: dict[str, Any] = {}

    async def add(name: str, store: Storage) -> None:
        added[name] = await store.add_suppression(alice, None, "gone@example.org", name, 1.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(add, "first", first)
        try:
            await pause.wait()
            nursery.start_soon(add, "second", second)
            await done_or_waiting_for_a_lock(postgres_db, lambda: "second" in added)
        finally:
            pause.resume()
    assert added["first"] == added["second"]
    assert added["second"].reason == "first"
    assert run_sql(postgres_db, "SELECT count(*) FROM suppressions") == [(1,)]


async def _delete_domain_and_add_agent(
    replicas: tuple[Storage, Storage], postgres_db: str, pause: PauseAfter, *, delete_first: bool
) -> dict[str, Any]:
    """Replica A deleting alice's verified corp.example and replica B adding her agent on it,
    the first paused by `pause` while the other starts; what each did (`deleted`, `added`:
    an answer or the exception raised)."""
    first, second = replicas
    alice = await add_user(first)
    await first.add_domain(Domain(alice, "corp.example", "tok", False, NOW, None))
    await first.mark_domain_verified(alice, "corp.example", NOW)
    outcome: dict[str, Any] = {}

    async def delete() -> None:
        try:
            outcome["deleted"] = await first.delete_domain(alice, "corp.example")
        except InUse as exc:
            outcome["deleted"] = exc

    async def add() -> None:
        try:
            await second.add_agent(make_agent(alice, "bot@corp.example"), on_owned_domain=True)
            outcome["added"] = True
        except DomainNotHeld as exc:
            outcome["added"] = exc

    leading, following, waited = (
        (delete, add, "added") if delete_first else (add, delete, "deleted")
    )
    await _race(postgres_db, pause, leading, following, lambda: waited in outcome)
    return outcome


async def test_an_agent_added_while_its_domain_is_deleted_is_refused(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A is deleting a domain (its agents counted, none) when replica B adds an agent
    on it: B waits for A and refuses, rather than storing an agent on a domain nobody holds."""
    pause = PauseAfter(monkeypatch, "SELECT 1 FROM agents WHERE user_id = ? AND domain = ?")
    outcome = await _delete_domain_and_add_agent(replicas, postgres_db, pause, delete_first=True)
    assert outcome["deleted"] is True and isinstance(outcome["added"], DomainNotHeld)
    assert run_sql(postgres_db, "SELECT count(*) FROM agents") == [(0,)]


async def test_a_domain_deleted_while_an_agent_is_added_on_it_stays(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica B is adding an agent on a domain (inserted, not committed yet) when replica A
    deletes the domain: A waits for B and refuses, the domain being in use."""
    pause = PauseAfter(monkeypatch, "INSERT INTO agents")
    outcome = await _delete_domain_and_add_agent(replicas, postgres_db, pause, delete_first=False)
    assert outcome["added"] is True and isinstance(outcome["deleted"], InUse)
    assert run_sql(postgres_db, "SELECT count(*) FROM domains") == [(1,)]


async def test_mail_for_an_agent_deleted_meanwhile_is_not_stored_for_now(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A is deleting an agent (not committed yet) when replica B stores mail for it
    and another agent: B waits for A and answers that the agent vanished (storage
    unavailable: the sender is told to try later), rather than failing on the foreign key."""
    first, second = replicas
    alice = await add_user(first)
    for address in ("bot@agents.test", "other@agents.test"):
        await first.add_agent(make_agent(alice, address))
    pause = PauseAfter(monkeypatch, "DELETE FROM agents WHERE id = ?")
    outcome: dict[str, Any] = {}

    async def delete() -> None:
        outcome["deleted"] = await first.delete_agent(alice, "bot@agents.test")

    async def store() -> None:
        mail = [
            make_message("msg_bot", "bot@agents.test"),
            make_message("msg_1", "other@agents.test"),
        ]
        with pytest.raises(StorageUnavailable, match=r"agent bot@agents\.test vanished"):
            await second.store_inbound(mail, 1.0)
        outcome["refused"] = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(delete)
        try:
            await pause.wait()
            nursery.start_soon(store)
            await done_or_waiting_for_a_lock(postgres_db, lambda: "refused" in outcome)
        finally:
            pause.resume()
    assert outcome == {"deleted": outcome["deleted"], "refused": True} and outcome["deleted"]
    assert run_sql(postgres_db, "SELECT count(*) FROM messages") == [(0,)]


async def test_mail_for_an_agent_deleted_meanwhile_fails_cleanly_and_alone(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A is deleting an agent (not committed yet) when replica B stores mail for it
    among other agents' mail, sessions sharing its transactions: B waits for A, and the
    deleted agent's message fails as storage unavailable (the sender is told to try later)
    while every other agent's is stored."""
    first, second = replicas
    alice = await add_user(first)
    for address in ("bot@agents.test", "other@agents.test"):
        await first.add_agent(make_agent(alice, address))
    pause = PauseAfter(monkeypatch, "DELETE FROM agents WHERE id = ?")
    committer = GroupCommitter(second)
    failed: list[str] = []
    outcome: dict[str, Any] = {}

    async def delete() -> None:
        outcome["deleted"] = await first.delete_agent(alice, "bot@agents.test")

    async def session(message_id: str, address: str) -> None:
        try:
            await committer.store_inbound([make_message(message_id, address)], 1.0)
        except StorageUnavailable as exc:
            failed.append(f"{message_id}: {exc}")

    async def sessions() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session, "msg_bot", "bot@agents.test")
            for number in range(5):
                nursery.start_soon(session, f"msg_{number}", "other@agents.test")
        outcome["stored"] = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(delete)
        try:
            await pause.wait()
            nursery.start_soon(sessions)
            await done_or_waiting_for_a_lock(postgres_db, lambda: "stored" in outcome)
        finally:
            pause.resume()
    assert outcome["deleted"] is not None
    assert failed == ["msg_bot: agent bot@agents.test vanished"]
    page = await first.list_inbound(alice, "other@agents.test", "all", 10, None)
    assert sorted(message.id for message in page.messages) == [f"msg_{n}" for n in range(5)]


async def test_a_walk_through_an_agents_mail_skips_nothing_sent_meanwhile(
    replicas: tuple[Storage, Storage], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A is storing a message the agent sends (numbered, not committed yet) when
    replica B stores mail it receives: a walk through its mail, oldest first, page by page,
    never passes a message it has not shown (B waits for A, so mail commits in its order)."""
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    pause = PauseAfter(monkeypatch, "INSERT INTO messages")
    stored: list[str] = []
    shown: list[FiledMessage] = []
    oldest_first = MessageFilters(newest_first=False)

    async def walk(after: int | None) -> int | None:
        page = await second.filed_page(alice, "a@agents.test", oldest_first, 2, after)
        shown.extend(page[:1])
        return page[0].seq if len(page) > 1 else None

    async def send() -> None:
        await first.add_outbound(make_outbound(alice, "a@agents.test", "out_1", "queued"))
        stored.append("out_1")

    async def receive() -> None:
        messages = [make_message(f"in_{n}", "a@agents.test") for n in (1, 2)]
        await second.store_inbound(messages, 1.0)
        stored.append("in")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        try:
            await pause.wait()
            monkeypatch.undo()
            nursery.start_soon(receive)
            await done_or_waiting_for_a_lock(postgres_db, lambda: "in" in stored)
            position = await walk(None)
        finally:
            pause.resume()
    while position is not None:
        position = await walk(position)
    walked = [message.id for message in shown]
    assert walked == ["out_1", "in_1", "in_2"][: len(walked)]
    every = await second.filed_page(alice, "a@agents.test", oldest_first, 10, None)
    assert [message.id for message in every] == ["out_1", "in_1", "in_2"]


async def test_replicas_each_hand_on_an_answer_of_their_own(
    replicas: tuple[Storage, Storage],
) -> None:
    """Two answers about replies to one notice wait, each with its job; two replicas take one
    job each at the same moment: each hands on its own answer (not both the oldest, leaving
    the other answer without a job), and finishing leaves nothing behind."""
    first, second = replicas
    alice = await add_user(first)
    await first.add_agent(make_agent(alice, "a@agents.test"))
    await first.add_outbound(make_outbound(alice, "a@agents.test", "out_1", "pending_approval"))
    await first.add_reply_token(ReplyToken("token", "out_1", "owner@example.com", "<n@x>", 1.0))
    for text in (b"first answer", b"second answer"):
        answer = ApprovalAnswer("out_1", "e2a@x", "owner@example.com", text)
        assert await first.add_approval_answer(answer, "token", 5, 2.0)
    jobs = [
        *await first.claim_jobs("approval_answer", 3.0, 1, 60),
        *await second.claim_jobs("approval_answer", 3.0, 1, 60),
    ]
    assert len({job.id for job in jobs}) == 2
    taken = [
        await store.next_approval_answer(job.message_id, job.id)
        for store, job in zip((first, second), jobs, strict=True)
    ]
    assert sorted(answer.data for answer in taken if answer) == [
        b"first answer",
        b"second answer",
    ]
    for store, job, answer in zip((first, second), jobs, taken, strict=True):
        assert answer is not None
        await store.finish_approval_answer(job.id, answer.id)
    assert await first.claim_jobs("approval_answer", 1e9, 10, 60) == []
    assert await first.next_approval_answer("out_1", jobs[0].id) is None


async def test_export_and_delete_user_touch_only_that_user(storage: Storage) -> None:
    alice = await add_user(storage, "alice@example.com")
    bob = await add_user(storage, "bob@example.com")
    for user, name in ((alice, "alice"), (bob, "bob")):
        await storage.add_api_key(
            ApiKey(f"key_{name}", user, "k", "e2a_1234", NOW, None, None), f"hash-{name}"
        )
        await storage.add_signing_secret(
            SigningSecret(f"wsec_{name}", user, "s", f"seed-{name}", "whsec_ab", NOW, None), 5
        )
        await storage.add_domain(Domain(user, f"{name}.example", f"token-{name}", False, NOW, None))
        await storage.add_agent(make_agent(user, f"{name}@agents.test", mode="cloud"))
        await storage.store_inbound([make_message(f"msg_{name}", f"{name}@agents.test")], 1.0)
        await storage.add_outbound(
            make_outbound(user, f"{name}@agents.test", f"out_{name}", "pending_approval", 1e12)
        )
        for _ in range(2):  # kept once, however often a send stores it
            await storage.add_unsubscribe_token(
                f"link-{name}", user, f"{name}@agents.test", "carol@example.org", 1.0
            )

    for job in await storage.claim_webhook_jobs(10.0, None, 60, {}, 1000):
        attempt = WebhookAttempt(1, NOW, 500, None, 5)
        await storage.finish_webhook_attempts(
            [FinishedAttempt(job.id, job.message_id, attempt, "retrying", 20.0, job.leased_until)]
        )

    export = await whole_export(storage, alice)
    assert export["user"] == {"id": alice, "email": "alice@example.com", "created_at": NOW}
    assert [agent["email"] for agent in export["agents"]] == ["alice@agents.test"]
    assert [domain["domain"] for domain in export["domains"]] == ["alice.example"]
    assert [key["id"] for key in export["api_keys"]] == ["key_alice"]
    assert [secret["id"] for secret in export["signing_secrets"]] == ["wsec_alice"]
    inbound, outbound = export["messages"]
    assert (inbound["id"], inbound["size_bytes"], inbound["delivery_status"]) == (
        "msg_alice",
        len(b"Subject: hi\r\n\r\nbody\r\n"),
        "retrying",
    )
    assert (outbound["id"], outbound["bcc"], outbound["kind"]) == (
        "out_alice",
        ["hidden@example.org"],
        "send",
    )
    assert export["unsubscribe_links"] == [
        {"agent_email": "alice@agents.test", "address": "carol@example.org", "created_at": ANY}
    ]
    text = repr(export)
    for secret in ("hash-alice", "seed-alice", "draft body", "bob", "link-alice"):
        assert secret not in text

    deleted = await storage.delete_user(alice)
    assert deleted == {
        "agents": 1,
        "messages": 2,
        "domains": 1,
        "api_keys": 1,
        "signing_secrets": 1,
        "jobs": 2,  # the inbound message's webhook job and the outbound approval notice
        "webhook_attempts": 1,
        "agent_unsubscribe_tokens": 1,
        "agent_suppressions": 0,
        "users": 1,
    }
    assert await storage.find_unsubscribe_token("link-alice") is None
    link = await storage.find_unsubscribe_token("link-bob")
    assert link is not None and (link.user_id, link.address) == (bob, "carol@example.org")
    assert await storage.get_user(alice) is None
    assert await storage.user_for_key_hash("hash-alice") is None
    assert await storage.find_agent("alice@agents.test") is None
    assert await storage.delete_user(alice) == dict.fromkeys(deleted, 0)
    await storage.add_agent(make_agent(bob, "alice@agents.test"))  # the address is free again

    bob_export = await whole_export(storage, bob)
    assert len(bob_export["messages"]) == 2 and len(bob_export["api_keys"]) == 1
    assert await storage.user_for_key_hash("hash-bob") is not None
    assert await storage.get_outbound(bob, "out_bob") is not None
    assert len(await storage.webhook_attempts(bob, "msg_bob")) == 1


async def hit_one(
    storage: Storage, key: str, window_seconds: int, limit: int, now: float
) -> RateCount:
    """Weigh one request against one limit."""
    (count,) = await storage.hit_rate_limits([RateLimit(key, window_seconds, limit)], now)
    return count


class WindowClock:
    """Made-up time for weighing requests on either backend: `now` to pass, and on PostgreSQL,
    which dates requests by its own clock, the counted requests moved back as time passes."""

    def __init__(self, storage_url: str, now: float) -> None:
        self.storage_url = storage_url
        self.now = now

    def passes(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.now += seconds
        age_rate_limits(self.storage_url, seconds)


def refused_for(count: RateCount, seconds: float) -> bool:
    """Whether `count` was refused with `seconds` to wait, less at most the moment the test
    itself took since (the database's clock runs on between calls, a made-up one does not)."""
    return count.wait is not None and seconds - 0.5 < count.wait <= seconds


async def test_rate_limit_slides_per_key_and_counts_only_allowed_requests(
    storage: Storage, storage_url: str
) -> None:
    # half-way through a clock minute: no fixed window starts here
    clock = WindowClock(storage_url, 1_800_000_030.0)

    async def hit(key: str = "poll:alice", window_seconds: int = 60, limit: int = 3) -> RateCount:
        return await hit_one(storage, key, window_seconds, limit, clock.now)

    for n in range(3):
        count = await hit()
        assert (count.wait, count.hits, count.remaining) == (None, n + 1, 2 - n)
        assert count.reset_seconds == 60 - n  # until the first request leaves the window
        clock.passes(1)
    clock.passes(12)  # 15 s after the first
    over = await hit()
    assert (over.allowed, over.hits, over.remaining, over.reset_seconds) == (False, 3, 0, 45)
    assert refused_for(over, 45)
    # Refused requests are not counted: asking again and again does not push the turn away.
    clock.passes(5)
    for n in range(5):
        assert refused_for(await hit(), 40 - n)
        clock.passes(1)
    # Another key has its own count.
    assert (await hit("poll:bob")).hits == 1
    clock.passes(34.5)  # 59.5 s after the first
    assert refused_for(await hit(), 0.5)
    # The window slides: 60 s after the first request it has left, one place is free; the
    # second and third leave a second and two seconds later.
    clock.passes(0.5)
    freed = await hit()
    assert (freed.wait, freed.hits, freed.reset_seconds) == (None, 3, 1)
    clock.passes(0.5)
    assert refused_for(await hit(), 0.5)
    clock.passes(0.5)
    assert (await hit()).wait is None
    # Different window lengths on one clock.
    assert (await hit("register:ip", 3600, 1)).wait is None
    clock.passes(100)
    assert refused_for(await hit("register:ip", 3600, 1), 3500)


async def test_a_request_weighed_against_two_limits_counts_against_both_or_neither(
    storage: Storage, storage_url: str
) -> None:
    clock = WindowClock(storage_url, 1_800_000_000.0)
    account = RateLimit("register:user:alice", 3600, 5)
    address = RateLimit("register:ip:10.0.0.1", 3600, 2)
    for n in range(2):
        both = await storage.hit_rate_limits([account, address], clock.now)
        assert [(count.allowed, count.hits) for count in both] == [(True, n + 1), (True, n + 1)]
        clock.passes(1)
    clock.passes(8)  # 10 s after the first
    for n in range(3):  # the address refuses: the account's budget is not spent meanwhile
        refused = await storage.hit_rate_limits([account, address], clock.now)
        assert [(count.allowed, count.hits) for count in refused] == [(True, 2), (False, 2)]
        assert (refused[0].wait, refused[0].remaining) == (None, 3)
        assert refused_for(refused[1], 3600 - 10 - n)
        clock.passes(1)
    alone = await hit_one(storage, account.key, 3600, 5, clock.now)
    assert (alone.hits, alone.remaining) == (3, 2)  # two counted before, this one the third


async def test_rate_limit_prunes_requests_that_left_their_windows(storage_url: str) -> None:
    store = open_storage(storage_url)
    await store.migrate()
    try:
        clock = WindowClock(storage_url, 1_800_000_000.0)
        for n in range(5):
            await hit_one(store, f"old:{n}", 60, 10, clock.now)
        clock.passes(3600)
        await hit_one(store, "fresh", 60, 10, clock.now)
    finally:
        await store.close()
    assert [row[0] for row in query(storage_url, "SELECT key FROM rate_limit_hits")] == ["fresh"]


async def test_replicas_share_one_rate_limit(replicas: tuple[Storage, Storage]) -> None:
    first, second = replicas
    now = 1_800_000_000.0
    counts: list[RateCount] = []

    async def hit(store: Storage) -> None:
        counts.append(await hit_one(store, "register:10.0.0.1", 3600, 10, now))

    async with trio.open_nursery() as nursery:
        for n in range(16):
            nursery.start_soon(hit, first if n % 2 else second)
    allowed = sorted(count.hits for count in counts if count.allowed)
    assert allowed == list(range(1, 11))  # none lost, none counted twice, never eleven
    refused = [count for count in counts if not count.allowed]
    assert [(count.hits, count.reset_seconds) for count in refused] == [(10, 3600)] * 6
    assert all(refused_for(count, 3600) for count in refused)


async def test_replicas_whose_clocks_disagree_still_share_one_rate_limit(
    replicas: tuple[Storage, Storage], postgres_db: str
) -> None:
    """Requests are dated, and windows judged, by the database's clock: a replica whose clock
    runs a minute ahead does not take another's requests for gone (and let a limit through
    twice), and one running a minute behind does not keep them too long; each is told the
    wait on its own clock."""
    first, second = replicas
    ahead, behind = 60.5, -60.5
    limit = RateLimit("send:agent:a@agents.test", 60, 10)

    async def hit(store: Storage, skew: float) -> RateCount:
        (count,) = await store.hit_rate_limits([limit], time.time() + skew)
        return count

    counts = [await hit(first, 0.0) for _ in range(10)]
    counts += [await hit(second, ahead) for _ in range(10)]
    assert sum(count.allowed for count in counts) == 10
    # Refused until the first replica's first request leaves the window, a minute from then.
    assert all(refused_for(refused, 60) for refused in counts[10:])
    age_rate_limits(postgres_db, 61)
    assert (await hit(second, behind)).allowed  # the first replica's requests have left


async def test_threading_reads_only_the_owners_messages_and_weighs_claims(
    storage: Storage,
) -> None:
    """A conversation id a sending agent gives is taken where it is new to the recipient agent,
    already holds mail from that sender, or is where the references lead — never to join
    another tenant's conversation by naming it; and the lookup reads the owner's rows only."""
    bob = await add_user(storage, "bob@example.com")
    alice = await add_user(storage, "alice@example.com")
    await storage.add_agent(make_agent(bob, "b@agents.test"))
    in_bobs_thread = replace(
        make_message("msg_b1", "b@agents.test"),
        from_addr="carol@example.org",
        conversation_id="conv-bob",
        rfc_message_id="<b1@example.org>",
    )
    elsewhere = replace(
        make_message("msg_b2", "b@agents.test"),
        conversation_id="conv-other",
        rfc_message_id="<b2@example.org>",
    )
    await storage.store_inbound([in_bobs_thread, elsewhere], 0)

    def lookup(
        user_id: str, refs: list[str], claim: ConversationClaim | None = None
    ) -> Awaitable[str | None]:
        return storage.conversation_for(user_id, "b@agents.test", refs, claim)

    assert await lookup(bob, ["<b1@example.org>"]) == "conv-bob"
    assert await lookup(alice, ["<b1@example.org>"]) is None
    by_alice = ConversationClaim("conv-bob", "a@agents.test")
    assert await lookup(bob, [], by_alice) is None
    assert await lookup(bob, ["<b2@example.org>"], by_alice) == "conv-other"
    assert await lookup(bob, ["<b1@example.org>"], by_alice) == "conv-bob"
    assert await lookup(bob, [], ConversationClaim("conv-bob", "carol@example.org")) == "conv-bob"
    assert await lookup(bob, [], ConversationClaim("conv-new", "a@agents.test")) == "conv-new"


async def test_upkeep_copies_the_log_into_the_database_off_the_commits(tmp_path: Path) -> None:
    """Commits only append to the write-ahead log (the writer checkpoints itself only past
    BACKSTOP_CHECKPOINT_PAGES); `upkeep` copies it into the database file soon after."""
    path = tmp_path / "e2a.db"

    def in_database_file() -> int:
        """Messages the database file holds on its own (without its log); -1 for a copy taken
        while a checkpoint was writing the file (torn: read again)."""
        copy = tmp_path / "copy.db"
        shutil.copyfile(path, copy)
        with contextlib.closing(sqlite3.connect(copy)) as db:
            try:
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages'").fetchone():
                    return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
            except sqlite3.DatabaseError:
                return -1
            return 0

    storage = open_storage(f"sqlite:///{path}")
    await storage.migrate()
    try:
        alice = await add_user(storage)
        await storage.add_agent(make_agent(alice, "a@agents.test"))
        raw = os.urandom(200_000)
        await storage.store_inbound([make_message("msg_big", "a@agents.test", raw)], 0.0)
        assert in_database_file() == 0  # in the log only
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storage.upkeep)
            for _ in range(100):  # 5 s at most
                if in_database_file() > 0:
                    break
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert in_database_file() == 1
        stored = await storage.read_inbound(alice, "a@agents.test", "msg_big")
        assert stored is not None and stored.raw_message == raw
    finally:
        await storage.close()


async def test_the_log_shrinks_back_after_a_burst_that_outgrew_it(tmp_path: Path) -> None:
    """While a reader holds an old snapshot (a backup, a long export) no checkpoint can finish
    and the write-ahead log grows with every commit. Once the log has been copied and starts
    over, its file is cut back to the backstop's size rather than kept at its largest."""
    path = tmp_path / "e2a.db"
    wal = tmp_path / "e2a.db-wal"
    storage = open_storage(f"sqlite:///{path}")
    await storage.migrate()
    limit = e2a_gateway.storage.sqlite.BACKSTOP_CHECKPOINT_PAGES * 4096
    try:
        alice = await add_user(storage)
        await storage.add_agent(make_agent(alice, "a@agents.test"))
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as backup:
            backup.execute("BEGIN")
            backup.execute("SELECT count(*) FROM messages").fetchall()
            burst = [
                make_message(f"msg_{n}", "a@agents.test", os.urandom(1 << 20)) for n in range(48)
            ]
            await storage.store_inbound(burst, 0.0)
            assert wal.stat().st_size > limit
            backup.execute("COMMIT")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(storage.upkeep)
            for n in range(3):  # each a commit, then a checkpoint behind it
                await storage.store_inbound([make_message(f"msg_after_{n}", "a@agents.test")], 0)
                await trio.sleep(2 * e2a_gateway.storage.sqlite.CHECKPOINT_SECONDS)
            nursery.cancel_scope.cancel()
        assert wal.stat().st_size <= limit
        stored = await storage.read_inbound(alice, "a@agents.test", "msg_47")
        assert stored is not None and stored.raw_message == burst[-1].raw_message
    finally:
        await storage.close()


async def test_inbox_pages_and_messages_read_again_never_outlive_a_write(storage: Storage) -> None:
    """What a poll reads may be remembered (SQLite), but every write is seen by the next poll:
    new mail, a message marked read, a message trashed."""
    alice = await add_user(storage)
    bob = await add_user(storage, "bob@example.com")
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.store_inbound([make_message("msg_0", "a@agents.test")], 0.0)
    for _ in range(2):
        page = await storage.inbox_page(alice, "a@agents.test", "unread", 10, None)
        assert page is not None and [entry.id for entry in page.messages] == ["msg_0"]
        assert await storage.inbox_page(bob, "a@agents.test", "unread", 10, None) is None
    await storage.store_inbound([make_message("msg_1", "a@agents.test")], 0.0)
    page = await storage.inbox_page(alice, "a@agents.test", "unread", 10, None)
    assert page is not None and [entry.id for entry in page.messages] == ["msg_0", "msg_1"]
    first = await storage.read_inbound(alice, "a@agents.test", "msg_0")
    assert first is not None and first.status == "read"
    again = await storage.read_inbound(alice, "a@agents.test", "msg_0")
    assert again is not None and again.status == "read"
    assert await storage.read_inbound(bob, "a@agents.test", "msg_0") is None
    page = await storage.inbox_page(alice, "a@agents.test", "unread", 10, None)
    assert page is not None and [entry.id for entry in page.messages] == ["msg_1"]
    assert await storage.trash_message(alice, "a@agents.test", "msg_0", NOW) is not None
    assert await storage.read_inbound(alice, "a@agents.test", "msg_0") is None


def template(user_id: str, number: int, alias: str | None = None) -> EmailTemplate:
    return EmailTemplate(
        id=f"tmpl_{number:04d}",
        user_id=user_id,
        name=f"Template {number}",
        alias=alias,
        subject="Hello {{name}}",
        text="Hi {{name}}.",
        html=None,
        created_at=NOW,
        updated_at=NOW,
    )


async def test_templates_are_kept_per_account_with_unique_aliases(storage: Storage) -> None:
    owner = await add_user(storage)
    other = await add_user(storage, "other@example.com")
    for number in range(3):
        await storage.add_template(template(owner, number, f"alias-{number}"), 3)
    with pytest.raises(LimitReached):
        await storage.add_template(template(owner, 9), 3)
    # another account may use the same alias; the same account may not
    await storage.add_template(template(other, 10, "alias-0"), 3)
    with pytest.raises(AlreadyExists):
        await storage.add_template(template(other, 11, "alias-0"), 3)
    await storage.add_template(template(other, 12), 3)  # no alias: never a conflict
    await storage.add_template(template(other, 13), 5)

    newest = await storage.template_page(owner, 2, None)
    assert [item.id for item in newest] == ["tmpl_0002", "tmpl_0001"]
    rest = await storage.template_page(owner, 2, newest[-1].seq)
    assert [item.id for item in rest] == ["tmpl_0000"]
    assert await storage.get_template(other, "tmpl_0000") is None  # not theirs
    assert (await storage.template_by_alias(other, "alias-0")).id == "tmpl_0010"  # type: ignore[union-attr]
    assert await storage.template_by_alias(owner, "alias-9") is None

    later = "2026-01-02T00:00:00Z"
    changes = TemplateChanges(alias="", html="<p>{{name}}</p>")
    changed = await storage.update_template(owner, "tmpl_0001", changes, later)
    assert changed is not None and changed.alias is None and changed.html == "<p>{{name}}</p>"
    assert (changed.name, changed.updated_at) == ("Template 1", later)
    with pytest.raises(AlreadyExists):
        await storage.update_template(owner, "tmpl_0000", TemplateChanges(alias="alias-2"), NOW)
    assert (await storage.get_template(owner, "tmpl_0000")).alias == "alias-0"  # type: ignore[union-attr]
    cleared = await storage.update_template(owner, "tmpl_0001", TemplateChanges(html=""), NOW)
    assert cleared is not None and cleared.html is None
    assert await storage.update_template(other, "tmpl_0001", TemplateChanges(name="x"), NOW) is None

    assert not await storage.delete_template(other, "tmpl_0001")
    assert await storage.delete_template(owner, "tmpl_0001")
    assert await storage.get_template(owner, "tmpl_0001") is None
    await storage.add_template(template(owner, 14, "alias-1"), 3)  # room again, alias free


async def test_subject_and_sender_search_folds_case_beyond_ascii(
    storage: Storage, storage_url: str
) -> None:
    """`subject_text` and `from_text` match case-insensitively as Python lowercases text (as
    addresses are lowercased): a subject is found by its own words whatever their case, on
    every backend; letters beyond ASCII fold on SQLite always, and on PostgreSQL whatever the
    database's locale (the C locale of the test cluster included) where the server has ICU."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    messages = [
        replace(make_message("msg_uber", "a@agents.test"), subject="Über das Projekt"),
        replace(make_message("msg_ete", "a@agents.test"), subject="ÉTÉ 2026"),
        replace(
            make_message("msg_jose", "a@agents.test"),
            subject="plain",
            from_addr="josé@exämple.org",
        ),
    ]
    await storage.store_inbound(messages, 0.0)

    async def found(**filters: str) -> list[str]:
        page = await storage.filed_page(alice, "a@agents.test", MessageFilters(**filters), 10, None)
        return [message.id for message in page]

    assert await found(subject_text="Über") == ["msg_uber"]
    assert await found(subject_text="ÉTÉ") == ["msg_ete"]
    assert await found(from_text="JOSÉ@EXÄMPLE") == ["msg_jose"]
    assert await found(subject_text="projekt") == ["msg_uber"]
    folds = storage_url.startswith("sqlite") or bool(
        run_sql(storage_url, "SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'")
    )
    if folds:
        assert await found(subject_text="über") == ["msg_uber"]
        assert await found(subject_text="été") == ["msg_ete"]
        assert await found(subject_text="über DAS") == ["msg_uber"]


@ANY_COLLATION
async def test_labels_read_back_in_code_point_order_whatever_the_collation(
    storage: Storage,
) -> None:
    """A message's labels, as a listing, one message, a change and an export give them, are
    in code-point order (as e2a sorts them, and as a conversation gathers them), not in the
    order of the database's collation, which in en_US passes over `-`, `_` and `:`."""
    alice = await add_user(storage)
    await storage.add_agent(make_agent(alice, "a@agents.test"))
    await storage.store_inbound([make_message("msg_1", "a@agents.test")], 0.0)
    wanted = ["a-b", "a1", "a:z", "a_c", "aa"]
    changed = await storage.change_labels(
        alice, "a@agents.test", "msg_1", ["aa", "a_c", "a:z", "a1", "a-b"], [], 100
    )
    assert changed == wanted
    (listed,) = await storage.filed_page(alice, "a@agents.test", MessageFilters(), 10, None)
    assert listed.labels == wanted
    one = await storage.filed_message(alice, "a@agents.test", "msg_1", mark_read=False)
    assert one is not None and one.labels == wanted
    exported = await whole_export(storage, alice)
    assert exported["mailbox"]["msg_1"]["labels"] == wanted


async def test_an_unsubscribe_link_suppresses_for_its_agent_once_and_goes_with_it(
    storage: Storage,
) -> None:
    """A link's POST adds one suppression for its agent alone, told once however often; an
    agent deleted for good takes its links with its own suppressions (a later agent at the
    address is another agent)."""
    alice = await add_user(storage)
    for address in ("bot@agents.test", "pal@agents.test"):
        await storage.add_agent(make_agent(alice, address))
    await storage.add_unsubscribe_token(
        "link-bot", alice, "bot@agents.test", "carol@example.org", 1.0
    )
    assert await storage.unsubscribe_by_token("link-none", 2.0) is None
    for _ in range(3):
        scope = await storage.unsubscribe_by_token("link-bot", 2.0)
        assert scope is not None and scope.agent_email == "bot@agents.test"
    recipients = ["carol@example.org"]
    assert await storage.suppressed_among(alice, "bot@agents.test", recipients) == recipients
    assert await storage.suppressed_among(alice, "pal@agents.test", recipients) == []
    (added,) = await storage.suppression_page(alice, "bot@agents.test", 10, None)
    assert (added.address, added.source) == ("carol@example.org", "unsubscribe")

    assert await storage.delete_agent(alice, "bot@agents.test") is not None
    assert await storage.find_unsubscribe_token("link-bot") is None
    await storage.add_agent(make_agent(alice, "bot@agents.test"))
    assert await storage.suppressed_among(alice, "bot@agents.test", recipients) == []


async def test_a_scheduled_send_waits_for_its_time_and_the_trash_pauses_it(
    storage: Storage, storage_url: str
) -> None:
    """Scheduled sending (beta): a scheduled message's send job is due at its `scheduled_at`,
    also once a held one is approved; the trash takes the job away while its submission has
    not started (a message, or its agent), and a restore re-arms it before its time or fails
    it, its send canceled, at or after it."""
    alice = await add_user(storage)
    bot = "bot@agents.test"
    await storage.add_agent(make_agent(alice, bot))
    trashed_at = parse_timestamp(NOW).timestamp()
    far, near = time.time() + 3600, trashed_at + 60  # `near`: ahead at NOW, past by now
    for message_id, status, at in (
        ("msg_far", "queued", far),
        ("msg_near", "queued", near),
        ("msg_held", "pending_approval", far),
        ("msg_now", "queued", None),
    ):
        message = make_outbound(alice, bot, message_id, status, far + 60 if at == far else None)
        await storage.add_outbound(replace(message, scheduled_at=at))
    assert (await storage.get_outbound(alice, "msg_far")).scheduled_at == far  # type: ignore[union-attr]
    due = await storage.claim_jobs("outbound", near - 1, 10, 60)
    assert [job.message_id for job in due] == ["msg_now"]
    await storage.release_jobs(due)
    await storage.review_outbound(alice, "msg_held", True, None, None, 200.0)
    outbound_jobs = "SELECT message_id, run_at FROM jobs WHERE kind = 'outbound' ORDER BY id"
    assert dict(query(storage_url, outbound_jobs))["msg_held"] == far

    for message_id in ("msg_far", "msg_near"):
        await storage.trash_message(alice, bot, message_id, NOW)
        filed = await storage.filed_message(alice, bot, message_id, mark_read=False)
        assert filed is not None and filed.deleted_at == NOW and filed.scheduled_at is not None
    assert {row[0] for row in query(storage_url, outbound_jobs)} == {"msg_held", "msg_now"}
    for message_id in ("msg_far", "msg_near"):
        await storage.restore_message(alice, bot, message_id)
    assert dict(query(storage_url, outbound_jobs))["msg_far"] == far
    canceled = await storage.get_outbound(alice, "msg_near")
    assert canceled is not None and canceled.status == "failed"
    assert canceled.send_error is not None and "canceled" in canceled.send_error
    assert "msg_near" not in dict(query(storage_url, outbound_jobs))

    await storage.trash_agent(alice, bot, NOW)  # msg_far and msg_held paused, msg_now canceled
    assert query(storage_url, outbound_jobs) == []
    await storage.restore_agent(alice, bot, now=far - 10)
    assert dict(query(storage_url, outbound_jobs)) == {"msg_far": far, "msg_held": far}
    await storage.trash_agent(alice, bot, NOW)
    await storage.restore_agent(alice, bot, now=far)
    assert query(storage_url, outbound_jobs) == []
    for message_id in ("msg_far", "msg_held"):
        gone = await storage.get_outbound(alice, message_id)
        assert gone is not None and gone.status == "failed", message_id


@contextmanager
def agent_restore_under_way(storage_url: str, agent_email: str) -> Iterator[Callable[[], None]]:
    """Another replica's restore of the agent, begun on a connection of its own: the agent row
    is back in service but not committed (and holds what the restore holds: the row on
    PostgreSQL, the database's write lock on SQLite). Its rearming of the agent's scheduled
    mail has found nothing: the message is still in the trash as that replica sees it. The
    function given commits it."""
    update = "UPDATE agents SET deleted_at = NULL WHERE email = ?"
    if storage_url.startswith("sqlite:///"):
        lite = sqlite3.connect(storage_url.removeprefix("sqlite:///"), isolation_level=None)
        with contextlib.closing(lite):
            lite.execute("BEGIN IMMEDIATE")
            lite.execute(update, (agent_email,))
            yield partial(lite.execute, "COMMIT")
        return
    with psycopg.connect(storage_url) as connection:
        connection.execute(update.replace("?", "%s"), (agent_email,))
        yield connection.commit


async def test_a_scheduled_message_restored_beside_its_agents_restore_is_rearmed_once(
    storage: Storage, storage_url: str
) -> None:
    """Restoring a scheduled message while another replica restores its agent: neither
    transaction saw the other's change under PostgreSQL's read committed, and the message came
    back with no send job, never to be sent. The message's restore now waits for the agent's
    row, then sees the agent in service and re-arms the send itself, once."""
    alice = await add_user(storage)
    bot = "bot@agents.test"
    await storage.add_agent(make_agent(alice, bot))
    due = time.time() + 3600
    await storage.add_outbound(
        replace(make_outbound(alice, bot, "msg_later", "queued"), scheduled_at=due)
    )
    await storage.trash_message(alice, bot, "msg_later", NOW)
    await storage.trash_agent(alice, bot, NOW)
    outbound_jobs = "SELECT message_id, run_at FROM jobs WHERE kind = 'outbound'"
    assert query(storage_url, outbound_jobs) == []

    restored: list[FiledMessage | None] = []
    with agent_restore_under_way(storage_url, bot) as commit:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: _append(restored, storage.restore_message(alice, bot, "msg_later"))
            )
            await trio.sleep(0.3)
            assert restored == [], "the message's restore went on beside the agent's"
            commit()
    (before,) = restored
    assert before is not None and before.deleted_at == NOW
    assert query(storage_url, outbound_jobs) == [("msg_later", due)]


async def _append(into: list[Any], value: Awaitable[Any]) -> None:
    into.append(await value)


async def test_a_closed_storage_refuses_reads_and_writes_as_unavailable(
    storage_url: str,
) -> None:
    """Work a stopping gateway still asks of storage once it is closed (a worker's last
    round, giving job leases back) fails as StorageUnavailable, which callers handle, not as
    the driver's own error."""
    store = open_storage(storage_url)
    await store.migrate()
    await add_user(store)
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.first_user()
    with pytest.raises(StorageUnavailable):
        await store.ensure_user("usr_late", "late@example.com", NOW)
