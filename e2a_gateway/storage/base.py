"""The storage interface of the gateway: typing Protocols by role, their row types and errors.

`Storage` is the union of the roles (`Accounts`, `Directory`, `Mailboxes`, `Outbox`, ...); a
caller that needs one role types against it. Every query that touches a user's data takes the
owner's `user_id` and filters by it inside storage, so a handler cannot forget the ownership
check. SQL lives in `e2a_gateway.storage.sql` only.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from e2a_gateway.attachments import Attachment
from e2a_gateway.ids import new_id
from e2a_gateway.rate_windows import RateCount, RateLimit
from e2a_gateway.storage.new_inbound import NewInboundMessage
from e2a_gateway.storage.vocabulary import (
    TERMINAL_STATUSES as TERMINAL_STATUSES,  # callers read it here
)

if TYPE_CHECKING:
    from e2a_gateway.storage.announcements import Announcement

AgentMode = Literal["cloud", "local"]
KeyScope = Literal["account", "agent"]
MessageStatus = Literal["unread", "read"]
GatePolicy = Literal["open", "allowlist", "domain"]
GateAction = Literal["flag", "review", "block"]
StatusFilter = Literal["unread", "read", "all"]


class StorageError(Exception):
    """Base of the errors a backend raises on purpose."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or refused the write; the caller should retry later."""


class DiskFull(StorageUnavailable):
    """The database's disk refused a write (full, failing, over a file-size limit): nothing
    of it is stored; the caller should retry once space is freed. Its text names the database
    and what to check."""


class AlreadyExists(StorageError):
    """A unique resource (agent address, domain) is already taken."""


class InUse(StorageError):
    """The resource is still referenced (a domain with agents)."""


class DomainNotHeld(StorageError):
    """The owner does not hold the domain verified (never did, or deleted it meanwhile)."""


class LimitReached(StorageError):
    """A per-user count limit (signing secrets) is reached."""


class CoolingDown(StorageError):
    """Refused because the webhook was turned off by the auto-disable sweep too recently."""


class LastOne(StorageError):
    """Refused because it would remove the last resource of its kind (signing secret)."""


class RateFull(StorageError):
    """Refused because a rate limit the write was weighed against has no room: nothing was
    written; there is room again at `room_at` (epoch seconds) in the limit keyed `key`."""

    def __init__(self, room_at: float, key: str = "") -> None:
        super().__init__(f"no room until {room_at}")
        self.room_at = room_at
        self.key = key

    def __reduce__(self) -> tuple[type[RateFull], tuple[float, str]]:
        """Rebuilt from when there is room again, and where, when unpickled (as an SMTP
        acceptor would receive it)."""
        return type(self), (self.room_at, self.key)


class AccountGone(StorageError):
    """Refused because the account the write was for was deleted while the request ran:
    nothing was written."""


class AgentGone(StorageError):
    """Refused because the agent the write was for was deleted, or moved to the trash,
    while the request ran: nothing was written."""


class ClaimLost(StorageError):
    """Refused because the Idempotency-Key claim the write was to settle is no longer held
    (its request ran so long that a retry took the key over): nothing was written."""


@dataclass(frozen=True)
class User:
    """A person or organisation that owns agents, domains and keys."""

    id: str
    email: str
    created_at: str


@dataclass(frozen=True)
class ApiKey:
    """An API key's metadata; the key itself is only ever known as its SHA-256 hash.

    An `account` key reaches everything of its account; an `agent` key only the agent whose
    stable id is `agent_id` (`agent_email` is that agent's address when read, None once the
    agent is gone). A key past `expires_at` is refused like a revoked one."""

    id: str
    user_id: str
    name: str
    key_prefix: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    scope: KeyScope = "account"
    agent_id: str | None = None
    expires_at: str | None = None
    agent_email: str | None = None

    def expired(self, now: str) -> bool:
        """Whether the key has stopped working at `now` (RFC 3339 UTC, to the second)."""
        return expired_by(self.expires_at, now)


def expired_by(expires_at: str | None, now: str) -> bool:
    """Whether a key valid until `expires_at` (RFC 3339 UTC, to the second; None: never) has
    stopped working at `now`."""
    return expires_at is not None and expires_at <= now


@dataclass(frozen=True)
class KeyHolder:
    """Who a live API key speaks for: its owner, its scope, and for an agent key the agent it
    is bound to (by stable id, and that agent's address)."""

    user: User
    scope: KeyScope
    agent_id: str | None
    agent_email: str | None
    expires_at: str | None = None
    """When the key stops working (RFC 3339 UTC, to the second); None: never."""

    def expired(self, now: str) -> bool:
        """Whether the key has stopped working at `now` (RFC 3339 UTC, to the second)."""
        return expired_by(self.expires_at, now)


@dataclass(frozen=True)
class IdempotencyClaim:
    """What a write sent with an Idempotency-Key may do: `acquired` (run it, then complete or
    release the claim `token`), `replay` (answer `status` and the stored `answer` instead),
    `made` (its first request made the message or webhook `made_id` and was never answered:
    answer that), `mismatch` (the key was used for another request) or `in_flight` (its first
    request still runs)."""

    outcome: Literal["acquired", "replay", "made", "mismatch", "in_flight"]
    token: str | None = None
    status: int | None = None
    answer: bytes | None = None
    made_id: str | None = None


@dataclass(frozen=True)
class HeldKey:
    """The Idempotency-Key claim `token` a running write holds on the user's key `key_hash`:
    the storage write that makes what the request asked for (`add_outbound`, `add_webhook`,
    a review's approval) settles it in the same transaction."""

    user_id: str
    key_hash: str
    token: str


@dataclass(frozen=True)
class SigningSecret:
    """A signing secret as stored: the `seed` from which the secret itself is derived."""

    id: str
    user_id: str
    name: str
    seed: str
    secret_prefix: str
    created_at: str
    last_signed_at: str | None


@dataclass(frozen=True)
class Domain:
    """A custom mail domain registered by a user, verified by a DNS TXT record."""

    user_id: str
    domain: str
    verification_token: str
    verified: bool
    created_at: str
    verified_at: str | None
    last_checked_at: str | None = None
    """When the gateway last looked up its DNS records to verify it (None: never)."""


@dataclass(frozen=True)
class Agent:
    """An inbox: one address of one user, delivered by webhook (cloud) or WebSocket (local)."""

    email: str
    user_id: str
    domain: str
    name: str
    webhook_url: str | None
    agent_mode: AgentMode
    hitl_enabled: bool
    hitl_ttl_seconds: int
    hitl_expiration_action: Literal["reject", "approve"]
    created_at: str
    id: str = field(default_factory=lambda: new_id("agt"))
    """The agent's stable internal identity. A new agent gets a fresh one; an address deleted
    and registered again (by anyone) is another agent with another id."""
    approval_notifications: bool = True
    """Whether the owner is emailed when a message of this agent is held for approval."""
    deleted_at: str | None = None
    """When the agent was moved to the trash (RFC 3339 UTC); None while it is in service. A
    trashed agent keeps its address but receives nothing and acts as nothing until restored."""
    inbound_gate_policy: GatePolicy = "open"
    """Whose mail passes the inbound gate: anyone's (`open`), or only mail whose DMARC-aligned
    From is one of `inbound_gate_allowlist` (`allowlist`: addresses; `domain`: domains)."""
    inbound_gate_allowlist: tuple[str, ...] = ()
    inbound_gate_action: GateAction = "flag"
    """What becomes of inbound mail the gate does not pass: delivered flagged (`flag`), held
    for review (`review`) or refused at SMTP (`block`)."""
    outbound_gate_policy: GatePolicy = "open"
    """Whom the agent may mail unquestioned: anyone (`open`), only the addresses of
    `outbound_gate_allowlist` (`allowlist`), or addresses on its own domain (`domain`)."""
    outbound_gate_allowlist: tuple[str, ...] = ()
    outbound_gate_action: GateAction = "flag"
    """What becomes of a send to anyone the gate does not pass: sent with the reason kept
    (`flag`), held for approval (`review`) or refused (`block`). `hitl_enabled` says whether
    the gate holds every send (an allowlist with no entry and `review`), kept with it."""


@dataclass(frozen=True)
class AgentChanges:
    """A partial update of an agent: fields left as None keep their value."""

    name: str | None = None
    webhook_url: str | None = None
    agent_mode: AgentMode | None = None
    hitl_enabled: bool | None = None
    hitl_ttl_seconds: int | None = None
    hitl_expiration_action: Literal["reject", "approve"] | None = None
    approval_notifications: bool | None = None
    inbound_gate_policy: GatePolicy | None = None
    inbound_gate_allowlist: tuple[str, ...] | None = None
    inbound_gate_action: GateAction | None = None
    outbound_gate_policy: GatePolicy | None = None
    outbound_gate_allowlist: tuple[str, ...] | None = None
    outbound_gate_action: GateAction | None = None


@dataclass(frozen=True)
class InboundMessage:
    """A stored inbound message as the API reads it."""

    id: str
    seq: int
    user_id: str
    agent_email: str
    from_addr: str
    reply_to: str | None
    to: list[str]
    cc: list[str]
    subject: str
    conversation_id: str | None
    rfc_message_id: str | None
    status: MessageStatus
    raw_message: bytes
    auth_headers: dict[str, str]
    authentication_results: dict[str, str]
    delivery_status: str | None
    received_at: str
    created_at: str
    reading: dict[str, Any] | None = None
    """Its reply text and trust map (`e2a_gateway.inbound.trust.reading`) once computed and kept;
    None before."""
    flag_reason: str | None = None
    envelope_from: str = ""
    hold: str | None = None
    """`pending_review` while the agent's inbound gate holds it, `rejected` once a reviewer
    dropped it; None for mail delivered."""
    attachments: tuple[Attachment, ...] = ()
    """Its attachments' metadata as kept when it was accepted (none kept for mail stored
    before 0029)."""


