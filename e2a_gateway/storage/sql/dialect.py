"""Where SQLite and PostgreSQL spell e2a's SQL differently, and nothing else.

Statements are written once with `?` placeholders; a `Dialect` turns them into its driver's
paramstyle and supplies the few fragments the two databases do not share: boolean literals,
the time, row locks (PostgreSQL's replicas) or their absence (SQLite's single writer), lists
bound as one parameter, renumbering a row, upserts that keep a row locked, advisory locks,
lowercasing, the fields of a JSON array's objects, and "no limit".
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import orjson

ListType = Literal["text", "bigint"]
"""What a list parameter holds (PostgreSQL casts it to an array of that type)."""


class Dialect(abc.ABC):
    """The pieces of SQL one database spells its own way."""

    name: ClassVar[str]
    true: ClassVar[str]
    """The literal of a boolean column's true value."""
    false: ClassVar[str]
    no_limit: ClassVar[int | None]
    """The `LIMIT ?` parameter that means every row."""
    single_writer: ClassVar[bool]
    """One process writes, one transaction at a time: nothing needs a row or advisory lock,
    and no job is ever held by somebody else."""
    insertion_order: ClassVar[str]
    """The column that orders `api_keys` rows by insertion (ties of `created_at`)."""
    utc_now: ClassVar[str]
    """The current time as RFC 3339 UTC text (`2026-01-01T00:00:00Z`), to the second."""
    lease_clock: ClassVar[str | None]
    """The database's clock in seconds since the epoch, by which leases and rate-limit
    windows are judged when several processes share the database (their own clocks may
    disagree); None under a single writer, whose own clock is the database's."""

    @abc.abstractmethod
    def sql(self, query: str) -> str:
        """`query` (written with `?` placeholders) in the driver's paramstyle."""

    @abc.abstractmethod
    def for_update(self, of: str | None = None) -> str:
        """The clause that locks the selected rows until the commit (in a join, those of the
        table aliased `of` only); empty under a single writer."""

    @abc.abstractmethod
    def for_key_share(self) -> str:
        """The clause that keeps the selected rows from being deleted (or their key changed)
        until the commit, holding back no other change to them; empty under a single writer."""

    @abc.abstractmethod
    def skip_locked(self, of: str | None = None) -> str:
        """The clause that locks the selected rows and passes over rows another transaction
        holds, so concurrent workers take different ones; empty under a single writer."""

    @abc.abstractmethod
    def in_list(self, expression: str, element: ListType) -> str:
        """The condition that `expression` is one of a list bound as one parameter
        (`list_param`)."""

    @abc.abstractmethod
    def list_values(self, element: ListType) -> str:
        """A query of the values of a list bound as one parameter (`list_param`), as the
        column `value`: rows inserted from one list in one statement."""

    @abc.abstractmethod
    def not_in_list(self, expression: str, element: ListType) -> str:
        """The condition that `expression` is none of a list bound as one parameter."""

    @abc.abstractmethod
    def unindexed(self, expression: str) -> str:
        """`expression`, so that a condition on it is checked on the rows another condition
        finds rather than used to find them by an index of its own."""

    @abc.abstractmethod
    def contains_text(self, expression: str) -> str:
        """The condition that the text `expression` holds the text bound as one parameter,
        anywhere in it (no wildcards)."""

    @abc.abstractmethod
    def field_of_each(self, expression: str, key: str) -> str:
        """A JSON array (as text) of the `key` field of each object in the JSON array held by
        the text `expression`, in order (`[]` when it is NULL): the database reads the array,
        the caller gets only the fields."""

    @abc.abstractmethod
    def attachment_infos(self, expression: str) -> str:
        """A JSON array (as text) of `[filename, content_type, size]` for each stored
        attachment in the JSON array held by the text `expression`, in order (`[]` when it is
        NULL): `size` is the decoded size of its `data`, base64 without whitespace as stored,
        computed from the base64's length and padding, as `drafts.attachment_size` computes
        it. The database reads the data; the caller gets only the sizes."""

    def lowercase(self, expression: str) -> str:
        """The text `expression` lowercased beyond ASCII, whatever the database's locale:
        `e2a_lower`, Python's `str.lower` on SQLite (registered on every connection), ICU's
        root locale on PostgreSQL (migration 40; lower() where the server has no ICU)."""
        return f"e2a_lower({expression})"

    @abc.abstractmethod
    def list_param(self, values: Sequence[Any]) -> Any:
        """`values` as the one parameter of `in_list` or `not_in_list`."""

    @abc.abstractmethod
    def next_in_sequence(self, table: str, column: str) -> str:
        """The value an INSERT gives `column`, numbering the rows of `table` in order."""

    @abc.abstractmethod
    def renumber(self, table: str, column: str, key: str) -> list[str]:
        """Statements, each taking the one parameter `?`, that give the row of `table` whose
        `key` is `?` the next number of `column` (numbering the rows in order), as an INSERT
        would: a number greater than any given before, also to rows deleted since."""

    @abc.abstractmethod
    def insert_or_lock(self, key: str) -> str:
        """The ON CONFLICT clause of an INSERT that leaves an existing row with the same `key`
        as it is, but locked until the commit (so nobody deletes it meanwhile)."""

    @abc.abstractmethod
    def advisory_lock(self, name: str, space: int | None = None) -> tuple[str, tuple[Any, ...]]:
        """A statement and its parameters that take a lock on `name` (in the key `space`, when
        given) until the commit; an empty statement under a single writer."""

    @abc.abstractmethod
    def lock_timeout(self, seconds: float) -> tuple[str, tuple[Any, ...]]:
        """A statement and its parameters after which, until the transaction ends, a wait for
        a lock that outlasts `seconds` fails the statement (StorageUnavailable); an empty
        statement under a single writer."""


