"""How rows of the storage protocol's dataclasses map to SQL parameters and back.

Shared by both backends (SQLite and PostgreSQL), so a column added to one is encoded and decoded
identically by the other. Column lists name columns in the order the decoders read them and the
encoders write them; the backends put them into their own SQL, with their own placeholders (`?`
or `%s`). Nothing here knows an SQL dialect or touches a connection: it is pure data shaping.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from e2a_gateway.attachments import decode_attachments, encode_attachments
from e2a_gateway.signing.identity import MESSAGE_ID, SIGNED_HEADERS
from e2a_gateway.storage.base import (
    Agent,
    AgentChanges,
    ApiKey,
    AttachmentInfo,
    BodyPreview,
    BouncedRecipient,
    BounceType,
    ConversationClaim,
    Domain,
    FinishedAttempt,
    InboundMessage,
    InboxEntry,
    Job,
    MessagePage,
    OutboundContent,
    OutboundEdits,
    OutboundMessage,
    OutboundSummary,
    SigningSecret,
    StoredEarlier,
)
from e2a_gateway.storage.new_inbound import NewInboundMessage
from e2a_gateway.storage.vocabulary import (
    AGENT_DELETED,
    APPROVAL_NOTICE_JOB,
    DELIVERY_PENDING,
    HELD_FOR_REVIEW,
    HOLD_REJECTED,
    OUTBOUND,
    OUTBOUND_JOB,
    PENDING_APPROVAL,
    QUEUED,
)

AGENT_COLUMNS = (
    "email, user_id, domain, name, webhook_url, agent_mode, hitl_enabled, hitl_ttl_seconds, "
    "hitl_expiration_action, created_at, id, approval_notifications, deleted_at, "
    "inbound_gate_policy, inbound_gate_allowlist_json, inbound_gate_action, "
    "outbound_gate_policy, outbound_gate_allowlist_json, outbound_gate_action"
)
MESSAGE_COLUMNS = (
    "m.id, m.seq, m.user_id, m.agent_email, m.from_addr, m.reply_to, m.to_json, m.cc_json, "
    "m.subject, m.conversation_id, m.rfc_message_id, m.status, "
    "(SELECT r.raw FROM raw_messages r WHERE r.digest = m.raw_digest), "
    "m.auth_headers_json, m.auth_results_json, m.delivery_status, m.received_at, m.created_at, "
    "m.reading_json, m.flag_reason, m.envelope_from, m.hold, m.attachment_meta_json"
)
"""Columns of `messages m` for an InboundMessage; the raw bytes come from `raw_messages`."""
INBOX_ENTRY_COLUMNS = (
    "m.id, m.seq, m.agent_email, m.from_addr, m.to_json, m.cc_json, m.subject, "
    "m.conversation_id, m.status, m.delivery_status, m.received_at, m.created_at, m.reply_to"
)
"""Columns of `messages m` for an InboxEntry."""
OUTBOUND_COLUMNS = (
    "id, user_id, agent_email, kind, to_json, cc_json, bcc_json, subject, body_text, body_html, "
    "attachments_json, conversation_id, in_reply_to, references_json, rfc_message_id, status, "
    "approval_expires_at, created_at, created_epoch, reviewed_at, rejection_reason, method, "
    "edited, send_error, sent_at, reply_to, reviewed_by, review_method, flag_reason, "
    "auth_results_json, unsubscribe, scheduled_at"
)
OUTBOUND_SUMMARY_COLUMNS = (
    "m.id, m.seq, m.agent_email, m.to_json, m.cc_json, m.bcc_json, m.subject, m.status, "
    "m.approval_expires_at, m.created_at, m.reviewed_at, m.rejection_reason, m.method, "
    "m.edited, m.send_error, m.sent_at, m.reviewed_by, m.review_method, m.auth_results_json, "
    "m.kind, m.conversation_id, m.rfc_message_id, m.reply_to"
)
"""Columns of `messages m` for an OutboundSummary: no body, no attachments; a preview's four
columns (text's beginning, its length, has HTML, attachment names) may follow, then the
content's three (text and HTML cut, attachment infos)."""
_SUMMARY_WIDTH = 23
"""How many columns OUTBOUND_SUMMARY_COLUMNS are."""
DOMAIN_COLUMNS = (
    "user_id, domain, verification_token, verified, created_at, verified_at, last_checked_at"
)
SIGNING_SECRET_COLUMNS = "id, user_id, name, seed, secret_prefix, created_at, last_signed_at"
API_KEY_COLUMNS = (
    "k.id, k.user_id, k.name, k.key_prefix, k.created_at, k.last_used_at, k.revoked_at, "
    "k.scope, k.agent_id, k.expires_at, a.email"
)
API_KEYS_WITH_AGENTS = "api_keys k LEFT JOIN agents a ON a.id = k.agent_id"
"""What API_KEY_COLUMNS are selected from: each key with the address of the agent it is bound
to (an agent key), if that agent is still there."""
WEBHOOK_ATTEMPT_COLUMNS = "attempt, attempted_at, status_code, error, duration_ms"
JOB_COLUMNS = "id, kind, message_id, attempts, earlier_attempts, run_at, created_at"

_STORED_SIGNED = tuple(name for name in SIGNED_HEADERS if name != MESSAGE_ID)
"""The signed headers an inbound row keeps the values of: all but the message id, its own id."""
_MESSAGE_ID_AT = SIGNED_HEADERS.index(MESSAGE_ID)


def encode_signed_headers(message_id: str, headers: Mapping[str, str]) -> str:
    """`auth_headers_json` of the row of message `message_id`: a signed claim's nine headers as
    the values alone, in their order and without the message id (the row's own id) — over
    200 bytes fewer on every copy; any other set of headers as the JSON object it is."""
    if tuple(headers) == SIGNED_HEADERS and headers[MESSAGE_ID] == message_id:
        values = list(headers.values())
        del values[_MESSAGE_ID_AT]
        return orjson.dumps(values).decode()
    return orjson.dumps(dict(headers)).decode()


def decode_signed_headers(message_id: str, stored: str | None) -> dict[str, str]:
    """The headers `encode_signed_headers` stored for message `message_id`, in their order."""
    if not stored:
        return {}
    value = json.loads(stored)
    if isinstance(value, dict):
        return value
    kept = dict(zip(_STORED_SIGNED, value, strict=True))
    return {name: message_id if name == MESSAGE_ID else kept[name] for name in SIGNED_HEADERS}


# -- decoders: a row selected with the matching column list → the protocol's dataclass --------


def decode_agent(row: Sequence[Any]) -> Agent:
    return Agent(
        email=row[0],
        user_id=row[1],
        domain=row[2],
        name=row[3],
        webhook_url=row[4],
        agent_mode=row[5],
        hitl_enabled=bool(row[6]),
        hitl_ttl_seconds=row[7],
        hitl_expiration_action=row[8],
        created_at=row[9],
        id=row[10],
        approval_notifications=bool(row[11]),
        deleted_at=row[12],
        inbound_gate_policy=row[13],
        inbound_gate_allowlist=tuple(json.loads(row[14])),
        inbound_gate_action=row[15],
        outbound_gate_policy=row[16],
        outbound_gate_allowlist=tuple(json.loads(row[17])),
        outbound_gate_action=row[18],
    )


EARLIER_COLUMNS = (
    "m.id, m.direction, m.from_addr, m.agent_email, m.rfc_message_id, m.auth_headers_json, "
    "CASE WHEN m.reading_json IS NULL THEN "
    "(SELECT r.raw FROM raw_messages r WHERE r.digest = m.raw_digest) END, m.body_text, "
    "m.reading_json"
)
"""Columns of `messages m` for a StoredEarlier: the raw bytes only when no reading is kept,
since the kept one holds the message's own text already."""


def decode_earlier(row: Sequence[Any]) -> StoredEarlier:
    """A StoredEarlier from EARLIER_COLUMNS; outbound mail is from its agent."""
    outbound = row[1] == OUTBOUND
    return StoredEarlier(
        id=row[0],
        direction="outbound" if outbound else "inbound",
        from_addr=row[3] if outbound else row[2],
        rfc_message_id=row[4],
        auth_headers=decode_signed_headers(row[0], row[5]),
        raw_message=None if outbound or row[6] is None else bytes(row[6]),
        body_text=row[7] if outbound else None,
        reading=json.loads(row[8]) if row[8] is not None else None,
    )


def decode_message(row: Sequence[Any]) -> InboundMessage:
    return InboundMessage(
        id=row[0],
        seq=row[1],
        user_id=row[2],
        agent_email=row[3],
        from_addr=row[4],
        reply_to=row[5],
        to=json.loads(row[6]),
        cc=json.loads(row[7]),
        subject=row[8],
        conversation_id=row[9],
        rfc_message_id=row[10],
        status=row[11],
        raw_message=bytes(row[12] or b""),
        auth_headers=decode_signed_headers(row[0], row[13]),
        authentication_results=json.loads(row[14]),
        delivery_status=row[15],
        received_at=row[16],
        created_at=row[17],
        reading=json.loads(row[18]) if row[18] is not None else None,
        flag_reason=row[19],
        envelope_from=row[20] or "",
        hold=row[21],
        attachments=decode_attachments(row[22]),
    )


OUTBOUND_STATUS_INDEX = 15
"""Position of `status` in a row selected with OUTBOUND_COLUMNS."""


def decode_outbound(row: Sequence[Any]) -> OutboundMessage:
    return OutboundMessage(
        id=row[0],
        user_id=row[1],
        agent_email=row[2],
        kind=row[3],
        to=json.loads(row[4]),
        cc=json.loads(row[5]),
        bcc=json.loads(row[6]),
        subject=row[7],
        body_text=row[8],
        body_html=row[9],
        attachments=json.loads(row[10]) if row[10] is not None else None,
        conversation_id=row[11],
        in_reply_to=row[12],
        references=json.loads(row[13]),
        email_message_id=row[14],
        status=row[15],
        approval_expires_at=row[16],
        created_at=row[17],
        created_epoch=row[18],
        reviewed_at=row[19],
        rejection_reason=row[20],
        method=row[21],
        edited=bool(row[22]),
        send_error=row[23],
        sent_at=row[24],
        reply_to=row[25],
        reviewed_by=row[26],
        review_method=row[27],
        flag_reason=row[28],
        recipient_results=recipient_results(row[29]),
        unsubscribe=row[30],
        scheduled_at=row[31],
    )


def decode_outbound_summary(
    row: Sequence[Any], *, preview: bool = False, content: bool = False
) -> OutboundSummary:
    """An OutboundSummary from OUTBOUND_SUMMARY_COLUMNS, with its preview when `preview`
    (the preview's columns follow them) and its content when `content` (its columns last)."""
    shown = None
    if preview:
        text, length, has_html, names = row[_SUMMARY_WIDTH : _SUMMARY_WIDTH + 4]
        shown = BodyPreview(text, length or 0, bool(has_html), json.loads(names))
    cut = None
    if content:
        text, html, infos = row[-3:]
        cut = OutboundContent(text, html, [AttachmentInfo(*info) for info in json.loads(infos)])
    return OutboundSummary(
        id=row[0],
        seq=row[1],
        agent_email=row[2],
        to=json.loads(row[3]),
        cc=json.loads(row[4]),
        bcc=json.loads(row[5]),
        subject=row[6],
        status=row[7],
        approval_expires_at=row[8],
        created_at=row[9],
        reviewed_at=row[10],
        rejection_reason=row[11],
        method=row[12],
        edited=bool(row[13]),
        send_error=row[14],
        sent_at=row[15],
        reviewed_by=row[16],
        review_method=row[17],
        recipient_results=recipient_results(row[18]),
        kind=row[19],
        conversation_id=row[20],
        email_message_id=row[21],
        reply_to=row[22],
        preview=shown,
        content=cut,
    )


def decode_domain(row: Sequence[Any]) -> Domain:
    return Domain(
        user_id=row[0],
        domain=row[1],
        verification_token=row[2],
        verified=bool(row[3]),
        created_at=row[4],
        verified_at=row[5],
        last_checked_at=row[6],
    )


def decode_signing_secret(row: Sequence[Any]) -> SigningSecret:
    return SigningSecret(
        id=row[0],
        user_id=row[1],
        name=row[2],
        seed=row[3],
        secret_prefix=row[4],
        created_at=row[5],
        last_signed_at=row[6],
    )


def decode_api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0],
        user_id=row[1],
        name=row[2],
        key_prefix=row[3],
        created_at=row[4],
        last_used_at=row[5],
        revoked_at=row[6],
        scope=row[7],
        agent_id=row[8],
        expires_at=row[9],
        agent_email=row[10],
    )


