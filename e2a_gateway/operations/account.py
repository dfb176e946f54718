"""The caller's data rights: everything stored about them (export), and erasing their account
with all it owns in one transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from e2a_gateway.clock import utc_now
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub import Revocation
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import RateLimited
from e2a_gateway.storage.base import UserExport

EXPORT_SCHEMA_VERSION = "1"
EXPORT_RETRY_SECONDS = 30
"""The `Retry-After` of an export refused while the most allowed are being sent."""
SELF_HOSTED_LIMITS = {
    "max_agents": 1_000_000,
    "max_domains": 1_000_000,
    "max_messages_month": 1_000_000_000,
    "max_storage_bytes": 1 << 50,
}
"""The account's caps as e2a's self-hosted defaults state them: high enough to be no cap (this
gateway enforces none of these), so a client that checks its headroom (`usage < max`) finds
room, as it would against e2a run by its operator without a plan."""


async def account_usage(gateway: Gateway, caller: Caller) -> dict[str, int]:
    """What the caller's whole account uses (whatever the key's scope, as e2a counts it): its
    agents in service and its domains. Messages and storage are not metered here (0)."""
    agents = await gateway.storage.agents_per_domain(caller.user_id, with_trash=False)
    return {
        "agents": sum(agents.values()),
        "domains": await gateway.storage.count_domains(caller.user_id),
        "messages_month": 0,
        "storage_bytes": 0,
    }


@dataclass(frozen=True)
class AccountExport:
    """An account's export being read from one snapshot: its `head` (`schema_version`,
    `generated_at` and the storage's records) and the storage's export (`source`), from
    which its messages, the agents' counts of them and its events log are read page by page."""

    head: dict[str, Any]
    source: UserExport


@asynccontextmanager
async def export_account(gateway: Gateway, caller: Caller) -> AsyncIterator[AccountExport]:
    """Everything stored about the caller, from one snapshot held while the block runs; never
    hashes, secrets or bodies. RateLimited while `http.max_concurrent_exports` exports are
    being sent already (by anyone): each holds a database connection of its own meanwhile."""
    caller.require_account("export the account")
    limit = gateway.settings.http.max_concurrent_exports
    if gateway.exports_running >= limit:
        raise RateLimited(
            "too_many_exports",
            f"{limit} account exports are being sent already, the most this gateway sends at "
            f"once (http.max_concurrent_exports); try again in {EXPORT_RETRY_SECONDS} seconds",
            EXPORT_RETRY_SECONDS,
        )
    gateway.exports_running += 1
    try:
        async with gateway.storage.export_user(caller.user_id) as source:
            records = await source.records()
            head = {"schema_version": EXPORT_SCHEMA_VERSION, "generated_at": utc_now(), **records}
            yield AccountExport(head, source)
    finally:
        gateway.exports_running -= 1


async def delete_account(gateway: Gateway, caller: Caller) -> dict[str, int]:
    """Erase the caller and all they own in one transaction, and close their live connections;
    returns the rows deleted per table."""
    caller.require_account("delete the account")
    deleted = await gateway.storage.delete_user(caller.user_id)
    gateway.hub.revoke(Revocation("user", caller.user_id))
    return deleted
