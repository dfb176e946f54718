"""The SQL of agents: each an address of one user, and the routing look-up of inbound mail.

Every query but `find_agent` is scoped by the owner's `user_id`; deleting an agent deletes its
messages and jobs by cascade and tells other replicas to end its live subscriptions.
"""

from __future__ import annotations

from typing import Any

from e2a.storage.announcements import AccessEnded
from e2a.storage.base import Agent, AgentChanges, AlreadyExists
from e2a.storage.rows import AGENT_COLUMNS, agent_assignments, agent_params, decode_agent
from e2a.storage.sql.runner import Runner
from e2a.storage.sql.transaction import Transaction

AGENT_VALUES = ", ".join("?" for _ in AGENT_COLUMNS.split(","))


def _agent_row(tx: Transaction, user_id: str, email: str) -> Any:
    return tx.first(
        f"SELECT {AGENT_COLUMNS} FROM agents WHERE user_id = ? AND email = ?", (user_id, email)
    )


def _revoke_agent_keys(tx: Transaction, agent_id: str) -> None:
    """Revoke the keys bound to the agent `agent_id`, which is going for good: no later agent
    ever has its id, so they could never be used again anyway, and they no longer clutter the
    owner's list of keys."""
    tx.execute(
        f"UPDATE api_keys SET revoked_at = {tx.dialect.utc_now} "
        "WHERE agent_id = ? AND revoked_at IS NULL",
        (agent_id,),
    )


class AgentsSql(Runner):
    """The agents of `Directory` in SQL."""

    async def add_agent(self, agent: Agent) -> None:
        """Store a new agent; AlreadyExists when the address is taken."""
        await self._write(
            lambda tx: tx.execute(
                f"INSERT INTO agents ({AGENT_COLUMNS}) VALUES ({AGENT_VALUES})",
                agent_params(agent),
                conflict=AlreadyExists(agent.email),
            ),
            changes_routing=True,
        )

    async def list_agents(self, user_id: str) -> list[Agent]:
        """The user's agents, oldest first."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {AGENT_COLUMNS} FROM agents WHERE user_id = ? ORDER BY created_at, email",
                (user_id,),
            )
        )
        return [decode_agent(row) for row in rows]

    async def get_agent(self, user_id: str, email: str) -> Agent | None:
        """One of the user's agents."""
        row = await self._read(lambda tx: _agent_row(tx, user_id, email))
        return decode_agent(row) if row else None

    async def update_agent(self, user_id: str, email: str, changes: AgentChanges) -> Agent | None:
        """Apply a partial update to one of the user's agents; None when it is not theirs."""
        assignments = agent_assignments(changes)

        def update(tx: Transaction) -> Agent | None:
            if assignments:
                columns = ", ".join(f"{column} = ?" for column in assignments)
                tx.execute(
                    f"UPDATE agents SET {columns} WHERE user_id = ? AND email = ?",
                    (*assignments.values(), user_id, email),
                )
            row = _agent_row(tx, user_id, email)
            return decode_agent(row) if row else None

        return await self._write(update, changes_routing=True)

    async def delete_agent(self, user_id: str, email: str) -> str | None:
        """Delete one of the user's agents (its messages and jobs cascade); its id, or None.
        Other replicas hear of it when it commits, and end its live subscriptions."""

        def delete(tx: Transaction) -> str | None:
            row = tx.first(
                "DELETE FROM agents WHERE user_id = ? AND email = ? RETURNING id", (user_id, email)
            )
            if row is None:
                return None
            _revoke_agent_keys(tx, row[0])
            tx.announce(AccessEnded("agent", row[0]))
            return str(row[0])

        return await self._write(delete, changes_routing=True)

    async def find_agent(self, email: str) -> Agent | None:
        """The agent at `email` whoever owns it: for routing inbound mail only."""
        row = await self._read(
            lambda tx: tx.first(f"SELECT {AGENT_COLUMNS} FROM agents WHERE email = ?", (email,)),
            routing=("agent", email),
        )
        return decode_agent(row) if row else None