# -- encoders: a dataclass → the parameters of the backends' INSERT statements ----------------


def api_key_params(key: ApiKey, key_hash: str) -> tuple[Any, ...]:
    """For `(id, user_id, name, key_hash, key_prefix, created_at, scope, agent_id,
    expires_at)`."""
    return (
        key.id,
        key.user_id,
        key.name,
        key_hash,
        key.key_prefix,
        key.created_at,
        key.scope,
        key.agent_id,
        key.expires_at,
    )


def signing_secret_params(secret: SigningSecret) -> tuple[Any, ...]:
    """For `(id, user_id, name, seed, secret_prefix, created_at)`."""
    return (
        secret.id,
        secret.user_id,
        secret.name,
        secret.seed,
        secret.secret_prefix,
        secret.created_at,
    )


def domain_params(domain: Domain) -> tuple[Any, ...]:
    """For `(user_id, domain, verification_token, created_at)` (`verified` starts false)."""
    return (domain.user_id, domain.domain, domain.verification_token, domain.created_at)


def agent_params(agent: Agent) -> tuple[Any, ...]:
    """For AGENT_COLUMNS (both drivers store a Python bool as their boolean column wants)."""
    return (
        agent.email,
        agent.user_id,
        agent.domain,
        agent.name,
        agent.webhook_url,
        agent.agent_mode,
        agent.hitl_enabled,
        agent.hitl_ttl_seconds,
        agent.hitl_expiration_action,
        agent.created_at,
        agent.id,
        agent.approval_notifications,
        agent.deleted_at,
        agent.inbound_gate_policy,
        json.dumps(list(agent.inbound_gate_allowlist)),
        agent.inbound_gate_action,
        agent.outbound_gate_policy,
        json.dumps(list(agent.outbound_gate_allowlist)),
        agent.outbound_gate_action,
    )


