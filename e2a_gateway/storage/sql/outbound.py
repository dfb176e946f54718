"""The SQL of outbound mail: drafts an agent sends, their review, expiry, and hand-off results.

Outbound messages are rows of `messages` (direction outbound), so threading sees them. Each
status change and the job it needs commit together; a message that reaches a terminal status
loses its body. A review or expiry locks the row, so two replicas never both move it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import (
    EMAIL_DELIVERED,
    EMAIL_FAILED,
    EMAIL_SENT,
    REVIEW_APPROVED,
    REVIEW_REJECTED,
    REVIEW_REQUESTED,
    derived_event_id,
    outbound_event,
    recipient_event,
)
from e2a_gateway.rate_windows import RateLimit
from e2a_gateway.storage.base import (
    OUTBOUND_LIST_LIMIT,
    PAST_DEADLINE,
    AgentInTrash,
    BouncedRecipient,
    HeldKey,
    NewEvent,
    NotPending,
    OutboundEdits,
    OutboundMessage,
    OutboundSummary,
    RateFull,
    RecipientsSuppressed,
    ReviewedBy,
    SendAttempt,
    SendOutcome,
    StorageUnavailable,
)
from e2a_gateway.storage.rows import (
    AGENT_DELETED_ERROR,
    OUTBOUND_COLUMNS,
    OUTBOUND_INSERT_COLUMNS,
    OUTBOUND_STATUS_INDEX,
    OUTBOUND_SUMMARY_COLUMNS,
    RECIPIENT_ACCEPTED,
    RECIPIENT_LOCAL_PREFIX,
    RECIPIENT_RESULTS,
    SCHEDULE_CANCELED_ERROR,
    bounced_result,
    decode_outbound,
    decode_outbound_summary,
    edit_assignments,
    merged_recipient_results,
    outbound_job_kind,
    outbound_params,
    recipient_results,
    reported_bounce_type,
    settled_recipient_results,
)
from e2a_gateway.storage.sql.events import record_events
from e2a_gateway.storage.sql.idempotency import settle_claim
from e2a_gateway.storage.sql.jobs import (
    add_job,
    current_leases,
    holds_lease,
    lease_time,
    retry_job,
)
from e2a_gateway.storage.sql.mail_order import lock_agents_mail
from e2a_gateway.storage.sql.owners import keep_agent
from e2a_gateway.storage.sql.rate_limits import weigh_hits
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.suppressions import bounce_recorded, suppressed_in
from e2a_gateway.storage.sql.transaction import Transaction
from e2a_gateway.storage.vocabulary import (
    AGENT_DELETED,
    BOUNCED,
    EXPIRE_BY_APPROVING,
    EXPIRED_APPROVED,
    EXPIRED_REJECTED,
    FAILED,
    OUTBOUND,
    OUTBOUND_JOB,
    PENDING_APPROVAL,
    QUEUED,
    REJECTED,
    REVIEW_BY_EXPIRY,
    SENT,
)

SCRUB = "body_text = NULL, body_html = NULL, attachments_json = NULL"
"""The assignments that drop an outbound message's body (on reaching a terminal status)."""
EXPIRY_BATCH = 500
"""At most this many overdue messages are expired by one call."""


def agent_in_service(column: str) -> str:
    """Condition: the agent at the address in `column` is in service (not in the trash)."""
    return f"EXISTS (SELECT 1 FROM agents a WHERE a.email = {column} AND a.deleted_at IS NULL)"


def agent_trashed(tx: Transaction, agent_email: str) -> bool:
    """Whether the agent at `agent_email` is in the trash."""
    row = tx.first("SELECT deleted_at FROM agents WHERE email = ?", (agent_email,))
    return row is not None and row[0] is not None


def _outbound_row(
    tx: Transaction, user_id: str | None, message_id: str, *, lock: bool = False, live: bool = False
) -> Any:
    """The row of one outbound message (the user's, unless `user_id` is None), locked until
    the commit when `lock`; `live` leaves out one in the trash or of an agent in the trash."""
    query = f"SELECT {OUTBOUND_COLUMNS} FROM messages WHERE id = ? AND direction = '{OUTBOUND}'"
    params: tuple[str, ...] = (message_id,)
    if user_id is not None:
        query += " AND user_id = ?"
        params = (message_id, user_id)
    if live:
        query += f" AND deleted_at IS NULL AND {agent_in_service('messages.agent_email')}"
    if lock:
        query += tx.dialect.for_update()
    return tx.first(query, params)


