"""The SQL of the `/v1` mailbox: an agent's inbound and outbound messages in one filtered
keyset listing (by `seq`), one message, labels, the trash, and conversations.

Every query is scoped by the owner's `user_id` and the agent's address inside its WHERE clause,
so a message of another user's agent is simply not found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from e2a_gateway.clock import parse_timestamp
from e2a_gateway.storage.base import (
    ConversationSummary,
    FiledMessage,
    LabelsRefused,
    MessageFilters,
)
from e2a_gateway.storage.sql.agent_order import page_in_order
from e2a_gateway.storage.sql.dialect import Dialect
from e2a_gateway.storage.sql.outbound import agent_trashed, pause_scheduled, rearm_scheduled
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import (
    EXPIRED_APPROVED,
    INBOUND,
    OUTBOUND,
    PENDING_APPROVAL,
    QUEUED,
    READ,
    UNREAD,
)

FILED_COLUMNS = (
    "m.id, m.seq, m.direction, m.agent_email, m.envelope_from, m.from_addr, m.reply_to, "
    "m.to_json, m.cc_json, m.subject, m.conversation_id, m.rfc_message_id, m.status, "
    "m.delivery_status, m.auth_results_json, m.created_at, m.deleted_at, "
    "(SELECT length(r.raw) FROM raw_messages r WHERE r.digest = m.raw_digest), "
    "m.method, m.send_error, m.sent_at, m.reviewed_at, m.complained_at, m.bcc_json, "
    "m.flag_reason, m.received_at, m.review_method, m.scheduled_at"
)
"""Columns of `messages m` for a FiledMessage (its labels are read apart)."""
OF_AGENT = "m.user_id = ? AND m.agent_email = ? AND m.hold IS NULL"
"""Condition on `messages m`: the agent's mail, leaving out what its inbound gate holds."""
UNSETTLED = (
    f"direction = '{OUTBOUND}' AND sent_at IS NULL "
    f"AND status IN ('{PENDING_APPROVAL}', '{QUEUED}', '{EXPIRED_APPROVED}')"
)
"""Outbound mail not yet handed on that may still be reviewed or sent: it stays out of the
trash (held for review, or with a send job outstanding)."""
LIVE = "deleted_at IS NULL"
"""Condition on `messages`: not in the trash."""
CONVERSATIONS = (
    f"SELECT conversation_id, MIN(CASE WHEN {LIVE} THEN created_at END) AS first_at, "
    f"MAX(CASE WHEN {LIVE} THEN created_at END) AS last_at, "
    f"SUM(CASE WHEN {LIVE} THEN 1 ELSE 0 END) AS total, "
    f"SUM(CASE WHEN {LIVE} AND direction = '{INBOUND}' THEN 1 ELSE 0 END) AS inbound, "
    f"SUM(CASE WHEN {LIVE} AND direction = '{INBOUND}' AND status = '{UNREAD}' THEN 1 ELSE 0 END) "
    f"AS unread, MAX(CASE WHEN {LIVE} THEN seq END) AS latest_seq, MAX(seq) AS last_seq "
    "FROM messages WHERE user_id = ? AND agent_email = ? AND hold IS NULL"
)
"""Per conversation of an agent's mail: span, counts and unread inbound of its live mail, the
position of its newest live message, and its place: the position of its newest message live
or trashed (trashing a conversation's newest message while a client pages must not move the
conversation back behind the cursor, where it would be given again). Its callers name the
conversations (`_conversations`), found through `messages_agent_conversation`."""
_WALKED_FIRST = 100
"""How many of the agent's messages a page of conversations walks first; each further batch
doubles, up to `_WALKED_MOST`."""
_WALKED_MOST = 5000
CONVERSATION_COLUMNS = (
    "c.conversation_id, c.first_at, c.last_at, c.total, c.inbound, c.unread, "
    "l.subject, l.from_addr, c.last_seq"
)


def _conversations(which: str) -> str:
    """`FROM` the agent's conversations that hold live mail (`CONVERSATIONS`) among those the
    condition `which` on `conversation_id` names (an equality or a list, which SQLite looks up
    in the index one by one), each with its newest live message as `l`, up to `WHERE`."""
    return (
        f"FROM ({CONVERSATIONS} AND {which} GROUP BY conversation_id) c "
        "JOIN messages_with_content l ON l.seq = c.latest_seq WHERE c.total > 0"
    )