class SqliteDialect(Dialect):
    """SQLite: one writer, booleans stored as integers, lists bound as JSON."""

    name = "sqlite"
    true = "1"  # as the partial index `domains_verified_once` is written, so it is used
    false = "0"
    no_limit = -1
    single_writer = True
    insertion_order = "rowid"
    utc_now = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
    lease_clock = None

    def sql(self, query: str) -> str:
        return query

    def for_update(self, of: str | None = None) -> str:
        return ""

    def for_key_share(self) -> str:
        return ""

    def skip_locked(self, of: str | None = None) -> str:
        return ""

    def in_list(self, expression: str, element: ListType) -> str:
        return f"{expression} IN (SELECT value FROM json_each(?))"

    def list_values(self, element: ListType) -> str:
        return "SELECT value FROM json_each(?)"

    def not_in_list(self, expression: str, element: ListType) -> str:
        return f"{expression} NOT IN (SELECT value FROM json_each(?))"

    def unindexed(self, expression: str) -> str:
        return f"+{expression}"  # the unary + SQLite's planner documents for this

    def contains_text(self, expression: str) -> str:
        return f"instr({expression}, ?) > 0"

    def field_of_each(self, expression: str, key: str) -> str:
        return (
            f"(SELECT json_group_array(json_extract(j.value, '$.{key}')) "
            f"FROM json_each({expression}) AS j)"
        )

    def attachment_infos(self, expression: str) -> str:
        data = "json_extract(j.value, '$.data')"
        size = (
            f"length({data}) / 4 * 3 - (substr({data}, -1, 1) = '=') "
            f"- (length({data}) > 1 AND substr({data}, -2, 1) = '=')"
        )
        return (
            "(SELECT json_group_array(json_array(json_extract(j.value, '$.filename'), "
            f"json_extract(j.value, '$.content_type'), {size})) "
            f"FROM json_each({expression}) AS j)"
        )

    def list_param(self, values: Sequence[Any]) -> Any:
        return orjson.dumps(list(values)).decode()

    def next_in_sequence(self, table: str, column: str) -> str:
        return f"(SELECT coalesce(max({column}), 0) + 1 FROM {table})"

    def renumber(self, table: str, column: str, key: str) -> list[str]:
        # AUTOINCREMENT keeps the largest number it gave in sqlite_sequence, and an UPDATE
        # leaves that as it was: kept up here, no INSERT later gives this number again
        given = f"(SELECT seq FROM sqlite_sequence WHERE name = '{table}')"
        return [
            f"UPDATE {table} SET {column} = max(coalesce({given}, 0), "
            f"(SELECT coalesce(max({column}), 0) FROM {table})) + 1 WHERE {key} = ?",
            f"UPDATE sqlite_sequence SET seq = (SELECT {column} FROM {table} WHERE {key} = ?) "
            f"WHERE name = '{table}'",
        ]

    def insert_or_lock(self, key: str) -> str:
        return f"ON CONFLICT ({key}) DO NOTHING"

    def advisory_lock(self, name: str, space: int | None = None) -> tuple[str, tuple[Any, ...]]:
        return "", ()

    def lock_timeout(self, seconds: float) -> tuple[str, tuple[Any, ...]]:
        return "", ()