def _reread(tx: Transaction, message_id: str) -> OutboundMessage:
    """The outbound message as the transaction left it."""
    row = _outbound_row(tx, None, message_id)
    if row is None:
        raise StorageUnavailable(f"outbound message {message_id} vanished inside a transaction")
    return decode_outbound(row)


def _expire(tx: Transaction, now: float) -> list[OutboundMessage]:
    """Apply each overdue pending message's agent's expiration action; messages another replica
    is expiring or reviewing right now are left to it."""
    due = tx.all(
        "SELECT m.id, a.hitl_expiration_action FROM messages m "
        "JOIN agents a ON a.email = m.agent_email "
        f"WHERE m.direction = '{OUTBOUND}' AND m.status = '{PENDING_APPROVAL}' "
        "AND a.deleted_at IS NULL AND m.approval_expires_at <= ? "
        "ORDER BY m.approval_expires_at, m.seq "
        f"LIMIT {EXPIRY_BATCH}{tx.dialect.skip_locked(of='m')}",
        (now,),
    )
    reviewed_at = format_timestamp(now)
    for message_id, action in due:
        reason = "approval expired"
        if action == EXPIRE_BY_APPROVING:
            try:  # approved by expiry, as by a reviewer: never to a suppressed address
                _refuse_suppressed(tx, _reread(tx, message_id), None)
            except RecipientsSuppressed as exc:
                reason = f"approval expired; not sent: {exc} is on the suppression list"
            else:
                tx.execute(
                    f"UPDATE messages SET status = '{EXPIRED_APPROVED}', reviewed_at = ?, "
                    f"review_method = '{REVIEW_BY_EXPIRY}' WHERE id = ?",
                    (reviewed_at, message_id),
                )
                add_job(tx, OUTBOUND_JOB, message_id, send_due(_reread(tx, message_id), now))
                continue
        tx.execute(
            f"UPDATE messages SET status = '{EXPIRED_REJECTED}', reviewed_at = ?, "
            f"review_method = '{REVIEW_BY_EXPIRY}', rejection_reason = ?, {SCRUB} WHERE id = ?",
            (reviewed_at, reason, message_id),
        )
    expired = [_reread(tx, message_id) for message_id, _ in due]
    record_events(
        tx,
        [
            outbound_event(
                message,
                REVIEW_APPROVED if message.status == EXPIRED_APPROVED else REVIEW_REJECTED,
                now,
                extra={"reason": message.rejection_reason or "approval expired"},
            )
            for message in expired
        ],
    )
    return expired


def review_in(
    tx: Transaction,
    user_id: str | None,
    message_id: str,
    approve: bool,
    edits: OutboundEdits | None,
    reason: str | None,
    now: float,
    by: ReviewedBy | None,
) -> OutboundMessage | None:
    """Inside `tx`: approve (→ queued, with a send job) or reject (→ rejected, scrubbed) a
    pending message, recording who and how (`by`); NotPending when it is not pending, nor
    once its deadline has passed, even before the expiry sweep came to it (AgentInTrash when
    its agent is in the trash), None when absent."""
    row = _outbound_row(tx, user_id, message_id, lock=True)
    if row is None:
        return None
    message = decode_outbound(row)
    if agent_trashed(tx, message.agent_email):
        raise AgentInTrash(message.agent_email)
    if row[OUTBOUND_STATUS_INDEX] != PENDING_APPROVAL:
        raise NotPending(row[OUTBOUND_STATUS_INDEX])
    if message.approval_expires_at is not None and message.approval_expires_at <= now:
        raise NotPending(PAST_DEADLINE)  # its agent's expiration action decides it (_expire)
    reviewed = (format_timestamp(now), by.reviewer if by else None, by.method if by else None)
    if approve:
        _refuse_suppressed(tx, message, edits)
        changes = edit_assignments(edits)
        columns = "".join(f", {column} = ?" for column in changes)
        tx.execute(
            f"UPDATE messages SET status = '{QUEUED}', reviewed_at = ?, reviewed_by = ?, "
            f"review_method = ?, edited = ?{columns} WHERE id = ?",
            (*reviewed, bool(changes), *changes.values(), message_id),
        )
        add_job(tx, OUTBOUND_JOB, message_id, send_due(message, now))
    else:
        tx.execute(
            f"UPDATE messages SET status = '{REJECTED}', reviewed_at = ?, reviewed_by = ?, "
            f"review_method = ?, rejection_reason = ?, {SCRUB} WHERE id = ?",
            (*reviewed, reason, message_id),
        )
    decided = _reread(tx, message_id)
    extra: dict[str, object] = {"reason": reason} if reason else {}
    if by is not None:
        extra.update(reviewed_by=by.reviewer, review_method=by.method)
    event_type = REVIEW_APPROVED if approve else REVIEW_REJECTED
    record_events(tx, [outbound_event(decided, event_type, now, extra=extra or None)])
    return decided


