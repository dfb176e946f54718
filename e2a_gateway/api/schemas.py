"""Response bodies of the REST API as pydantic models, for the OpenAPI document.

The handlers build their answers as plain dicts (e2a_gateway/web/views.py and the blueprints); these
models describe exactly those dicts, strictly (unknown fields are not allowed), and
tests/test_openapi.py checks real answers against them so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from e2a_gateway.operations.drafts import AttachmentIn
from e2a_gateway.storage.base import OutboundStatus

Timestamp = Annotated[
    str,
    Field(json_schema_extra={"format": "date-time"}, examples=["2026-01-31T12:00:00Z"]),
]
"""RFC 3339 UTC, whole seconds, `Z` suffix."""


class ResponseBody(BaseModel):
    """Base of every response model: the documented fields and no others."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ErrorDetail(ResponseBody):
    """What went wrong: a stable snake_case code to branch on and a sentence for people."""

    code: str = Field(examples=["invalid_request"])
    message: str


class ErrorBody(ResponseBody):
    """Every non-2xx JSON answer."""

    error: ErrorDetail


class StorageState(ResponseBody):
    """Which storage backend is in use and whether it answers (`detail` says why not)."""

    backend: Literal["sqlite", "postgresql"]
    state: Literal["up", "down", "schema_unknown"]
    """`schema_unknown`: a newer e2a migrated the database; this replica must be upgraded."""
    detail: str | None = None


class Health(ResponseBody):
    """`GET /api/health` while storage answers."""

    status: Literal["ok"]
    storage: StorageState


class HealthDegraded(ResponseBody):
    """`GET /api/health` when storage does not answer, or holds a schema this e2a does not know."""

    status: Literal["degraded"]
    storage: StorageState


class Info(ResponseBody):
    """`GET /api/v1/info`: what a client needs to know before it logs in."""

    shared_domain: str | None
    slug_registration_enabled: bool
    public_url: str | None
    version: str


class OpenApiDocument(ResponseBody):
    """`GET /api/v1/openapi.json`: this document (https://spec.openapis.org/oas/v3.1.0)."""

    openapi: Literal["3.1.0"]
    info: dict[str, Any]
    security: list[dict[str, list[str]]]
    paths: dict[str, dict[str, Any]]
    components: dict[str, Any]


class Agent(ResponseBody):
    """An agent mailbox; `id` is its address."""

    id: str
    email: str
    domain: str
    name: str
    webhook_url: str | None
    agent_mode: Literal["cloud", "local"]
    domain_verified: bool
    hitl_enabled: bool
    hitl_ttl_seconds: int = Field(ge=1, le=604800)
    hitl_expiration_action: Literal["reject", "approve"]
    approval_notifications: bool = Field(
        description="Whether the owner is emailed when a message is held for approval "
        "(default true; an addition to e2a 2.x)."
    )
    created_at: Timestamp


class AgentList(ResponseBody):
    """`GET /agents`: the caller's agents."""

    agents: list[Agent]


class AgentDeleted(ResponseBody):
    """`DELETE /agents/{email}`."""

    status: Literal["deleted"]


class MxRecord(ResponseBody):
    """The MX record that routes a domain's mail to this gateway."""

    host: Literal["@"]
    value: str
    priority: int


class TxtRecord(ResponseBody):
    """The TXT record at the apex that proves ownership."""

    host: Literal["@"]
    value: str


class DkimKeyRecord(ResponseBody):
    """The TXT record publishing the key outbound mail is DKIM-signed with (`d=` the domain):
    `host` `<selector>._domainkey` under the domain, `value` `v=DKIM1; k=rsa; p=<key>`."""

    host: str = Field(pattern=r"^[^.]+(\.[^.]+)*\._domainkey$")
    value: str = Field(pattern=r"^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$")


class DnsRecords(ResponseBody):
    """The records a domain's owner publishes; `dkim` only when the gateway signs outbound
    mail (`dkim.selector`), `dkim_next` only while a key rotation is under way
    (`dkim.next_selector`): the record of the key that signs after the switch."""

    mx: MxRecord
    txt: TxtRecord
    dkim: DkimKeyRecord | None = None
    dkim_next: DkimKeyRecord | None = None


class Domain(ResponseBody):
    """A custom domain and the DNS records that verify it."""

    domain: str
    verified: bool
    verification_token: str = Field(pattern=r"^e2a-verify=[0-9a-f]{32}$")
    dns_records: DnsRecords
    created_at: Timestamp
    verified_at: Timestamp | None


class DomainList(ResponseBody):
    """`GET /domains`."""

    domains: list[Domain]


class InboundMessageSummary(ResponseBody):
    """An inbound message as lists show it."""

    message_id: str
    from_: str = Field(alias="from")
    to: list[str]
    cc: list[str]
    reply_to: list[str] = Field(description="the addresses its Reply-To names, in order")
    recipient: str
    subject: str
    conversation_id: str | None
    status: Literal["unread", "read"]
    created_at: Timestamp


class InboundAttachment(ResponseBody):
    """An attachment of an inbound message, parsed by the gateway."""

    filename: str | None
    content_type: str
    size: int = Field(ge=0)
    content_id: str | None


