"""`SqlStorage`: the whole `Storage` protocol, joined from the SQL of every aggregate.

Both backends are an `SqlStorage` that adds what is theirs alone: connections, transactions,
threads, migrations and (PostgreSQL) announcements to other replicas.
"""

from __future__ import annotations

import abc

from e2a_gateway.storage.sql.accounts import AccountsSql
from e2a_gateway.storage.sql.agents import AgentsSql
from e2a_gateway.storage.sql.approval_replies import ApprovalRepliesSql
from e2a_gateway.storage.sql.dead_letters import DeadLettersSql
from e2a_gateway.storage.sql.domains import DomainsSql
from e2a_gateway.storage.sql.events import EventsSql
from e2a_gateway.storage.sql.feedback import FeedbackSql
from e2a_gateway.storage.sql.holds import HoldsSql
from e2a_gateway.storage.sql.idempotency import IdempotencySql
from e2a_gateway.storage.sql.jobs import JobsSql
from e2a_gateway.storage.sql.lifecycle import LifecycleSql
from e2a_gateway.storage.sql.mailbox import MailboxSql
from e2a_gateway.storage.sql.messages import MessagesSql
from e2a_gateway.storage.sql.outbound import OutboundSql
from e2a_gateway.storage.sql.rate_limits import RateLimitsSql
from e2a_gateway.storage.sql.retention import RetentionSql
from e2a_gateway.storage.sql.sessions import DashboardSessionsSql
from e2a_gateway.storage.sql.subscribers import SubscribersSql
from e2a_gateway.storage.sql.suppressions import SuppressionsSql
from e2a_gateway.storage.sql.templates import TemplatesSql
from e2a_gateway.storage.sql.webhooks import WebhooksSql


class SqlStorage(
    LifecycleSql,
    AccountsSql,
    DomainsSql,
    AgentsSql,
    MessagesSql,
    OutboundSql,
    MailboxSql,
    ApprovalRepliesSql,
    HoldsSql,
    JobsSql,
    WebhooksSql,
    DeadLettersSql,
    RateLimitsSql,
    IdempotencySql,
    DashboardSessionsSql,
    FeedbackSql,
    RetentionSql,
    EventsSql,
    SubscribersSql,
    SuppressionsSql,
    TemplatesSql,
):
    """`Storage` over a backend's `Runner` methods, which the backend supplies with these."""

    @abc.abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending numbered migrations; return the versions applied now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""
