"""The delivery state `/v1` reports of a message sent (e2a's MessageView `delivery_status`,
api/openapi.yaml at 220fe0a7): the worst of its recipients' states by e2a's precedence, and a
`delivery_detail` naming the recipients that did not get it and why. Pure functions of what the
gateway keeps of the message: its state, its last hand-off error and its recipients' results
(`auth_results_json` of the outbound row, as the send worker records them)."""

from __future__ import annotations

from collections.abc import Mapping

from e2a_gateway.outbound.bounces import BounceType, classify
from e2a_gateway.storage.base import FiledMessage
from e2a_gateway.storage.rows import (
    RECIPIENT_ACCEPTED,
    RECIPIENT_BOUNCED_PREFIX,
    RECIPIENT_LOCAL_PREFIX,
    RECIPIENT_REFUSED_PREFIX,
    RELAY_REFUSAL,
    bounced_result,
    reported_bounce_type,
)
from e2a_gateway.storage.vocabulary import (
    BOUNCED,
    EXPIRED_APPROVED,
    EXPIRED_REJECTED,
    FAILED,
    PENDING_APPROVAL,
    QUEUED,
    REJECTED,
    SENT,
)

PRECEDENCE = (
    "accepted",
    "sending",
    "sent",
    "deferred",
    "delivered",
    "failed",
    "bounced",
    "complained",
)
"""e2a's delivery states, least to most severe (internal/delivery/status.go's rank): a
message's `delivery_status` is the last of these that any of its recipients is in."""

NOT_SENT = {
    REJECTED: "rejected in review; not sent",
    EXPIRED_REJECTED: "not approved before its approval deadline; not sent",
}
"""The `delivery_detail` of mail a review stopped: e2a's `email.failed` reasons
`review_rejected` and `review_expired`, in words."""


def recipient_state(result: str) -> str:
    """The delivery state of a recipient whose hand-off came to `result`: `sent` when the relay
    or a local inbox took it, `bounced` when the relay refused its address for good (a 5xx to
    its RCPT) or a failure report came back for it, else `failed` (refused otherwise,
    or given up on)."""
    if result == RECIPIENT_ACCEPTED or result.startswith(RECIPIENT_LOCAL_PREFIX):
        return "sent"
    return "bounced" if bounced_result(result) else "failed"


def refusal_bounce_type(result: str) -> BounceType | None:
    """How the relay's refusal of a recipient at RCPT (`result`, `refused: RCPT TO: 5xx …`)
    bounced it, by its enhanced code else its reply code (`classify`): `permanent` when the
    address itself failed, `transient` when it did not (mailbox full, the sender's
    authentication refused); None for any other result."""
    if not result.startswith(RECIPIENT_REFUSED_PREFIX):
        return None
    refusal = RELAY_REFUSAL.match(result.removeprefix(RECIPIENT_REFUSED_PREFIX))
    return None if refusal is None else classify(refusal.group(2) or refusal.group(1))


def bounce_type(result: str) -> BounceType | None:
    """How a recipient whose hand-off came to `result` bounced, as its `email.bounced` event
    says: a failure report's type as it was recorded (`reported_bounce_type`), a refusal at
    RCPT as `refusal_bounce_type` reads it; None when it did not bounce."""
    return reported_bounce_type(result) or refusal_bounce_type(result)


def delivery_state(message: FiledMessage) -> tuple[str, str | None]:
    """`delivery_status` and `delivery_detail` of the outbound `message` (`rollup`)."""
    return rollup(
        message.status,
        sent_at=message.sent_at,
        send_error=message.send_error,
        complained_at=message.complained_at,
        results=message.authentication_results,
    )


def rollup(
    status: str,
    *,
    sent_at: str | None,
    send_error: str | None,
    complained_at: str | None,
    results: Mapping[str, str],
) -> tuple[str, str | None]:
    """`delivery_status` and `delivery_detail` of an outbound message in `status`, handed on at
    `sent_at`, its last hand-off error `send_error`, first complained about at `complained_at`,
    its recipients' `results`. As e2a's async-send contract (§1.3, §3.1) has it, mail a reviewer
    holds reads `accepted` (the hold shows in its review state), and mail a review stopped,
    never to be sent, reads `failed`, saying why (`NOT_SENT`), never a permanent `accepted`."""
    handed_on = sent_at is not None or status == SENT
    if status == PENDING_APPROVAL:
        return "accepted", None
    if status in NOT_SENT and not (status == EXPIRED_REJECTED and send_error):
        return FAILED, NOT_SENT[status]
    if status in (FAILED, BOUNCED):
        states = [status]
    elif status == EXPIRED_REJECTED:  # approved at expiry, then not sent
        states = [FAILED]
    elif handed_on:
        # A message handed on keeps a hand-off error only when a recipient did not get it
        # (refused, given up on, or its agent trashed before a retry reached it).
        states = [FAILED if send_error else "sent"]
    else:  # QUEUED, EXPIRED_APPROVED: waiting for its hand-off
        states = ["deferred" if send_error else "accepted"]
    states += [recipient_state(result) for result in results.values()]
    if complained_at is not None:
        states.append("complained")
    worst = max(states, key=PRECEDENCE.index)
    waiting = not handed_on and status in (QUEUED, EXPIRED_APPROVED)
    return worst, _detail(send_error or "", results, waiting=waiting)


def reported_error(send_error: str | None, results: Mapping[str, str]) -> str | None:
    """What went wrong with an outbound message, as `/api/v1`'s `error` and the dashboard show
    it: its last hand-off error `send_error`, then each recipient a bounce report came back for
    (`carol@example.org: bounced: <the report's diagnostic>`), which the hand-off error cannot
    name (the relay had taken the message for them); None when neither says anything."""
    return _detail(send_error or "", results, waiting=False)


def _detail(error: str, results: Mapping[str, str], *, waiting: bool) -> str | None:
    """Who did not get the message and why. While recipients are retried (`waiting`), the
    hand-off `error` names those (deferred) and the results the ones an earlier attempt refused
    or a report bounced; once settled, the hand-off error names every recipient the hand-off
    did not reach, and the results those a bounce report came back for afterwards."""
    missed = [
        f"{recipient}: {result}"
        for recipient, result in results.items()
        if recipient_state(result) != "sent"
        and (waiting or result.startswith(RECIPIENT_BOUNCED_PREFIX))
    ]
    named = [entry for entry in missed if entry not in error]
    if waiting:
        return "; ".join([*named, *filter(None, [error])]) or None
    return "; ".join([*filter(None, [error]), *named]) or None