class TrustSender(ResponseBody):
    """The gateway's verdict on the message's From: address, and the result that makes it
    verified (`basis`: `dmarc=pass`, `dkim=pass`, `spf=pass`, `agent`; null when unverified)."""

    address: str
    verified: bool
    entity_type: str
    authentication_results: dict[str, str]
    basis: str | None


class QuoteAttribution(ResponseBody):
    """What a message says about where a quote comes from, as written in it."""

    text: str
    name: str | None
    address: str | None
    date: str | None
    subject: str | None
    forwarded: bool


class QuoteSource(ResponseBody):
    """The mail of the agent's store a quote comes from: `contents` is `match` (the quote is in
    that mail's own text), `differs` or `not_kept` (that mail's body is gone)."""

    message_id: str
    direction: Literal["inbound", "outbound"]
    from_: str = Field(alias="from")
    verified: bool
    contents: Literal["match", "differs", "not_kept"]


class TrustPart(ResponseBody):
    """Lines `start`..`end` of the body: who wrote them (`author`), and whether that is proven
    (`verified`). Quoted parts name their `source` in the store, or null."""

    kind: Literal["authored", "quoted", "signature"]
    depth: int = Field(ge=0)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    content: str
    attribution: QuoteAttribution | None
    author: str | None
    verified: bool
    source: QuoteSource | None = None


class Trust(ResponseBody):
    """The trust map of a message (docs/replies.md)."""

    sender: TrustSender
    parts: list[TrustPart]
    quoted_unverified: bool


class InboundMessage(InboundMessageSummary):
    """A full inbound message: the summary, signed headers, the raw bytes and the parsed body,
    its new text (`reply_text`) and its trust map (`trust`).

    `delivery_status` is present for messages of cloud (webhook) agents only."""

    auth_headers: dict[str, str]
    raw_message: str = Field(description="standard base64 of the bytes received in DATA")
    received_at: Timestamp
    text_body: str | None
    html_body: str | None
    attachments: list[InboundAttachment]
    authentication_results: dict[str, str]
    delivery_status: Literal["pending", "delivered", "retrying", "failed"] | None = None
    reply_text: str = Field(
        description="what the sender wrote in this message: no quoted history, no signature"
    )
    trust: Trust


class InboundMessagePage(ResponseBody):
    """`GET /agents/{email}/messages`: one page, oldest first."""

    messages: list[InboundMessageSummary]
    next_token: str | None


class OutboundMessage(ResponseBody):
    """Mail an agent sends. `body_text`, `body_html` and `attachments` are present only while
    the message is not final (terminal, or handed on); `error` explains a failed or retried
    hand-off; `sent_at` is when it was handed on (`sent`, or `expired_approved` once sent)."""

    id: str
    message_id: str
    agent_id: str
    direction: Literal["outbound"]
    type: Literal["send", "reply", "test"]
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    conversation_id: str | None
    status: OutboundStatus
    approval_expires_at: Timestamp | None
    created_at: Timestamp
    reviewed_at: Timestamp | None
    rejection_reason: str | None
    reviewed_by: str | None = None
    """The address of whoever decided the review, when known."""
    review_method: Literal["api", "dashboard", "link", "reply", "expiry"] | None = None
    """How the review was decided: over the API, on the dashboard, by a magic link, by
    replying to the notice email, or by expiry."""
    email_message_id: str
    method: Literal["smtp", "local"] | None
    edited: bool
    sent_at: Timestamp | None
    body_text: str | None = None
    body_html: str | None = None
    attachments: list[AttachmentIn] | None = None
    error: str | None = None


class OutboundMessageList(ResponseBody):
    """`GET /messages`."""

    messages: list[OutboundMessage]


class SendResult(ResponseBody):
    """200 from sending: durably queued for the send worker and not refused. `status` is
    `sent`, the word e2a 2.x clients know for accepted mail, whether or not the relay has
    answered yet; the message's own progress is on `GET /messages/{id}`."""

    status: Literal["sent"]
    message_id: str
    method: Literal["smtp", "local"] | None


class HeldForApproval(ResponseBody):
    """202 from sending by an agent with HITL enabled: nothing leaves until it is approved."""

    status: Literal["pending_approval"]
    message_id: str
    approval_expires_at: Timestamp


class SigningSecret(ResponseBody):
    """A signing secret's metadata (never the secret itself)."""

    id: str
    name: str
    secret_prefix: str
    created_at: Timestamp
    last_signed_at: Timestamp | None


class NewSigningSecret(SigningSecret):
    """201 from creating a signing secret: the only answer that holds `secret`."""

    secret: str = Field(pattern=r"^[0-9a-f]{64}$")


class SigningSecretList(ResponseBody):
    """`GET /users/me/signing-secrets`, newest first."""

    secrets: list[SigningSecret]


class ApiKey(ResponseBody):
    """An API key's metadata (its prefix only): what it reaches (`scope`, and for an agent
    key `agent_email`, the address of the agent it is bound to while that agent is there) and
    until when it works (`expires_at`; null: never)."""

    id: str
    name: str
    key_prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None
    scope: Literal["account", "agent"]
    agent_email: str | None
    expires_at: Timestamp | None