def raw_digest(raw: bytes) -> str:
    """The key of raw message bytes in `raw_messages`: their SHA-256, lowercase hex."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class RawMessages:
    """The raw bytes of a batch of inbound messages: each message's digest, in order, and
    each distinct message's bytes once (what goes into `raw_messages`), by digest."""

    digests: list[str]
    distinct: dict[str, bytes]


def raw_messages_of(messages: Sequence[NewInboundMessage]) -> RawMessages:
    """Digest the raw bytes of `messages`, hashing bytes shared by several recipients of one
    message (the same object) once, and none whose digest came with them. CPU-bound for big
    mail: call it in a worker thread."""
    by_object: dict[int, str] = {}
    digests: list[str] = []
    distinct: dict[str, bytes] = {}
    for message in messages:
        raw = message.raw_message
        digest = by_object.get(id(raw))
        if digest is None:
            digest = by_object[id(raw)] = message.raw_digest or raw_digest(raw)
            distinct.setdefault(digest, raw)
        digests.append(digest)
    return RawMessages(digests, distinct)


class JsonOnce:
    """`json.dumps` for the rows of one batch, encoding a value that several rows share (the
    same object: the copies of one message share its recipients and verdicts) once. Values are
    known by identity and kept with their text, so an id is never reused while it is known."""

    def __init__(self) -> None:
        self._encoded: dict[int, tuple[object, str]] = {}

    def __call__(self, value: object) -> str:
        kept = self._encoded.get(id(value))
        if kept is not None and kept[0] is value:
            return kept[1]
        text = json.dumps(value)
        self._encoded[id(value)] = (value, text)
        return text