def _refuse_suppressed(
    tx: Transaction, message: OutboundMessage, edits: OutboundEdits | None
) -> None:
    """RecipientsSuppressed when the message would go, as approved (with the reviewer's
    edits), to an address suppressed for its account or agent: one bounced or was suppressed
    while it waited, or an edit added one."""
    edited = edits or OutboundEdits()
    recipients = [
        *(message.to if edited.to is None else edited.to),
        *(message.cc if edited.cc is None else edited.cc),
        *(message.bcc if edited.bcc is None else edited.bcc),
    ]
    addresses = list(dict.fromkeys(address.strip().lower() for address in recipients))
    if suppressed := suppressed_in(tx, message.user_id, message.agent_email, addresses):
        raise RecipientsSuppressed(suppressed, message.agent_email)


def _record_recipients(
    tx: Transaction,
    message_id: str,
    results: Mapping[str, str],
    job_id: int,
    leased_until: float | None,
) -> None:
    """Merge `results` into the message's per-recipient results (row locked meanwhile) while
    the job `job_id` holds the lease until `leased_until` (None: whatever it holds); once it
    has passed to another claim, only as `_add_unsettled` does."""
    if not holds_lease(tx, job_id, leased_until):
        _add_unsettled(tx, job_id, message_id, results)
        return
    row = tx.first(RECIPIENT_RESULTS + tx.dialect.for_update(), (message_id,))
    if row is not None:
        tx.execute(
            "UPDATE messages SET auth_results_json = ? WHERE id = ?",
            (merged_recipient_results(row[0], results), message_id),
        )


def _fail(
    tx: Transaction, message_id: str, method: str, error: str | None, results: Mapping[str, str]
) -> None:
    """A send that reached nobody: `bounced` when it bounced for any recipient, in whichever
    attempt (`bounced_result`: the relay refused the address for good, or a report came back),
    else `failed` (given up on after temporary failures, or refused in a way that says nothing
    of the addresses) — the same whatever the order of the attempts; or (an auto-approval)
    `expired_rejected` with the reason. Each recipient's result is kept; the body goes."""
    final = BOUNCED if any(map(bounced_result, results.values())) else FAILED
    tx.execute(
        f"UPDATE messages SET status = CASE WHEN status = '{EXPIRED_APPROVED}' "
        f"THEN '{EXPIRED_REJECTED}' ELSE '{final}' END, "
        f"rejection_reason = CASE WHEN status = '{EXPIRED_APPROVED}' "
        "THEN ? ELSE rejection_reason END, "
        f"method = ?, send_error = ?, auth_results_json = ?, {SCRUB} WHERE id = ?",
        (
            f"approved at expiry, but sending failed: {error or 'no reason given'}",
            method,
            error,
            json.dumps(results),
            message_id,
        ),
    )


def _hand_off_events(
    message: OutboundMessage,
    outcome: SendOutcome,
    method: Literal["smtp", "local"],
    error: str | None,
    results: Mapping[str, str],
    now: float,
) -> list[NewEvent]:
    """The events of a settled send: `email.sent` and an `email.delivered` per recipient the
    relay or a local inbox accepted, or `email.failed` with the reason (and, for a send its
    agent's trash cancelled, the `reason_code` `agent_deleted`)."""
    if outcome != "sent":
        failure: dict[str, object] = {"reason": error or "sending failed"}
        if error is not None and error.startswith(f"{AGENT_DELETED}:"):
            failure.update(reason_code=AGENT_DELETED, retryable=False)
        return [outbound_event(message, EMAIL_FAILED, now, method=method, extra=failure)]
    return _reached_events(message, method, results, now)