def _like(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere (`\\` escapes)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _holds_text(column: str, text: str, dialect: Dialect) -> tuple[str, list[str]]:
    """The condition that `column` holds `text` anywhere, whatever the case, and its
    parameters: the column lowercased holds `text` lowercased as Python lowercases it (as
    addresses are stored), or the column holds `text` as written (so a subject is found by its
    own words where the database lowercases fewer letters than Python does)."""
    condition = f"({dialect.lowercase(column)} LIKE ? ESCAPE '\\' OR {column} LIKE ? ESCAPE '\\')"
    return condition, [_like(text.lower()), _like(text)]


def _decode(row: Sequence[Any], labels: list[str]) -> FiledMessage:
    return FiledMessage(
        id=row[0],
        seq=int(row[1]),
        direction=row[2],
        agent_email=row[3],
        envelope_from=row[4],
        from_addr=row[5],
        reply_to=row[6],
        to=json.loads(row[7]),
        cc=json.loads(row[8]),
        subject=row[9],
        conversation_id=row[10],
        rfc_message_id=row[11],
        status=row[12],
        delivery_status=row[13],
        authentication_results=json.loads(row[14] or "{}"),
        created_at=row[15],
        deleted_at=row[16],
        labels=labels,
        size=int(row[17]) if row[17] is not None else None,
        method=row[18],
        send_error=row[19],
        sent_at=row[20],
        reviewed_at=row[21],
        complained_at=row[22],
        bcc=json.loads(row[23] or "[]"),
        flag_reason=row[24],
        received_at=row[25] if row[2] == INBOUND else None,
        review_method=row[26],
        scheduled_at=row[27],
    )


def _with_labels(tx: Transaction, rows: list[Any]) -> list[FiledMessage]:
    """Decode `rows` (FILED_COLUMNS), each with its labels, sorted (`sorted_labels`)."""
    if not rows:
        return []
    labels: dict[str, list[str]] = {row[0]: [] for row in rows}
    for message_id, label in tx.all(
        "SELECT message_id, label FROM message_labels "
        f"WHERE {tx.dialect.in_list('message_id', 'text')}",
        (tx.dialect.list_param(list(labels)),),
    ):
        labels[message_id].append(label)
    return [_decode(row, sorted_labels(labels[row[0]])) for row in rows]


def sorted_labels(labels: list[str]) -> list[str]:
    """`labels` in code-point order, as e2a sorts them: sorted here, since a database's
    `ORDER BY` follows its collation (PostgreSQL's en_US passes over `-`, `_` and `:`)."""
    return sorted(labels)


def _one(tx: Transaction, scope: tuple[str, str, str]) -> FiledMessage | None:
    row = tx.first(
        f"SELECT {FILED_COLUMNS} FROM messages_with_content m WHERE {OF_AGENT} AND m.id = ?",
        scope,
    )
    return _with_labels(tx, [row])[0] if row else None


def _filtered(filters: MessageFilters, dialect: Dialect) -> tuple[str, list[Any]]:
    """The conditions (after the agent's) of a listing with `filters`, and their parameters
    (the first condition's, the directions' list, excepted)."""
    conditions = [
        dialect.in_list("m.direction", "text"),
        "m.deleted_at IS NOT NULL" if filters.deleted else "m.deleted_at IS NULL",
    ]
    params: list[Any] = []
    if filters.read_status != "all":
        conditions.append(f"(m.direction = '{OUTBOUND}' OR m.status = ?)")
        params.append(filters.read_status)
    for column, text in (("m.from_addr", filters.from_text), ("m.subject", filters.subject_text)):
        if text is not None:
            condition, texts = _holds_text(column, text, dialect)
            conditions.append(condition)
            params += texts
    if filters.conversation_id is not None:
        conditions.append("m.conversation_id = ?")
        params.append(filters.conversation_id)
    for label in filters.labels:
        conditions.append(
            "EXISTS (SELECT 1 FROM message_labels l WHERE l.message_id = m.id AND l.label = ?)"
        )
        params.append(label)
    if filters.since is not None:
        conditions.append("m.created_at >= ?")
        params.append(filters.since)
    if filters.until is not None:
        conditions.append("m.created_at < ?")
        params.append(filters.until)
    return " AND ".join(conditions), params


class MailboxSql(Runner):
    """`Mailbox` in SQL."""

    async def filed_page(
        self,
        user_id: str,
        agent_email: str,
        filters: MessageFilters,
        limit: int,
        after_seq: int | None,
    ) -> list[FiledMessage]:
        """A keyset page of the agent's messages matching `filters` (`page_in_order`)."""
        conditions, params = _filtered(filters, self.dialect)
        where = f"{OF_AGENT} AND {conditions}"
        values: list[Any] = [user_id, agent_email, self.dialect.list_param(filters.directions)]
        values += params
        if after_seq is not None:
            where += f" AND m.seq {'<' if filters.newest_first else '>'} ?"
            values.append(after_seq)
        page, values = page_in_order(where, values, limit, newest_first=filters.newest_first)
        query = f"SELECT {FILED_COLUMNS} FROM messages_with_content m WHERE {page}"

        def read(tx: Transaction) -> list[FiledMessage]:
            return _with_labels(tx, tx.all(query, values))

        return await self._read(read, snapshot=True)

    async def filed_message(
        self, user_id: str, agent_email: str, message_id: str, *, mark_read: bool
    ) -> FiledMessage | None:
        """One message of the agent, an unread inbound one marked read when `mark_read` (read
        on a reader first: only mail still unread takes the writer)."""
        scope = (user_id, agent_email, message_id)
        found = await self._read(lambda tx: _one(tx, scope), snapshot=True)
        if not mark_read or found is None or found.direction != INBOUND or found.status != UNREAD:
            return found

        def read(tx: Transaction) -> FiledMessage | None:
            tx.execute(
                f"UPDATE messages SET status = '{READ}' WHERE user_id = ? AND agent_email = ? "
                f"AND id = ? AND direction = '{INBOUND}' AND status = '{UNREAD}' "
                "AND hold IS NULL",
                scope,
            )
            return _one(tx, scope)

        return await self._write(read)

    async def change_labels(
        self,
        user_id: str,
        agent_email: str,
        message_id: str,
        add: list[str],
        remove: list[str],
        max_labels: int,
    ) -> list[str] | None:
        """Add, then remove, labels on one of the agent's messages in one transaction."""
        scope = (user_id, agent_email, message_id)

        def change(tx: Transaction) -> list[str] | None:
            tx.lock_row("messages", "id", message_id)
            found = tx.first(f"SELECT m.id FROM messages m WHERE {OF_AGENT} AND m.id = ?", scope)
            if found is None:
                return None
            for label in add:
                tx.execute(
                    "INSERT INTO message_labels (message_id, label) VALUES (?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (message_id, label),
                )
            for label in remove:
                tx.execute(
                    "DELETE FROM message_labels WHERE message_id = ? AND label = ?",
                    (message_id, label),
                )
            labels = sorted_labels(
                [
                    row[0]
                    for row in tx.all(
                        "SELECT label FROM message_labels WHERE message_id = ?", (message_id,)
                    )
                ]
            )
            if len(labels) > max_labels:
                raise LabelsRefused(f"a message carries at most {max_labels} labels")
            return labels

        return await self._write(change)

    async def trash_message(
        self, user_id: str, agent_email: str, message_id: str, now: str
    ) -> FiledMessage | None:
        """Move one live, settled message to the trash; the message as it was before."""
        scope = (user_id, agent_email, message_id)

        def trash(tx: Transaction) -> FiledMessage | None:
            tx.lock_row("messages", "id", message_id)
            before = _one(tx, scope)
            if before is not None and before.deleted_at is None:
                # scheduled mail whose submission has not started goes, its send job with it
                paused = before.scheduled_at is not None and pause_scheduled(
                    tx, "m.id = ?", (message_id,), parse_timestamp(now).timestamp()
                )
                tx.execute(
                    "UPDATE messages SET deleted_at = ? WHERE user_id = ? AND agent_email = ? "
                    "AND id = ? AND deleted_at IS NULL AND hold IS NULL"
                    + ("" if paused else f" AND NOT ({UNSETTLED})"),
                    (now, *scope),
                )
            return before

        return await self._write(trash)

    async def restore_message(
        self, user_id: str, agent_email: str, message_id: str
    ) -> FiledMessage | None:
        """Bring one trashed message of the agent back; the message as it was before."""
        scope = (user_id, agent_email, message_id)

        def restore(tx: Transaction) -> FiledMessage | None:
            # The agent's row first, as the agent's restore takes it: one restoring the agent
            # beside this one then either re-arms this message once it is back, or has
            # committed before `agent_trashed` reads it here.
            tx.lock_row("agents", "email", agent_email)
            tx.lock_row("messages", "id", message_id)
            before = _one(tx, scope)
            tx.execute(
                "UPDATE messages SET deleted_at = NULL WHERE user_id = ? AND agent_email = ? "
                "AND id = ? AND deleted_at IS NOT NULL",
                scope,
            )
            scheduled = before is not None and before.scheduled_at is not None
            # a scheduled message of an agent in the trash is re-armed by the agent's restore
            if scheduled and before and before.deleted_at and not agent_trashed(tx, agent_email):
                rearm_scheduled(tx, "m.id = ?", (message_id,), time.time())
            return before

        return await self._write(restore)

    async def purge_message(self, user_id: str, agent_email: str, message_id: str) -> bool:
        """Delete one trashed message of the agent for good."""
        count = await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM messages WHERE user_id = ? AND agent_email = ? AND id = ? "
                    "AND deleted_at IS NOT NULL",
                    (user_id, agent_email, message_id),
                ).rowcount
            )
        )
        return count == 1

    async def delete_trashed_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` messages trashed before `cutoff`, longest trashed first, found
        by `messages_trashed` (migration 39), which holds the trashed mail alone."""
        return await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m "
                    "WHERE m.deleted_at < ? AND NOT EXISTS "
                    "(SELECT 1 FROM jobs j WHERE j.message_id = m.id) ORDER BY m.deleted_at "
                    f"LIMIT ?{tx.dialect.skip_locked()})",
                    (cutoff, limit),
                ).rowcount
            )
        )

    async def conversation_page(
        self,
        user_id: str,
        agent_email: str,
        since: str | None,
        until: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[ConversationSummary]:
        """Conversations of the agent's live mail, most recently active first: in the order of
        their place (`CONVERSATIONS`), which trashing a message never lowers.

        A conversation's place is the position of its newest message, so walking the agent's
        mail newest first (`page_in_order`) below `before_seq` meets the conversations in the
        order of their places. The walk goes a batch at a time, and only the conversations it
        meets are summed, each through `messages_agent_conversation`: a page costs the mail
        walked until it is full, not a sum over all of the agent's mail."""
        filters = ""
        bounds: list[Any] = []
        for condition, value in (
            ("c.last_at >= ?", since),
            ("c.last_at < ?", until),
            ("c.last_seq < ?", before_seq),
        ):
            if value is not None:
                filters += f" AND {condition}"
                bounds.append(value)

        def read(tx: Transaction) -> list[Any]:
            walk = f"{OF_AGENT} AND m.conversation_id IS NOT NULL"
            summed = (
                f"SELECT {CONVERSATION_COLUMNS} "
                f"{_conversations(tx.dialect.in_list('conversation_id', 'text'))}"
                f"{filters} ORDER BY c.last_seq DESC"
            )
            rows: list[Any] = []
            seen: set[str] = set()
            position, batch = before_seq, max(2 * limit, _WALKED_FIRST)
            while len(rows) < limit:
                where, values = walk, list[Any]([user_id, agent_email])
                if position is not None:
                    where += " AND m.seq < ?"
                    values.append(position)
                page, values = page_in_order(where, values, batch, newest_first=True)
                walked = tx.all(
                    f"SELECT m.seq, m.conversation_id FROM messages_with_content m WHERE {page}",
                    values,
                )
                met = list(dict.fromkeys(c for _, c in walked if c not in seen))
                if met:
                    seen.update(met)
                    listed = tx.dialect.list_param(met)
                    rows += tx.all(summed, (user_id, agent_email, listed, *bounds))
                if len(walked) < batch:
                    break
                position, batch = int(walked[-1][0]), min(2 * batch, _WALKED_MOST)
            return rows[:limit]

        rows = await self._read(read, snapshot=True)
        return [_conversation(row) for row in rows]

    async def conversation(
        self, user_id: str, agent_email: str, conversation_id: str
    ) -> tuple[ConversationSummary, list[FiledMessage]] | None:
        """One conversation of the agent's live mail and all its messages, oldest first."""

        def read(tx: Transaction) -> tuple[ConversationSummary, list[FiledMessage]] | None:
            row = tx.first(
                f"SELECT {CONVERSATION_COLUMNS} {_conversations('conversation_id = ?')}",
                (user_id, agent_email, conversation_id),
            )
            if row is None:
                return None
            rows = tx.all(
                f"SELECT {FILED_COLUMNS} FROM messages_with_content m WHERE {OF_AGENT} "
                "AND m.conversation_id = ? AND m.deleted_at IS NULL ORDER BY m.seq",
                (user_id, agent_email, conversation_id),
            )
            return _conversation(row), _with_labels(tx, rows)

        return await self._read(read, snapshot=True)


def _conversation(row: Sequence[Any]) -> ConversationSummary:
    total, inbound = int(row[3]), int(row[4])
    return ConversationSummary(
        id=row[0],
        first_message_at=row[1],
        last_message_at=row[2],
        message_count=total,
        inbound_count=inbound,
        outbound_count=total - inbound,
        has_unread=int(row[5]) > 0,
        latest_subject=row[6],
        latest_from=row[7],
        last_seq=int(row[8]),
    )
