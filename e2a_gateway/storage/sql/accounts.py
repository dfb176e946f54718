"""The SQL of accounts: users, their API keys (by hash) and signing secrets, export and deletion.

Keys are only ever stored as their SHA-256 hash and an export never holds a hash, seed or
secret (its webhook subscribers go without theirs). Changes to one user's counted resources
take turns under a lock on the user's row.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from e2a_gateway.clock import format_timestamp, utc_now
from e2a_gateway.storage.announcements import AccessEnded
from e2a_gateway.storage.base import (
    ApiKey,
    ExportedMessage,
    KeyHolder,
    LastOne,
    LimitReached,
    MessageCounts,
    SigningSecret,
    User,
    UserExport,
)
from e2a_gateway.storage.rows import (
    AGENT_COLUMNS,
    API_KEY_COLUMNS,
    API_KEYS_WITH_AGENTS,
    DELETED_TABLES,
    DOMAIN_COLUMNS,
    EXPORT_MESSAGE_COLUMNS,
    EXPORT_SIGNING_SECRET_COLUMNS,
    SIGNING_SECRET_COLUMNS,
    api_key_params,
    decode_api_key,
    decode_signing_secret,
    export_message,
    recipient_results,
    signing_secret_params,
    user_export,
)
from e2a_gateway.storage.sql.erasure import announce_erased_mail
from e2a_gateway.storage.sql.events import EVENT_COLUMNS, EVENTS_WITH_BODIES, decode_events
from e2a_gateway.storage.sql.keyset import after_newest_first
from e2a_gateway.storage.sql.mailbox import sorted_labels
from e2a_gateway.storage.sql.owners import keep_account, keep_agent
from e2a_gateway.storage.sql.runner import Runner, Snapshot
from e2a_gateway.storage.sql.subscribers import WEBHOOK_COLUMNS, decode_webhook
from e2a_gateway.storage.sql.suppressions import SUPPRESSION_COLUMNS, decode_suppression
from e2a_gateway.storage.sql.templates import TEMPLATE_COLUMNS, decode_template
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import ACCOUNT_SCOPE, OUTBOUND

USER_COLUMNS = "id, email, created_at"


def _live_key(tx: Transaction) -> str:
    """The FROM and WHERE of the live key with hash `?`: its owner `u`, and for an agent key
    the agent `a` it is bound to, which must still be there."""
    return (
        "FROM api_keys k JOIN users u ON u.id = k.user_id "
        "LEFT JOIN agents a ON a.id = k.agent_id AND a.user_id = k.user_id "
        "AND a.deleted_at IS NULL "
        "WHERE k.key_hash = ? AND k.revoked_at IS NULL "
        f"AND (k.expires_at IS NULL OR k.expires_at > {tx.dialect.utc_now}) "
        f"AND (k.scope = '{ACCOUNT_SCOPE}' OR a.id IS NOT NULL)"
    )


SIGNED_STAMP_SECONDS = 60
"""How stale a signing secret's `last_signed_at` may get before a signature renews it: mail
arriving in a stream rewrites the row once a minute, not once a message."""


def mark_signed(tx: Transaction, signings: Iterable[tuple[str, float]]) -> None:
    """Inside `tx`: record in the newest signing secret of each user that it signed a delivery
    at the given time (user id, epoch seconds), unless it already says so to the minute."""
    latest: dict[str, float] = {}
    for user_id, when in signings:
        latest[user_id] = max(when, latest.get(user_id, when))
    tx.executemany(
        "UPDATE signing_secrets SET last_signed_at = ? WHERE user_id = ? AND seq = "
        "(SELECT max(seq) FROM signing_secrets WHERE user_id = ?) "
        "AND (last_signed_at IS NULL OR last_signed_at < ?)",
        [
            (
                format_timestamp(when),
                user_id,
                user_id,
                format_timestamp(when - SIGNED_STAMP_SECONDS),
            )
            for user_id, when in sorted(latest.items())
        ],
    )


def _lock_user(tx: Transaction, user_id: str) -> None:
    """Serialise changes to one user's counted resources (signing secrets) across replicas."""
    tx.lock_row("users", "id", user_id)


def _user(row: Any) -> User | None:
    return User(*row) if row else None