def _reached_events(
    message: OutboundMessage,
    method: Literal["smtp", "local"],
    results: Mapping[str, str],
    now: float,
) -> list[NewEvent]:
    """`email.sent` and an `email.delivered` per recipient in `results` the relay or a local
    inbox accepted, each with an id derived from the message (and the recipient): an attempt
    that reaches someone while others are retried logs them at once, and a later attempt
    logs only those not logged yet (`_not_logged`)."""
    sent_id = _outcome_event_id(message.id, EMAIL_SENT, "")
    events = [outbound_event(message, EMAIL_SENT, now, method=method, event_id=sent_id)]
    for recipient, result in results.items():
        if _reached(result):
            event_id = _outcome_event_id(message.id, EMAIL_DELIVERED, recipient.lower())
            events.append(
                recipient_event(message, EMAIL_DELIVERED, recipient, now, event_id=event_id)
            )
    return events


def _outcome_event_id(message_id: str, event_type: str, recipient: str) -> str:
    """The id of the `event_type` event of `message_id` (about `recipient`, or "" for the
    message): the same on every attempt, so each is logged once (`derived_event_id`)."""
    return derived_event_id(message_id, f"{event_type}|{recipient}" if recipient else event_type)


def _not_logged(tx: Transaction, events: list[NewEvent]) -> list[NewEvent]:
    """Those of `events` no event of the log has the id of."""
    logged = {
        row[0]
        for row in tx.all(
            f"SELECT id FROM events WHERE {tx.dialect.in_list('id', 'text')}",
            (tx.dialect.list_param([event.id for event in events]),),
        )
    }
    return [event for event in events if event.id not in logged]


def _reached(result: str) -> bool:
    """Whether a recipient's hand-off `result` says the relay or a local inbox took it."""
    return result == RECIPIENT_ACCEPTED or result.startswith(RECIPIENT_LOCAL_PREFIX)


def _finish(tx: Transaction, attempt: SendAttempt) -> None:
    """Inside `tx`: record a send attempt (OutboundSql.finish_outbound)."""
    message_id, method, error = attempt.message_id, attempt.method, attempt.error
    if attempt.outcome == "retry":
        retry_job(tx, attempt.job_id, attempt.retry_at)
        tx.execute(
            "UPDATE messages SET send_error = ?, method = ? WHERE id = ?",
            (error, method, message_id),
        )
        _told_reached(tx, attempt)
        _told_unreached(tx, attempt, attempt.bounced)
        return
    tx.execute("DELETE FROM jobs WHERE id = ?", (attempt.job_id,))
    row = _outbound_row(tx, None, message_id)
    moment = time.time() if attempt.now is None else attempt.now
    stored = tx.first(RECIPIENT_RESULTS, (message_id,))
    settled = settled_recipient_results(
        recipient_results(stored[0] if stored else None), attempt.results or {}
    )
    if attempt.outcome == "failed" and any(map(_reached, settled.values())):
        # Given up on (its agent trashed, an internal error) after an earlier attempt reached
        # a recipient: handed on to them, as the send worker settles it, the rest in `error`.
        attempt = replace(attempt, outcome="sent")
    if row is not None:
        events = _hand_off_events(
            decode_outbound(row), attempt.outcome, method, error, settled, moment
        )
        record_events(tx, _not_logged(tx, events))
    if attempt.outcome == "sent":
        # Each recipient's result is kept: `/v1` reports the worst of them (outbound/rollup.py).
        # A permanent bounce reported while others were retried makes it `bounced` now, mail
        # approved at its deadline included (which otherwise stays `expired_approved`).
        reported = any(reported_bounce_type(r) == "permanent" for r in settled.values())
        tx.execute(
            f"UPDATE messages SET status = CASE WHEN ? THEN '{BOUNCED}' "
            f"WHEN status = '{EXPIRED_APPROVED}' THEN status ELSE '{SENT}' END, "
            f"sent_at = {tx.dialect.utc_now}, "
            f"method = ?, send_error = ?, auth_results_json = ?, {SCRUB} WHERE id = ?",
            (reported, method, error, json.dumps(settled), message_id),
        )
    else:
        _fail(tx, message_id, method, error, settled)
    if row is not None and attempt.bounced:
        message = decode_outbound(row)
        bounce_recorded(tx, message, attempt.bounced, moment, settle=False)  # settled above


