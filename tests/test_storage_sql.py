"""The pieces under the SQL written once: the vocabulary of stored words, the roles of the
Storage protocol, and each dialect's fragments run on its own database."""

from __future__ import annotations

import inspect
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any, get_args, get_type_hints

import pytest

from e2a_gateway.redacted import redacted_url
from e2a_gateway.storage import base, vocabulary
from e2a_gateway.storage.postgres import PostgresStorage
from e2a_gateway.storage.sql.dialect import POSTGRES, SQLITE
from e2a_gateway.storage.sql.store import SqlStorage
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.sqlite import SqliteStorage
from tests.databases import fresh_postgres_database

pytestmark = pytest.mark.backend_independent

ROLES = (
    base.Lifecycle,
    base.Accounts,
    base.Directory,
    base.Mailboxes,
    base.Outbox,
    base.Mailbox,
    base.ApprovalReplies,
    base.Holds,
    base.JobQueueStore,
    base.WebhookDeliveries,
    base.RateLimits,
    base.Idempotency,
    base.DashboardSessions,
    base.FeedbackBox,
    base.Retention,
    base.EventLog,
    base.Subscribers,
    base.Suppressions,
    base.Templates,
)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///./e2a.db", "sqlite:///./e2a.db"),
        ("sqlite:////var/lib/e2a/e2a.db", "sqlite:////var/lib/e2a/e2a.db"),
        ("postgresql://e2a:s3cret@db.internal:5432/mail", "postgresql://e2a@db.internal:5432/mail"),
        ("postgresql://e2a@[::1]/mail?password=s3cret", "postgresql://e2a@[::1]/mail"),
        ("postgresql:///mail?host=/run/postgresql&password=s3cret", "postgresql:///mail"),
    ],
)
def test_a_database_url_is_shown_as_given_but_for_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://e2a:2024/Spring@db.internal:5432/mail",
        "postgresql://e2a:2024?Spring@db.internal/mail",
        "postgresql://e2a:2024#Spring@db.internal/mail",
        "postgres://e2a:2024/Spring@db.internal/mail?sslmode=require",
    ],
)
def test_a_password_with_a_character_left_unencoded_is_never_shown(url: str) -> None:
    """A password holding `/`, `?` or `#` as typed (not percent-encoded) ends the URL's host
    part early: what stands before it reads as `user:port`, the rest as the path, and every
    part of the password would be shown."""
    shown = redacted_url(url)
    assert "2024" not in shown
    assert "Spring" not in shown
    assert shown.startswith(url.split("://")[0] + "://")


def test_the_protocol_types_name_the_vocabulary_words() -> None:
    assert get_args(base.OutboundStatus) == vocabulary.OUTBOUND_STATUSES
    assert set(vocabulary.OUTBOUND_STATUSES) > vocabulary.TERMINAL_STATUSES
    assert get_args(base.MessageStatus) == (vocabulary.UNREAD, vocabulary.READ)
    assert get_args(base.AgentMode) == (vocabulary.CLOUD, vocabulary.LOCAL)
    assert get_args(base.KeyScope) == (vocabulary.ACCOUNT_SCOPE, vocabulary.AGENT_SCOPE)
    assert get_args(base.ReviewMethod) == vocabulary.REVIEW_METHODS
    expiration = get_type_hints(base.Agent)["hitl_expiration_action"]
    assert set(get_args(expiration)) == {
        vocabulary.EXPIRE_BY_APPROVING,
        vocabulary.EXPIRE_BY_REJECTING,
    }
    assert vocabulary.DELIVERY_PENDING not in get_args(base.DeliveryOutcome)


def test_every_vocabulary_word_can_stand_quoted_in_sql() -> None:
    """The SQL writes the words between single quotes: none may hold a quote or anything else
    that would end or change the literal."""
    words = [
        value
        for name, value in vars(vocabulary).items()
        if name.isupper() and isinstance(value, str)
    ]
    assert len(words) > 15
    assert all(re.fullmatch(r"[a-z_]+", word) for word in words), words
    assert len(set(vocabulary.JOB_KINDS)) == 5


def protocol_methods(protocol: type) -> set[str]:
    return {
        name
        for name, member in vars(protocol).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }


def test_storage_is_the_union_of_disjoint_roles() -> None:
    by_role = [protocol_methods(role) for role in ROLES]
    together = set().union(*by_role)
    assert sum(len(methods) for methods in by_role) == len(together)  # no method in two roles
    assert set().union(*(protocol_methods(cls) for cls in base.Storage.__mro__)) == together
    # …, deliveries due re-read, trashed agents found by address; the export is read in a
    # held snapshot, an async context (`export_user`), no longer a coroutine counted here; the
    # suppressions a sent message put on the list (`suppressions_from`, its lifecycle);
    # outbound mail listed without its bodies (`outbound_summaries`); a notice job waiting for
    # room in its reviewer's hour without spending an attempt (`postpone_job`); when a domain's
    # records were last looked up (`record_domain_check`); an account of many agents or
    # domains read a page or a count at a time (`agent_page`, `agents_per_domain`,
    # `verified_among`, `domain_page`, `count_domains`, `agents_postmaster_last`); keys listed
    # only a page at a time (`list_api_keys` gone, `api_key_page` reads revoked ones too)
    assert len(together) == 148