class PostgresDialect(Dialect):
    """PostgreSQL: several replicas write at once, so rows and names are locked."""

    name = "postgres"
    true = "TRUE"
    false = "FALSE"
    no_limit = None
    single_writer = False
    insertion_order = "seq"
    utc_now = """to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
    lease_clock = "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"

    def sql(self, query: str) -> str:
        return query.replace("%", "%%").replace("?", "%s")

    def for_update(self, of: str | None = None) -> str:
        return f" FOR UPDATE OF {of}" if of else " FOR UPDATE"

    def for_key_share(self) -> str:
        return " FOR KEY SHARE"

    def skip_locked(self, of: str | None = None) -> str:
        return f"{self.for_update(of)} SKIP LOCKED"

    def in_list(self, expression: str, element: ListType) -> str:
        return f"{expression} = ANY(?::{element}[])"

    def list_values(self, element: ListType) -> str:
        return f"SELECT unnest(?::{element}[]) AS value"

    def not_in_list(self, expression: str, element: ListType) -> str:
        return f"{expression} <> ALL(?::{element}[])"

    def unindexed(self, expression: str) -> str:
        return expression  # the planner weighs its statistics

    def contains_text(self, expression: str) -> str:
        return f"strpos({expression}, ?) > 0"

    def field_of_each(self, expression: str, key: str) -> str:
        return (
            f"(SELECT coalesce(json_agg(j.value ->> '{key}' ORDER BY j.n), '[]')::text "
            f"FROM json_array_elements({expression}::json) WITH ORDINALITY AS j(value, n))"
        )

    def attachment_infos(self, expression: str) -> str:
        data = "(j.value ->> 'data')"
        size = (
            f"octet_length({data}) / 4 * 3 - (right({data}, 1) = '=')::int "
            f"- (left(right({data}, 2), 1) = '=' AND octet_length({data}) > 1)::int"
        )
        return (
            "(SELECT coalesce(json_agg(json_build_array(j.value ->> 'filename', "
            f"j.value ->> 'content_type', {size}) ORDER BY j.n), '[]')::text "
            f"FROM json_array_elements({expression}::json) WITH ORDINALITY AS j(value, n))"
        )

    def list_param(self, values: Sequence[Any]) -> Any:
        return list(values)

    def next_in_sequence(self, table: str, column: str) -> str:
        return "DEFAULT"  # an identity column: concurrent inserts never share a number

    def renumber(self, table: str, column: str, key: str) -> list[str]:
        return [f"UPDATE {table} SET {column} = DEFAULT WHERE {key} = ?"]  # the identity's next

    def insert_or_lock(self, key: str) -> str:
        return f"ON CONFLICT ({key}) DO UPDATE SET {key} = excluded.{key}"

    def advisory_lock(self, name: str, space: int | None = None) -> tuple[str, tuple[Any, ...]]:
        if space is None:
            return "SELECT pg_advisory_xact_lock(hashtext(?))", (name,)
        return "SELECT pg_advisory_xact_lock(?, hashtext(?))", (space, name)

    def lock_timeout(self, seconds: float) -> tuple[str, tuple[Any, ...]]:
        # SET LOCAL lock_timeout, with the value as a parameter
        return "SELECT set_config('lock_timeout', ?, true)", (f"{max(1, round(seconds * 1000))}ms",)


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()
