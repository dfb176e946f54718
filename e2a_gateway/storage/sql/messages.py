"""The SQL of agents' inboxes: inbound mail stored with its jobs, listed, read, and threaded.

Raw bytes are stored once per distinct message (by SHA-256) in `raw_messages`, and what the
copies of one message for several agents share once in `message_contents`, each copy a narrow
row naming it (read back whole through the view `messages_with_content`); every query is
scoped by the owner's `user_id` and the agent's address. Storing takes each recipient's mail
lock (`mail_order`), so an agent's messages commit in `seq` order and a reader paging by `seq`
skips none.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import trio

from e2a_gateway.events import ReceivedEvents
from e2a_gateway.relay_ids import id_left
from e2a_gateway.storage.announcements import MessageStored
from e2a_gateway.storage.base import (
    Agent,
    ConversationClaim,
    FoldedCopy,
    InboundMessage,
    InboxPage,
    MessagePage,
    NewEvent,
    StatusFilter,
    StorageUnavailable,
    StoredEarlier,
)
from e2a_gateway.storage.new_inbound import ByContent, NewInboundMessage
from e2a_gateway.storage.rows import (
    CONTENT_INSERT_COLUMNS,
    COPY_INSERT_COLUMNS,
    COPY_VALUES,
    EARLIER_COLUMNS,
    INBOUND_INSERT_COLUMNS,
    INBOX_ENTRY_COLUMNS,
    MESSAGE_COLUMNS,
    JsonOnce,
    RawMessages,
    chosen_conversation,
    content_params,
    copy_params,
    decode_agent,
    decode_earlier,
    decode_message,
    first_conversation,
    inbound_params,
    inbox_entries,
    message_page,
    raw_messages_of,
    value_marks,
)
from e2a_gateway.storage.sql.accounts import mark_signed
from e2a_gateway.storage.sql.agent_order import page_in_order
from e2a_gateway.storage.sql.agents import agent_row, owned_agent_answer
from e2a_gateway.storage.sql.events import record_events
from e2a_gateway.storage.sql.jobs import add_job
from e2a_gateway.storage.sql.mail_order import await_agents_mail, lock_agents_mail
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import CLOUD, INBOUND, OUTBOUND, READ, UNREAD, WEBHOOK_JOB

INBOUND_VALUES = value_marks(INBOUND_INSERT_COLUMNS)
CONTENT_VALUES = value_marks(CONTENT_INSERT_COLUMNS)
IN_INBOX = f"m.user_id = ? AND m.agent_email = ? AND m.direction = '{INBOUND}' AND m.hold IS NULL"
"""Condition on `messages m`: an inbound message of the user's agent, delivered to it (not
held for review by its gate, nor rejected there)."""
NOT_TRASHED = "m.deleted_at IS NULL"
"""Condition on `messages m`: not in the trash (what `/api/v1` and live delivery show)."""
INLINE_DIGEST_BYTES = 256 * 1024
"""Raw mail up to this size is digested on the event loop (a SHA-256 of 256 KB takes about
0.4 ms): a hop to a worker thread and back took longer, and inside the group commit every
session waiting for the commit waited for that hop too."""


def _store(
    tx: Transaction, messages: list[NewInboundMessage], raw: RawMessages, now: float
) -> None:
    """Insert each distinct raw message once (locked until the commit, so a concurrent deletion
    of its last other reference cannot take it away) and the `messages`, each pointing at its
    digest, once each recipient agent is found and kept from deletion until the commit (an
    agent whose deletion commits first fails the whole with StorageUnavailable); queue a
    webhook job for a cloud agent's message, announce a local agent's (neither for a message
    its gate holds for review or blocks); log each delivered message's
    `email.received` event, and what its agent's gate did with it (`email.review_requested`,
    `email.flagged`, `email.blocked`).
    The copies of one message for many agents go in as one batch of rows."""
    recipients = sorted({message.agent_email for message in messages})
    lock_agents_mail(tx, recipients)
    owners = {
        email: (user_id, agent_mode == CLOUD, agent_id, gate_policy)
        for email, user_id, agent_mode, agent_id, gate_policy in tx.all(
            "SELECT email, user_id, agent_mode, id, inbound_gate_policy FROM agents "
            f"WHERE {tx.dialect.in_list('email', 'text')}{tx.dialect.for_key_share()}",
            (tx.dialect.list_param(recipients),),
        )
    }
    if vanished := [email for email in recipients if email not in owners]:
        raise StorageUnavailable(f"agent {vanished[0]} vanished")
    keep_locked = tx.dialect.insert_or_lock("digest")
    for digest in sorted(raw.distinct):
        tx.execute(
            f"INSERT INTO raw_messages (digest, raw) VALUES (?, ?) {keep_locked}",
            (digest, raw.distinct[digest]),
        )
    encode = JsonOnce()
    whole_rows: list[tuple[Any, ...]] = []
    for copies in _copies_by_content(messages, raw.digests):
        if len(copies) == 1:
            message, digest = copies[0]
            user_id, cloud, _, _ = owners[message.agent_email]
            whole_rows.append(inbound_params(message, user_id, cloud, digest, encode))
            continue
        _insert_whole(tx, whole_rows)  # the batch's rows keep their order in `seq`
        first, digest = copies[0]
        content_seq = tx.one(
            f"INSERT INTO message_contents ({CONTENT_INSERT_COLUMNS}) "
            f"VALUES ({CONTENT_VALUES}) RETURNING seq",
            content_params(first, digest, encode),
        )[0]
        copy_rows = []
        for message, _ in copies:
            user_id, cloud, _, _ = owners[message.agent_email]
            copy_rows.append(copy_params(message, user_id, cloud, content_seq))
        tx.executemany(
            f"INSERT INTO messages ({COPY_INSERT_COLUMNS}) VALUES ({COPY_VALUES})", copy_rows
        )
    _insert_whole(tx, whole_rows)
    events: list[NewEvent | FoldedCopy] = []
    received = ReceivedEvents()
    # this process tells its own listeners itself (announce_stored): only other replicas need
    # to hear of a local agent's message, and a single writer has none
    tell_replicas = not tx.dialect.single_writer
    for message in messages:
        user_id, cloud, agent_id, gate_policy = owners[message.agent_email]
        if message.flag_reason is not None:  # the agent's gate flagged, held or blocked it
            events.append(received.screened(user_id, message, now, policy=gate_policy))
        if not message.delivered:
            continue
        if cloud:
            add_job(tx, WEBHOOK_JOB, message.id, now)
        elif tell_replicas:
            tx.announce(MessageStored(agent_id, message))
        events.append(received.of_copy(user_id, message, now))
    record_events(tx, events)
    mark_signed(tx, ((owners[message.agent_email][0], now) for message in messages))


def _copies_by_content(
    messages: list[NewInboundMessage], digests: list[str]
) -> list[list[tuple[NewInboundMessage, str]]]:
    """`messages` with their digests, the copies of one message for several agents together
    (equal `content_key`s: the same bytes, sender, recipients, results and time), in the order
    each message first appears."""
    groups: ByContent[list[tuple[NewInboundMessage, str]]] = ByContent(list)
    for message, digest in zip(messages, digests, strict=True):
        groups.of(message).append((message, digest))
    return groups.values()


def _insert_whole(tx: Transaction, rows: list[tuple[Any, ...]]) -> None:
    """Insert the whole `messages` rows gathered so far (messages for one agent), and forget
    them."""
    if rows:
        tx.executemany(
            f"INSERT INTO messages ({INBOUND_INSERT_COLUMNS}) VALUES ({INBOUND_VALUES})", rows
        )
        rows.clear()


def _inbox_query(
    columns: str,
    user_id: str,
    agent_email: str,
    status: StatusFilter,
    page_size: int,
    after_seq: int | None,
) -> tuple[str, list[Any]]:
    """The query of a keyset page of `columns` of the agent's inbox (mail not in the trash,
    with `status` unless all), oldest first after `after_seq`, one row more than the page (it
    says whether another page follows); and its parameters. A page of one status reads
    `messages_agent_status`; a page of all merges it with `messages_agent_seq_settled`
    (`page_in_order`)."""
    where = f"{IN_INBOX} AND {NOT_TRASHED} AND m.seq > ?"
    params: list[Any] = [user_id, agent_email, after_seq or 0]
    if status == "all":
        page, params = page_in_order(where, params, page_size + 1)
        return f"SELECT {columns} FROM messages_with_content m WHERE {page}", params
    query = f"SELECT {columns} FROM messages_with_content m WHERE {where} AND m.status = ?"
    return query + " ORDER BY m.seq LIMIT ?", [*params, status, page_size + 1]


def newest_first(rows: list[Any]) -> list[Any]:
    """Rows led by their `seq`, newest first. Queries by Message-ID sort their few rows here
    rather than in SQL: asked for `ORDER BY seq`, SQLite would rather walk all of the agent's
    mail in `seq` order than look the ids up in `messages_rfc_id`."""
    return sorted(rows, key=lambda row: row[0], reverse=True)


def _named_by(
    tx: Transaction, user_id: str, agent_email: str, rfc_message_ids: list[str]
) -> tuple[str, tuple[Any, ...]]:
    """A condition on `messages_with_content m`: a message of the user's agent with a
    Message-ID among `rfc_message_ids`, found by the Message-ID indexes of whole rows and of
    contents (the view's own column has no index), a content's copies by their index, and each
    row by its `seq`; and its parameters. The agent is checked on the rows found: asked to
    find them, SQLite would walk all of its mail (in the subquery of copies) or its unread
    mail (here)."""
    ids = tx.dialect.list_param(rfc_message_ids)
    condition = (
        f"m.user_id = ? AND {tx.dialect.unindexed('m.agent_email')} = ? "
        "AND m.seq IN (SELECT w.seq FROM messages w WHERE "
        f"{tx.dialect.in_list('w.rfc_message_id', 'text')} AND w.agent_email = ? "
        "UNION ALL SELECT s.seq FROM messages s WHERE s.content_seq IN "
        "(SELECT c.seq FROM message_contents c WHERE "
        f"{tx.dialect.in_list('c.rfc_message_id', 'text')}))"
    )
    return condition, (user_id, agent_email, ids, agent_email, ids)


def _referenced_conversation(
    tx: Transaction, user_id: str, agent_email: str, rfc_message_ids: list[str]
) -> str | None:
    """The conversation of the first of `rfc_message_ids` naming a message of the agent: by
    its Message-ID (the message the agent sent under it, else its newest received under it),
    else — an id before the first one that does — as `<relay id@any domain>`, mail the agent
    sent that the relay took under that id (`_relay_named`).

    Mail the agent sent wins over received mail of the same Message-ID: that is a copy of it
    coming back (a mailing list the agent posts to sends the post to its members, the agent
    too), or a forgery, and neither may take the replies to the agent's mail elsewhere."""
    if not rfc_message_ids:
        return None
    named, named_params = _named_by(tx, user_id, agent_email, rfc_message_ids)
    rows = tx.all(
        f"SELECT m.direction = '{OUTBOUND}', m.seq, m.rfc_message_id, m.conversation_id "
        f"FROM messages_with_content m WHERE {named}",
        named_params,
    )
    found = [row[2:] for row in sorted(rows, key=lambda row: (bool(row[0]), row[1]), reverse=True)]
    matched = {row[0] for row in found}
    unmatched = list(itertools.takewhile(lambda rfc_id: rfc_id not in matched, rfc_message_ids))
    found += _relay_named(tx, user_id, agent_email, unmatched)
    return first_conversation(found, rfc_message_ids)


def _relay_named(
    tx: Transaction, user_id: str, agent_email: str, rfc_message_ids: list[str]
) -> list[tuple[str, str | None]]:
    """`(rfc_message_id, conversation_id)`, newest first, for each of `rfc_message_ids` whose
    left part (`id_left`) is the id the relay named for mail the user's agent sent (a relay
    such as Amazon SES gives the message a Message-ID of its own, `<id@…amazonses.com>`)."""
    by_left: dict[str, list[str]] = {}
    for rfc_id in rfc_message_ids:
        if (left := id_left(rfc_id)) is not None:
            by_left.setdefault(left, []).append(rfc_id)
    if not by_left:
        return []
    rows = tx.all(
        "SELECT m.seq, r.relay_id, m.conversation_id FROM relay_message_ids r "
        "JOIN messages m ON m.id = r.message_id "
        f"WHERE {tx.dialect.in_list('r.relay_id', 'text')} AND m.user_id = ? "
        f"AND m.agent_email = ? AND m.direction = '{OUTBOUND}'",
        (tx.dialect.list_param(list(by_left)), user_id, agent_email),
    )
    return [
        (rfc_id, conversation)
        for _, relay_id, conversation in newest_first(rows)
        for rfc_id in by_left[relay_id]
    ]


def _sent_to(tx: Transaction, in_agent: str, scope: tuple[str, str, str], sender: str) -> bool:
    """Whether the agent sent mail in the conversation (`in_agent` over `scope`) to `sender`:
    To, Cc or Bcc. The recipient lists are JSON; LIKE finds the candidates (`_` and `%` match
    more, never less, for an address written as it is), each then read to be sure."""
    pattern = f'%"{sender}"%'
    rows = tx.all(
        f"SELECT to_json, cc_json, bcc_json {in_agent} AND direction = '{OUTBOUND}' "
        "AND (to_json LIKE ? OR cc_json LIKE ? OR bcc_json LIKE ?)",
        (*scope, pattern, pattern, pattern),
    )
    return any(
        sender in (address.lower() for column in row for address in json.loads(column))
        for row in rows
    )


class MessagesSql(Runner):
    """`Mailboxes` in SQL."""

    async def store_inbound(self, messages: list[NewInboundMessage], now: float) -> None:
        """Commit messages and their webhook jobs in one transaction, each distinct raw
        message once (digested first, outside any lock: big mail in a worker thread)."""
        if any(
            len(message.raw_message) > INLINE_DIGEST_BYTES and message.raw_digest is None
            for message in messages
        ):
            raw = await trio.to_thread.run_sync(raw_messages_of, messages)
        else:
            raw = raw_messages_of(messages)
        await self._write(lambda tx: _store(tx, messages, raw, now))

    async def stored_copies(
        self, copies: list[tuple[str, str]], *, settle_within: float | None = None
    ) -> set[str]:
        """Which of `copies`, (agent address, message id) pairs, are stored (on a reader);
        `settle_within`: once a transaction still storing mail of their agents has ended."""
        if not copies:
            return set()
        agent_of = {message_id: agent_email for agent_email, message_id in copies}

        def read(tx: Transaction) -> set[str]:
            if settle_within is not None:
                await_agents_mail(tx, agent_of.values(), settle_within)
            rows = tx.all(
                f"SELECT id, agent_email FROM messages WHERE {tx.dialect.in_list('id', 'text')}",
                (tx.dialect.list_param(list(agent_of)),),
            )
            return {str(found) for found, agent in rows if agent_of.get(found) == agent}

        return await self._read(read)

    async def list_inbound(
        self,
        user_id: str,
        agent_email: str,
        status: StatusFilter,
        page_size: int,
        after_seq: int | None,
    ) -> MessagePage:
        """A keyset page of the agent's messages not in the trash, oldest first, after
        `after_seq`."""
        query, params = _inbox_query(
            MESSAGE_COLUMNS, user_id, agent_email, status, page_size, after_seq
        )
        rows = await self._read(lambda tx: tx.all(query, params))
        return message_page(rows, page_size)

    async def inbox_page(
        self,
        user_id: str,
        agent_email: str,
        status: StatusFilter,
        page_size: int,
        after_seq: int | None,
    ) -> InboxPage | None:
        """The user's agent at `agent_email` and a keyset page of its inbox (mail not in the
        trash), in one read; the agent is read with the page unless it is remembered (the
        page's query is scoped by the owner either way)."""
        query, params = _inbox_query(
            INBOX_ENTRY_COLUMNS, user_id, agent_email, status, page_size, after_seq
        )
        remembered = self._remembered(owned_agent_answer(user_id, agent_email))

        def read(tx: Transaction) -> InboxPage | None:
            if isinstance(remembered, Agent):
                agent = remembered
            elif (row := agent_row(tx, user_id, agent_email)) is not None:
                agent = decode_agent(row)
            else:
                return None
            entries, next_after = inbox_entries(tx.all(query, params), page_size)
            return InboxPage(agent, tuple(entries), next_after)

        asked = f"{user_id}\n{agent_email}\n{status}\n{page_size}\n{after_seq}"
        return await self._read(read, answer=("inbox page", asked))

    async def read_inbound(
        self,
        user_id: str,
        agent_email: str,
        message_id: str,
        *,
        trashed_too: bool = False,
        mark_read: bool = True,
    ) -> InboundMessage | None:
        """Return one of the agent's messages, marking it read unless not `mark_read`; None
        when not the user's, or in the trash unless `trashed_too`.

        Read on a reader connection, and remembered until the next write (SQLite); only mail
        still unread takes the writer, to mark it."""
        scope = (user_id, agent_email, message_id)
        live = "" if trashed_too else f" AND {NOT_TRASHED}"

        def read(tx: Transaction) -> InboundMessage | None:
            row = tx.first(
                f"SELECT {MESSAGE_COLUMNS} FROM messages_with_content m "
                f"WHERE {IN_INBOX} AND m.id = ?{live}",
                scope,
            )
            return decode_message(row) if row else None

        asked = f"{user_id}\n{agent_email}\n{message_id}\n{trashed_too}"
        message = await self._read(read, answer=("inbound message", asked))
        if message is None:
            return None
        if message.status != UNREAD or not mark_read:
            return message
        await self._write(
            lambda tx: tx.execute(
                f"UPDATE messages SET status = '{READ}' WHERE user_id = ? AND agent_email = ? "
                f"AND id = ? AND direction = '{INBOUND}' AND status = '{UNREAD}' "
                "AND hold IS NULL" + ("" if trashed_too else " AND deleted_at IS NULL"),
                scope,
            )
        )
        return replace(message, status=READ)

    async def peek_inbound(
        self, user_id: str, agent_email: str, message_id: str
    ) -> InboundMessage | None:
        """One of the agent's delivered messages, not marked read."""
        row = await self._read(
            lambda tx: tx.first(
                f"SELECT {MESSAGE_COLUMNS} FROM messages_with_content m "
                f"WHERE {IN_INBOX} AND m.id = ?",
                (user_id, agent_email, message_id),
            )
        )
        return decode_message(row) if row else None

    async def mark_read(self, user_id: str, agent_email: str, message_id: str) -> bool:
        """Mark one of the agent's inbound messages read; False when not the user's, or in the
        trash."""
        count = await self._write(
            lambda tx: (
                tx.execute(
                    f"UPDATE messages SET status = '{READ}' WHERE user_id = ? AND agent_email = ? "
                    f"AND id = ? AND direction = '{INBOUND}' AND hold IS NULL "
                    "AND deleted_at IS NULL",
                    (user_id, agent_email, message_id),
                ).rowcount
            )
        )
        return count == 1

    async def conversation_for(
        self,
        user_id: str,
        agent_email: str,
        rfc_message_ids: list[str],
        claim: ConversationClaim | None = None,
    ) -> str | None:
        """Threading from the user's messages of the agent (Storage.conversation_for)."""

        def read(tx: Transaction) -> str | None:
            referenced = _referenced_conversation(tx, user_id, agent_email, rfc_message_ids)
            if claim is None:
                return referenced
            in_agent = (
                "FROM messages_with_content WHERE user_id = ? AND agent_email = ? "
                "AND conversation_id = ?"
            )
            scope = (user_id, agent_email, claim.conversation_id)
            exists, by_sender = tx.one(
                f"SELECT EXISTS (SELECT 1 {in_agent}), "
                f"EXISTS (SELECT 1 {in_agent} AND from_addr = ?)",
                (*scope, *scope, claim.sender),
            )
            with_sender = bool(by_sender) or (
                bool(exists) and _sent_to(tx, in_agent, scope, claim.sender)
            )
            return chosen_conversation(referenced, claim, bool(exists), with_sender)

        return await self._read(read)

    async def earlier_messages(
        self, user_id: str, agent_email: str, rfc_message_ids: list[str]
    ) -> list[StoredEarlier]:
        """The agent's mail, either direction, with one of `rfc_message_ids`, newest first."""
        if not rfc_message_ids:
            return []

        def read(tx: Transaction) -> list[Any]:
            named, named_params = _named_by(tx, user_id, agent_email, rfc_message_ids)
            return tx.all(
                f"SELECT m.seq, {EARLIER_COLUMNS} FROM messages_with_content m "
                f"WHERE {named} AND m.hold IS NULL",
                named_params,
            )

        rows = await self._read(read)
        return [decode_earlier(row[1:]) for row in newest_first(rows)]

    async def keep_reading(
        self, user_id: str, agent_email: str, message_id: str, reading: dict[str, Any]
    ) -> None:
        """Keep an inbound message's reading unless one is kept already (first one wins)."""
        encoded = json.dumps(reading, ensure_ascii=False)
        await self._write(
            lambda tx: tx.execute(
                "UPDATE messages SET reading_json = ? WHERE user_id = ? AND agent_email = ? "
                f"AND id = ? AND direction = '{INBOUND}' AND reading_json IS NULL",
                (encoded, user_id, agent_email, message_id),
            ),
            durable=False,
        )
