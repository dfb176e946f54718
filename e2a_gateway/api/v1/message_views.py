"""How an agent's mail looks on `/v1` (e2a's api/openapi.yaml at 220fe0a7): MessageSummaryView,
MessageView with its `authentication` evidence, AttachmentView, SendResultView, conversations
and the (beta) lifecycle, reconstructed from the states the gateway keeps. Pure functions.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from e2a_gateway.api.v1.parsed_view import Parts, parsed_view
from e2a_gateway.api.v1.views import present
from e2a_gateway.attachments import Attachment, attachment_meta_view
from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import delivered_locally, verified_domain
from e2a_gateway.inbound.parse import ParsedBody
from e2a_gateway.mailauth.evidence import Evidence, evidence_of
from e2a_gateway.operations.drafts import draft_attachments
from e2a_gateway.operations.mailbox import OpenedMessage
from e2a_gateway.operations.sending import Submission
from e2a_gateway.outbound.rollup import bounce_type, delivery_state
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.storage.base import (
    ConversationSummary,
    FiledMessage,
    Suppression,
    WebhookAttempt,
)
from e2a_gateway.storage.vocabulary import SUPPRESSED_BY_BOUNCE, SUPPRESSED_BY_COMPLAINT

SEND_STATUSES = {
    "pending_approval": "pending_review",
    "queued": "accepted",
    "expired_approved": "accepted",
    "sent": "sent",
    "bounced": "sent",
    "failed": "failed",
    "rejected": "failed",
    "expired_rejected": "failed",
}
"""SendResultView.status of each outbound state (e2a's open set: accepted, sent,
pending_review, failed). As e2a's `?wait=sent` reads its delivery rollup, a message the relay
refused for every recipient (`bounced`) or deferred was handed to delivery: `sent`; only one
the gateway gave up on is `failed`."""
REVIEW_STATUSES = {
    "pending_approval": "pending_review",
    "rejected": "review_rejected",
    "expired_approved": "review_expired_approved",
    "expired_rejected": "review_expired_rejected",
}
METHODS = {"smtp": "smtp", "local": "loopback"}
"""e2a's name for how the gateway handed a message on."""
LIFECYCLE_ORDER = (
    "acceptance.",
    "authentication.",
    "review.hold_created",
    "review.",
    "queue.",
    "submission.",
    "delivery.",
    "suppression.hard_bounce_",
    "complaint.",
    "suppression.complaint_",
)
"""The steps of a lifecycle by reason code (its first matching prefix), in the order they
happen: a step's id begins with its place here, so that steps of the same second, ordered by
`(occurred_at, id)` as e2a orders them, read in that order."""


def reviewed_as(status: str, review_method: str | None) -> str:
    """The state an outbound message in `status`, its review (if any) decided by
    `review_method`, had when its review ended: `status`, but `expired_approved` for mail
    approved at its deadline that a bounce has since made `bounced`."""
    return "expired_approved" if status == "bounced" and review_method == "expiry" else status


def review_status(status: str, review_method: str | None) -> str:
    """e2a's `review_status` of an outbound message in `status` whose review (if any) was
    decided by `review_method`: the review's outcome, `sent` once a person approved it and for
    mail never held. Mail approved at its deadline keeps `review_expired_approved` whatever its
    delivery did, a bounce included (`reviewed_as`)."""
    return REVIEW_STATUSES.get(reviewed_as(status, review_method), "sent")


def send_result_view(submission: Submission) -> tuple[dict[str, Any], int]:
    """SendResultView of a message just submitted, and its status: 202 while it waits (for
    the send worker or a reviewer), 200 once sent or failed."""
    message, status = submission.message, submission.status
    shown = "sent" if submission.deferred else SEND_STATUSES.get(status, "accepted")
    expires = message.approval_expires_at if submission.held else None
    scheduled = message.scheduled_at if shown in ("accepted", "pending_review") else None
    if scheduled is not None and shown == "accepted":
        shown = "scheduled"  # a presentation of `accepted` with a future scheduled_at (beta)
    view = present(
        status=shown,
        message_id=message.id,
        method=METHODS.get(message.method or ""),
        sent_as="own_address",
        approval_expires_at=_instant(expires) if expires is not None else None,
        scheduled_at=_instant(scheduled) if scheduled is not None else None,
    )
    return view, 202 if shown in ("accepted", "scheduled", "pending_review") else 200