def value_marks(columns: str) -> str:
    """One `?` placeholder for each of `columns` (a comma-separated list)."""
    return ", ".join("?" for _ in columns.split(","))


OWN_INSERT_COLUMNS = (
    "id, user_id, agent_email, conversation_id, auth_headers_json, delivery_status, "
    "created_at, hold, hold_expires_at, flag_reason"
)
"""Columns of an inbound `messages` row that are each agent's own (`own_params`)."""
CONTENT_INSERT_COLUMNS = (
    "envelope_from, from_addr, reply_to, to_json, cc_json, subject, rfc_message_id, raw_digest, "
    "auth_results_json, client_ip, helo, received_at, attachment_meta_json"
)
"""Columns of what the copies of one message for many agents share (`content_params`): of
`message_contents`, and of the whole `messages` row of a message for one agent."""
INBOUND_INSERT_COLUMNS = f"{OWN_INSERT_COLUMNS}, {CONTENT_INSERT_COLUMNS}"
"""Columns of the whole `messages` row of a message for one agent (`inbound_params`)."""
_LEFT_EMPTY = "envelope_from, from_addr, to_json, cc_json, subject, auth_results_json, received_at"
"""The shared columns of `messages` that may not be NULL: a copy's narrow row leaves them ''."""
COPY_INSERT_COLUMNS = f"{OWN_INSERT_COLUMNS}, content_seq, {_LEFT_EMPTY}"
"""Columns of a copy's narrow `messages` row: its own fields, the seq of its content, and
the shared columns that may not be NULL, left empty (`COPY_VALUES`)."""
COPY_VALUES = f"{value_marks(OWN_INSERT_COLUMNS)}, ?, " + ", ".join(
    "''" for _ in _LEFT_EMPTY.split(",")
)


def _hold_of(message: NewInboundMessage) -> str | None:
    """The `hold` column of an inbound message: held for review, rejected when its agent's
    gate blocked it, else NULL."""
    if message.hold_expires_at is not None:
        return HELD_FOR_REVIEW
    return HOLD_REJECTED if message.blocked else None


def own_params(message: NewInboundMessage, user_id: str, cloud: bool) -> tuple[Any, ...]:
    """For OWN_INSERT_COLUMNS: what one agent's copy has of its own. A cloud agent's message
    awaits webhook delivery (once released, when held for review); a blocked one is stored as
    a rejected hold."""
    return (
        message.id,
        user_id,
        message.agent_email,
        message.conversation_id,
        encode_signed_headers(message.id, message.auth_headers),
        DELIVERY_PENDING if cloud else None,
        message.received_at,
        _hold_of(message),
        message.hold_expires_at,
        message.flag_reason,
    )