class NewApiKey(ApiKey):
    """201 from creating an API key: the only answer that holds `key`."""

    key: str = Field(pattern=r"^e2a_[0-9a-f]{64}$")


class ApiKeyList(ResponseBody):
    """`GET /users/me/api-keys`."""

    api_keys: list[ApiKey]


class ExportedUser(ResponseBody):
    """The account itself."""

    id: str
    email: str
    created_at: Timestamp


class ExportedGate(ResponseBody):
    """An agent's inbound gate (set on `/v1` as its protection config)."""

    policy: Literal["open", "allowlist", "domain"]
    allowlist: list[str]
    action: Literal["flag", "review", "block"]


class ExportedAgent(ResponseBody):
    """An agent's settings."""

    email: str
    domain: str
    name: str
    webhook_url: str | None
    agent_mode: Literal["cloud", "local"]
    hitl_enabled: bool
    hitl_ttl_seconds: int
    hitl_expiration_action: Literal["reject", "approve"]
    approval_notifications: bool
    inbound_gate: ExportedGate
    outbound_gate: ExportedGate = Field(
        description="Whom the agent may mail unquestioned, and what becomes of a send to anyone "
        "else; an allowlist with no entry and action `review` is `hitl_enabled`."
    )
    created_at: Timestamp
    deleted_at: Timestamp | None = Field(
        default=None,
        description="When the agent was moved to the trash (`DELETE /v1/agents/{email}`); "
        "absent while it is in service.",
    )


class ExportedDomain(ResponseBody):
    """A domain and its verification state."""

    domain: str
    verified: bool
    verification_token: str
    created_at: Timestamp
    verified_at: Timestamp | None


class ExportedMessageBase(ResponseBody):
    """Metadata every exported message has (never bytes, bodies, attachments or headers)."""

    id: str
    agent_email: str
    from_: str | None = Field(alias="from")
    reply_to: str | None
    to: list[str]
    cc: list[str]
    subject: str
    conversation_id: str | None
    rfc_message_id: str | None
    status: str
    received_at: Timestamp | None
    created_at: Timestamp


class ExportedInboundMessage(ExportedMessageBase):
    """An inbound message's metadata."""

    direction: Literal["inbound"]
    delivery_status: str | None
    size_bytes: int = Field(ge=0)


class ExportedOutboundMessage(ExportedMessageBase):
    """An outbound message's metadata."""

    direction: Literal["outbound"]
    kind: Literal["send", "reply", "test"]
    bcc: list[str]
    in_reply_to: str | None
    reviewed_at: Timestamp | None
    rejection_reason: str | None
    method: Literal["smtp", "local"] | None
    send_error: str | None


ExportedMessage = Annotated[
    ExportedInboundMessage | ExportedOutboundMessage, Field(discriminator="direction")
]


class UserExport(ResponseBody):
    """`GET /users/me/export`: everything stored about the caller, from one snapshot."""

    schema_version: Literal["1"]
    generated_at: Timestamp
    user: ExportedUser
    agents: list[ExportedAgent]
    domains: list[ExportedDomain]
    api_keys: list[ApiKey]
    signing_secrets: list[SigningSecret]
    messages: list[ExportedMessage]


class DeletedRows(ResponseBody):
    """Rows deleted per table."""

    agents: int = Field(ge=0)
    messages: int = Field(ge=0)
    domains: int = Field(ge=0)
    api_keys: int = Field(ge=0)
    signing_secrets: int = Field(ge=0)
    jobs: int = Field(ge=0)
    webhook_attempts: int = Field(ge=0)
    users: int = Field(ge=0)


class UserDeleted(ResponseBody):
    """`DELETE /users/me?confirm=DELETE`: what was erased, in one transaction."""

    deleted: DeletedRows


class FeedbackAccepted(ResponseBody):
    """`POST /api/feedback`: stored for the operators (e2a's answer)."""

    status: Literal["ok"]


class DeadLetter(ResponseBody):
    """An inbound message whose webhook deliveries ran out of retries, with its last attempt
    (null fields when none is recorded any more)."""

    message_id: str
    from_: str = Field(alias="from")
    subject: str
    received_at: Timestamp
    attempts: int = Field(ge=0, description="Attempts made so far.")
    last_attempt_at: Timestamp | None
    last_status_code: int | None = Field(description="The receiver's answer, if it answered.")
    last_error: str | None = Field(description="What went wrong when no usable answer came.")


class DeadLetterPage(ResponseBody):
    """`GET /agents/{email}/dead-letters`: one page, oldest first."""

    dead_letters: list[DeadLetter]
    next_token: str | None


class Redelivered(ResponseBody):
    """A dead letter queued for delivery again."""

    message_id: str
    delivery_status: Literal["pending"]


class RedeliveredAll(ResponseBody):
    """Every dead letter of the agent queued for delivery again (none: an empty list)."""

    message_ids: list[str]
    delivery_status: Literal["pending"]
