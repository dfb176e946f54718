"""The SQL of approving by reply: notice reply tokens (by hash), the review a reply makes, and
the answers mailed back to reviewers about replies not acted on.

A reply's review and the mark that spends its token commit together, under the lock on the
token's row and on the message's, so one token acts once and one message is decided once.
"""

from __future__ import annotations

from e2a_gateway.storage.base import (
    ApprovalAnswer,
    NotPending,
    OutboundMessage,
    ReplyToken,
    ReviewedBy,
)
from e2a_gateway.storage.rows import value_marks
from e2a_gateway.storage.sql.jobs import add_job, holds_lease
from e2a_gateway.storage.sql.outbound import review_in
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import APPROVAL_ANSWER_JOB, OUTBOUND, REVIEW_BY_REPLY

TOKEN_COLUMNS = "token_hash, message_id, reviewer, notice_message_id, created_at, used_at, used_by"
TOKEN_VALUES = value_marks(TOKEN_COLUMNS)
ANSWER_COLUMNS = "message_id, sender, recipient, data, id"


def _review_by_reply(
    tx: Transaction,
    token_hash: str,
    approve: bool,
    reason: str | None,
    now: float,
    reply_id: str | None,
) -> OutboundMessage | None:
    row = tx.first(
        "SELECT message_id, reviewer, used_at FROM approval_reply_tokens "
        f"WHERE token_hash = ?{tx.dialect.for_update()}",
        (token_hash,),
    )
    if row is None:
        return None
    message_id, reviewer, used_at = row
    if used_at is not None:
        status = tx.first(
            f"SELECT status FROM messages WHERE id = ? AND direction = '{OUTBOUND}'",
            (message_id,),
        )
        raise NotPending(status[0] if status else "gone")
    reviewed = review_in(
        tx, None, message_id, approve, None, reason, now, ReviewedBy(REVIEW_BY_REPLY, reviewer)
    )
    tx.execute(
        "UPDATE approval_reply_tokens SET used_at = ?, used_by = ? WHERE token_hash = ?",
        (now, reply_id, token_hash),
    )
    return reviewed


def _add_answer(
    tx: Transaction, answer: ApprovalAnswer, token_hash: str, limit: int, now: float
) -> bool:
    counted = tx.execute(
        "UPDATE approval_reply_tokens SET answers = answers + 1 "
        "WHERE token_hash = ? AND answers < ?",
        (token_hash, limit),
    ).rowcount
    if counted != 1:
        return False
    job_id = add_job(tx, APPROVAL_ANSWER_JOB, answer.message_id, now)
    tx.execute(
        "INSERT INTO approval_answers (message_id, sender, recipient, data, created_at, job_id) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (answer.message_id, answer.sender, answer.recipient, answer.data, now, job_id),
    )
    return True


class ApprovalRepliesSql(Runner):
    """`ApprovalReplies` in SQL."""

    async def add_reply_token(self, token: ReplyToken) -> None:
        """Store a notice's reply token (by hash)."""
        await self._write(
            lambda tx: tx.execute(
                f"INSERT INTO approval_reply_tokens ({TOKEN_COLUMNS}) VALUES ({TOKEN_VALUES})",
                (
                    token.token_hash,
                    token.message_id,
                    token.reviewer,
                    token.notice_message_id,
                    token.created_at,
                    token.used_at,
                    token.used_by,
                ),
            )
        )

    async def find_reply_token(self, token_hash: str) -> ReplyToken | None:
        """The reply token with this hash (its message still exists: tokens go with it)."""
        row = await self._read(
            lambda tx: tx.first(
                f"SELECT {TOKEN_COLUMNS} FROM approval_reply_tokens WHERE token_hash = ?",
                (token_hash,),
            )
        )
        return ReplyToken(*row) if row is not None else None

    async def review_by_reply(
        self,
        token_hash: str,
        approve: bool,
        reason: str | None,
        now: float,
        reply_id: str | None = None,
    ) -> OutboundMessage | None:
        """Review the token's message for its reviewer and spend the token, by the reply with
        the Message-ID `reply_id`, in one commit."""
        return await self._write(
            lambda tx: _review_by_reply(tx, token_hash, approve, reason, now, reply_id)
        )

    async def add_approval_answer(
        self, answer: ApprovalAnswer, token_hash: str, limit: int, now: float
    ) -> bool:
        """Store an answer with its `approval_answer` job, counted against its token, in one
        commit; False (nothing stored) once the token has had `limit` answers."""
        return await self._write(lambda tx: _add_answer(tx, answer, token_hash, limit, now))

    async def next_approval_answer(self, message_id: str, job_id: int) -> ApprovalAnswer | None:
        """The answer about `message_id` that the job `job_id` hands on, not yet handed on
        (one stored before answers named their jobs: the oldest of those)."""
        row = await self._read(
            lambda tx: tx.first(
                f"SELECT {ANSWER_COLUMNS} FROM approval_answers WHERE message_id = ? "
                "AND (job_id = ? OR job_id IS NULL) ORDER BY job_id IS NULL, id LIMIT 1",
                (message_id, job_id),
            )
        )
        if row is None:
            return None
        return ApprovalAnswer(row[0], row[1], row[2], bytes(row[3]), int(row[4]))

    async def finish_approval_answer(
        self, job_id: int, answer_id: int, leased_until: float | None = None
    ) -> bool:
        """Drop a handed-on answer and its job together; given `leased_until`, only while the
        job still holds that lease (`holds_lease`). Whether they were dropped."""

        def finish(tx: Transaction) -> bool:
            if not holds_lease(tx, job_id, leased_until):
                return False
            tx.execute("DELETE FROM approval_answers WHERE id = ?", (answer_id,))
            tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            return True

        return await self._write(finish)
