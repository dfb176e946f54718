"""The SQL of agents: each an address of one user, and the routing look-up of inbound mail.

Every query but `find_agent` is scoped by the owner's `user_id`; deleting an agent deletes its
messages and jobs by cascade and tells other replicas to end its live subscriptions. Trashing
one cancels its sends not yet under way; restoring it moves its held mail's deadlines and its
webhook jobs (which wait while it is in the trash) on.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from e2a_gateway.clock import parse_timestamp
from e2a_gateway.storage.announcements import AccessEnded
from e2a_gateway.storage.base import (
    Agent,
    AgentChanges,
    AgentPurge,
    AlreadyExists,
    DomainNotHeld,
)
from e2a_gateway.storage.rows import AGENT_COLUMNS, agent_assignments, agent_params, decode_agent
from e2a_gateway.storage.sql.erasure import announce_erased_mail
from e2a_gateway.storage.sql.jobs import add_job
from e2a_gateway.storage.sql.keyset import Position, after_newest_first
from e2a_gateway.storage.sql.outbound import cancel_sends_in, rearm_scheduled
from e2a_gateway.storage.sql.owners import keep_account
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import (
    APPROVAL_NOTICE_JOB,
    HELD_FOR_REVIEW,
    INBOUND,
    OUTBOUND,
    PENDING_APPROVAL,
    WEBHOOK_JOB,
)

_PLACEHOLDERS = ", ".join("?" * len(AGENT_COLUMNS.split(",")))


def _in_trash(trashed: bool) -> str:
    """The condition keeping agents in the trash (`trashed`) or in service."""
    return "deleted_at IS NOT NULL" if trashed else "deleted_at IS NULL"


def agent_row(tx: Transaction, user_id: str, email: str, trashed: bool = False) -> Any:
    """The row (AGENT_COLUMNS) of the user's agent at `email` in service (or in the trash)."""
    return tx.first(
        f"SELECT {AGENT_COLUMNS} FROM agents WHERE user_id = ? AND email = ? "
        f"AND {_in_trash(trashed)}",
        (user_id, email),
    )


def owned_agent_answer(user_id: str, email: str, trashed: bool = False) -> tuple[str, str]:
    """The routing answer naming the user's agent at `email` (in service, or in the trash)."""
    return ("owned agent", f"{user_id} {email} {'trashed' if trashed else 'in service'}")


def _forget_agent(tx: Transaction, agent_id: str, user_id: str, email: str) -> None:
    """What goes with an agent deleted for good, besides its mail and jobs (which cascade):
    the keys bound to it are revoked (no later agent ever has its id, so they could never be
    used again anyway, and they no longer clutter the owner's list of keys), and its own
    suppressions go, with the managed-unsubscribe links that would add them (an agent
    registered at the address later is another agent)."""
    tx.execute(
        f"UPDATE api_keys SET revoked_at = {tx.dialect.utc_now} "
        "WHERE agent_id = ? AND revoked_at IS NULL",
        (agent_id,),
    )
    tx.execute("DELETE FROM suppressions WHERE user_id = ? AND agent_email = ?", (user_id, email))
    tx.execute(
        "DELETE FROM agent_unsubscribe_tokens WHERE user_id = ? AND agent_email = ?",
        (user_id, email),
    )


def _resume_reviews(tx: Transaction, agent_email: str, paused: float) -> None:
    """Move the review deadlines of the agent's held mail (outbound drafts, inbound holds) on
    by `paused` seconds, the time the agent spent in the trash: no hold lapses meanwhile."""
    tx.execute(
        "UPDATE messages SET approval_expires_at = approval_expires_at + ? "
        f"WHERE agent_email = ? AND direction = '{OUTBOUND}' AND status = '{PENDING_APPROVAL}' "
        "AND approval_expires_at IS NOT NULL",
        (paused, agent_email),
    )
    tx.execute(
        "UPDATE messages SET hold_expires_at = hold_expires_at + ? "
        f"WHERE agent_email = ? AND direction = '{INBOUND}' AND hold = '{HELD_FOR_REVIEW}' "
        "AND hold_expires_at IS NOT NULL",
        (paused, agent_email),
    )