@dataclass(frozen=True)
class StoredEarlier:
    """A message of an agent's store, as a later message that names it is judged against.

    Inbound mail has its identity claim and its kept reading, or else its delivered bytes
    (`raw_message`); outbound mail its text body while kept (`body_text`, None once dropped)."""

    id: str
    direction: Literal["inbound", "outbound"]
    from_addr: str
    rfc_message_id: str
    auth_headers: dict[str, str]
    raw_message: bytes | None
    body_text: str | None
    reading: dict[str, Any] | None


@dataclass(frozen=True)
class ConversationClaim:
    """A conversation id that a message's sending agent gave it (local delivery, or our own
    X-E2A-Conversation-Id), and that agent's address."""

    conversation_id: str
    sender: str


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """An inbound message as an inbox list shows it: who, to whom, what, where in the list;
    neither its bytes nor its authentication, which only reading the message needs."""

    id: str
    seq: int
    agent_email: str
    from_addr: str
    to: list[str]
    cc: list[str]
    subject: str
    conversation_id: str | None
    status: MessageStatus
    delivery_status: str | None
    received_at: str
    created_at: str
    reply_to: str | None
    """Its Reply-To addresses as the message keeps them (`rfc5322.address_list` reads them)."""


@dataclass(frozen=True)
class InboxPage:
    """One page of an agent's inbox, with the agent it belongs to (read together, so that an
    inbox costs one trip to the database); `next_after` is None on the last page."""

    agent: Agent
    messages: tuple[InboxEntry, ...]
    next_after: int | None


@dataclass(frozen=True)
class MessagePage:
    """One page of a keyset-paginated message list; `next_after` is None on the last page."""

    messages: list[InboundMessage] = field(default_factory=list)
    next_after: int | None = None


@dataclass(frozen=True)
class Job:
    """A unit of background work claimed from the queue under a lease, until `leased_until`
    (on the clock leases are judged by: the database's, when replicas share it)."""

    id: int
    kind: str
    message_id: str
    attempts: int
    """The attempts this job has made (its retry schedule goes by them)."""
    earlier_attempts: int
    """The attempts earlier jobs of the same work made: 0 but for a dead letter redelivered by
    hand, whose attempts are numbered on from them."""
    run_at: float
    created_at: float
    leased_until: float


JobState = Literal["available", "running", "retryable", "scheduled"]
"""A job's state as e2a's queue metrics name it: due and free for a worker, leased to one,
waiting to be tried again, or not yet due for its first try."""


@dataclass(frozen=True)
class JobQueueState:
    """The jobs of one kind in one state: how many, and the earliest `run_at` among them."""

    kind: str
    state: JobState
    count: int
    earliest_run_at: float