def _exported_records(tx: Transaction, user_id: str) -> dict[str, Any]:
    """The user's suppressions, webhook subscribers (never a seed), email templates and
    managed-unsubscribe links (what each may do, never its token or hash), JSON-ready, oldest
    first: what the export holds beside its users, agents, keys, messages and events."""
    suppressions = [
        decode_suppression(row)
        for row in tx.all(
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE user_id = ? ORDER BY seq",
            (user_id,),
        )
    ]
    webhooks = [
        decode_webhook(row)
        for row in tx.all(
            f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = ? ORDER BY seq", (user_id,)
        )
    ]
    links = tx.all(
        "SELECT agent_email, address, created_at FROM agent_unsubscribe_tokens "
        "WHERE user_id = ? ORDER BY created_at, agent_email, address",
        (user_id,),
    )
    templates = [
        decode_template(row)
        for row in tx.all(
            f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE user_id = ? ORDER BY seq", (user_id,)
        )
    ]
    return {
        "suppressions": [
            {
                "address": item.address,
                "source": item.source,
                "created_at": item.created_at,
                "agent_email": item.agent_email,
                "reason": item.reason,
                "source_message_id": item.source_message_id,
            }
            for item in suppressions
        ],
        "webhooks": [
            {
                "id": webhook.id,
                "url": webhook.url,
                "description": webhook.description,
                "events": webhook.events,
                "filters": {
                    "agent_emails": webhook.agent_emails,
                    "conversation_ids": webhook.conversation_ids,
                },
                "enabled": webhook.enabled,
                "created_at": webhook.created_at,
                "last_delivered_at": webhook.last_delivered_at,
                "auto_disabled_at": None
                if webhook.auto_disabled_at is None
                else format_timestamp(webhook.auto_disabled_at),
            }
            for webhook in webhooks
        ],
        "templates": [
            {
                name: value
                for name, value in dataclasses.asdict(template).items()
                if name not in ("user_id", "seq")
            }
            for template in templates
        ],
        "unsubscribe_links": [
            {"agent_email": agent_email, "address": address, "created_at": created_at}
            for agent_email, address, created_at in links
        ],
    }


EXPORT_PAGE = 200
"""Messages or event rows an export reads at a time: what it holds of them at once."""