def _notify_again(tx: Transaction, agent_email: str, now: float) -> None:
    """Queue a fresh approval notice for each of the agent's drafts waiting for review that
    has none queued: the links of a notice mailed before the trash expire at the old deadline
    (a notice due while the agent was in the trash was dropped), and the deadline has moved."""
    waiting = tx.all(
        f"SELECT m.id FROM messages m WHERE m.agent_email = ? AND m.direction = '{OUTBOUND}' "
        f"AND m.status = '{PENDING_APPROVAL}' AND NOT EXISTS (SELECT 1 FROM jobs j "
        f"WHERE j.kind = '{APPROVAL_NOTICE_JOB}' AND j.message_id = m.id) ORDER BY m.seq",
        (agent_email,),
    )
    for (message_id,) in waiting:
        add_job(tx, APPROVAL_NOTICE_JOB, message_id, now)


def _resume_deliveries(tx: Transaction, agent_email: str, paused: float) -> None:
    """Move the agent's webhook jobs, which wait while it is in the trash, on by `paused`
    seconds: each resumes when it was due, its retries ending as late after receipt as they
    would have had the agent stayed in service."""
    tx.execute(
        "UPDATE jobs SET run_at = run_at + ?, created_at = created_at + ? "
        f"WHERE kind = '{WEBHOOK_JOB}' AND message_id IN "
        "(SELECT id FROM messages WHERE agent_email = ?)",
        (paused, paused, agent_email),
    )