def content_params(
    message: NewInboundMessage, digest: str, encode: Callable[[object], str] = json.dumps
) -> tuple[Any, ...]:
    """For CONTENT_INSERT_COLUMNS: the shared fields of `message` and its copies; the raw
    bytes are stored apart, under `digest`, and the JSON columns are encoded by `encode` (a
    `JsonOnce` for a batch)."""
    return (
        message.envelope_from,
        message.from_addr,
        message.reply_to,
        encode(message.to),
        encode(message.cc),
        message.subject,
        message.rfc_message_id,
        digest,
        encode(message.authentication_results),
        message.client_ip,
        message.helo,
        message.received_at,
        encode_attachments(message.attachments),
    )


def inbound_params(
    message: NewInboundMessage,
    user_id: str,
    cloud: bool,
    digest: str,
    encode: Callable[[object], str] = json.dumps,
) -> tuple[Any, ...]:
    """For INBOUND_INSERT_COLUMNS: the whole row of a message for one agent."""
    return own_params(message, user_id, cloud) + content_params(message, digest, encode)


def copy_params(
    message: NewInboundMessage, user_id: str, cloud: bool, content_seq: int
) -> tuple[Any, ...]:
    """For COPY_INSERT_COLUMNS (the placeholders of COPY_VALUES): one agent's copy of a
    message whose shared fields are the content row `content_seq`."""
    return (*own_params(message, user_id, cloud), content_seq)


OUTBOUND_INSERT_COLUMNS = (
    "id, user_id, agent_email, direction, envelope_from, "
    "from_addr, to_json, cc_json, bcc_json, subject, conversation_id, in_reply_to, "
    "references_json, rfc_message_id, status, auth_headers_json, "
    "auth_results_json, kind, body_text, body_html, attachments_json, "
    "approval_expires_at, method, received_at, created_at, created_epoch, reply_to, flag_reason, "
    "unsubscribe, scheduled_at"
)


def outbound_params(message: OutboundMessage) -> tuple[Any, ...]:
    """For OUTBOUND_INSERT_COLUMNS minus the constants the backend writes itself: `direction`
    ('outbound'), `auth_headers_json` and `auth_results_json` ('{}'). Outbound rows have no
    raw bytes (`raw_digest` stays null)."""
    return (
        message.id,
        message.user_id,
        message.agent_email,
        message.agent_email,
        message.agent_email,
        json.dumps(message.to),
        json.dumps(message.cc),
        json.dumps(message.bcc),
        message.subject,
        message.conversation_id,
        message.in_reply_to,
        json.dumps(message.references),
        message.email_message_id,
        message.status,
        message.kind,
        message.body_text,
        message.body_html,
        json.dumps(message.attachments) if message.attachments is not None else None,
        message.approval_expires_at,
        message.method,
        message.created_at,
        message.created_at,
        message.created_epoch,
        message.reply_to,
        message.flag_reason,
        message.unsubscribe,
        message.scheduled_at,
    )


def outbound_job_kind(message: OutboundMessage) -> str | None:
    """The job a newly added outbound message needs: a send, an approval notice, or none."""
    if message.status == QUEUED:
        return OUTBOUND_JOB
    if message.status == PENDING_APPROVAL:
        return APPROVAL_NOTICE_JOB
    return None


def attempt_params(finished: Iterable[FinishedAttempt]) -> list[tuple[Any, ...]]:
    """For `(message_id, attempt, attempted_at, status_code, error, duration_ms)` followed by the
    message id again (the attempt is recorded only while its message exists)."""
    return [
        (
            item.message_id,
            item.attempt.attempt,
            item.attempt.attempted_at,
            item.attempt.status_code,
            item.attempt.error,
            item.attempt.duration_ms,
            item.message_id,
        )
        for item in finished
    ]


def delivery_status_params(finished: Iterable[FinishedAttempt]) -> list[tuple[Any, ...]]:
    """For `SET delivery_status = _ WHERE id = _`."""
    return [(item.outcome, item.message_id) for item in finished]


def retry_params(finished: Iterable[FinishedAttempt]) -> list[tuple[Any, ...]]:
    """For `SET run_at = _ ... WHERE id = _`, for the jobs due again."""
    return [(item.retry_at, item.job_id) for item in finished if item.outcome == "retrying"]


def done_job_ids(finished: Iterable[FinishedAttempt]) -> list[int]:
    """The jobs to drop: their deliveries succeeded or gave up."""
    return [item.job_id for item in finished if item.outcome != "retrying"]


# -- pure helpers both backends apply around their queries ------------------------------------


def agent_assignments(changes: AgentChanges) -> dict[str, Any]:
    """Column → value for the agent fields a partial update sets."""
    assignments = {column: value for column, value in vars(changes).items() if value is not None}
    for direction in ("inbound", "outbound"):
        allowlist = assignments.pop(f"{direction}_gate_allowlist", None)
        if allowlist is not None:
            assignments[f"{direction}_gate_allowlist_json"] = json.dumps(list(allowlist))
    return assignments


