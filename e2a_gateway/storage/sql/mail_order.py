"""An agent's mail commits in the order it is numbered, so a page by `seq` skips none.

PostgreSQL numbers a row (`seq`) when it is inserted, not when it commits: two transactions
storing mail of one agent at once may commit the later number first, and a reader paging by
`seq` past it would never see the earlier one. Every transaction that stores mail of an agent,
received or sent, first takes that agent's lock, so they take turns; so does one that gives a
held message its place in its agent's mail as it is released (before locking that message's
row). Under a single writer (SQLite) they take turns anyway.

The same locks tell when such a transaction has ended: `await_agents_mail`.
"""

from __future__ import annotations

from collections.abc import Iterable

from e2a_gateway.storage.sql.transaction import Transaction

AGENT_MAIL_LOCK = 0x653261
"""The key space of the agents' mail locks: (AGENT_MAIL_LOCK, the agent's address)."""


def lock_agents_mail(tx: Transaction, agent_emails: Iterable[str]) -> None:
    """Hold the mail locks of `agent_emails` until the commit, in one order (sorted), so
    transactions storing mail for several agents never wait for each other in a circle."""
    for agent_email in sorted(set(agent_emails)):
        tx.lock(agent_email, space=AGENT_MAIL_LOCK)


def await_agents_mail(tx: Transaction, agent_emails: Iterable[str], within: float) -> None:
    """Wait until every transaction that stored mail of all of `agent_emails` and was still
    running has ended, committed or rolled back: it held their mail locks to its end, so once
    this one holds one of them (until it ends) that one is over. A commit whose answer was
    lost may still be running on the server, and what it stored shows only once it has ended.
    StorageUnavailable when that takes longer than `within` seconds; nothing under a single
    writer, whose transactions are over when their client hears of them."""
    tx.lock(min(agent_emails), space=AGENT_MAIL_LOCK, within=within)
