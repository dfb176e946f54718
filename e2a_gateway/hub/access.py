"""Whether the access a live subscription depends on still holds, asked of storage.

A revocation that commits between a connection's admission and its subscription finds no
subscription to end; asking again once subscribed closes that gap.
"""

from __future__ import annotations

from typing import Protocol

from e2a_gateway.hub import Ended, Listener
from e2a_gateway.storage.base import Accounts, DashboardSessions, Directory


class AccessRecords(Accounts, Directory, DashboardSessions, Protocol):
    """What the check reads: API keys by hash (`Accounts`), agents (`Directory`) and
    dashboard sign-outs (`DashboardSessions`)."""


async def lost_access(storage: AccessRecords, listener: Listener, agent_email: str) -> Ended | None:
    """None while the key that opened the subscription is live and still its owner's, its
    dashboard session (if it has one) is not signed out, and the agent at `agent_email` is still
    theirs and the same agent (same id); else what ended."""
    user = await storage.user_for_key_hash(listener.key_hash)
    if user is None or user.id != listener.user_id:
        return Ended.KEY_REVOKED
    if listener.session_id is not None and await storage.session_signed_out(
        user.id, listener.session_id
    ):
        return Ended.SIGNED_OUT
    agent = await storage.get_agent(user.id, agent_email)
    if agent is None or agent.id != listener.agent_id:
        return Ended.AGENT_DELETED
    return None
