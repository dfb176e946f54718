"""The words storage writes into its status, direction, mode and kind columns, each spelled once.

The SQL of every aggregate refers to these constants, never to a literal of its own; the protocol's
`Literal` types in `e2a_gateway.storage.base` name the same words (a test holds them equal).
"""

from __future__ import annotations

from typing import Final

# Which way a row of `messages` went.
INBOUND: Final = "inbound"
OUTBOUND: Final = "outbound"

# An inbound message, as its agent has seen it (`MessageStatus`).
UNREAD: Final = "unread"
READ: Final = "read"

DELIVERY_PENDING: Final = "pending"
"""An inbound message for a cloud agent whose webhook has not been attempted yet; afterwards its
`delivery_status` is the last attempt's outcome (`DeliveryOutcome`)."""

# An inbound message the agent's gate holds for review (`messages.hold`; NULL when delivered).
HELD_FOR_REVIEW: Final = "pending_review"
HOLD_REJECTED: Final = "rejected"

# An outbound message's place in the approval lifecycle (`OutboundStatus`).
PENDING_APPROVAL: Final = "pending_approval"
QUEUED: Final = "queued"
SENT: Final = "sent"
FAILED: Final = "failed"
REJECTED: Final = "rejected"
EXPIRED_APPROVED: Final = "expired_approved"
EXPIRED_REJECTED: Final = "expired_rejected"
BOUNCED: Final = "bounced"
OUTBOUND_STATUSES: Final = (
    PENDING_APPROVAL,
    QUEUED,
    SENT,
    FAILED,
    REJECTED,
    EXPIRED_APPROVED,
    EXPIRED_REJECTED,
    BOUNCED,
)
TERMINAL_STATUSES: Final = frozenset({SENT, FAILED, REJECTED, EXPIRED_REJECTED, BOUNCED})
"""Outbound statuses nothing leaves: the body is scrubbed and retention may delete the row (as
it may once `sent_at` says a message was handed on: an auto-approval sent stays
`expired_approved`)."""

# How an agent receives its mail (`AgentMode`), and what its overdue approvals become.
CLOUD: Final = "cloud"
LOCAL: Final = "local"
EXPIRE_BY_APPROVING: Final = "approve"
EXPIRE_BY_REJECTING: Final = "reject"

# Where a recipient suppression came from.
SUPPRESSED_BY_BOUNCE: Final = "bounce"
SUPPRESSED_BY_COMPLAINT: Final = "complaint"
SUPPRESSED_BY_HAND: Final = "manual"
SUPPRESSED_BY_UNSUBSCRIBE: Final = "unsubscribe"
"""A recipient's own opt-out, by a managed-unsubscribe link (one agent only)."""

# What an API key may reach (`KeyScope`): its whole account, or one agent of it.
ACCOUNT_SCOPE: Final = "account"
AGENT_SCOPE: Final = "agent"

# What a row of `jobs` asks a worker to do.
WEBHOOK_JOB: Final = "webhook"
OUTBOUND_JOB: Final = "outbound"
APPROVAL_NOTICE_JOB: Final = "approval_notice"
APPROVAL_ANSWER_JOB: Final = "approval_answer"

# How a review was decided (`ReviewMethod`).
REVIEW_BY_API: Final = "api"
REVIEW_BY_DASHBOARD: Final = "dashboard"
REVIEW_BY_LINK: Final = "link"
REVIEW_BY_REPLY: Final = "reply"
REVIEW_BY_EXPIRY: Final = "expiry"
REVIEW_METHODS: Final = (
    REVIEW_BY_API,
    REVIEW_BY_DASHBOARD,
    REVIEW_BY_LINK,
    REVIEW_BY_REPLY,
    REVIEW_BY_EXPIRY,
)
SUBSCRIBER_JOB: Final = "event_delivery"
"""Deliveries to `/v1` webhook subscribers: rows of `webhook_deliveries`, announced as jobs."""
JOB_KINDS: Final = (
    WEBHOOK_JOB,
    OUTBOUND_JOB,
    APPROVAL_NOTICE_JOB,
    APPROVAL_ANSWER_JOB,
    SUBSCRIBER_JOB,
)

# Where a `/v1` webhook delivery stands (`SubscriberStatus`).
DELIVERY_WAITING: Final = "pending"
DELIVERY_DONE: Final = "delivered"
DELIVERY_FAILED: Final = "failed"


# Why a send was cancelled.
AGENT_DELETED: Final = "agent_deleted"
"""The reason code of a send cancelled because its agent went to the trash (e2a's
`email.failed` `reason_code`); the stored send error starts with it."""