def _keep_relay_ids(tx: Transaction, attempt: SendAttempt) -> None:
    """Inside `tx`: keep the id the relay named for each recipient of the attempt, unless its
    message is gone (deleted meanwhile)."""
    for recipient, relay_id in (attempt.relay_ids or {}).items():
        tx.execute(
            "INSERT INTO relay_message_ids (message_id, recipient, relay_id) "
            "SELECT id, ?, ? FROM messages WHERE id = ? "
            "ON CONFLICT (message_id, recipient) DO NOTHING",
            (recipient, relay_id, attempt.message_id),
        )


def _told_reached(tx: Transaction, attempt: SendAttempt) -> None:
    """Inside `tx`, for an attempt that leaves the message to be sent again: log `email.sent`
    and the `email.delivered` of each recipient reached so far, those not logged yet."""
    row = _outbound_row(tx, None, attempt.message_id)
    stored = tx.first(RECIPIENT_RESULTS, (attempt.message_id,))
    results = settled_recipient_results(
        recipient_results(stored[0] if stored else None), attempt.results or {}
    )
    if row is not None and any(map(_reached, results.values())):
        moment = time.time() if attempt.now is None else attempt.now
        events = _reached_events(decode_outbound(row), attempt.method, results, moment)
        record_events(tx, _not_logged(tx, events))


def _told_unreached(
    tx: Transaction, attempt: SendAttempt, unreached: Sequence[BouncedRecipient]
) -> None:
    """Inside `tx`, for an attempt that leaves the message to be sent again: tell of the
    recipients it settled without reaching now (`email.bounced`, a hard bounce suppressed),
    rather than once the others are settled; the message's state is its send job's to decide."""
    if not unreached:
        return
    row = _outbound_row(tx, None, attempt.message_id)
    if row is not None:
        moment = time.time() if attempt.now is None else attempt.now
        bounce_recorded(tx, decode_outbound(row), unreached, moment, settle=False)


def _add_unsettled(
    tx: Transaction, job_id: int, message_id: str, results: Mapping[str, str] | None
) -> dict[str, str]:
    """Inside `tx`, for the results of an attempt whose job has passed to another claim: while
    the job is still to be done, add those for the recipients the message has none for yet
    (the relay or an inbox took it for them, or refused it for good), leaving those already
    settled as they are (the claim holding the job may have written them), so that its next
    attempt does not hand the message to them again; those added."""
    if not results or tx.first("SELECT 1 FROM jobs WHERE id = ?", (job_id,)) is None:
        return {}
    row = tx.first(RECIPIENT_RESULTS + tx.dialect.for_update(), (message_id,))
    if row is None:
        return {}
    stored = recipient_results(row[0])
    fresh = {rcpt: result for rcpt, result in results.items() if rcpt not in stored}
    if fresh:
        tx.execute(
            "UPDATE messages SET auth_results_json = ? WHERE id = ?",
            (merged_recipient_results(row[0], fresh), message_id),
        )
    return fresh


def send_due(message: OutboundMessage, now: float) -> float:
    """When the send job of `message`, queued at `now`, is due: at its `scheduled_at` while
    that is ahead (a scheduled send, beta), else at once."""
    return max(now, message.scheduled_at) if message.scheduled_at is not None else now


PAUSABLE_SENDS = (
    "SELECT j.id, m.id FROM jobs j JOIN messages m ON m.id = j.message_id "
    f"WHERE j.kind = '{OUTBOUND_JOB}' AND m.direction = '{OUTBOUND}' AND m.sent_at IS NULL "
    f"AND m.status IN ('{QUEUED}', '{EXPIRED_APPROVED}') AND m.scheduled_at > ? "
    "AND j.attempts = 0 AND (j.locked_until IS NULL OR j.locked_until < ?)"
)
"""Send jobs of scheduled mail not yet handed on whose submission has not started (its time
ahead, never attempted, held by no worker now): the trash takes such a job away."""


def pause_scheduled(tx: Transaction, where: str, params: Sequence[Any], now: float) -> list[str]:
    """Inside `tx`: take away the send jobs of the scheduled mail `where` (a condition on
    `messages m`) whose submission has not started (PAUSABLE_SENDS), for the trash; the ids of
    the messages paused."""
    due = tx.all(
        f"{PAUSABLE_SENDS} AND {where}{tx.dialect.for_update(of='j')}",
        (now, lease_time(tx, now), *params),
    )
    for job_id, _ in due:
        tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    return [message_id for _, message_id in due]