def edit_assignments(edits: OutboundEdits | None) -> dict[str, Any]:
    """Column → value for the fields a reviewer changed."""
    if edits is None:
        return {}
    changes: dict[str, Any] = {}
    for name, column in (
        ("subject", "subject"),
        ("body_text", "body_text"),
        ("body_html", "body_html"),
    ):
        value = getattr(edits, name)
        if value is not None:
            changes[column] = value
    for name in ("to", "cc", "bcc", "attachments"):
        value = getattr(edits, name)
        if value is not None:
            changes[f"{name}_json"] = json.dumps(value)
    return changes


def inbox_entries(
    rows: Sequence[Sequence[Any]], page_size: int
) -> tuple[list[InboxEntry], int | None]:
    """The entries of a page from up to `page_size + 1` rows selected with INBOX_ENTRY_COLUMNS
    in `seq` order, and the position after which the next page starts (None on the last)."""
    entries = [
        InboxEntry(
            id=row[0],
            seq=row[1],
            agent_email=row[2],
            from_addr=row[3],
            to=json.loads(row[4]),
            cc=json.loads(row[5]),
            subject=row[6],
            conversation_id=row[7],
            status=row[8],
            delivery_status=row[9],
            received_at=row[10],
            created_at=row[11],
            reply_to=row[12],
        )
        for row in rows[:page_size]
    ]
    return entries, entries[-1].seq if len(rows) > page_size else None


def message_page(rows: Sequence[Sequence[Any]], page_size: int) -> MessagePage:
    """A page from up to `page_size + 1` rows selected with MESSAGE_COLUMNS in `seq` order (the
    extra row only says that another page follows)."""
    messages = [decode_message(row) for row in rows[:page_size]]
    next_after = messages[-1].seq if len(rows) > page_size else None
    return MessagePage(messages=messages, next_after=next_after)


def chosen_conversation(
    referenced: str | None,
    claim: ConversationClaim | None,
    claimed_exists: bool,
    claimed_with_sender: bool,
) -> str | None:
    """The conversation a message joins (see Storage.conversation_for): the claim when the
    agent has no message in it yet (`claimed_exists`), has one from or to the same sender
    (`claimed_with_sender`) or the references lead to it; else where the references lead."""
    if claim is None:
        return referenced
    if not claimed_exists or claimed_with_sender or referenced == claim.conversation_id:
        return claim.conversation_id
    return referenced


def first_conversation(rows: Iterable[Sequence[Any]], rfc_message_ids: list[str]) -> str | None:
    """From `(rfc_message_id, conversation_id)` rows newest first: the conversation of the first
    of `rfc_message_ids` that any row names (its newest row when several do)."""
    found: dict[str, str | None] = {}
    for rfc_id, conversation in rows:
        found.setdefault(rfc_id, conversation)
    for rfc_id in rfc_message_ids:
        if rfc_id in found:
            return found[rfc_id]
    return None


def decode_job(row: Sequence[Any], leased_until: float) -> Job:
    """A job from a JOB_COLUMNS row, as its claim leased it until `leased_until`."""
    job_id, kind, message_id, attempts, earlier_attempts, run_at, created_at = row
    return Job(
        job_id, kind, message_id, attempts, earlier_attempts, run_at, created_at, leased_until
    )


def jobs_within_room(
    candidates: Iterable[Sequence[Any]],
    room: Mapping[str, int],
    default_room: int,
    leased_until: float,
) -> list[Job]:
    """From JOB_COLUMNS rows each followed by its webhook URL, in order: the jobs that fit, at
    most `room[url]` (else `default_room`) per URL, as leased until `leased_until`."""
    left = dict(room)
    jobs = []
    for *job, url in candidates:
        free = left.get(url, default_room)
        if free > 0:
            left[url] = free - 1
            jobs.append(decode_job(job, leased_until))
    return jobs


RECIPIENT_ACCEPTED = "accepted"
RECIPIENT_LOCAL_PREFIX = "local "
RECIPIENT_REFUSED_PREFIX = "refused: "
RECIPIENT_BOUNCED_PREFIX = "bounced: "
"""How the send worker records a settled recipient of an outbound message: the relay accepted
it, a local inbox took it (`local <how>`), or the relay refused it (`refused: <reply>`); and how
a failure report about a recipient the relay took is recorded (`reported_result`)."""
RELAY_REFUSAL = re.compile(
    r"^RCPT TO: (?!.*\b(?:relay(?:ing)?(?: access)? (?:denied|not permitted|not allowed)"
    r"|unable to relay)\b)(5\d\d)(?:[ -](5\.\d{1,3}\.\d{1,3}))?",
    re.IGNORECASE,
)
"""A relay's permanent reply to one recipient (`RCPT TO: 550 5.1.1 …`): its code and, when
given, its enhanced code. Only RCPT's reply is about the address: a refusal while the session
is set up (greeting, EHLO, STARTTLS, AUTH), of the sender (MAIL FROM) or of the message (DATA)
fails the message, but says nothing of its recipients, and suppresses none of them. Nor does
a relay's refusal to relay for the gateway, though it comes at RCPT (Postfix's `554 5.7.1 …
Relay access denied`, Sendmail's `Relaying denied`, Exim's `relay not permitted`, Exchange's
`Unable to relay`): its credentials unset, its network not trusted, or `outbound_smtp`
pointing back at this gateway's own MX."""