def message_summary_view(message: FiledMessage) -> dict[str, Any]:
    """MessageSummaryView: a message as a listing shows it."""
    inbound = message.direction == "inbound"
    view: dict[str, Any] = {
        "id": message.id,
        "direction": message.direction,
        "header_from": message.from_addr or None,
        "envelope_from": (message.envelope_from or None) if inbound else None,
        "verified_domain": (
            verified_domain(message.from_addr, message.authentication_results) if inbound else None
        ),
        "to": message.to,
        "cc": message.cc,
        "reply_to": address_list(message.reply_to) if inbound else [],
        "delivered_to": _delivered_to(message),
        "subject": message.subject,
        "read_status": message.status if inbound else "",
        "labels": message.labels,
        "created_at": message.created_at,
        "sent_as": None if inbound else "own_address",
    }
    if message.conversation_id:
        view["conversation_id"] = message.conversation_id
    if message.flag_reason:
        view["flagged"], view["flag_reason"] = True, message.flag_reason
    if message.deleted_at:
        view["deleted_at"] = message.deleted_at
    if message.scheduled_at is not None and not inbound:
        view["scheduled_at"] = _instant(message.scheduled_at)
    if inbound:
        if message.size is not None:
            view["size_bytes"] = message.size
        if message.delivery_status:
            view["webhook_status"] = webhook_status(message.delivery_status)
    else:
        view.update(_outbound_state(message))
    return {name: value for name, value in view.items() if value is not None or name in _NULLABLE}


_NULLABLE = frozenset({"header_from", "envelope_from", "verified_domain"})


def webhook_status(delivery_status: str) -> str:
    """e2a's `webhook_status` of mail received by a cloud agent whose webhook delivery stands
    at `delivery_status`: `pending` until it is delivered or given up on — also between the
    retries this gateway records as `retrying` (e2a keeps the delivery `pending`, the last
    attempt's error in `webhook_error`) — then `delivered` or `failed`."""
    return "pending" if delivery_status == "retrying" else delivery_status


def webhook_error(attempts: Sequence[WebhookAttempt]) -> str | None:
    """e2a's `webhook_error`: why the last webhook attempt of `attempts` (oldest first)
    failed, while the delivery is retried or once it failed; None before the first attempt
    and once one delivered it (e2a clears the error then)."""
    if not attempts:
        return None
    last = attempts[-1]
    if last.status_code is not None and 200 <= last.status_code < 300:
        return None
    if last.error:
        return last.error
    return f"HTTP {last.status_code}" if last.status_code is not None else None


def message_view(
    opened: OpenedMessage, authserv_id: str, body: ParsedBody | None, parts: Parts
) -> dict[str, Any]:
    """MessageView: one message in full, with the evidence of its authentication (mail received
    over SMTP) and its attachments' metadata; `body` is mail received's, parsed from its raw
    bytes (`parsed_body`), and `parts` the split of its text (of mail sent, of the text kept)
    that `parsed` is made from (`parsed_view`)."""
    filed = opened.filed
    view = message_summary_view(filed)
    view.setdefault("conversation_id", "")
    if opened.raw is not None:
        evidence = evidence_of(opened.raw, authserv_id)
        view["authentication"] = _authentication(evidence) if evidence else None
        if evidence is None:
            view["verified_domain"] = None
        view["raw_message"] = base64.b64encode(opened.raw).decode("ascii")
        assert body is not None
        return view | received_content(body, parts)
    draft = opened.outbound
    view["authentication"] = None
    view["raw_message"] = None
    text = draft.body_text if draft else None
    html = draft.body_html if draft else None
    view["body"] = present(text=text, html=html)
    view["parsed"] = parsed_view(parts, html)
    view["attachments"] = [
        attachment_meta_view(index, item)
        for index, item in enumerate(draft_attachments(draft) if draft else [])
    ]
    return view


def received_content(body: ParsedBody, parts: Parts) -> dict[str, Any]:
    """MessageView's `body`, `parsed` and `attachments` (metadata) of mail received, parsed as
    `body` and split into `parts`."""
    return {
        "body": present(text=body.text, html=body.html),
        "parsed": parsed_view(parts, body.html),
        "attachments": [
            attachment_meta_view(index, item) for index, item in enumerate(body.attachments)
        ],
    }


def attachment_view(
    index: int, attachment: Attachment, download_url: str, expires_at: float, data: bytes | None
) -> dict[str, Any]:
    """AttachmentView: metadata, a short-lived download URL, and the bytes when inline."""
    view = attachment_meta_view(index, attachment)
    view["download_url"] = download_url
    view["expires_at"] = _instant(expires_at)
    if data is not None:
        view["data"] = base64.b64encode(data).decode("ascii")
    return view


def update_result_view(message_id: str, labels: list[str]) -> dict[str, Any]:
    """UpdateMessageResultView."""
    return {"message_id": message_id, "labels": labels}