def rearm_scheduled(tx: Transaction, where: str, params: Sequence[Any], now: float) -> None:
    """Inside `tx`: for the live scheduled mail `where` (a condition on `messages m`) that the
    trash paused (queued, never handed on, no send job), back from the trash at `now`: due
    again at its `scheduled_at` while that is ahead, else failed, its send canceled (e2a's
    rule), with its events."""
    paused = tx.all(
        f"SELECT m.id, m.scheduled_at, m.method FROM messages m WHERE m.direction = '{OUTBOUND}' "
        f"AND m.sent_at IS NULL AND m.status IN ('{QUEUED}', '{EXPIRED_APPROVED}') "
        "AND m.scheduled_at IS NOT NULL AND m.deleted_at IS NULL AND NOT EXISTS "
        f"(SELECT 1 FROM jobs j WHERE j.kind = '{OUTBOUND_JOB}' AND j.message_id = m.id) "
        f"AND {where} ORDER BY m.seq",
        tuple(params),
    )
    for message_id, scheduled_at, method in paused:
        job_id = add_job(tx, OUTBOUND_JOB, message_id, max(now, scheduled_at))
        if scheduled_at <= now:
            attempt = SendAttempt(
                job_id, message_id, "failed", method or "smtp", SCHEDULE_CANCELED_ERROR, None
            )
            _finish(tx, replace(attempt, now=now))


def cancel_sends_in(tx: Transaction, agent_email: str, now: float) -> int:
    """Inside `tx` (the agent going to the trash): cancel the agent's mail still to be handed
    on whose send job no worker holds now, as `agent_deleted` with its events. A recipient a
    retry already reached keeps it (the message is then `sent`, the rest named in the error);
    a job a worker holds is left to it, and its next attempt is failed the same way. How many
    were cancelled."""
    pause_scheduled(tx, "m.agent_email = ?", (agent_email,), now)
    due = tx.all(
        "SELECT j.id, m.id FROM jobs j JOIN messages m ON m.id = j.message_id "
        f"WHERE j.kind = '{OUTBOUND_JOB}' AND m.agent_email = ? AND m.direction = '{OUTBOUND}' "
        "AND (j.locked_until IS NULL OR j.locked_until < ?) ORDER BY m.seq"
        f"{tx.dialect.for_update(of='j')}",
        (agent_email, lease_time(tx, now)),
    )
    for job_id, message_id in due:
        _finish(  # `sent` when a retry reached someone (`_finish`)
            tx,
            SendAttempt(job_id, message_id, "failed", "smtp", AGENT_DELETED_ERROR, None, now=now),
        )
    return len(due)


def _refuse_when_full(tx: Transaction, limits: Sequence[RateLimit], now: float) -> None:
    """Count a send made at `now` against each of `limits` (a row of its own, kept apart from
    the messages, so deleting one frees no place), or against none; RateFull for the first
    whose window is full: there is room again when the oldest send it counted leaves it."""
    for limit, count in zip(limits, weigh_hits(tx, limits, now), strict=True):
        if not count.allowed:
            raise RateFull(count.oldest_leaves_at, limit.key)


