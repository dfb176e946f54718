"""`SqlStorage`: the whole `Storage` protocol, joined from the SQL of every aggregate.

Both backends are an `SqlStorage` that adds what is theirs alone: connections, transactions,
threads, migrations and (PostgreSQL) announcements to other replicas.
"""

from __future__ import annotations

from e2a.storage.sql.accounts import AccountsSql
from e2a.storage.sql.agents import AgentsSql
from e2a.storage.sql.domains import DomainsSql
from e2a.storage.sql.jobs import JobsSql
from e2a.storage.sql.messages import MessagesSql
from e2a.storage.sql.outbound import OutboundSql
from e2a.storage.sql.rate_limits import RateLimitsSql
from e2a.storage.sql.retention import RetentionSql
from e2a.storage.sql.transaction import Transaction
from e2a.storage.sql.webhooks import WebhooksSql

SERVER_SECRET = "hmac_secret"
"""The `server_state` row of the development server secret."""


class SqlStorage(
    AccountsSql,
    AgentsSql,
    DomainsSql,
    MessagesSql,
    OutboundSql,
    JobsSql,
    WebhooksSql,
    RateLimitsSql,
    RetentionSql,
):
    """`Storage` over a backend's `Runner` methods."""

    async def ping(self) -> None:
        """Raise StorageUnavailable unless a trivial query answers."""
        await self._read(lambda tx: tx.first("SELECT 1"))

    async def server_secret(self, candidate: str) -> str:
        """The development server secret, storing `candidate` on first use."""

        def get_or_store(tx: Transaction) -> str:
            tx.execute(
                "INSERT INTO server_state (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (SERVER_SECRET, candidate),
            )
            return str(tx.one("SELECT value FROM server_state WHERE name = ?", (SERVER_SECRET,))[0])

        return await self._write(get_or_store)