def conversation_summary_view(conversation: ConversationSummary) -> dict[str, Any]:
    """ConversationSummaryView."""
    return {
        "id": conversation.id,
        "first_message_at": conversation.first_message_at,
        "last_message_at": conversation.last_message_at,
        "message_count": conversation.message_count,
        "inbound_count": conversation.inbound_count,
        "outbound_count": conversation.outbound_count,
        "has_unread": conversation.has_unread,
        "latest_subject": conversation.latest_subject,
        "latest_from": conversation.latest_from,
    }


def conversation_detail_view(
    conversation: ConversationSummary,
    messages: list[FiledMessage],
    listed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """ConversationDetailView: the summary, the participants (every sender, delivered-to
    address and recipient, Bcc included, as e2a gathers them) and labels of its `messages`,
    both sorted, and those messages — or `listed`, the views of the page of them shown."""
    participants: set[str] = set()
    labels: set[str] = set()
    for message in messages:
        addresses = (
            message.from_addr,
            _delivered_to(message),
            *message.to,
            *message.cc,
            *message.bcc,
        )
        participants.update(address.lower() for address in addresses if address)
        labels.update(message.labels)
    return {
        **conversation_summary_view(conversation),
        "participants": sorted(participants),
        "labels": sorted(labels),
        "messages": (
            [message_summary_view(message) for message in messages] if listed is None else listed
        ),
    }


def lifecycle_transitions(
    message: FiledMessage, suppressions: Sequence[Suppression] = ()
) -> list[dict[str, Any]]:
    """MessageLifecycleTransition entries (beta), reconstructed from what the gateway keeps of
    the message: its arrival and authentication, or its acceptance, review, hand-off, each
    recipient's bounce and complaint, and the `suppressions` it added (`suppressions_from`);
    in e2a's order, by `(occurred_at, id)`. A step's id is the same on every request (the
    message's id, its place in `LIFECYCLE_ORDER`, its reason code and recipient), so a cursor
    standing on one holds still while the message's delivery progresses."""
    steps: list[tuple[str, str, str, str, bool, str | None]] = []
    at = message.created_at
    if message.direction == "inbound":
        at = message.received_at or at  # its arrival, also for mail released from a hold
        local = delivered_locally(message.authentication_results)
        steps.append(
            (
                "accepted",
                "accepted",
                "acceptance.local_loopback" if local else "acceptance.inbound_smtp",
                at,
                False,
                None,
            )
        )
        dmarc = message.authentication_results.get("dmarc")
        reason = {
            "pass": "authentication.dmarc_pass",
            "fail": "authentication.dmarc_fail",
            "none": "authentication.dmarc_none",
            "temperror": "authentication.dmarc_temporary_error",
            "permerror": "authentication.dmarc_permanent_error",
        }.get(dmarc or "")
        if reason and not local:
            outcome = (
                "passed" if dmarc == "pass" else "failed" if dmarc == "fail" else "indeterminate"
            )
            steps.append(("authentication", outcome, reason, at, dmarc == "temperror", None))
    else:
        steps.append(("accepted", "accepted", "acceptance.outbound_api", at, False, None))
        held = message.status == "pending_approval" or message.reviewed_at is not None
        if held:
            steps.append(("review", "pending", "review.hold_created", at, False, None))
        reviewed = message.reviewed_at or at
        review = {
            "rejected": ("rejected", "review.rejected"),
            "expired_rejected": ("rejected", "review.expired_rejected"),
            "expired_approved": ("approved", "review.expired_approved"),
        }.get(reviewed_as(message.status, message.review_method))
        if review is None and message.reviewed_at is not None:
            review = ("approved", "review.approved")
        if review is not None:
            steps.append(("review", review[0], review[1], reviewed, False, None))
        if message.status in ("queued", "sent", "failed", "bounced", "expired_approved"):
            steps.append(("queued", "enqueued", "queue.outbound_submission", reviewed, False, None))
        local = message.method == "local"
        if message.sent_at is not None or message.status == "sent":
            reason = (
                "submission.local_loopback_accepted" if local else "submission.upstream_accepted"
            )
            steps.append(("submission", "accepted", reason, message.sent_at or at, False, None))
        elif message.status in ("failed", "bounced"):  # nobody got it: refused, or given up on
            refused = ("submission", "failed", "submission.provider_rejected", reviewed)
            steps.append((*refused, False, None))
        elif message.status == "queued" and message.send_error:
            deferred = ("submission", "deferred", "submission.temporary_failure", reviewed)
            steps.append((*deferred, True, None))
        applied = {
            suppression.address: suppression.created_at
            for suppression in suppressions
            if suppression.source == SUPPRESSED_BY_BOUNCE
        }
        for recipient, result in message.authentication_results.items():
            kind = bounce_type(result)  # refused at hand-off, or reported back after it
            if kind is None:
                continue
            when = message.sent_at or reviewed
            reason = f"delivery.{kind}_bounce"
            steps.append(("delivery", "bounced", reason, when, kind == "transient", recipient))
            suppressed = applied.get(recipient.lower())
            if suppressed is not None:
                steps.append(
                    (
                        "suppression",
                        "applied",
                        "suppression.hard_bounce_applied",
                        suppressed,
                        False,
                        recipient,
                    )
                )
        if message.complained_at is not None:
            complained = message.complained_at
            steps.append(
                ("complaint", "reported", "complaint.recipient_reported", complained, False, None)
            )
            steps.extend(
                (
                    "suppression",
                    "applied",
                    "suppression.complaint_applied",
                    suppression.created_at,
                    False,
                    suppression.address,
                )
                for suppression in suppressions
                if suppression.source == SUPPRESSED_BY_COMPLAINT
            )
    transitions = [
        {
            "id": _step_id(message.id, reason, recipient),
            "message_id": message.id,
            "direction": message.direction,
            "stage": stage,
            "outcome": outcome,
            "reason_code": reason,
            "retryable": retryable,
            "evidence": {},
            "correlation_ids": {},
            "occurred_at": occurred,
            "reconstructed": True,
        }
        | ({"recipient": recipient} if recipient is not None else {})
        for stage, outcome, reason, occurred, retryable, recipient in steps
    ]
    return sorted(transitions, key=lifecycle_position)


def lifecycle_position(transition: dict[str, Any]) -> tuple[str, str]:
    """Where a lifecycle transition stands in its listing: `(occurred_at, id)`, as e2a orders
    and pages them (every `occurred_at` is in the one RFC 3339 form, so text order is time
    order)."""
    return (transition["occurred_at"], transition["id"])


def _step_id(message_id: str, reason: str, recipient: str | None) -> str:
    """A reconstructed step's id, the same on every request: `msg_…:07:delivery.permanent_bounce:
    carol@example.org` (its place in `LIFECYCLE_ORDER`, reason code, recipient if any)."""
    place = next(n for n, prefix in enumerate(LIFECYCLE_ORDER, 1) if reason.startswith(prefix))
    step = f"{message_id}:{place:02d}:{reason}"
    return step if recipient is None else f"{step}:{recipient.lower()}"


def _delivered_to(message: FiledMessage) -> str:
    """e2a's `delivered_to`: the agent for mail received, the first To address for mail sent."""
    if message.direction == "inbound":
        return message.agent_email
    return message.to[0] if message.to else ""


def _outbound_state(message: FiledMessage) -> dict[str, Any]:
    state: dict[str, Any] = {"review_status": review_status(message.status, message.review_method)}
    status, detail = delivery_state(message)
    state["delivery_status"] = status
    if detail is not None:
        state["delivery_detail"] = detail
    return state


def _authentication(evidence: Evidence) -> dict[str, Any]:
    """Authentication: SPF, each DKIM signature, DMARC, as e2a's schema words them. As e2a has
    it, a mechanism's `aligned` is null unless it passed and the author's domain publishes a
    DMARC record (the record's modes are what alignment is judged by), and `aligned_by` is
    empty unless DMARC passed."""
    judged = evidence.dmarc_policy is not None
    dmarc = evidence.dmarc if evidence.dmarc in _DMARC else "permerror"

    def aligned(result: str, value: bool | None) -> bool | None:
        return value if judged and result == "pass" else None

    return {
        "spf": {
            "status": evidence.spf if evidence.spf in _SPF else "permerror",
            "domain": evidence.spf_domain,
            "aligned": aligned(evidence.spf, evidence.spf_aligned),
        },
        "dkim": [
            present(status=sig.result if sig.result in _DKIM else "permerror", detail=sig.reason)
            | {
                "domain": sig.domain,
                "selector": sig.selector,
                "aligned": aligned(sig.result, sig.aligned),
            }
            for sig in evidence.dkim
        ],
        "dmarc": {
            "status": dmarc,
            "domain": evidence.dmarc_domain,
            "policy": evidence.dmarc_policy,
            "aligned_by": list(evidence.aligned_by) if dmarc == "pass" else [],
        },
    }


_SPF = frozenset({"pass", "fail", "none", "neutral", "softfail", "temperror", "permerror"})
_DKIM = frozenset({"pass", "fail", "none", "neutral", "policy", "temperror", "permerror"})
_DMARC = frozenset({"pass", "fail", "none", "temperror", "permerror"})


def _instant(seconds: float) -> str:
    return format_timestamp(seconds)