def _summaries(
    tx: Transaction,
    user_id: str,
    status: str | None,
    agent_email: str | None,
    limit: int,
    after_seq: int | None,
    by_deadline: bool,
    preview_chars: int | None,
    body_chars: int | None,
) -> list[OutboundSummary]:
    """Inside `tx`: a page of the user's live outbound mail as `OutboundSql.outbound_summaries`
    lists it; the bodies and attachments stay in the database, which cuts a preview or the
    content from them."""
    columns = OUTBOUND_SUMMARY_COLUMNS
    if preview_chars is not None:
        columns += (
            f", substr(m.body_text, 1, {int(preview_chars)}), length(m.body_text), "
            "(m.body_html IS NOT NULL AND m.body_html <> ''), "
            + tx.dialect.field_of_each("m.attachments_json", "filename")
        )
    if body_chars is not None:
        columns += (
            f", substr(m.body_text, 1, {int(body_chars)}), "
            f"substr(m.body_html, 1, {int(body_chars)}), "
            + tx.dialect.attachment_infos("m.attachments_json")
        )
    query = (
        f"SELECT {columns} FROM messages m WHERE m.user_id = ? "
        f"AND m.direction = '{OUTBOUND}' AND m.deleted_at IS NULL "
        f"AND {agent_in_service('m.agent_email')}"
    )
    params: list[Any] = [user_id]
    if status is not None:
        query += " AND m.status = ?"
        params.append(status)
    if agent_email is not None:
        query += " AND m.agent_email = ?"
        params.append(agent_email)
    if by_deadline:
        deadline = "coalesce({0}.approval_expires_at, {0}.created_epoch)"
        if after_seq is not None:
            query += (
                f" AND ({deadline.format('m')}, m.seq) > "
                f"(SELECT {deadline.format('p')}, p.seq FROM messages p "
                "WHERE p.seq = ? AND p.user_id = ?)"
            )
            params += [after_seq, user_id]
        query += f" ORDER BY {deadline.format('m')}, m.seq LIMIT ?"
    else:
        if after_seq is not None:
            query += " AND m.seq < ?"
            params.append(after_seq)
        query += " ORDER BY m.seq DESC LIMIT ?"
    params.append(limit)
    return [
        decode_outbound_summary(
            row, preview=preview_chars is not None, content=body_chars is not None
        )
        for row in tx.all(query, params)
    ]


