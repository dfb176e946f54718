"""The SQL of feedback: stored as sent, listed newest first for the operators."""

from __future__ import annotations

from e2a_gateway.storage.base import Feedback
from e2a_gateway.storage.sql.runner import Runner

FEEDBACK_COLUMNS = "id, category, message, email, created_at"


class FeedbackSql(Runner):
    """`FeedbackBox` in SQL."""

    async def add_feedback(self, feedback: Feedback) -> None:
        """Store one piece of feedback."""
        await self._write(
            lambda tx: tx.execute(
                f"INSERT INTO feedback ({FEEDBACK_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (
                    feedback.id,
                    feedback.category,
                    feedback.message,
                    feedback.email,
                    feedback.created_at,
                ),
            )
        )

    async def list_feedback(self, limit: int) -> list[Feedback]:
        """The newest `limit` pieces of feedback, newest first."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {FEEDBACK_COLUMNS} FROM feedback "
                f"ORDER BY created_at DESC, {tx.dialect.insertion_order} DESC LIMIT ?",
                (limit,),
            )
        )
        return [Feedback(*row) for row in rows]