class SqlUserExport:
    """A user's export (`e2a_gateway.storage.base.UserExport`) read through `snapshot`."""

    def __init__(self, snapshot: Snapshot, user_id: str) -> None:
        self._snapshot = snapshot
        self._user_id = user_id

    async def records(self) -> dict[str, Any]:
        """The user, agents, domains, keys, signing secrets (never hashes or seeds),
        suppressions, webhook subscribers and templates, oldest first."""

        def read(tx: Transaction) -> dict[str, Any]:
            def rows(query: str) -> list[Any]:
                return tx.all(query, (self._user_id,))

            return user_export(
                tx.first(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (self._user_id,)),
                rows(
                    f"SELECT {AGENT_COLUMNS} FROM agents WHERE user_id = ? "
                    "ORDER BY created_at, email"
                ),
                rows(
                    f"SELECT {DOMAIN_COLUMNS} FROM domains WHERE user_id = ? "
                    "ORDER BY created_at, domain"
                ),
                rows(
                    f"SELECT {API_KEY_COLUMNS} FROM {API_KEYS_WITH_AGENTS} WHERE k.user_id = ? "
                    f"ORDER BY k.created_at, k.{tx.dialect.insertion_order}"
                ),
                rows(
                    f"SELECT {EXPORT_SIGNING_SECRET_COLUMNS} FROM signing_secrets "
                    "WHERE user_id = ? ORDER BY seq"
                ),
            ) | _exported_records(tx, self._user_id)

        return await self._snapshot.read(read)

    async def message_counts(self, since: str) -> dict[str, MessageCounts]:
        """Per agent address: messages received and sent at or after `since`, and those
        awaiting review."""
        rows = await self._snapshot.read(
            lambda tx: tx.all(
                "SELECT agent_email, "
                "sum(CASE WHEN created_at >= ? AND direction = 'inbound' THEN 1 ELSE 0 END), "
                "sum(CASE WHEN created_at >= ? AND direction <> 'inbound' THEN 1 ELSE 0 END), "
                "sum(CASE WHEN status = 'pending_approval' THEN 1 ELSE 0 END) "
                "FROM messages WHERE user_id = ? GROUP BY agent_email",
                (since, since, self._user_id),
            )
        )
        return {row[0]: MessageCounts(int(row[1]), int(row[2]), int(row[3])) for row in rows}

    async def messages(self) -> AsyncGenerator[list[ExportedMessage], None]:
        """The user's messages, oldest first, EXPORT_PAGE at a time, each with its labels and
        its time in the trash."""
        after = 0
        while True:
            page = await self._snapshot.read(partial(_message_page, self._user_id, after))
            if not page:
                return
            after = page[-1][0]
            yield [message for _, message in page]

    async def events(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The user's events log, oldest first, EXPORT_PAGE rows at a time."""
        after = 0
        while True:
            rows = await self._snapshot.read(partial(_event_rows, self._user_id, after))
            if not rows:
                return
            after = int(rows[-1][0])
            yield [
                {
                    **json.loads(event.envelope),
                    "agent_email": event.agent_email,
                    "conversation_id": event.conversation_id,
                    "message_id": event.message_id,
                }
                for row in rows
                for event in decode_events(row)
            ]


def _event_rows(user_id: str, after: int, tx: Transaction) -> list[Any]:
    """Up to EXPORT_PAGE rows of the user's events log after `seq` `after`, oldest first."""
    return tx.all(
        f"SELECT {EVENT_COLUMNS} FROM {EVENTS_WITH_BODIES} "
        "WHERE e.user_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
        (user_id, after, EXPORT_PAGE),
    )


def _message_page(user_id: str, after: int, tx: Transaction) -> list[tuple[int, ExportedMessage]]:
    """Up to EXPORT_PAGE of the user's messages after `seq` `after`, oldest first, each with
    its `seq`."""
    rows = tx.all(
        f"SELECT {EXPORT_MESSAGE_COLUMNS}, m.sent_at, m.complained_at, m.auth_results_json, "
        "m.seq, m.deleted_at FROM messages_with_content m "
        "WHERE m.user_id = ? AND m.seq > ? ORDER BY m.seq LIMIT ?",
        (user_id, after, EXPORT_PAGE),
    )
    labels: dict[str, list[str]] = {}
    if rows:
        for message_id, label in tx.all(
            "SELECT message_id, label FROM message_labels "
            f"WHERE {tx.dialect.in_list('message_id', 'text')}",
            (tx.dialect.list_param([row[0] for row in rows]),),
        ):
            labels.setdefault(message_id, []).append(label)
    page = []
    for row in rows:
        filed: dict[str, Any] = {}
        if row[0] in labels:
            filed["labels"] = sorted_labels(labels[row[0]])
        if row[-1] is not None:
            filed["deleted_at"] = row[-1]
        message = export_message(row)
        if message["direction"] == OUTBOUND:  # what its delivery rollup reads
            sent_at, complained_at, results = row[-5:-2]
            filed["delivery"] = {
                "sent_at": sent_at,
                "complained_at": complained_at,
                "results": recipient_results(results),
            }
        page.append((int(row[-2]), ExportedMessage(message, filed)))
    return page


class AccountsSql(Runner):
    """`Accounts` in SQL, and the newest signing seed that `Directory` routes with."""

    async def ensure_user(self, user_id: str, email: str, now: str) -> tuple[User, bool]:
        """Return the user with `email`, creating it with `user_id` if absent; (user, created)."""

        def upsert(tx: Transaction) -> tuple[User, bool]:
            created = tx.execute(
                "INSERT INTO users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (user_id, email, now),
            ).rowcount
            row = tx.one(f"SELECT {USER_COLUMNS} FROM users WHERE email = ?", (email,))
            return User(*row), created == 1

        return await self._write(upsert)

    async def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Store an API key by its hash; its account (an agent key: its agent) kept from
        deletion until the commit, AccountGone (AgentGone) when it is gone already."""

        def insert(tx: Transaction) -> None:
            if key.agent_email is None:
                keep_account(tx, key.user_id)
            else:
                keep_agent(tx, key.user_id, key.agent_email)
            tx.execute(
                "INSERT INTO api_keys (id, user_id, name, key_hash, key_prefix, created_at, "
                "scope, agent_id, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                api_key_params(key, key_hash),
            )

        await self._write(insert, changes_routing=True)

    async def user_for_key_hash(self, key_hash: str) -> User | None:
        """The owner of a live key with this hash."""
        row = await self._read(
            lambda tx: tx.first(f"SELECT u.id, u.email, u.created_at {_live_key(tx)}", (key_hash,))
        )
        return _user(row)

    async def key_holder(self, key_hash: str) -> KeyHolder | None:
        """Who the live key with this hash speaks for (its owner, scope and bound agent).

        Asked on every request, so the answer is a routing answer (remembered where the backend
        can, until a write to keys, agents or accounts); expiry is checked on each use."""

        def read(tx: Transaction) -> KeyHolder | None:
            row = tx.first(
                "SELECT u.id, u.email, u.created_at, k.scope, a.id, a.email, k.expires_at "
                f"{_live_key(tx)}",
                (key_hash,),
            )
            return KeyHolder(User(*row[:3]), *row[3:]) if row else None

        holder = await self._read(read, routing=("key", key_hash))
        if holder is None or holder.expired(utc_now()):
            return None
        return holder

    async def note_key_used(self, key_hash: str, when: str) -> None:
        """Record a use of the key (Storage.note_key_used): not synced before it returns."""
        await self._write(
            lambda tx: tx.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE key_hash = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)",
                (when, key_hash, when),
            ),
            durable=False,
        )

    async def get_user(self, user_id: str) -> User | None:
        """The user with this id."""
        row = await self._read(
            lambda tx: tx.first(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        )
        return _user(row)

    async def first_user(self) -> User | None:
        """The user created first (the same second: the smaller id)."""
        row = await self._read(
            lambda tx: tx.first(f"SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT 1")
        )
        return _user(row)

    async def api_key_page(
        self, user_id: str, limit: int, after: tuple[str, str] | None, *, revoked: bool = False
    ) -> list[ApiKey]:
        """Up to `limit` keys of the user not revoked (with `revoked`, revoked ones too),
        expired ones too (as e2a lists them, with their `expires_at`), newest first by
        (created_at, id), after `after`."""
        position, params = after_newest_first(after, "k.created_at", "k.id")
        working = "" if revoked else "AND k.revoked_at IS NULL"

        def page(tx: Transaction) -> list[Any]:
            return tx.all(
                f"SELECT {API_KEY_COLUMNS} FROM {API_KEYS_WITH_AGENTS} "
                f"WHERE k.user_id = ? {working} {position} "
                "ORDER BY k.created_at DESC, k.id DESC LIMIT ?",
                (user_id, *params, limit),
            )

        return [decode_api_key(row) for row in await self._read(page)]

    @asynccontextmanager
    async def export_user(self, user_id: str) -> AsyncIterator[UserExport]:
        """The user's export, read from one snapshot held while the block runs (no hashes or
        seeds)."""
        async with self._snapshot() as snapshot:
            yield SqlUserExport(snapshot, user_id)

    async def delete_user(self, user_id: str) -> dict[str, int]:
        """Delete the user and all they own in one transaction; rows deleted per table. Other
        replicas hear of it when it commits, and end the user's live subscriptions.

        The user's mail and agents go before the user's row is locked, in the order every
        writer of mail takes them (storing inbound mail holds its agents, recording a send its
        job, and only then does a row it inserts naming the user check the user's row):
        locking the user's row first made such a writer and the deletion wait for each other
        until PostgreSQL failed one of them (the deletion answered 503, or the mail 451).
        Whatever such a writer commits meanwhile goes with the agents and the user, by
        cascade. The rest of the user's records go after the lock, as the changes to signing
        secrets take it first, and with them the feedback that carries the user's address
        (whatever its case): the gateway stamps it on feedback sent with the user's key, and
        it is the user's own address when typed.

        The mail is found agent by agent, through the indexes led by the agent's address:
        every message names one of its user's agents (the agent it was received or sent by),
        and `messages` keeps no index of its own by user, which storing inbound mail would
        have to maintain; asking by user read every message of the gateway. What this process
        kept of the erased mail goes when the deletion commits (`MailErased`)."""
        mine = "agent_email IN (SELECT email FROM agents WHERE user_id = ?)"
        mail = {
            "webhook_attempts": (
                "DELETE FROM webhook_attempts WHERE message_id IN "
                f"(SELECT id FROM messages WHERE {mine})",
                (user_id,),
            ),
            "jobs": (
                f"DELETE FROM jobs WHERE message_id IN (SELECT id FROM messages WHERE {mine})",
                (user_id,),
            ),
            "messages": (f"DELETE FROM messages WHERE {mine}", (user_id,)),
            "agents": ("DELETE FROM agents WHERE user_id = ?", (user_id,)),
        }

        def records(address: str) -> dict[str, tuple[str, tuple[Any, ...]]]:
            """The statements deleting the rest, `address` the `email` column lowercased."""
            return {
                "domains": ("DELETE FROM domains WHERE user_id = ?", (user_id,)),
                "api_keys": ("DELETE FROM api_keys WHERE user_id = ?", (user_id,)),
                "signing_secrets": ("DELETE FROM signing_secrets WHERE user_id = ?", (user_id,)),
                "agent_unsubscribe_tokens": (
                    "DELETE FROM agent_unsubscribe_tokens WHERE user_id = ?",
                    (user_id,),
                ),
                "agent_suppressions": (
                    "DELETE FROM suppressions WHERE user_id = ? AND agent_email <> ''",
                    (user_id,),
                ),
                "feedback": (
                    f"DELETE FROM feedback WHERE {address} = "
                    f"(SELECT {address} FROM users WHERE id = ?)",
                    (user_id,),
                ),
                "users": ("DELETE FROM users WHERE id = ?", (user_id,)),
            }

        def delete(tx: Transaction) -> dict[str, int]:
            def run(statements: dict[str, tuple[str, tuple[Any, ...]]]) -> dict[str, int]:
                return {
                    table: tx.execute(query, params).rowcount
                    for table, (query, params) in statements.items()
                }

            announce_erased_mail(tx, "SELECT email FROM agents WHERE user_id = ?", (user_id,))
            counts = run(mail)
            _lock_user(tx, user_id)
            counts |= run(records(tx.dialect.lowercase("email")))
            tx.announce(AccessEnded("user", user_id))
            return {table: counts[table] for table in DELETED_TABLES}

        return await self._write(delete, changes_routing=True)

    async def revoke_api_key(self, user_id: str, key_id: str, now: str) -> str | None:
        """Revoke one live key of the user; its hash, or None. Other replicas hear of it when
        it commits, and end the live subscriptions the key opened."""

        def revoke(tx: Transaction) -> str | None:
            row = tx.first(
                "UPDATE api_keys SET revoked_at = ? "
                "WHERE id = ? AND user_id = ? AND revoked_at IS NULL RETURNING key_hash",
                (now, key_id, user_id),
            )
            if row is None:
                return None
            tx.announce(AccessEnded("key", row[0]))
            return str(row[0])

        return await self._write(revoke, changes_routing=True)

    async def add_signing_secret(self, secret: SigningSecret, max_per_user: int) -> None:
        """Store a signing secret unless the user has `max_per_user` already (LimitReached)."""

        def insert(tx: Transaction) -> None:
            _lock_user(tx, secret.user_id)
            (count,) = tx.one(
                "SELECT count(*) FROM signing_secrets WHERE user_id = ?", (secret.user_id,)
            )
            if count >= max_per_user:
                raise LimitReached(f"at most {max_per_user} signing secrets per user")
            seq = tx.dialect.next_in_sequence("signing_secrets", "seq")
            tx.execute(
                "INSERT INTO signing_secrets "
                "(id, seq, user_id, name, seed, secret_prefix, created_at) "
                f"VALUES (?, {seq}, ?, ?, ?, ?, ?)",
                signing_secret_params(secret),
            )

        await self._write(insert, changes_routing=True)

    async def list_signing_secrets(self, user_id: str) -> list[SigningSecret]:
        """The user's secrets, newest first."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {SIGNING_SECRET_COLUMNS} FROM signing_secrets WHERE user_id = ? "
                "ORDER BY seq DESC",
                (user_id,),
            )
        )
        return [decode_signing_secret(row) for row in rows]

    async def delete_signing_secret(self, user_id: str, secret_id: str) -> bool:
        """Delete one of the user's secrets, never the last (LastOne, even against a concurrent
        delete); False when not theirs."""

        def delete(tx: Transaction) -> bool:
            _lock_user(tx, user_id)
            rows = tx.all("SELECT id FROM signing_secrets WHERE user_id = ?", (user_id,))
            ids = [row[0] for row in rows]
            if secret_id not in ids:
                return False
            if len(ids) == 1:
                raise LastOne("cannot delete the last signing secret")
            tx.execute(
                "DELETE FROM signing_secrets WHERE id = ? AND user_id = ?", (secret_id, user_id)
            )
            return True

        return await self._write(delete, changes_routing=True)

    async def newest_signing_seed(self, user_id: str) -> str | None:
        """The seed of the user's newest signing secret (the one deliveries are signed with)."""
        row = await self._read(
            lambda tx: tx.first(
                "SELECT seed FROM signing_secrets WHERE user_id = ? ORDER BY seq DESC LIMIT 1",
                (user_id,),
            ),
            routing=("seed", user_id),
        )
        return str(row[0]) if row else None