class OutboundSql(Runner):
    """`Outbox` in SQL."""

    async def add_outbound(
        self,
        message: OutboundMessage,
        settles: HeldKey | None = None,
        send_limits: Sequence[RateLimit] = (),
    ) -> None:
        """Insert an outbound message, and in the same commit its send job (queued) or its
        approval-notice job (pending approval) and its record on the Idempotency-Key claim
        `settles`; under the agent's mail lock, so it commits in its place in the agent's
        mail; counted against `send_limits` in the same commit (RateFull when one is full).
        AgentGone when the agent was deleted or trashed since the request found it (it is kept
        from deletion until the commit, as storing inbound mail keeps it)."""

        def insert(tx: Transaction) -> None:
            lock_agents_mail(tx, [message.agent_email])
            keep_agent(tx, message.user_id, message.agent_email)
            if send_limits:
                _refuse_when_full(tx, send_limits, message.created_epoch)
            tx.execute(
                f"INSERT INTO messages ({OUTBOUND_INSERT_COLUMNS}) VALUES "
                f"(?, ?, ?, '{OUTBOUND}', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{{}}', '{{}}', "
                "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                outbound_params(message),
            )
            job_kind = outbound_job_kind(message)
            if job_kind == OUTBOUND_JOB:
                add_job(tx, job_kind, message.id, send_due(message, message.created_epoch))
            elif job_kind is not None:
                add_job(tx, job_kind, message.id, message.created_epoch)
            if message.status == PENDING_APPROVAL:
                record_events(
                    tx, [outbound_event(message, REVIEW_REQUESTED, message.created_epoch)]
                )
            if settles is not None:
                settle_claim(tx, settles, message.id)

        await self._write(insert)

    async def list_outbound(
        self, user_id: str, status: str, agent_email: str | None, *, newest_first: bool = False
    ) -> list[OutboundMessage]:
        """The user's outbound messages in `status` (soonest-expiring first while pending, else
        oldest first; the most recent first with `newest_first`), at most
        OUTBOUND_LIST_LIMIT, leaving out those in the trash and those of agents in the
        trash."""
        query = (
            f"SELECT {OUTBOUND_COLUMNS} FROM messages WHERE user_id = ? "
            f"AND direction = '{OUTBOUND}' AND status = ? AND deleted_at IS NULL "
            f"AND {agent_in_service('messages.agent_email')}"
        )
        params: list[Any] = [user_id, status]
        if agent_email is not None:
            query += " AND agent_email = ?"
            params.append(agent_email)
        if newest_first:
            query += f" ORDER BY created_epoch DESC, seq DESC LIMIT {OUTBOUND_LIST_LIMIT}"
        else:
            query += (
                " ORDER BY coalesce(approval_expires_at, created_epoch), seq "
                f"LIMIT {OUTBOUND_LIST_LIMIT}"
            )
        rows = await self._read(lambda tx: tx.all(query, params))
        return [decode_outbound(row) for row in rows]

    async def outbound_summaries(
        self,
        user_id: str,
        status: str | None,
        agent_email: str | None,
        limit: int,
        after_seq: int | None,
        *,
        by_deadline: bool = False,
        preview_chars: int | None = None,
        body_chars: int | None = None,
    ) -> list[OutboundSummary]:
        """A page of the user's live outbound mail without whole bodies or attachments'
        contents: newest first before `after_seq`, or soonest deadline first after it
        (`by_deadline`), each with a preview of `preview_chars` characters and its bodies cut
        at `body_chars` characters with its attachments' sizes, when given (`_summaries`)."""
        return await self._read(
            lambda tx: _summaries(
                tx,
                user_id,
                status,
                agent_email,
                limit,
                after_seq,
                by_deadline,
                preview_chars,
                body_chars,
            )
        )

    async def get_outbound(
        self, user_id: str | None, message_id: str, *, live: bool = False
    ) -> OutboundMessage | None:
        """One outbound message (scoped to `user_id` unless None; `live`: not in the trash,
        nor of an agent in the trash)."""
        row = await self._read(lambda tx: _outbound_row(tx, user_id, message_id, live=live))
        return decode_outbound(row) if row else None

    async def review_outbound(
        self,
        user_id: str | None,
        message_id: str,
        approve: bool,
        edits: OutboundEdits | None,
        reason: str | None,
        now: float,
        *,
        by: ReviewedBy | None = None,
        settles: HeldKey | None = None,
    ) -> OutboundMessage | None:
        """Approve (→ queued, with a send job) or reject (→ rejected, scrubbed) a pending
        message, exactly once (NotPending when it is not), recording `by`, and the message on
        the Idempotency-Key claim `settles`."""

        def review(tx: Transaction) -> OutboundMessage | None:
            reviewed = review_in(tx, user_id, message_id, approve, edits, reason, now, by)
            if reviewed is not None and settles is not None:
                settle_claim(tx, settles, message_id)
            return reviewed

        return await self._write(review)

    async def expire_outbound(self, now: float) -> list[OutboundMessage]:
        """Apply the agents' expiration actions to overdue pending messages."""
        return await self._write(lambda tx: _expire(tx, now))

    async def finish_outbound(self, attempts: Sequence[SendAttempt]) -> list[str]:
        """Record send attempts in one transaction, each as `_finish` does, in the order of
        their messages' ids (replicas finishing batches that touch the same rows take their
        locks in one order). A retry reschedules the job; sent or failed drops it and scrubs
        the body. Handed on, a queued message becomes sent and an expired-approved one stays
        expired-approved, both with `sent_at`; an expired-approved message that fails ends
        expired-rejected with the reason. Attempts whose job has passed to another claim are
        not written (`_add_unsettled` keeps their settled recipients); their messages' ids.
        The ids the relay named (`SendAttempt.relay_ids`) are kept either way: it took them."""
        ordered = sorted(attempts, key=lambda attempt: attempt.message_id)

        def finish_all(tx: Transaction) -> list[str]:
            fenced = [attempt.job_id for attempt in ordered if attempt.leased_until is not None]
            leases = current_leases(tx, "jobs", "bigint", fenced) if fenced else {}
            passed: list[str] = []
            for attempt in ordered:
                _keep_relay_ids(tx, attempt)
                if (
                    attempt.leased_until is None
                    or leases.get(attempt.job_id) == attempt.leased_until
                ):
                    _finish(tx, attempt)
                else:
                    added = _add_unsettled(tx, attempt.job_id, attempt.message_id, attempt.results)
                    unreached = [item for item in attempt.bounced if item.address in added]
                    _told_unreached(tx, attempt, unreached)
                    passed.append(attempt.message_id)
            return passed

        return await self._write(finish_all)

    async def record_recipient_results(
        self,
        message_id: str,
        results: Mapping[str, str],
        job_id: int,
        leased_until: float | None = None,
    ) -> None:
        """Merge `results` into the message's per-recipient results while its send job
        `job_id` holds the lease until `leased_until` (`_record_recipients`)."""
        await self._write(
            lambda tx: _record_recipients(tx, message_id, results, job_id, leased_until)
        )

    async def recipient_results(self, message_id: str) -> dict[str, str]:
        """The outbound message's settled recipients (empty when none or no such message)."""
        row = await self._read(lambda tx: tx.first(RECIPIENT_RESULTS, (message_id,)))
        return recipient_results(row[0]) if row else {}