def reported_result(bounced: BouncedRecipient) -> str:
    """The result of a recipient a failure report came back for: `bounced: <detail>` for a
    permanent bounce, `bounced: transient: <detail>` (or `undetermined`) for a failure that
    says nothing against the address (mailbox full, the agent's DMARC refused, the remote MTA
    gave up retrying): the recipient did not get the message either way."""
    kind = "" if bounced.bounce_type == "permanent" else f"{bounced.bounce_type}: "
    detail = bounced.detail or f"{bounced.bounce_type} bounce reported"
    return f"{RECIPIENT_BOUNCED_PREFIX}{kind}{detail}"


def reported_bounce_type(result: str) -> BounceType | None:
    """How a recipient bounced by the failure report its `result` records (`reported_result`);
    None when no report came back for it."""
    if not result.startswith(RECIPIENT_BOUNCED_PREFIX):
        return None
    rest = result.removeprefix(RECIPIENT_BOUNCED_PREFIX)
    for kind in _NOT_PERMANENT:
        if rest.startswith(f"{kind}: "):
            return kind
    return "permanent"


_NOT_PERMANENT: tuple[BounceType, ...] = ("transient", "undetermined")


def bounced_result(result: str) -> bool:
    """Whether a recipient's `result` says its mail bounced: the relay refused the address for
    good (a 5xx to its RCPT) or a failure report came back for it. Such a recipient is
    `bounced` on `/v1` (outbound/rollup.py), and mail that reached nobody and bounced for one of
    its recipients is stored as `bounced` rather than `failed`, in whichever attempt that was."""
    if result.startswith(RECIPIENT_BOUNCED_PREFIX):
        return True
    refused = result.startswith(RECIPIENT_REFUSED_PREFIX)
    return (
        refused and RELAY_REFUSAL.match(result.removeprefix(RECIPIENT_REFUSED_PREFIX)) is not None
    )


SCHEDULE_CANCELED_ERROR = (
    "submission canceled: the scheduled message was in the trash at its scheduled time; "
    "restoring it does not send it"
)
"""The error of a scheduled message (or its agent) restored from the trash at or after its
`scheduled_at`: it returns failed, its send canceled (e2a's rule)."""
AGENT_DELETED_ERROR = (
    f"{AGENT_DELETED}: the sending agent was moved to the trash before this message was sent; "
    "restoring the agent does not send it"
)
"""The send error (and `email.failed` reason) of a send cancelled by its agent's trash."""


# Outbound rows never use `auth_results_json` for authentication results (those are about
# inbound senders); for them it holds the per-recipient hand-off results instead.
RECIPIENT_RESULTS = (
    f"SELECT auth_results_json FROM messages WHERE id = ? AND direction = '{OUTBOUND}'"
)


def recipient_results(stored: str | None) -> dict[str, str]:
    """An outbound row's per-recipient results, from its `auth_results_json`."""
    results: dict[str, str] = json.loads(stored or "{}")
    return results


def settled_recipient_results(
    stored: Mapping[str, str], results: Mapping[str, str]
) -> dict[str, str]:
    """`results` of an attempt on top of the `stored` ones, but for the recipients a bounce
    report came back for: a bounce is final for its recipient, so an attempt that heard the
    relay take a copy before the report was recorded does not write `accepted` over it."""
    reported = {
        recipient: result
        for recipient, result in stored.items()
        if result.startswith(RECIPIENT_BOUNCED_PREFIX)
    }
    return {**stored, **results, **reported}


def merged_recipient_results(stored: str | None, results: Mapping[str, str]) -> str:
    """The `auth_results_json` holding `results` on top of the stored ones (a reported bounce
    kept, `settled_recipient_results`)."""
    return json.dumps(settled_recipient_results(recipient_results(stored), results))


# -- data rights: a user's export, shaped once for both backends -------------------------------

EXPORT_SIGNING_SECRET_COLUMNS = "id, name, secret_prefix, created_at, last_signed_at"
"""A signing secret's metadata: never `seed`, from which the secret itself is derived."""

