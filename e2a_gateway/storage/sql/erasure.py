"""What erasing an account's or an agent's mail announces: the raw messages it held
(`MailErased`), so this process forgets what it kept of them once the erasure commits. Only
finds them; the erasing itself is the account's and the agent's SQL.
"""

from __future__ import annotations

from typing import Any

from e2a_gateway.storage.announcements import MailErased
from e2a_gateway.storage.sql.transaction import Transaction


def announce_erased_mail(tx: Transaction, agents: str, params: tuple[Any, ...]) -> None:
    """Announce the raw messages of the mail about to be erased with the agents whose
    addresses the subquery `agents` (taking `params`) selects (MailErased): a whole row's own
    digest, a copy's its content row's. Found through the agents' indexes, as erasing finds
    the mail."""
    rows = tx.all(
        "SELECT m.raw_digest FROM messages m "
        f"WHERE m.agent_email IN ({agents}) AND m.raw_digest IS NOT NULL "
        "UNION SELECT c.raw_digest FROM messages m "
        "JOIN message_contents c ON c.seq = m.content_seq "
        f"WHERE m.agent_email IN ({agents})",
        (*params, *params),
    )
    if rows:
        tx.announce(MailErased(tuple(str(row[0]) for row in rows)))