@pytest.mark.parametrize("backend", [SqliteStorage, PostgresStorage])
def test_each_backend_implements_every_role(backend: type[SqlStorage]) -> None:
    for role in ROLES:
        for name in protocol_methods(role):
            implementation = getattr(backend, name)
            assert inspect.iscoroutinefunction(implementation), f"{backend.__name__}.{name}"
            declared = inspect.signature(getattr(role, name)).parameters
            assert list(inspect.signature(implementation).parameters) == list(declared), name
    assert not inspect.isabstract(backend)


@contextmanager
def transaction_on(backend: str) -> Iterator[Transaction]:
    """A Transaction on a real, empty database of `backend`, rolled back afterwards."""
    if backend == "sqlite":
        with closing(sqlite3.connect(":memory:", isolation_level=None)) as connection:
            connection.execute("BEGIN")
            yield Transaction(connection, SQLITE, sqlite3.IntegrityError)
        return
    import psycopg

    with (
        fresh_postgres_database() as url,
        psycopg.connect(url, autocommit=True) as connection,
        connection.transaction(force_rollback=True),
    ):
        yield Transaction(connection, POSTGRES, psycopg.IntegrityError)


@pytest.fixture(params=["sqlite", "postgres"])
def tx(request: pytest.FixtureRequest) -> Iterator[Transaction]:
    with transaction_on(request.param) as transaction:
        dialect = transaction.dialect
        transaction.execute(
            "CREATE TABLE words (id INTEGER PRIMARY KEY, word TEXT NOT NULL, "
            f"flag BOOLEAN NOT NULL DEFAULT {dialect.false})"
        )
        transaction.executemany(
            "INSERT INTO words (id, word) VALUES (?, ?)",
            [(1, "a%b"), (2, "it's"), (3, "?")],
        )
        yield transaction


def words(tx: Transaction, condition: str, params: tuple[Any, ...] = ()) -> list[str]:
    return [
        row[0] for row in tx.all(f"SELECT word FROM words WHERE {condition} ORDER BY id", params)
    ]


def test_placeholders_leave_literals_with_percent_signs_alone(tx: Transaction) -> None:
    assert words(tx, "word LIKE 'a%' AND id = ?", (1,)) == ["a%b"]
    assert words(tx, "word = ?", ("?",)) == ["?"]
    assert words(tx, "word = ?", ("it's",)) == ["it's"]


def test_a_list_is_one_parameter_empty_or_not(tx: Transaction) -> None:
    dialect = tx.dialect
    assert words(tx, dialect.in_list("word", "text"), (dialect.list_param(["?", "a%b"]),)) == [
        "a%b",
        "?",
    ]
    assert words(tx, dialect.in_list("word", "text"), (dialect.list_param([]),)) == []
    assert words(tx, dialect.not_in_list("word", "text"), (dialect.list_param([]),)) == [
        "a%b",
        "it's",
        "?",
    ]
    assert words(tx, dialect.in_list("id", "bigint"), (dialect.list_param([3, 1]),)) == [
        "a%b",
        "?",
    ]


def test_booleans_limits_and_the_time(tx: Transaction) -> None:
    dialect = tx.dialect
    tx.execute(f"UPDATE words SET flag = {dialect.true} WHERE id = ?", (2,))
    assert words(tx, f"flag = {dialect.true}") == ["it's"]
    assert words(tx, f"flag = {dialect.false}") == ["a%b", "?"]
    rows = tx.all("SELECT word FROM words ORDER BY id LIMIT ?", (dialect.no_limit,))
    assert len(rows) == 3
    (now,) = tx.one(f"SELECT {dialect.utc_now}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", now), now


def test_an_existing_row_is_kept_by_insert_or_lock_and_conflicts_raise_as_asked(
    tx: Transaction,
) -> None:
    tx.execute(
        f"INSERT INTO words (id, word) VALUES (?, ?) {tx.dialect.insert_or_lock('id')}",
        (1, "other"),
    )
    assert words(tx, "id = ?", (1,)) == ["a%b"]
    with pytest.raises(LookupError, match="taken"):
        tx.execute(
            "INSERT INTO words (id, word) VALUES (?, ?)", (2, "x"), conflict=LookupError("taken")
        )
