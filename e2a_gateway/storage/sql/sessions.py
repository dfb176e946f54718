"""The SQL of dashboard sign-outs: the ids of sessions signed out before they expired, per user,
each kept until its session would have expired anyway (the retention sweep deletes it then)."""

from __future__ import annotations

from e2a_gateway.storage.announcements import AccessEnded
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction


class DashboardSessionsSql(Runner):
    """`DashboardSessions` in SQL."""

    async def sign_out_session(self, user_id: str, session_id: str, expires_at: float) -> None:
        """Record the user's session as signed out until `expires_at`, and announce it: the
        live streams it opened end on every replica."""

        def sign_out(tx: Transaction) -> None:
            tx.execute(
                "INSERT INTO dashboard_signouts (user_id, session_id, expires_at) "
                "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (user_id, session_id, expires_at),
            )
            tx.announce(AccessEnded("session", session_id))

        await self._write(sign_out)

    async def session_signed_out(self, user_id: str, session_id: str) -> bool:
        """Whether the user's session was signed out: a lookup by primary key, remembered until
        the next write (SQLite), which a sign-out is."""
        row = await self._read(
            lambda tx: tx.first(
                "SELECT 1 FROM dashboard_signouts WHERE user_id = ? AND session_id = ?",
                (user_id, session_id),
            ),
            answer=("session signed out", f"{user_id}\n{session_id}"),
        )
        return row is not None