EXPORT_MESSAGE_COLUMNS = (
    "id, direction, agent_email, kind, from_addr, reply_to, to_json, cc_json, bcc_json, "
    "subject, conversation_id, rfc_message_id, in_reply_to, status, delivery_status, "
    "reviewed_at, rejection_reason, method, send_error, received_at, created_at, "
    "coalesce((SELECT length(r.raw) FROM raw_messages r WHERE r.digest = m.raw_digest), 0)"
)
"""Message metadata for an export, inbound and outbound alike: no raw bytes, bodies or
attachments, no signed headers."""


def user_export(
    user_row: Sequence[Any] | None,
    agent_rows: Iterable[Sequence[Any]],
    domain_rows: Iterable[Sequence[Any]],
    api_key_rows: Iterable[Sequence[Any]],
    signing_secret_rows: Iterable[Sequence[Any]],
) -> dict[str, Any]:
    """The JSON-ready records of one user's export from rows selected with `id, email,
    created_at`, AGENT_COLUMNS, DOMAIN_COLUMNS, API_KEY_COLUMNS and
    EXPORT_SIGNING_SECRET_COLUMNS (its messages: `export_message`). Holds no key hash, signing
    seed or secret."""
    user = (
        {"id": user_row[0], "email": user_row[1], "created_at": user_row[2]}
        if user_row is not None
        else None
    )
    agents = []
    for row in agent_rows:
        agent = decode_agent(row)
        agents.append(
            {
                "email": agent.email,
                "domain": agent.domain,
                "name": agent.name,
                "webhook_url": agent.webhook_url,
                "agent_mode": agent.agent_mode,
                "hitl_enabled": agent.hitl_enabled,
                "hitl_ttl_seconds": agent.hitl_ttl_seconds,
                "hitl_expiration_action": agent.hitl_expiration_action,
                "approval_notifications": agent.approval_notifications,
                "inbound_gate": {
                    "policy": agent.inbound_gate_policy,
                    "allowlist": list(agent.inbound_gate_allowlist),
                    "action": agent.inbound_gate_action,
                },
                "outbound_gate": {
                    "policy": agent.outbound_gate_policy,
                    "allowlist": list(agent.outbound_gate_allowlist),
                    "action": agent.outbound_gate_action,
                },
                "created_at": agent.created_at,
                **({"deleted_at": agent.deleted_at} if agent.deleted_at else {}),
            }
        )
    domains = []
    for row in domain_rows:
        domain = decode_domain(row)
        domains.append(
            {
                "domain": domain.domain,
                "verified": domain.verified,
                "verification_token": domain.verification_token,
                "created_at": domain.created_at,
                "verified_at": domain.verified_at,
            }
        )
    api_keys = []
    for row in api_key_rows:
        key = decode_api_key(row)
        api_keys.append(
            {
                "id": key.id,
                "name": key.name,
                "key_prefix": key.key_prefix,
                "created_at": key.created_at,
                "last_used_at": key.last_used_at,
                "revoked_at": key.revoked_at,
                "scope": key.scope,
                "agent_email": key.agent_email,
                "expires_at": key.expires_at,
            }
        )
    signing_secrets = [
        {
            "id": row[0],
            "name": row[1],
            "secret_prefix": row[2],
            "created_at": row[3],
            "last_signed_at": row[4],
        }
        for row in signing_secret_rows
    ]
    return {
        "user": user,
        "agents": agents,
        "domains": domains,
        "api_keys": api_keys,
        "signing_secrets": signing_secrets,
    }


def export_message(row: Sequence[Any]) -> dict[str, Any]:
    """The JSON-ready metadata of an exported message from a row of EXPORT_MESSAGE_COLUMNS."""
    inbound = row[1] == "inbound"
    message: dict[str, Any] = {
        "id": row[0],
        "direction": row[1],
        "agent_email": row[2],
        "from": row[4],
        "reply_to": row[5],
        "to": json.loads(row[6]),
        "cc": json.loads(row[7]),
        "subject": row[9],
        "conversation_id": row[10],
        "rfc_message_id": row[11],
        "status": row[13],
        "received_at": row[19],
        "created_at": row[20],
    }
    if inbound:
        message["delivery_status"] = row[14]
        message["size_bytes"] = int(row[21])
    else:
        message.update(
            {
                "kind": row[3],
                "bcc": json.loads(row[8]),
                "in_reply_to": row[12],
                "reviewed_at": row[15],
                "rejection_reason": row[16],
                "method": row[17],
                "send_error": row[18],
            }
        )
    return message


DELETED_TABLES = (
    "agents",
    "messages",
    "domains",
    "api_keys",
    "signing_secrets",
    "jobs",
    "webhook_attempts",
    "agent_unsubscribe_tokens",
    "agent_suppressions",
    "users",
)
"""The tables `delete_user` empties of a user's rows, in the order its counts are reported
(`agent_suppressions`: the rows of `suppressions` that block one agent's sending, e2a's table
of that name)."""


RATE_LIMIT_PRUNE_BATCH = 100
"""At most this many expired rate-limit windows are deleted by one counted request."""
