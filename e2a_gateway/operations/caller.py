"""Who is calling: the account an API key belongs to, found from the key (stored hashed), and
what the key may reach.

Every operation takes a `Caller`; every storage query an operation makes is scoped by the
caller's user id, so ownership is decided inside the query, never by a check left to a face.
An agent key reaches one agent only: operations ask `require_account` before administering the
account and `require_agent` before acting as an agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations.errors import Forbidden, NotFound, Unauthorized
from e2a_gateway.signing.credentials import hash_api_key, is_well_formed_api_key
from e2a_gateway.storage.base import (
    AccountGone,
    Agent,
    AgentGone,
    KeyScope,
    StorageUnavailable,
    User,
)

log = logging.getLogger("e2a.operations")

Scope = KeyScope
"""What a key may reach: `account` (everything of its account) or `agent` (one agent)."""

UNKNOWN_KEY = "unknown or revoked API key"


@dataclass(frozen=True)
class Caller:
    """The owner of the key a request presented, the key (by its SHA-256 hash, never the key
    itself) and what the key may reach: for an agent key, the agent it is bound to (its stable
    id and its address)."""

    user: User
    key_hash: str
    scope: Scope = "account"
    agent_id: str | None = None
    agent_email: str | None = None
    expires_at: str | None = None
    """When the key stops working (RFC 3339 UTC); None: never."""

    @property
    def user_id(self) -> str:
        """The id every query of this caller is scoped by."""
        return self.user.id

    def require_account(self, action: str) -> None:
        """Forbidden unless this is an account key: only those may `action` (administer the
        account: agents, domains, keys, reviews)."""
        if self.scope != "account":
            raise Forbidden(
                "forbidden",
                f"this API key is bound to the agent {self.agent_email}; it cannot {action}. "
                "Use an account key",
            )

    def require_agent(self, agent: Agent) -> None:
        """Forbidden when this is an agent key bound to another agent than `agent`."""
        if self.scope != "account" and agent.id != self.agent_id:
            raise Forbidden(
                "forbidden",
                f"this API key is bound to the agent {self.agent_email}; it cannot act as "
                f"{agent.email}",
            )


async def authenticate(gateway: Gateway, key: str | None) -> Caller:
    """The caller `key` stands for; Unauthorized saying what is wrong with it otherwise."""
    if key is None:
        raise Unauthorized("unauthorized", "missing API key: send 'Authorization: Bearer e2a_…'")
    if not is_well_formed_api_key(key):
        raise Unauthorized("unauthorized", "malformed API key: expected e2a_ followed by 64 hex")
    caller = await caller_for_key_hash(gateway, hash_api_key(key))
    if caller is None:
        raise Unauthorized("unauthorized", UNKNOWN_KEY)
    return caller


@contextmanager
def owner_still_there() -> Iterator[None]:
    """Refuse a write whose account or agent was deleted while the request ran as the
    request would have been refused a moment later: 401 (its key no longer works) when the
    account went, 404 `agent not found` when the agent did (or went to the trash)."""
    try:
        yield
    except AccountGone:
        raise Unauthorized("unauthorized", UNKNOWN_KEY) from None
    except AgentGone:
        raise NotFound.of("agent") from None


async def caller_for_key_hash(gateway: Gateway, key_hash: str) -> Caller | None:
    """The caller of the key with this hash, or None once it is revoked, expired or unknown
    (or, an agent key, once its agent is gone); a dashboard session names its key this way."""
    holder = await gateway.storage.key_holder(key_hash)
    if holder is None:
        return None
    if key_hash not in gateway.key_uses:
        gateway.key_uses[key_hash] = True
        try:
            await gateway.storage.note_key_used(key_hash, format_timestamp(time.time()))
        except StorageUnavailable as exc:  # a read-only database still answers reads
            log.warning("could not record an API key's use: %s", exc)
    return Caller(
        holder.user,
        key_hash,
        holder.scope,
        holder.agent_id,
        holder.agent_email,
        holder.expires_at,
    )