def jobs_per_kind(states: Iterable[JobQueueState]) -> dict[str, int]:
    """How many jobs of each kind are queued, whatever their state."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state.kind] = counts.get(state.kind, 0) + state.count
    return counts


@dataclass(frozen=True)
class WebhookDelivery:
    """Everything a webhook attempt needs: the message, where it goes, and how to sign it.

    `webhook_url` is None when the agent is no longer a cloud agent with a webhook;
    `signing_seed` is None when its owner has no signing secret."""

    message: InboundMessage
    webhook_url: str | None
    signing_seed: str | None


@dataclass(frozen=True)
class WebhookAttempt:
    """The record of one POST to a webhook."""

    attempt: int
    attempted_at: str
    status_code: int | None
    error: str | None
    duration_ms: int


DeliveryOutcome = Literal["delivered", "retrying", "failed"]


@dataclass(frozen=True)
class FinishedAttempt:
    """A webhook attempt to record, and what becomes of its job: dropped when the outcome is
    delivered or failed, due again at `retry_at` when retrying. `leased_until` is the lease
    the attempt was made under (its claim's, or as renewed): the record is written only while
    the job still holds it."""

    job_id: int
    message_id: str
    attempt: WebhookAttempt
    outcome: DeliveryOutcome
    retry_at: float | None
    leased_until: float


class NotPending(StorageError):
    """The outbound message is no longer awaiting approval (approve/reject answer 409)."""


class RecipientsSuppressed(StorageError):
    """Approving would send to addresses on the suppression list (suppressed while the message
    waited, or added by the reviewer's edits): it stays held."""

    def __init__(self, addresses: list[str], agent_email: str) -> None:
        super().__init__(", ".join(addresses))
        self.addresses = addresses
        self.agent_email = agent_email
        """The sending agent, whose own list may hold them."""

    def __reduce__(self) -> tuple[type[RecipientsSuppressed], tuple[list[str], str]]:
        """Rebuilt from its addresses when unpickled (an SMTP acceptor receives it so)."""
        return type(self), (self.addresses, self.agent_email)


OUTBOUND_LIST_LIMIT = 500
"""At most this many messages are listed by one `Outbox.list_outbound` call."""
PAST_DEADLINE = "past its review deadline"
"""Why a held message (either way) takes no review once its deadline has passed, before the
expiry sweep has applied its agent's expiration action (`NotPending`'s reason)."""


class AgentInTrash(NotPending):
    """The message's agent is in the trash: its held mail takes no review until the agent is
    restored (a NotPending, so that whoever only knows those refuses it too)."""

    def __init__(self, agent_email: str) -> None:
        super().__init__("agent_in_trash")
        self.agent_email = agent_email

    def __reduce__(self) -> tuple[type[AgentInTrash], tuple[str]]:
        """Rebuilt from its agent's address when unpickled (an SMTP acceptor receives it so)."""
        return type(self), (self.agent_email,)


OutboundStatus = Literal[
    "pending_approval",
    "queued",
    "sent",
    "failed",
    "rejected",
    "expired_approved",
    "expired_rejected",
    "bounced",
]


ReviewMethod = Literal["api", "dashboard", "link", "reply", "expiry"]


@dataclass(frozen=True)
class ReviewedBy:
    """Who decided a review (their address, when known) and how."""

    method: ReviewMethod
    reviewer: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """Mail an agent sends: its envelope, its body while not terminal, and its state."""

    id: str
    user_id: str
    agent_email: str
    kind: Literal["send", "reply", "test"]
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    body_text: str | None
    body_html: str | None
    attachments: list[dict[str, str]] | None
    conversation_id: str | None
    in_reply_to: str | None
    references: list[str]
    email_message_id: str
    status: OutboundStatus
    approval_expires_at: float | None
    created_at: str
    created_epoch: float
    reviewed_at: str | None = None
    rejection_reason: str | None = None
    method: Literal["smtp", "local"] | None = None
    edited: bool = False
    send_error: str | None = None
    sent_at: str | None = None
    """When the message was handed on (`sent`, or an auto-approval that stays
    `expired_approved`); None before, and for mail handed on before e2a recorded it."""
    reply_to: str | None = None
    """The Reply-To the sender asked for (a `/v1` send), written into the message."""
    reviewed_by: str | None = None
    """The address of whoever decided the review, when known (a magic link or expiry has none)."""
    review_method: ReviewMethod | None = None
    """How the review was decided; None while pending and for reviews made before e2a kept it."""
    flag_reason: str | None = None
    """Why the agent's outbound gate flagged the send (sent, annotated) or held it."""
    recipient_results: dict[str, str] = field(default_factory=dict)
    """Each recipient's hand-off result, as the send worker and bounce reports keep them
    (`accepted`, `refused: …`, `bounced: <the report's diagnostic>`, …); empty before."""
    unsubscribe: str | None = None
    """The managed unsubscribe the message was sent with (`managed`), or None."""
    scheduled_at: float | None = None
    """The instant a future `send_at` scheduled the send for (epoch seconds; kept once sent);
    None for mail sent at once. Its send job is not due before it (beta, docs/api.md)."""


@dataclass(frozen=True)
class BodyPreview:
    """What a list shows of an outbound message's body, read without the body itself: the
    beginning of its text, the text's length, whether it has an HTML part, and the names of
    its attachments (not their contents)."""

    text: str | None
    """The text part's first characters (as many as asked for); None without a text part."""
    text_length: int
    """The text part's length in characters (0 without one)."""
    has_html: bool
    attachment_names: list[str]


@dataclass(frozen=True)
class AttachmentInfo:
    """An outbound attachment as a list shows it: its name, its type and its size in bytes
    once decoded (computed where it is stored, from its base64's length), never its contents."""

    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class OutboundContent:
    """An outbound message's content as a list that shows it reads it, cut where it is stored:
    its bodies' first characters (as many as asked for; None without that part) and its
    attachments' `AttachmentInfo`, in order."""

    text: str | None
    html: str | None
    attachments: list[AttachmentInfo]


@dataclass(frozen=True)
class OutboundSummary:
    """An outbound message as a list shows it (`Outbox.outbound_summaries`): its envelope and
    state, never its body or its attachments' contents, so a page of them stays small however
    large the mail; with `preview` when one was asked for."""

    id: str
    seq: int
    """Its place in the order messages were stored (the newest-first listing's keyset)."""
    agent_email: str
    kind: Literal["send", "reply", "test"]
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    status: OutboundStatus
    approval_expires_at: float | None
    created_at: str
    reviewed_at: str | None
    rejection_reason: str | None
    method: Literal["smtp", "local"] | None
    edited: bool
    send_error: str | None
    sent_at: str | None
    reviewed_by: str | None
    review_method: ReviewMethod | None
    recipient_results: dict[str, str]
    """Each recipient's hand-off result (as `OutboundMessage.recipient_results`)."""
    conversation_id: str | None
    email_message_id: str
    reply_to: str | None = None
    """The Reply-To the sender asked for (as `OutboundMessage.reply_to`)."""
    preview: BodyPreview | None = None
    content: OutboundContent | None = None
    """Its bodies cut and its attachments' sizes, when asked for (`body_chars`)."""


@dataclass(frozen=True)
class OutboundEdits:
    """What a reviewer may change when approving: fields left None keep their value."""

    subject: str | None = None
    body_text: str | None = None
    body_html: str | None = None
    to: list[str] | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    attachments: list[dict[str, str]] | None = None


SendOutcome = Literal["sent", "failed", "retry"]


@dataclass(frozen=True)
class SendAttempt:
    """What one attempt to send an outbound message came to, to record (`Outbox.finish_outbound`):
    `outcome` with the `method` used and the `error` if any, `retry_at` when retrying, the
    per-recipient `results`, the recipients it settled without reaching in `bounced` (the
    relay's 5xx to RCPT, other refusals, those given up on), made at `now` (default: the
    wall clock). `leased_until` is the lease the attempt was made under (its claim's): the
    outcome is written only while the job still holds it (None: whoever records it holds the
    job's row itself). `relay_ids` holds the id the relay named for each recipient it took
    (`e2a_gateway.relay_ids`): a reply naming it in its references joins the message's
    conversation (`Mailboxes.conversation_for`); kept even when the outcome is not written."""

    job_id: int
    message_id: str
    outcome: SendOutcome
    method: Literal["smtp", "local"]
    error: str | None
    retry_at: float | None
    results: Mapping[str, str] | None = None
    now: float | None = None
    bounced: Sequence[BouncedRecipient] = ()
    leased_until: float | None = None
    relay_ids: Mapping[str, str] | None = None


MessageDirection = Literal["inbound", "outbound"]


@dataclass(frozen=True)
class MessageFilters:
    """Which messages of an agent a `/v1` listing shows: every condition given must hold
    (None: any). `from_text` and `subject_text` match case-insensitively anywhere in the
    sender and the subject; a message must carry every one of `labels`; `since` and `until`
    bound `created_at` (RFC 3339 UTC to the second, since inclusive, until exclusive)."""

    directions: tuple[MessageDirection, ...] = ("inbound", "outbound")
    read_status: StatusFilter = "all"
    from_text: str | None = None
    subject_text: str | None = None
    conversation_id: str | None = None
    labels: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    deleted: bool = False
    newest_first: bool = True


@dataclass(frozen=True)
class FiledMessage:
    """A message of an agent's mailbox as `/v1` lists it, inbound or outbound: its envelope,
    its state, its labels and its trash time (None while live). `status` is the inbound read
    state or the outbound lifecycle state; `size` the raw bytes' length (inbound only)."""

    id: str
    seq: int
    direction: MessageDirection
    agent_email: str
    envelope_from: str
    from_addr: str
    reply_to: str | None
    to: list[str]
    cc: list[str]
    subject: str
    conversation_id: str | None
    rfc_message_id: str | None
    status: str
    delivery_status: str | None
    authentication_results: dict[str, str]
    created_at: str
    deleted_at: str | None
    labels: list[str]
    size: int | None
    method: str | None = None
    send_error: str | None = None
    sent_at: str | None = None
    reviewed_at: str | None = None
    complained_at: str | None = None
    """When a recipient of mail sent first reported it as unwanted (a feedback report)."""
    bcc: list[str] = field(default_factory=list)
    """The Bcc of mail sent (never shown in a message; a conversation counts it a participant)."""
    flag_reason: str | None = None
    """Why the agent's gate did not pass the message (inbound: its sender; outbound: a
    recipient), when it did not: delivered or sent flagged, or held for review."""
    received_at: str | None = None
    """When mail received was accepted (`created_at` is when it came into the mailbox: for
    mail its agent's gate held for review, its release)."""
    review_method: str | None = None
    """How the review of mail sent was decided (`expiry`: at its deadline), when one was."""
    scheduled_at: float | None = None
    """The instant mail sent with a future `send_at` was scheduled for (epoch seconds)."""


@dataclass(frozen=True)
class ConversationSummary:
    """A thread of an agent's live messages sharing a `conversation_id`: its span, counts,
    whether any inbound message is unread, and its newest message's subject and sender;
    `last_seq`, the position it is listed and paged by, is that of its newest message live or
    in the trash (trashing a message does not move its conversation back)."""

    id: str
    first_message_at: str
    last_message_at: str
    message_count: int
    inbound_count: int
    outbound_count: int
    has_unread: bool
    latest_subject: str
    latest_from: str
    last_seq: int


class LabelsRefused(StorageError):
    """A labels change would leave a message with more labels than allowed."""


@dataclass(frozen=True)
class DeadLetter:
    """An inbound message whose webhook deliveries ran out of retries, with its last attempt
    (none recorded when retention already removed the attempts)."""

    message_id: str
    seq: int
    from_addr: str
    subject: str
    received_at: str
    attempts: int
    last_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None


@dataclass(frozen=True)
class Feedback:
    """Feedback sent to the gateway's operators (`POST /api/feedback`)."""

    id: str
    category: str
    message: str
    email: str | None
    created_at: str


@dataclass(frozen=True)
class DeliveryCounts:
    """How one event's webhook deliveries stand: how many webhooks it matched, and how many of
    those deliveries are delivered, still pending (or retrying) and failed."""

    matched_webhooks: int = 0
    delivered: int = 0
    pending: int = 0
    failed: int = 0


@dataclass(frozen=True)
class NewEvent:
    """An event to log, with the fields `/v1/events` filters on."""

    id: str
    user_id: str
    type: str
    agent_email: str | None
    conversation_id: str | None
    message_id: str | None
    created_epoch: float
    envelope: bytes
    """The envelope exactly as every channel sends it (redelivery sends these bytes again)."""


class FoldedCopy(NamedTuple):
    """A further copy's `email.received`, logged within the event of its message's `first`
    copy for the same account: that event's row lists it, `event_copies` finds it by id, and
    its envelope is the first's with its own id, message, agent and conversation put in
    (`e2a_gateway.events.copy_envelope`). A tuple: a message for fifty agents makes 49."""

    first: NewEvent
    id: str
    message_id: str
    agent_email: str
    conversation_id: str | None


@dataclass(frozen=True)
class StoredEvent:
    """An event of the log as `/v1/events` reads it: its filter fields and its envelope."""

    seq: int
    id: str
    type: str
    agent_email: str | None
    conversation_id: str | None
    message_id: str | None
    created_epoch: float
    envelope: bytes
    deliveries: DeliveryCounts = field(default_factory=DeliveryCounts)
    ordinal: int = 0
    """Its place among the events its row of the log stands for: 0 for the row's own, 1, 2, …
    for the further copies of one message folded into it (`seq` and `ordinal` order the
    log)."""


@dataclass(frozen=True)
class EventFilter:
    """Which events a listing keeps: fields left None keep all; `since` (inclusive) and
    `until` (exclusive) are epochs."""

    type: str | None = None
    agent_email: str | None = None
    conversation_id: str | None = None
    message_id: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class Webhook:
    """A webhook subscriber of an account: where events of `events` go (only those of
    `agent_emails`/`conversation_ids` when these are not empty), signed with the secret
    derived from `seed` (and from `previous_seed` until `previous_until`, after a rotation).
    `auto_disabled_at` is when the auto-disable sweep turned it off (epoch seconds), until it
    is enabled again."""

    id: str
    user_id: str
    url: str
    description: str
    events: list[str]
    agent_emails: list[str]
    conversation_ids: list[str]
    enabled: bool
    seed: str
    created_at: str
    seq: int = 0
    previous_seed: str | None = None
    previous_until: float | None = None
    last_delivered_at: str | None = None
    auto_disabled_at: float | None = None


@dataclass(frozen=True)
class WebhookChanges:
    """A partial update of a webhook: fields left None keep their value (lists replace)."""

    url: str | None = None
    description: str | None = None
    events: list[str] | None = None
    agent_emails: list[str] | None = None
    conversation_ids: list[str] | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class EmailTemplate:
    """A stored email template of an account: its parts' sources (`html` optional), an
    optional `alias` unique within the account, and the starter it was copied from."""

    id: str
    user_id: str
    name: str
    alias: str | None
    subject: str
    text: str
    html: str | None
    created_at: str
    updated_at: str
    from_starter_alias: str | None = None
    from_starter_version: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class TemplateChanges:
    """A partial update of a template: fields left None keep their value; an empty `alias` or
    `html` clears it."""

    name: str | None = None
    alias: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None


SubscriberStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class SubscriberDelivery:
    """One event (or test) on its way to one webhook, with its last attempt."""

    seq: int
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    envelope: bytes
    status: SubscriberStatus
    attempts: int
    run_at: float | None
    created_epoch: float
    last_attempt_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    last_latency_ms: int | None = None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A due delivery leased to the worker until `leased_until` (as `Job.leased_until`), with
    its webhook's URL and signing seeds (the previous one only while its grace lasts)."""

    delivery: SubscriberDelivery
    url: str
    seeds: list[str]
    leased_until: float


@dataclass(frozen=True)
class SubscriberAttempt:
    """A finished attempt of a delivery and what becomes of it: `pending` again at `retry_at`,
    or `delivered`/`failed` for good. `leased_until` is the lease the attempt was made under
    (its claim's, or as renewed): the record is written only while the delivery still holds
    it."""

    delivery_id: str
    attempt: int
    attempted_at: float
    status_code: int | None
    error: str | None
    latency_ms: int
    status: SubscriberStatus
    retry_at: float | None
    leased_until: float


class Lifecycle(Protocol):
    """The store itself: schema, connections, liveness, and the development server secret."""

    async def migrate(self) -> list[int]:
        """Apply pending numbered migrations; return the versions applied now."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...

    async def upkeep(self) -> None:
        """The backend's background upkeep while the gateway runs (SQLite: copying the
        write-ahead log into the database off the writer's commits); returns at once when the
        backend needs none."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable if the database cannot answer a trivial query."""
        ...

    async def pending_migrations(self) -> list[int]:
        """The versions of this code's migrations the database has not recorded as applied
        (none once `migrate` ran, unless someone changed the record since)."""
        ...

    async def unknown_migrations(self) -> list[int]:
        """The schema versions the database records as applied that this code does not know:
        a newer e2a migrated it."""
        ...

    async def server_secret(self, candidate: str) -> str:
        """Return the stored development server secret, storing `candidate` if none exists."""
        ...

    async def announce(self, news: Sequence[Announcement]) -> None:
        """Tell the other replicas of `news` now, without writing anything (e.g. a `/v1`
        WebSocket claimed): a NOTIFY with PostgreSQL, nothing with SQLite, whose one process
        is the only one. This process's own observers are not told."""
        ...


class ExportedMessage(NamedTuple):
    """A message of an export: its metadata, JSON-ready (`e2a_gateway.storage.rows.
    export_message`), and what its owner did to it (`filed`: `labels`, sorted, when it has
    any; `deleted_at` when it is in the trash)."""

    message: dict[str, Any]
    filed: dict[str, Any]


@dataclass(frozen=True)
class AgentPurge:
    """What one transaction of the trash's purge deleted: agents, and messages of theirs."""

    agents: int = 0
    messages: int = 0

    @property
    def rows(self) -> int:
        """Agents and messages together: what the transaction's bound counts."""
        return self.agents + self.messages


@dataclass(frozen=True)
class MessageCounts:
    """An agent's mail as an export shows it: messages received and sent since a time, and
    drafts awaiting review."""

    inbound_since: int = 0
    outbound_since: int = 0
    pending: int = 0


class UserExport(Protocol):
    """One user's export, read from one snapshot: the records at once, the messages and the
    events log page by page (an account of many messages is never held whole)."""

    async def records(self) -> dict[str, Any]:
        """`user` (None when there is none), `agents`, `domains`, `api_keys`,
        `signing_secrets`, `suppressions`, `webhooks` (never a secret) and `templates`,
        JSON-ready, oldest first."""
        ...

    async def message_counts(self, since: str) -> dict[str, MessageCounts]:
        """Each agent's counts of the exported messages (by address; an agent without mail is
        left out): received and sent at or after `since`, and awaiting review."""
        ...

    def messages(self) -> AsyncGenerator[list[ExportedMessage], None]:
        """The user's messages, inbound and outbound alike, oldest first, a page at a time."""
        ...

    def events(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The user's events log, JSON-ready, oldest first, a page at a time."""
        ...


class Accounts(Protocol):
    """Users and their credentials: API keys (by hash), signing secrets, export and deletion."""

    async def ensure_user(self, user_id: str, email: str, now: str) -> tuple[User, bool]:
        """Return the user with `email`, creating it with `user_id` if absent; (user, created)."""
        ...

    async def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Store a new API key under its SHA-256 hash."""
        ...

    async def user_for_key_hash(self, key_hash: str) -> User | None:
        """Return the owner of a live API key (`key_holder`), or None."""
        ...

    async def key_holder(self, key_hash: str) -> KeyHolder | None:
        """Who the API key with this hash speaks for, while it is live: not revoked, not past
        its expiry, and (an agent key) its agent still there. None otherwise."""
        ...

    async def note_key_used(self, key_hash: str, when: str) -> None:
        """Record that the key with this hash was used at `when` (its `last_used_at`), unless
        a later use is on record already."""
        ...

    async def get_user(self, user_id: str) -> User | None:
        """The user with `user_id`, or None (workers: the owner to notify of a pending message)."""
        ...

    async def first_user(self) -> User | None:
        """The user created first (the same second: the smaller id), or None when there is
        none — the deployment's operator, who owns the postmaster inbox."""
        ...

    async def api_key_page(
        self, user_id: str, limit: int, after: tuple[str, str] | None, *, revoked: bool = False
    ) -> list[ApiKey]:
        """Up to `limit` of the user's keys not revoked (expired ones too, as e2a lists them;
        with `revoked`, revoked ones too), newest first by `(created_at, id)`, after the
        position `after` when given."""
        ...

    def export_user(self, user_id: str) -> AbstractAsyncContextManager[UserExport]:
        """Everything stored about the user, read from one snapshot held while the block runs
        (one connection; it is given back however the block ends). Never a key hash, signing
        seed or secret; no raw message bytes or bodies."""
        ...

    async def delete_user(self, user_id: str) -> dict[str, int]:
        """Delete the user and everything they own in one transaction; rows deleted per table
        (`e2a_gateway.storage.rows.DELETED_TABLES`). Their agent addresses are free again
        afterwards. On PostgreSQL the deletion is announced to the other replicas when it
        commits."""
        ...

    async def revoke_api_key(self, user_id: str, key_id: str, now: str) -> str | None:
        """Revoke one of the user's keys and return its hash (live subscriptions it opened are
        ended by it); None when it is not theirs or already revoked. On PostgreSQL the
        revocation is announced to the other replicas when it commits."""
        ...

    async def add_signing_secret(self, secret: SigningSecret, max_per_user: int) -> None:
        """Store a new signing secret; LimitReached when the user already has `max_per_user`."""
        ...

    async def list_signing_secrets(self, user_id: str) -> list[SigningSecret]:
        """The user's signing secrets, newest first."""
        ...

    async def delete_signing_secret(self, user_id: str, secret_id: str) -> bool:
        """Delete one secret; False when not the user's, LastOne when it is their only one."""
        ...


class Directory(Protocol):
    """Domains and agents, and the routing look-ups inbound mail asks for every message."""

    async def add_domain(self, domain: Domain) -> None:
        """Register a domain; AlreadyExists if the user has it or another user verified it."""
        ...

    async def list_domains(self, user_id: str) -> list[Domain]:
        """The user's domains, oldest first."""
        ...

    async def get_domain(self, user_id: str, domain: str) -> Domain | None:
        """One of the user's domains, or None."""
        ...

    async def count_domains(self, user_id: str) -> int:
        """How many domains the user has registered, verified or not, counted in the
        database."""
        ...

    async def domain_page(
        self, user_id: str, limit: int, after: tuple[str, str] | None
    ) -> list[Domain]:
        """Up to `limit` of the user's domains, newest first by (created_at, domain), after
        the position `after` when given."""
        ...

    async def verified_among(self, user_id: str, domains: Collection[str]) -> set[str]:
        """Which of `domains` the user holds verified (one query, however many are asked)."""
        ...

    async def mark_domain_verified(self, user_id: str, domain: str, now: str) -> Domain | None:
        """Mark the user's domain verified; AlreadyExists if another user verified it first."""
        ...

    async def record_domain_check(self, user_id: str, domain: str, now: str) -> Domain | None:
        """Note that the user's domain had its DNS records looked up at `now`; None when it is
        not theirs."""
        ...

    async def delete_domain(self, user_id: str, domain: str) -> bool:
        """Delete the user's domain; InUse while agents use it; False when not theirs."""
        ...

    async def is_served_domain(self, domain: str) -> bool:
        """True when some user has verified `domain` (the gateway is its MX)."""
        ...

    async def add_agent(self, agent: Agent, *, on_owned_domain: bool = False) -> None:
        """Store a new agent; AlreadyExists when the address is taken. `on_owned_domain`: its
        owner must hold its domain verified (DomainNotHeld otherwise), checked as one with the
        insert and taking turns with `delete_domain`, so no agent outlives its domain."""
        ...

    async def list_agents(self, user_id: str, *, trashed: bool = False) -> list[Agent]:
        """The user's agents in service (or, `trashed`, those in the trash), oldest first."""
        ...

    async def agents_postmaster_last(self, user_id: str, limit: int) -> list[Agent]:
        """Up to `limit` of the user's agents in service, oldest first, postmaster inboxes
        (`postmaster@…`) after all others: two tell whether one agent is the only sender."""
        ...

    async def agent_page(
        self, user_id: str, limit: int, after: tuple[str, str] | None, *, trashed: bool = False
    ) -> list[Agent]:
        """Up to `limit` of the user's agents in service (or, `trashed`, in the trash), newest
        first by (created_at, email), after the position `after` when given."""
        ...

    async def agents_per_domain(
        self, user_id: str, *, with_trash: bool, domains: Collection[str] | None = None
    ) -> dict[str, int]:
        """How many of the user's agents in service (and, `with_trash`, in the trash) each
        domain holds (each of `domains` only, when given), counted in the database; domains
        holding none are left out."""
        ...

    async def get_agent(self, user_id: str, email: str, *, trashed: bool = False) -> Agent | None:
        """One of the user's agents in service (or, `trashed`, in the trash), or None."""
        ...

    async def count_agent_messages(self, user_id: str, email: str) -> int:
        """How many messages (inbound and outbound) the user's agent at `email` holds, in
        service or in the trash."""
        ...

    async def trash_agent(self, user_id: str, email: str, now: str) -> Agent | None:
        """Move one of the user's agents in service to the trash at `now`: it keeps its address
        and messages, routes no mail, and its keys and live connections stop working (other
        replicas hear of it on commit); its held mail leaves the review queue, and its sends no
        worker holds yet are cancelled (`agent_deleted`, with their events) in the same commit.
        The trashed agent, or None when there is no such agent in service."""
        ...

    async def restore_agent(
        self, user_id: str, email: str, now: float | None = None
    ) -> Agent | None:
        """Bring one of the user's trashed agents back into service at `now` (the present when
        None): the review deadlines of its held mail, and its webhook jobs (not claimed while it
        is in the trash), move on by the time it spent there. None when it is not in the
        trash."""
        ...

    async def update_agent(self, user_id: str, email: str, changes: AgentChanges) -> Agent | None:
        """Apply `changes` to one of the user's agents; None when it is not theirs."""
        ...

    async def delete_agent(self, user_id: str, email: str) -> str | None:
        """Delete one of the user's agents and its messages; return the deleted agent's id, or
        None when it is not theirs. On PostgreSQL the deletion is announced to the other
        replicas when it commits."""
        ...

    async def find_agent(self, email: str) -> Agent | None:
        """The agent at `email` whoever owns it: for routing inbound mail only."""
        ...

    async def is_trashed_agent(self, email: str) -> bool:
        """Whether `email` is the address of an agent in the trash, whoever owns it."""
        ...

    async def newest_signing_seed(self, user_id: str) -> str | None:
        """The seed of the user's newest signing secret (the one deliveries are signed with)."""
        ...


class Mailboxes(Protocol):
    """Agents' inbound mail: stored with its jobs, listed, read, and threaded."""

    async def store_inbound(self, messages: list[NewInboundMessage], now: float) -> None:
        """Commit the messages and their delivery jobs in one transaction (all or nothing).
        Raw bytes are stored once per distinct message (by SHA-256), however many of
        `messages` carry them; they are deleted with the last message pointing at them, by
        whatever deletes it (retention, agent or account deletion)."""
        ...

    async def stored_copies(
        self, copies: list[tuple[str, str]], *, settle_within: float | None = None
    ) -> set[str]:
        """Which of `copies`, (agent address, message id) pairs, are stored: the ids of those
        that are messages of those agents, in whatever state (held, read, in the trash). For
        local delivery, whose retry after a crash must not store a copy twice, and inbound
        mail whose commit failed.

        `settle_within` seconds: first wait until any transaction that stored mail of all of
        their agents and is still running has ended (a commit whose answer was lost, which
        the server may still be running: what it stores shows only then), and raise
        StorageUnavailable when that takes longer. No wait where a transaction is over when
        its client hears of it (SQLite)."""
        ...

    async def list_inbound(
        self,
        user_id: str,
        agent_email: str,
        status: StatusFilter,
        page_size: int,
        after_seq: int | None,
    ) -> MessagePage:
        """A page of the agent's inbound messages, oldest first, after `after_seq` (none in the
        trash: `/api/v1` and live delivery do not show trashed mail)."""
        ...

    async def inbox_page(
        self,
        user_id: str,
        agent_email: str,
        status: StatusFilter,
        page_size: int,
        after_seq: int | None,
    ) -> InboxPage | None:
        """The user's agent in service at `agent_email` and a page of its inbox, oldest first,
        after `after_seq`, in one read; None when the user has no agent in service there."""
        ...

    async def read_inbound(
        self,
        user_id: str,
        agent_email: str,
        message_id: str,
        *,
        trashed_too: bool = False,
        mark_read: bool = True,
    ) -> InboundMessage | None:
        """Return one of the agent's messages and mark it read (unless not `mark_read`: a HEAD
        request changes nothing); None when not the user's, or when it is in the trash unless
        `trashed_too` (`/v1` opens trashed mail by id)."""
        ...

    async def peek_inbound(
        self, user_id: str, agent_email: str, message_id: str
    ) -> InboundMessage | None:
        """One of the agent's delivered messages, left as it is (live delivery); None when not
        the user's."""
        ...

    async def mark_read(self, user_id: str, agent_email: str, message_id: str) -> bool:
        """Mark one of the agent's messages read (WebSocket ack); False when not the user's, or
        in the trash."""
        ...

    async def earlier_messages(
        self, user_id: str, agent_email: str, rfc_message_ids: list[str]
    ) -> list[StoredEarlier]:
        """The messages the agent received or sent whose Message-ID is one of
        `rfc_message_ids` (the user's only), newest first."""
        ...

    async def keep_reading(
        self, user_id: str, agent_email: str, message_id: str, reading: dict[str, Any]
    ) -> None:
        """Keep an inbound message's computed reading, unless one is kept already."""
        ...

    async def conversation_for(
        self,
        user_id: str,
        agent_email: str,
        rfc_message_ids: list[str],
        claim: ConversationClaim | None = None,
    ) -> str | None:
        """Threading for a message to the user's agent, from the user's messages only.

        The referenced conversation is that of the first Message-ID in `rfc_message_ids` (in
        the given order) naming a message the agent sent or received (None when that message
        has none, or no id names one); of several under one id, the one it sent, else the
        newest. A `claim` is taken when it names no conversation of the
        agent yet, one that already holds mail from or to the same sender (the agent wrote to
        it there), or the referenced one;
        otherwise — another tenant naming this agent's conversation — the referenced one is."""
        ...


@dataclass(frozen=True)
class HeldMessage:
    """A message waiting for review: an outbound draft of the agent or an inbound message its
    gate held; what the review queue shows of it."""

    id: str
    seq: int
    """Its place in the order messages were stored (the queue's keyset)."""
    agent_email: str
    direction: Literal["inbound", "outbound"]
    from_addr: str
    envelope_from: str
    to: list[str]
    subject: str
    conversation_id: str | None
    authentication_results: dict[str, str]
    created_at: str
    expires_at: float | None
    reason: str | None = None
    """Why the agent's gate held the message: its sender (inbound) or a recipient (a draft);
    None for a draft held before the gateway kept reasons."""
    scheduled_at: float | None = None
    """A draft's scheduled send (`send_at`, epoch seconds): due then once approved."""


@dataclass(frozen=True)
class ExpiredHolds:
    """One batch of overdue inbound holds resolved by their agents' expiration actions."""

    resolved: int
    """How many holds were resolved (at most one batch), delivered or dropped."""
    delivered: list[tuple[str, InboundMessage]]
    """Those delivered, each with its agent's id: its live listeners are to be told."""


class Holds(Protocol):
    """The review queue (outbound drafts and inbound holds) and inbound holds' resolution."""

    async def review_queue(self, user_id: str, limit: int, after: int | None) -> list[HeldMessage]:
        """The user's messages waiting for review, newest first (by `seq`), those stored before
        `seq` `after` when given; an agent in the trash has none there."""
        ...

    async def held_inbound(self, user_id: str | None, message_id: str) -> InboundMessage | None:
        """An inbound message held for review (the user's, unless `user_id` is None: magic
        links); None when there is none such, or its agent is in the trash."""
        ...

    async def release_inbound(
        self,
        user_id: str | None,
        message_id: str,
        approve: bool,
        now: float,
        settles: HeldKey | None = None,
        reason: str | None = None,
    ) -> InboundMessage | None:
        """Approve (delivered now: its webhook job or its live listeners) or reject (kept
        hidden) an inbound message held for review, exactly once, logging its
        `email.review_approved` or `email.review_rejected` (with the reviewer's `reason`) and
        recording it on the Idempotency-Key claim `settles` in the same commit (as
        `add_outbound`); NotPending
        when it is not held, AgentInTrash when its agent is in the trash, None when it is not
        there (or not the user's)."""
        ...

    async def expire_inbound_holds(self, now: float) -> ExpiredHolds:
        """Apply each overdue inbound hold's agent's expiration action (approve: delivered,
        its webhook job queued and the other replicas told; reject: dropped), at most one
        batch. The holds of an agent in the trash wait for it."""
        ...


class Outbox(Protocol):
    """Mail agents send: drafts, their review and expiry, and the send worker's results."""

    async def add_outbound(
        self,
        message: OutboundMessage,
        settles: HeldKey | None = None,
        send_limits: Sequence[RateLimit] = (),
    ) -> None:
        """Store an outbound message; in the same commit a `queued` one gets its `outbound`
        send job and a `pending_approval` one its `approval_notice` job, and the claim
        `settles` (of the request's Idempotency-Key) records the message, so a retry answers
        it even when the request dies before its answer is kept. ClaimLost, storing nothing,
        when that claim is no longer held. The message is counted as a send against each of
        `send_limits` (their keys the sender's, or its conversation's) in the same commit, one
        send of a key at a time (concurrent sends never both take the last place; the count
        is kept apart from the messages, so deleting one frees no place), against all of them
        or none: RateFull, storing nothing, when a window is full (the first such, in order)."""
        ...

    async def list_outbound(
        self, user_id: str, status: str, agent_email: str | None, *, newest_first: bool = False
    ) -> list[OutboundMessage]:
        """The user's outbound messages in `status` (soonest-expiring first while pending, else
        oldest first; the most recent first with `newest_first`), at most
        OUTBOUND_LIST_LIMIT, leaving out those in the trash and those of agents in the trash."""
        ...

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
        """Up to `limit` of the user's outbound messages (in `status`, of the agent at
        `agent_email`, when given), leaving out those in the trash and those of agents in the
        trash: newest first (by `seq`), those stored before the message at `after_seq` when
        given; with `by_deadline`, soonest deadline (else oldest) first, those after the
        message at `after_seq` in that order. Bodies and attachments' contents are never
        read whole; with `preview_chars`, each carries a preview of them (its text's first
        `preview_chars` characters, cut in the database); with `body_chars`, its `content`
        (text and HTML each cut to `body_chars` characters in the database, and its
        attachments' names, types and decoded sizes)."""
        ...

    async def get_outbound(
        self, user_id: str | None, message_id: str, *, live: bool = False
    ) -> OutboundMessage | None:
        """One outbound message; `user_id` None only for magic links and workers. `live` leaves
        out a message in the trash, or of an agent in the trash (what lists show)."""
        ...

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
        """Approve (→ queued, with a send job) or reject (→ rejected, body scrubbed) a message
        that is pending approval, atomically, recording `by` and the message on the
        Idempotency-Key claim `settles` (as `add_outbound`); NotPending when it is not
        (AgentInTrash when its agent is in the trash), None when absent."""
        ...

    async def expire_outbound(self, now: float) -> list[OutboundMessage]:
        """Apply each overdue pending message's agent's `hitl_expiration_action`: approve →
        `expired_approved` with a send job, reject → `expired_rejected` (scrubbed). The drafts
        of an agent in the trash wait for it."""
        ...

    async def finish_outbound(self, attempts: Sequence[SendAttempt]) -> list[str]:
        """Record send attempts, all in one transaction: sent/failed are terminal (body
        scrubbed, job dropped; an expired-approved message that fails ends `expired_rejected`),
        retry reschedules. A terminal attempt logs its events (`email.sent` and
        `email.delivered` per recipient in its `results` that was accepted, or `email.failed`),
        made at its `now`, in the same transaction; so, for a retry too, are the recipients
        in its `bounced` (`email.bounced`, a hard bounce suppressed, and a message no recipient
        got ends `bounced` after a hard bounce).

        An attempt whose job no longer holds its `leased_until` (the lease ran out and another
        claim took the job, or finished it) is not written: the job and the message stay as
        that claim has them, and only its `results` for recipients not settled yet are kept,
        so the job's next attempt does not hand the message to them again. The ids of the
        messages whose attempts were not written."""
        ...

    async def record_recipient_results(
        self,
        message_id: str,
        results: Mapping[str, str],
        job_id: int,
        leased_until: float | None = None,
    ) -> None:
        """Merge per-recipient results (address → how it was settled) into an outbound
        message, so a retry hands off only the recipients still pending. `leased_until` is
        the lease of its send job `job_id` the attempt was made under: once that lease has
        passed to another claim, whose results stand, only recipients the message has no
        result for yet are added (as `finish_outbound` keeps a late attempt's)."""
        ...

    async def recipient_results(self, message_id: str) -> dict[str, str]:
        """The recipients of an outbound message settled so far (address → result)."""
        ...


class Mailbox(Protocol):
    """An agent's messages as `/v1` files them, inbound and outbound together: filtered
    keyset pages, one message, labels, the trash, and conversations. Every query is scoped
    by the owner's user id and the agent's address."""

    async def filed_page(
        self,
        user_id: str,
        agent_email: str,
        filters: MessageFilters,
        limit: int,
        after_seq: int | None,
    ) -> list[FiledMessage]:
        """Up to `limit` messages matching `filters`, in `seq` order (newest first unless the
        filters say otherwise), after position `after_seq`."""
        ...

    async def filed_message(
        self, user_id: str, agent_email: str, message_id: str, *, mark_read: bool
    ) -> FiledMessage | None:
        """One message of the agent, trashed or not (an unread inbound one marked read first
        when `mark_read`); None when it is not the user's agent's."""
        ...

    async def change_labels(
        self,
        user_id: str,
        agent_email: str,
        message_id: str,
        add: list[str],
        remove: list[str],
        max_labels: int,
    ) -> list[str] | None:
        """Add then remove labels on one message, atomically; its labels after, sorted.
        None when it is not the user's agent's; LabelsRefused over `max_labels`."""
        ...

    async def trash_message(
        self, user_id: str, agent_email: str, message_id: str, now: str
    ) -> FiledMessage | None:
        """Move one live message to the trash (a trashed one stays as it is); the message
        as it was before, or None when it is not the user's agent's. A message held for
        review is left alone (the caller refuses it from the returned state)."""
        ...

    async def restore_message(
        self, user_id: str, agent_email: str, message_id: str
    ) -> FiledMessage | None:
        """Bring a trashed message back; the message as it is after, or None when it is not
        the user's agent's (a live one is returned unchanged: `deleted_at` None)."""
        ...

    async def purge_message(self, user_id: str, agent_email: str, message_id: str) -> bool:
        """Delete a message in the trash for good; False unless it was the agent's, trashed."""
        ...

    async def delete_trashed_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` messages moved to the trash before `cutoff` (RFC 3339 UTC),
        in one short transaction (as `Retention.delete_messages_before` does); how many went."""
        ...

    async def conversation_page(
        self,
        user_id: str,
        agent_email: str,
        since: str | None,
        until: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[ConversationSummary]:
        """Up to `limit` conversations of the agent's live mail, most recently active first,
        whose last message falls in [since, until), after position `before_seq`."""
        ...

    async def conversation(
        self, user_id: str, agent_email: str, conversation_id: str
    ) -> tuple[ConversationSummary, list[FiledMessage]] | None:
        """One conversation of the agent's live mail and all its messages, oldest first; None
        when it has none."""


@dataclass(frozen=True)
class ReplyToken:
    """A notice's reply token as stored: its hash, the held message and reviewer it is bound
    to, the notice's own Message-ID, and when a reply acted on it (None until one did) and
    that reply's Message-ID (None when it had none)."""

    token_hash: str
    message_id: str
    reviewer: str
    notice_message_id: str
    created_at: float
    used_at: float | None = None
    used_by: str | None = None


@dataclass(frozen=True)
class ApprovalAnswer:
    """A mail to a reviewer about a reply the gateway did not act on, ready for the relay."""

    message_id: str
    """The held message the reply was about (the answer goes with it)."""
    sender: str
    recipient: str
    data: bytes
    id: int = 0
    """Set once stored."""


class ApprovalReplies(Protocol):
    """Approving by replying to the notice: reply tokens, the review a reply makes, and the
    answers mailed back about replies not acted on."""

    async def add_reply_token(self, token: ReplyToken) -> None:
        """Store a notice's reply token (by hash)."""
        ...

    async def find_reply_token(self, token_hash: str) -> ReplyToken | None:
        """The reply token with this hash, while its message exists; None otherwise."""
        ...

    async def review_by_reply(
        self,
        token_hash: str,
        approve: bool,
        reason: str | None,
        now: float,
        reply_id: str | None = None,
    ) -> OutboundMessage | None:
        """Approve or reject the token's message for its reviewer (`reply`) and mark the token
        used by the reply with the Message-ID `reply_id`, in one transaction: NotPending when
        the token was used or the message is no longer pending (nothing changes), None when the
        token or message is gone."""
        ...

    async def add_approval_answer(
        self, answer: ApprovalAnswer, token_hash: str, limit: int, now: float
    ) -> bool:
        """Store an answer about a reply to the token `token_hash` with its `approval_answer`
        job, in one commit, unless that token has had `limit` answers already (False)."""
        ...

    async def next_approval_answer(self, message_id: str, job_id: int) -> ApprovalAnswer | None:
        """The answer about `message_id` that its job `job_id` hands on, not yet handed on
        (each answer has a job of its own, so replicas taking a message's jobs at once never
        hand on one answer twice)."""
        ...

    async def finish_approval_answer(
        self, job_id: int, answer_id: int, leased_until: float | None = None
    ) -> bool:
        """An answer was handed on (or refused for good): drop it and its job together. Given
        `leased_until`, the lease the hand-off was made under, only while the job still holds
        it: not once it has passed to another claim (whose hand-off decides). Whether they
        were dropped."""
        ...


class JobQueueStore(Protocol):
    """The job queue in the database: leases claimed, finished, released, counted."""

    async def release_leases(self) -> None:
        """At start-up, free the leases a previous run of this replica held on jobs and on
        `/v1` webhook deliveries, and on stopping, once its workers have, those it still
        holds: every lease on SQLite (one process works the queues), the ones stamped with this
        replica's name on PostgreSQL (other replicas' leases stay)."""
        ...

    async def claim_jobs(
        self, kind: str, now: float, limit: int, lease_seconds: float
    ) -> list[Job]:
        """Lease due jobs of `kind` (`outbound`, `approval_notice`), oldest first, for
        `lease_seconds`. Leases are judged by the database's clock when replicas share it (one
        whose own clock runs ahead takes no lease another still holds), else by `now`; due
        means `run_at` at or before `now`."""
        ...

    async def renew_job_lease(
        self, job_id: int, leased_until: float, now: float, lease_seconds: float
    ) -> float | None:
        """Move the lease of a claimed job from `leased_until` on to `lease_seconds` after now
        (the database's clock when replicas share it, else `now`) and answer that time; None
        when the job no longer holds that lease (another claim has taken it since, or it is
        gone)."""
        ...

    async def job_lease_held(self, job_id: int, leased_until: float) -> bool:
        """Whether the claimed job still holds its lease until `leased_until` (one read): False
        once the lease has passed to another claim, or the job is gone."""
        ...

    async def finish_job(
        self, job_id: int, retry_at: float | None, leased_until: float | None = None
    ) -> bool:
        """Drop a done job, or put it back due at `retry_at` with one more attempt counted.
        Given `leased_until`, the lease the work was done under, only while the job still holds
        it: a job whose lease ran out and passed to another claim is that claim's to finish.
        Whether it was done."""
        ...

    async def postpone_job(self, job_id: int, run_at: float, leased_until: float) -> bool:
        """Put a claimed job back due at `run_at` without counting an attempt (it was not
        tried: what it needs has no room yet), only while it still holds the lease
        `leased_until`. Whether it was done."""
        ...

    async def release_jobs(self, jobs: Sequence[Job]) -> None:
        """Give claimed jobs back as they were (lease dropped, no attempt counted), those still
        under the lease they were claimed under: a job whose lease ran out meanwhile and passed
        to another claim stays with it."""
        ...

    async def job_queue_states(self, now: float) -> list[JobQueueState]:
        """The queues at `now`: how many jobs of each kind are in each state, and when the
        earliest of them fell or falls due; states with no job are left out."""
        ...


class WebhookDeliveries(Protocol):
    """Webhook delivery: due deliveries claimed per receiver, what an attempt needs, and the
    record of every attempt."""

    async def claim_webhook_jobs(
        self,
        now: float,
        limit: int | None,
        lease_seconds: float,
        room: Mapping[str, int],
        default_room: int,
    ) -> list[Job]:
        """Lease due webhook jobs for `lease_seconds` (as `claim_jobs`), oldest due first,
        looking at no more than `limit` (None: every) of them and taking at most `room[url]`
        jobs for each webhook URL (`default_room` for URLs not in `room`), so a busy receiver's
        backlog stays in the queue. Nobody else can claim a leased job until the lease
        expires. The jobs of an agent in the trash are not claimed: they wait for its restore."""
        ...

    async def webhook_deliveries(self, message_ids: list[str]) -> dict[str, WebhookDelivery]:
        """For each message that still exists, keyed by id: the message, its agent's webhook
        URL and its owner's newest signing seed."""
        ...

    async def webhook_job_due(self, job_id: int, leased_until: float, url: str) -> bool:
        """Whether the claimed webhook job is still to be POSTed to `url`: it still holds the
        lease until `leased_until`, and its message's agent is still a cloud agent in service
        (not in the trash) whose webhook URL is `url`. False once the job, its message, agent or
        owner is deleted, or the job has passed to another claim."""
        ...

    async def finish_webhook_attempts(self, finished: list[FinishedAttempt]) -> None:
        """Record the attempts and, in the same transaction, set each message's delivery status
        and drop or reschedule its job. Attempts of messages deleted meanwhile are skipped, and
        so are those whose job no longer holds the lease they were made under: another claim
        has the job, and its outcome to write."""
        ...

    async def webhook_attempts(self, user_id: str, message_id: str) -> list[WebhookAttempt]:
        """Every recorded attempt for one of the user's messages, in order (none for a message
        of another user's)."""
        ...

    async def dead_letters(
        self, user_id: str, agent_email: str, limit: int, after_seq: int | None
    ) -> list[DeadLetter]:
        """Up to `limit` dead letters of the user's agent (inbound mail whose webhook delivery
        failed for good and has no job), oldest first, after position `after_seq`."""
        ...

    async def redeliver_dead_letters(
        self, user_id: str, agent_email: str, message_ids: list[str] | None, now: float
    ) -> list[str]:
        """Queue a new webhook delivery, due at `now`, for each dead letter of the user's agent
        among `message_ids` (None: all of them), in one transaction: its status goes back to
        `pending`, and its attempts are numbered on from the last. Returns the ids queued;
        what is not the user's, not a dead letter, or already queued again is left alone."""
        ...


BounceType = Literal["permanent", "transient", "undetermined"]


@dataclass(frozen=True)
class BouncedRecipient:
    """A recipient an outbound message bounced for (a delivery status notification, or the
    relay's own 5xx), and what the remote server said."""

    address: str
    bounce_type: BounceType
    detail: str | None = None


@dataclass(frozen=True)
class Suppression:
    """A recipient sends are refused to: from every agent of the account (`agent_email` None,
    added by a hard bounce) or from one agent."""

    seq: int
    address: str
    source: str
    created_at: str
    agent_email: str | None = None
    reason: str | None = None
    source_message_id: str | None = None


@dataclass(frozen=True)
class UnsubscribeScope:
    """What one managed-unsubscribe link may do: suppress `address` for the agent
    `agent_email` of the account `user_id` (the link's token is never stored, only its hash)."""

    user_id: str
    agent_email: str
    address: str
    created_at: str


class Suppressions(Protocol):
    """Bounces recorded against the outbound message they are about, and the recipient
    suppression lists they (or the account) fill."""

    async def record_bounce(
        self, message_id: str, bounced: list[BouncedRecipient], now: float
    ) -> bool:
        """In one transaction: an `email.bounced` event per recipient of the outbound message
        `message_id` it names (none for what an earlier copy of the report recorded already);
        for a permanent bounce the address on its account's suppression
        list (with a `domain.suppression_added` event) and the message `bounced`. False when
        there is no such outbound message or none of `bounced` is its recipient."""
        ...

    async def record_complaint(
        self, message_id: str, recipients: list[str], reason: str, now: float
    ) -> list[str]:
        """In one transaction: a feedback report about the outbound message `message_id` by the
        one of its recipients that `recipients` names (none given: its sole recipient): an
        `email.complained` event, once, and the address on its account's suppression list
        (source `complaint`, `reason`, with a `domain.suppression_added` event), and the
        message's `complained_at` set (first report only). The addresses recorded: empty when
        there is no such message, or the report does not single out one of its recipients."""
        ...

    async def suppressed_among(
        self, user_id: str, agent_email: str, addresses: list[str]
    ) -> list[str]:
        """Those of `addresses` (lowercase) the account, or its agent `agent_email`, suppressed."""
        ...

    async def suppressions_from(
        self, user_id: str, message_id: str, addresses: list[str]
    ) -> list[Suppression]:
        """The account's suppressions of those of `addresses` (lowercase) that the outbound
        message `message_id` added (a hard bounce or a complaint about it), oldest first: none
        for an address already suppressed before, or whose suppression was lifted since."""
        ...

    async def suppression_page(
        self, user_id: str, agent_email: str | None, limit: int, before_seq: int | None
    ) -> list[Suppression]:
        """Up to `limit` of the account's suppressions (`agent_email` None) or the agent's,
        newest first."""
        ...

    async def add_suppression(
        self, user_id: str, agent_email: str | None, address: str, reason: str | None, now: float
    ) -> Suppression:
        """Suppress `address` for the agent (or the account), by hand; the existing row when it
        already is. An agent's new suppression logs `agent.suppression_added` with it."""
        ...

    async def delete_suppression(self, user_id: str, agent_email: str | None, address: str) -> bool:
        """Lift one suppression; False when there is none."""
        ...

    async def add_unsubscribe_token(
        self, token_hash: str, user_id: str, agent_email: str, address: str, now: float
    ) -> None:
        """Keep what the managed-unsubscribe link of `token_hash` (the SHA-256 of its token, in
        hex) may do; nothing when it is kept already (the token is the same every time)."""
        ...

    async def find_unsubscribe_token(self, token_hash: str) -> UnsubscribeScope | None:
        """What the link of `token_hash` may do; None when no link has it."""
        ...

    async def unsubscribe_by_token(self, token_hash: str, now: float) -> UnsubscribeScope | None:
        """In one transaction: the link's address suppressed for its agent (source
        `unsubscribe`), with `agent.suppression_added` when that is new, once however many
        ask at the same time; None, and nothing done, when no link has `token_hash`."""
        ...


class EventLog(Protocol):
    """The `/v1` events log: events recorded with what they describe (by the other roles'
    writes, in the same transaction), listed and read per account, redelivered."""

    async def list_events(
        self, user_id: str, query: EventFilter, limit: int, before: tuple[int, int] | None
    ) -> list[StoredEvent]:
        """Up to `limit` of the user's events matching `query`, newest first, before the
        position `before` (an event's `seq` and `ordinal`) when given."""
        ...

    async def get_event(self, user_id: str, event_id: str) -> StoredEvent | None:
        """One of the user's events (with its delivery counts), or None."""
        ...

    async def redeliver_event(
        self, user_id: str, event_id: str, webhook_id: str | None, now: float
    ) -> list[tuple[str, str]] | None:
        """Queue the event's envelope again, due at `now`: to `webhook_id`, or to every webhook
        the event matched. The (webhook id, delivery id) pairs queued (none when `webhook_id`
        is not one it matched); None when the event is not the user's."""
        ...

    async def delete_events_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` rows of the log made before the epoch `cutoff`, oldest first
        (a row with the copies of one message folded into it goes whole); how many events
        went."""
        ...

    async def delete_webhook_deliveries_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` deliveries to webhooks queued before the epoch `cutoff` and
        settled (delivered or failed for good; a pending one is left to its worker, unless its
        webhook is disabled and its attempt has been due since before `cutoff`), oldest first,
        in one short transaction; how many went. Each holds a copy of its event's envelope,
        which must not outlive the events' window."""
        ...

    async def log_events(self, events: Sequence[NewEvent]) -> None:
        """Log `events` in a transaction of their own, each queued to the account's webhooks it
        matches: what happened with no row written beside it (a send the outbound gate
        refused)."""
        ...


class Subscribers(Protocol):
    """Webhook subscribers of the `/v1` API and the queue of their deliveries."""

    async def add_webhook(
        self, webhook: Webhook, max_per_user: int, settles: HeldKey | None = None
    ) -> None:
        """Store a new webhook, and in the same commit its record on the Idempotency-Key claim
        `settles` (as `add_outbound`); LimitReached when the user already has `max_per_user`,
        ClaimLost when that claim is no longer held."""
        ...

    async def webhook_page(self, user_id: str, limit: int, after_seq: int | None) -> list[Webhook]:
        """Up to `limit` of the user's webhooks, newest first, older than `after_seq`."""
        ...

    async def get_webhook(self, user_id: str, webhook_id: str) -> Webhook | None:
        """One of the user's webhooks, or None."""
        ...

    async def update_webhook(
        self, user_id: str, webhook_id: str, changes: WebhookChanges, cooled_before: float
    ) -> Webhook | None:
        """Apply `changes` to one of the user's webhooks; None when it is not theirs. Enabling
        it clears `auto_disabled_at`, and is refused (CoolingDown, nothing changed) when the
        sweep turned it off after `cooled_before`."""
        ...

    async def disable_failing_webhooks(
        self, now: float, since: float, min_failed: int
    ) -> list[Webhook]:
        """Turn off every enabled webhook (of any account) whose deliveries made after `since`
        count at least `min_failed` failed for good and none delivered, marking it
        auto-disabled at `now`; the webhooks turned off. One UPDATE: sweeps running at once
        (replicas) turn each webhook off once."""
        ...

    async def delete_webhook(self, user_id: str, webhook_id: str) -> bool:
        """Delete one of the user's webhooks with its deliveries; False when not theirs."""
        ...

    async def rotate_webhook_seed(
        self,
        user_id: str,
        webhook_id: str,
        seed: str,
        previous_until: float,
        settles: HeldKey | None = None,
    ) -> Webhook | None:
        """Sign with `seed` from now on; the current seed keeps signing too until
        `previous_until`; recorded on the Idempotency-Key claim `settles` in the same commit
        (as `add_outbound`). None when the webhook is not the user's."""
        ...

    async def add_test_delivery(
        self,
        user_id: str,
        webhook_id: str,
        event_id: str,
        event_type: str,
        envelope: bytes,
        now: float,
    ) -> str | None:
        """Queue a one-off delivery of `envelope` to the webhook, due now; its id, or None
        when the webhook is not the user's."""
        ...

    async def delivery_page(
        self,
        user_id: str,
        webhook_id: str,
        status: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[SubscriberDelivery] | None:
        """Up to `limit` of the webhook's deliveries (in `status`, when given), newest first;
        None when the webhook is not the user's."""
        ...

    async def claim_subscriber_deliveries(
        self,
        now: float,
        limit: int | None,
        lease_seconds: float,
        room: Mapping[str, int],
        default_room: int,
    ) -> list[ClaimedDelivery]:
        """Lease due deliveries of enabled webhooks for `lease_seconds` (as `claim_jobs`),
        oldest due first, looking at no more than `limit` (None: every) and taking at most
        `room[url]` (else `default_room`) per URL."""
        ...

    async def release_subscriber_deliveries(self, claimed: Sequence[ClaimedDelivery]) -> None:
        """Give claimed deliveries back as they were (lease dropped, no attempt counted), those
        still under the lease they were claimed under (as `release_jobs`)."""
        ...

    async def renew_delivery_lease(
        self, delivery_id: str, leased_until: float, now: float, lease_seconds: float
    ) -> float | None:
        """Move the lease of a claimed delivery from `leased_until` on to `lease_seconds` after
        now (as `renew_job_lease`) and answer that time; None when the delivery no longer holds
        that lease (another claim has taken it since, or it is gone)."""
        ...

    async def subscriber_delivery_due(
        self, delivery_id: str, leased_until: float, url: str
    ) -> bool:
        """Whether the claimed delivery is still to be POSTed to `url`: it still waits, holds the
        lease until `leased_until`, and its webhook is enabled with the URL `url`. False once the
        delivery, its webhook or the webhook's owner is deleted, the webhook is disabled or
        points elsewhere, or the delivery has passed to another claim."""
        ...

    async def finish_subscriber_attempts(self, finished: list[SubscriberAttempt]) -> None:
        """Record the attempts, and each delivery's next state, in one transaction; those whose
        delivery no longer holds the lease they were made under are skipped (another claim
        has the delivery, and its outcome to write)."""
        ...


class Templates(Protocol):
    """The email templates of `/v1` accounts, each read and changed only by its owner."""

    async def add_template(self, template: EmailTemplate, max_per_user: int) -> None:
        """Store a new template; LimitReached when the user already has `max_per_user`,
        AlreadyExists when another of theirs has its alias."""
        ...

    async def template_page(
        self, user_id: str, limit: int, before_seq: int | None
    ) -> list[EmailTemplate]:
        """Up to `limit` of the user's templates, newest first, before `before_seq`."""
        ...

    async def get_template(self, user_id: str, template_id: str) -> EmailTemplate | None:
        """One of the user's templates by id, or None."""
        ...

    async def template_by_alias(self, user_id: str, alias: str) -> EmailTemplate | None:
        """One of the user's templates by alias, or None."""
        ...

    async def update_template(
        self, user_id: str, template_id: str, changes: TemplateChanges, updated_at: str
    ) -> EmailTemplate | None:
        """Apply `changes` to one of the user's templates; None when it is not theirs,
        AlreadyExists when the new alias is another template's of theirs."""
        ...

    async def delete_template(self, user_id: str, template_id: str) -> bool:
        """Delete one of the user's templates; False when it is not theirs."""
        ...


class RateLimits(Protocol):
    """Sliding-window request counts shared by every process using the database."""

    async def hit_rate_limits(self, limits: Sequence[RateLimit], now: float) -> list[RateCount]:
        """Weigh one request made at `now` against each of `limits` (sliding windows,
        `e2a_gateway.rate_windows`) and count it against all of them when all allow it, else
        against none, atomically and shared by every process using the database; a count per
        limit, in order. Prunes a bounded number of requests that have left their windows on
        the way."""
        ...


class Idempotency(Protocol):
    """Answers to writes sent with an Idempotency-Key, per user, so a retry replays the first
    answer. A claim is taken before the write, then completed with the answer or released."""

    async def claim_idempotency_key(
        self, user_id: str, key_hash: str, request_hash: str, now: float, stale_before: float
    ) -> IdempotencyClaim:
        """Claim `key_hash` of the user for the request hashed `request_hash`, in one
        transaction: a fresh key (or a claim left unfinished since before `stale_before`, its
        request having died before it made anything) is acquired; a completed one replays for
        the same request and is a mismatch for another; one whose request made what it asked
        for (`HeldKey`) but was never completed is `made` for the same request (a mismatch for
        another), however old; a claim still running is in flight."""
        ...

    async def complete_idempotency_key(
        self, user_id: str, key_hash: str, token: str, status: int, answer: bytes, now: float
    ) -> None:
        """Store the answer of the claim `token` (nothing when the claim is no longer held)."""
        ...

    async def release_idempotency_key(
        self, user_id: str, key_hash: str, token: str, *, refused: bool = False
    ) -> None:
        """Drop the unfinished claim `token`, so a retry runs the write again; nothing when
        its request made what it asked for (`HeldKey`), so a retry answers that, unless
        `refused`: a message made was refused for good and nothing was sent."""
        ...


class DashboardSessions(Protocol):
    """Dashboard sessions signed out before they expired, on every replica alike. A session is
    a sealed cookie of which nothing is stored until it is signed out; each record is kept only
    until its session would have expired anyway."""

    async def sign_out_session(self, user_id: str, session_id: str, expires_at: float) -> None:
        """Record the user's session `session_id`, which expires at the epoch `expires_at`, as
        signed out (nothing new when it already is), announcing it (`AccessEnded`) so that the
        live streams it opened end on every replica."""
        ...

    async def session_signed_out(self, user_id: str, session_id: str) -> bool:
        """Whether the user's session `session_id` was signed out (asked on every dashboard
        request: one indexed lookup, remembered where the backend can until the next write)."""
        ...


class FeedbackBox(Protocol):
    """Feedback from anyone, kept for the operators."""

    async def add_feedback(self, feedback: Feedback) -> None:
        """Store one piece of feedback."""
        ...

    async def list_feedback(self, limit: int) -> list[Feedback]:
        """The newest `limit` pieces of feedback, newest first."""
        ...


class Retention(Protocol):
    """The retention sweep: old messages and webhook attempt records deleted in batches."""

    async def delete_messages_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` messages created before `cutoff` (RFC 3339 UTC), oldest first,
        in one short transaction: the rows with their bodies and attachments, their raw bytes
        when no other message points at them, and (by cascade) their webhook attempts. A
        message that still has a job (delivery, send, approval notice) or an outbound message
        not yet finished is never deleted. Returns how many messages went."""
        ...

    async def delete_webhook_attempts_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` webhook attempt records made before `cutoff`, oldest first, in
        one short transaction; returns how many went."""
        ...

    async def delete_idempotency_keys_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` idempotency keys claimed, and completed (if ever), before the
        epoch `cutoff`, in one short transaction; returns how many went."""
        ...

    async def delete_feedback_before(self, cutoff: str, limit: int) -> int:
        """Delete up to `limit` pieces of feedback sent before `cutoff` (RFC 3339 UTC), oldest
        first, in one short transaction; returns how many went."""

    async def purge_agents_trashed_before(self, cutoff: str, limit: int) -> AgentPurge:
        """Delete for good, in one short transaction of at most `limit` rows, agents trashed
        before `cutoff` (RFC 3339 UTC) with their messages, oldest trashed first: an agent's
        messages go (up to what is left of `limit`) before the agent itself, which goes (with
        the keys bound to it) in the transaction that finds it has none left, so an agent that
        kept much mail is purged over several transactions, and a purge stopped half-way goes
        on where it stopped. What went."""
        ...

    async def delete_signouts_before(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` records of signed-out dashboard sessions that expired before
        the epoch `cutoff`, soonest expired first, in one short transaction; returns how many
        went."""
        ...


class Storage(
    Lifecycle,
    Accounts,
    Directory,
    Mailboxes,
    Outbox,
    Mailbox,
    ApprovalReplies,
    Holds,
    JobQueueStore,
    WebhookDeliveries,
    RateLimits,
    Idempotency,
    DashboardSessions,
    FeedbackBox,
    Retention,
    EventLog,
    Subscribers,
    Suppressions,
    Templates,
    Protocol,
):
    """What the gateway needs from a database, all roles together. Implemented by the SQLite and
    PostgreSQL backends; a caller that needs one role types against that role."""