class AgentsSql(Runner):
    """The agents of `Directory` in SQL."""

    async def add_agent(self, agent: Agent, *, on_owned_domain: bool = False) -> None:
        """Store a new agent; AlreadyExists when the address is taken, AccountGone when its
        owner's account was deleted meanwhile (kept from deletion until the commit, it goes
        with the agent otherwise). `on_owned_domain`: its owner must hold its domain verified
        (DomainNotHeld otherwise); the domain's row is locked as `delete_domain` locks it, so
        a deletion either sees this agent or has removed the domain before this looks. The
        account goes first, as deleting the account locks it before the domains."""

        def insert(tx: Transaction) -> None:
            keep_account(tx, agent.user_id)
            if on_owned_domain and not tx.first(
                f"SELECT 1 FROM domains WHERE user_id = ? AND domain = ? "
                f"AND verified = {tx.dialect.true}{tx.dialect.for_update()}",
                (agent.user_id, agent.domain),
            ):
                raise DomainNotHeld(agent.domain)
            tx.execute(
                f"INSERT INTO agents ({AGENT_COLUMNS}) VALUES ({_PLACEHOLDERS})",
                agent_params(agent),
                conflict=AlreadyExists(agent.email),
            )

        await self._write(insert, changes_routing=True)

    async def list_agents(self, user_id: str, *, trashed: bool = False) -> list[Agent]:
        """The user's agents in service (or, `trashed`, in the trash), oldest first."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {AGENT_COLUMNS} FROM agents WHERE user_id = ? AND {_in_trash(trashed)} "
                "ORDER BY created_at, email",
                (user_id,),
            )
        )
        return [decode_agent(row) for row in rows]

    async def agents_postmaster_last(self, user_id: str, limit: int) -> list[Agent]:
        """Up to `limit` of the user's agents in service, oldest first, postmaster inboxes
        (`postmaster@…`) after all others."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {AGENT_COLUMNS} FROM agents WHERE user_id = ? AND {_in_trash(False)} "
                "ORDER BY CASE WHEN lower(email) LIKE 'postmaster@%' THEN 1 ELSE 0 END, "
                "created_at, email LIMIT ?",
                (user_id, limit),
            )
        )
        return [decode_agent(row) for row in rows]

    async def agent_page(
        self, user_id: str, limit: int, after: Position | None, *, trashed: bool = False
    ) -> list[Agent]:
        """Up to `limit` of the user's agents in service (or, `trashed`, in the trash), newest
        first by (created_at, email), after `after`."""
        position, params = after_newest_first(after, "created_at", "email")
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {AGENT_COLUMNS} FROM agents WHERE user_id = ? AND {_in_trash(trashed)} "
                f"{position} ORDER BY created_at DESC, email DESC LIMIT ?",
                (user_id, *params, limit),
            )
        )
        return [decode_agent(row) for row in rows]

    async def agents_per_domain(
        self, user_id: str, *, with_trash: bool, domains: Collection[str] | None = None
    ) -> dict[str, int]:
        """How many of the user's agents in service (and, `with_trash`, in the trash) each
        domain holds (each of `domains` only, when given); domains holding none are left
        out."""
        in_service = "" if with_trash else f"AND {_in_trash(False)} "
        wanted = () if domains is None else tuple(sorted(set(domains)))
        if domains is not None and not wanted:
            return {}
        among = f"AND domain IN ({', '.join('?' * len(wanted))}) " if wanted else ""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT domain, COUNT(*) FROM agents WHERE user_id = ? {in_service}{among}"
                "GROUP BY domain",
                (user_id, *wanted),
            )
        )
        return {domain: int(count) for domain, count in rows}

    async def get_agent(self, user_id: str, email: str, *, trashed: bool = False) -> Agent | None:
        """One of the user's agents in service (or, `trashed`, in the trash). Asked by every
        request acting as an agent, so the answer is a routing answer: every write to agents
        is marked `changes_routing`."""

        def read(tx: Transaction) -> Agent | None:
            row = agent_row(tx, user_id, email, trashed)
            return decode_agent(row) if row else None

        return await self._read(read, routing=owned_agent_answer(user_id, email, trashed))

    async def update_agent(self, user_id: str, email: str, changes: AgentChanges) -> Agent | None:
        """Apply a partial update to one of the user's agents; None when it is not theirs."""
        assignments = agent_assignments(changes)

        def update(tx: Transaction) -> Agent | None:
            if assignments:
                columns = ", ".join(f"{column} = ?" for column in assignments)
                tx.execute(
                    f"UPDATE agents SET {columns} "
                    "WHERE user_id = ? AND email = ? AND deleted_at IS NULL",
                    (*assignments.values(), user_id, email),
                )
            row = agent_row(tx, user_id, email)
            return decode_agent(row) if row else None

        return await self._write(update, changes_routing=True)

    async def delete_agent(self, user_id: str, email: str) -> str | None:
        """Delete one of the user's agents (its messages cascade); its id, or None. Other
        replicas hear of it when it commits, and end its live subscriptions; this process
        forgets what it kept of the agent's mail (`MailErased`).

        Its mail's jobs go before its mail, in the order the workers recording an attempt take
        them (the job, then its message): by cascade the message went first, and a send being
        recorded meanwhile and the deletion waited for each other until PostgreSQL failed one
        of them."""

        def delete(tx: Transaction) -> str | None:
            row = tx.first(
                f"SELECT id FROM agents WHERE user_id = ? AND email = ?{tx.dialect.for_update()}",
                (user_id, email),
            )
            if row is None:
                return None
            announce_erased_mail(tx, "?", (email,))
            tx.execute(
                "DELETE FROM jobs WHERE message_id IN "
                "(SELECT id FROM messages WHERE agent_email = ?)",
                (email,),
            )
            tx.execute("DELETE FROM agents WHERE id = ?", (row[0],))
            _forget_agent(tx, row[0], user_id, email)
            tx.announce(AccessEnded("agent", row[0]))
            return str(row[0])

        return await self._write(delete, changes_routing=True)

    async def count_agent_messages(self, user_id: str, email: str) -> int:
        """How many messages the user's agent at `email` holds (in service or trashed)."""
        row = await self._read(
            lambda tx: tx.first(
                "SELECT count(*) FROM messages m JOIN agents a ON a.email = m.agent_email "
                "WHERE a.user_id = ? AND a.email = ?",
                (user_id, email),
            )
        )
        return int(row[0]) if row else 0

    async def trash_agent(self, user_id: str, email: str, now: str) -> Agent | None:
        """Move one of the user's agents in service to the trash at `now`; the trashed agent,
        or None. Its keys and live subscriptions end (other replicas hear of it on commit)."""

        def trash(tx: Transaction) -> Agent | None:
            trashed = tx.first(
                "UPDATE agents SET deleted_at = ? "
                "WHERE user_id = ? AND email = ? AND deleted_at IS NULL RETURNING id",
                (now, user_id, email),
            )
            row = agent_row(tx, user_id, email, trashed=True) if trashed else None
            if row is None:
                return None
            agent = decode_agent(row)
            cancel_sends_in(tx, agent.email, parse_timestamp(now).timestamp())
            tx.announce(AccessEnded("agent", agent.id))
            return agent

        return await self._write(trash, changes_routing=True)

    async def restore_agent(
        self, user_id: str, email: str, now: float | None = None
    ) -> Agent | None:
        """Bring one of the user's trashed agents back into service at `now` (the present when
        None), moving its held mail's review deadlines and its webhook jobs on by the time it
        spent in the trash, and mailing its drafts' reviewers fresh links; None when not
        trashed."""
        moment = time.time() if now is None else now

        def restore(tx: Transaction) -> Agent | None:
            trashed = tx.first(
                "SELECT deleted_at FROM agents WHERE user_id = ? AND email = ? "
                f"AND deleted_at IS NOT NULL{tx.dialect.for_update()}",
                (user_id, email),
            )
            if trashed is None:
                return None
            tx.execute(
                "UPDATE agents SET deleted_at = NULL WHERE user_id = ? AND email = ?",
                (user_id, email),
            )
            paused = max(0.0, moment - parse_timestamp(trashed[0]).timestamp())
            _resume_reviews(tx, email, paused)
            _notify_again(tx, email, moment)
            _resume_deliveries(tx, email, paused)
            rearm_scheduled(tx, "m.agent_email = ?", (email,), moment)
            found = agent_row(tx, user_id, email)
            return decode_agent(found) if found else None

        return await self._write(restore, changes_routing=True)

    async def purge_agents_trashed_before(self, cutoff: str, limit: int) -> AgentPurge:
        """Delete for good agents trashed before `cutoff`, oldest first, with their messages,
        in one transaction of at most `limit` rows (Storage.purge_agents_trashed_before). Each
        agent's messages are found through the indexes led by its address, their jobs go
        before them (the order the workers take them in), and the agent goes once it has no
        message left (its keys are revoked). An agent a restore holds is passed over, and one
        restored since is not touched again."""

        def purge(tx: Transaction) -> AgentPurge:
            agents = messages = 0
            while messages + agents < limit:
                chosen = tx.first(
                    "SELECT id, user_id, email FROM agents WHERE deleted_at IS NOT NULL "
                    f"AND deleted_at < ? ORDER BY deleted_at LIMIT 1{tx.dialect.skip_locked()}",
                    (cutoff,),
                )
                if chosen is None:
                    break
                agent_id, user_id, email = chosen
                room = limit - messages - agents
                ids = [
                    row[0]
                    for row in tx.all(
                        "SELECT id FROM messages WHERE agent_email = ? LIMIT ?", (email, room)
                    )
                ]
                if ids:
                    listed = tx.dialect.list_param(ids)
                    tx.execute(
                        f"DELETE FROM jobs WHERE {tx.dialect.in_list('message_id', 'text')}",
                        (listed,),
                    )
                    messages += tx.execute(
                        f"DELETE FROM messages WHERE {tx.dialect.in_list('id', 'text')}",
                        (listed,),
                    ).rowcount
                if len(ids) == room:
                    break  # the agent may have more: the next transaction goes on
                tx.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
                _forget_agent(tx, agent_id, user_id, email)
                tx.announce(AccessEnded("agent", agent_id))
                agents += 1
            return AgentPurge(agents, messages)

        return await self._write(purge, changes_routing=True)

    async def find_agent(self, email: str) -> Agent | None:
        """The agent in service at `email` whoever owns it: for routing inbound mail only
        (asked for every recipient of every message: a remembered agent is answered here)."""
        remembered = self._remembered(("agent", email))
        if isinstance(remembered, Agent):
            return remembered

        def read(tx: Transaction) -> Agent | None:
            row = tx.first(
                f"SELECT {AGENT_COLUMNS} FROM agents WHERE email = ? AND deleted_at IS NULL",
                (email,),
            )
            return decode_agent(row) if row else None

        return await self._read(read, routing=("agent", email))

    async def is_trashed_agent(self, email: str) -> bool:
        """Whether an agent in the trash has the address `email` (Storage.is_trashed_agent)."""
        row = await self._read(
            lambda tx: tx.first(
                "SELECT 1 FROM agents WHERE email = ? AND deleted_at IS NOT NULL", (email,)
            )
        )
        return row is not None
