"""Keeping what a write belongs to, its account or its agent, from deletion until the write
commits: a write that inserts rows naming an account or an agent checks, inside its
transaction, that the owner is still there, so that either the deletion (which locks the
account's or the agent's row, or deletes it) goes after the write and takes its rows with it,
or the write sees the owner gone and is refused, leaving nothing behind.

On PostgreSQL the check takes the row `FOR KEY SHARE`, which a deletion waits for (and which
waits for a deletion under way, then finds no row); under a single writer the check alone is
enough.
"""

from __future__ import annotations

from e2a_gateway.storage.base import AccountGone, AgentGone
from e2a_gateway.storage.sql.transaction import Transaction


def keep_account(tx: Transaction, user_id: str) -> None:
    """Keep the user's account from deletion until `tx` commits; AccountGone when it is
    deleted already."""
    if tx.first(f"SELECT 1 FROM users WHERE id = ?{tx.dialect.for_key_share()}", (user_id,)):
        return
    raise AccountGone(user_id)


def keep_agent(tx: Transaction, user_id: str, email: str, *, in_trash_too: bool = False) -> None:
    """Keep the user's agent at `email` from deletion until `tx` commits; AgentGone when it is
    deleted already, or (unless `in_trash_too`) in the trash."""
    row = tx.first(
        f"SELECT deleted_at FROM agents WHERE user_id = ? AND email = ?"
        f"{tx.dialect.for_key_share()}",
        (user_id, email),
    )
    if row is None or (row[0] is not None and not in_trash_too):
        raise AgentGone(email)
