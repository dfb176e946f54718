"""Typed views of the gateway's JSON objects (contract/rest.md), as pydantic models.

Every field is optional and unknown fields are kept, so a newer gateway never breaks an
older SDK. The names are those of the published e2a 2.x SDK, request bodies of the raw API
(`E2AApi`) included; fields spelled `from` in JSON are `from_` here. No I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Agent(_Model):
    """An agent mailbox: its address, delivery mode and approval settings."""

    id: str | None = None
    email: str | None = None
    domain: str | None = None
    name: str | None = None
    webhook_url: str | None = None
    agent_mode: str | None = None
    domain_verified: bool | None = None
    hitl_enabled: bool | None = None
    hitl_ttl_seconds: int | None = None
    hitl_expiration_action: str | None = None
    approval_notifications: bool | None = None
    created_at: str | None = None


class ListAgentsResponse(_Model):
    """`GET /agents`."""

    agents: list[Agent] = []


class DNSRecord(_Model):
    """One DNS record to create: `host` (`@` is the domain itself), `value`, `priority`."""

    host: str | None = None
    value: str | None = None
    priority: int | None = None


class DNSRecords(_Model):
    """The records that route mail to the gateway (`mx`), prove ownership (`txt`), publish
    the key outbound mail is DKIM-signed with (`dkim`, when the gateway signs) and, while the
    gateway's key is being rotated, the key that signs after the switch (`dkim_next`)."""

    mx: DNSRecord | None = None
    txt: DNSRecord | None = None
    dkim: DNSRecord | None = None
    dkim_next: DNSRecord | None = None


class Domain(_Model):
    """A custom domain and the DNS records that verify it."""

    domain: str | None = None
    verified: bool | None = None
    verification_token: str | None = None
    dns_records: DNSRecords | None = None
    created_at: str | None = None
    verified_at: str | None = None


class ListDomainsResponse(_Model):
    """`GET /domains`."""

    domains: list[Domain] = []


class PendingMessageDetail(_Model):
    """An outbound message (held for approval, approved, rejected, sent…)."""

    id: str | None = None
    agent_id: str | None = None
    direction: str | None = None
    type: str | None = None
    to: list[str] = []
    cc: list[str] = []
    bcc: list[str] = []
    subject: str | None = None
    conversation_id: str | None = None
    status: str | None = None
    approval_expires_at: str | None = None
    created_at: str | None = None
    reviewed_at: str | None = None
    rejection_reason: str | None = None
    reviewed_by: str | None = None
    review_method: str | None = None
    """How the review was decided: api, dashboard, link, reply (to the notice) or expiry."""
    email_message_id: str | None = None
    sent_at: str | None = None
    """When the mail was handed off (relay accepted it, or delivered locally)."""
    error: str | None = None
    """Why a `failed` message was not sent (a bounce included), in a sentence."""
    provider_message_id: str | None = None
    """The hosted service's relay id in the published SDK; this gateway leaves it unset
    (`email_message_id` is the Message-ID the mail was sent with)."""
    method: str | None = None
    edited: bool | None = None
    body_text: str | None = None
    body_html: str | None = None
    attachments: list[dict[str, Any]] | None = None

    @property
    def message_id(self) -> str | None:
        """The outbound message id (the published SDK's name for `id`)."""
        return self.id


class ListPendingMessagesResponse(_Model):
    """`GET /messages`."""

    messages: list[PendingMessageDetail] = []


class DeploymentInfo(_Model):
    """`GET /info`: what a client needs before it logs in."""

    shared_domain: str | None = None
    slug_registration_enabled: bool | None = None
    public_url: str | None = None
    version: str | None = None


class TrustSender(_Model):
    """The gateway's verdict on a message's From: address; `basis` names the result that
    makes it verified (`dmarc=pass`, `dkim=pass`, `spf=pass`, `agent`), None when it is not."""

    address: str | None = None
    verified: bool | None = None
    entity_type: str | None = None
    authentication_results: dict[str, str] | None = None
    basis: str | None = None


class QuoteAttribution(_Model):
    """What a message says about where a quote comes from ("On … wrote:", "From: … Sent: …")."""

    text: str | None = None
    name: str | None = None
    address: str | None = None
    date: str | None = None
    subject: str | None = None
    forwarded: bool | None = None


class QuoteSource(_Model):
    """The mail of the agent's store a quote comes from; `contents`: `match`, `differs` or
    `not_kept`."""

    message_id: str | None = None
    direction: str | None = None
    from_: str | None = Field(None, alias="from")
    verified: bool | None = None
    contents: str | None = None


class TrustPart(_Model):
    """A run of body lines (`start`..`end`): `authored`, `quoted` (with `depth`) or
    `signature`; who wrote it (`author`) and whether that is proven (`verified`)."""

    kind: str | None = None
    depth: int | None = None
    start: int | None = None
    end: int | None = None
    content: str | None = None
    attribution: QuoteAttribution | None = None
    author: str | None = None
    verified: bool | None = None
    source: QuoteSource | None = None


class Trust(_Model):
    """A message's trust map: the sender's verdict, its parts, and whether any quoted text is
    unverified."""

    sender: TrustSender | None = None
    parts: list[TrustPart] = []
    quoted_unverified: bool | None = None

    def unverified_quotes(self) -> list[TrustPart]:
        """The quoted parts whose origin is not proven: not text of the sender's."""
        return [part for part in self.parts if part.kind == "quoted" and not part.verified]


class MessageDetail(_Model):
    """An inbound message as the API sends it: the summary fields (`GET …/messages`) and,
    for one message (`GET …/messages/{id}`), its signed headers, raw bytes and parsed parts.
    `raw_message` is base64; `InboundEmail` decodes and verifies it."""

    message_id: str | None = None
    conversation_id: str | None = None
    from_: str | None = Field(None, alias="from")
    to: list[str] | None = None
    cc: list[str] | None = None
    recipient: str | None = None
    subject: str | None = None
    status: str | None = None
    created_at: str | None = None
    received_at: str | None = None
    auth_headers: dict[str, str] | None = None
    raw_message: str | None = None
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[dict[str, Any]] | None = None
    authentication_results: dict[str, Any] | None = None
    delivery_status: str | None = None
    reply_text: str | None = None
    trust: Trust | None = None


class ListMessagesResponse(_Model):
    """`GET /agents/{email}/messages`: a page of summaries and the token of the next page."""

    messages: list[MessageDetail] = []
    next_token: str | None = None


class WireAttachment(_Model):
    """An attachment in a request body: `data` is standard base64."""

    filename: str | None = None
    content_type: str | None = None
    data: str | None = None


class RegisterAgentRequest(_Model):
    """Body of `POST /agents`: a `slug` on the shared domain, or a full `email`."""

    slug: str | None = None
    email: str | None = None
    name: str | None = None
    webhook_url: str | None = None
    agent_mode: str | None = None


class UpdateAgentRequest(_Model):
    """Body of `PUT /agents/{email}`: only the fields set are changed."""

    name: str | None = None
    webhook_url: str | None = None
    agent_mode: str | None = None
    hitl_enabled: bool | None = None
    hitl_ttl_seconds: int | None = None
    hitl_expiration_action: str | None = None
    approval_notifications: bool | None = None


class RegisterDomainRequest(_Model):
    """Body of `POST /domains`."""

    domain: str | None = None


class SendEmailRequest(_Model):
    """Body of `POST /send`; `from_` may be left out when the key has exactly one agent."""

    from_: str | None = Field(None, alias="from")
    to: list[str] | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    subject: str | None = None
    body: str | None = None
    html_body: str | None = None
    conversation_id: str | None = None
    attachments: list[WireAttachment] | None = None


class ReplyToMessageRequest(_Model):
    """Body of `POST /agents/{email}/messages/{id}/reply`."""

    body: str | None = None
    html_body: str | None = None
    reply_all: bool | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    conversation_id: str | None = None
    attachments: list[WireAttachment] | None = None


class SendEmailResponse(_Model):
    """The answer to a send or reply: `status` (`sent`: accepted for delivery, its progress on
    `get_pending_message`; or `pending_approval`), `message_id`, `method` (`smtp` or `local`)
    and, when held, `approval_expires_at`."""

    status: str | None = None
    message_id: str | None = None
    method: str | None = None
    approval_expires_at: str | None = None


class ApprovePendingMessageRequest(_Model):
    """Body of `POST /messages/{id}/approve`: optional edits to the held message."""

    subject: str | None = None
    body_text: str | None = None
    body_html: str | None = None
    to: list[str] | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    attachments: list[WireAttachment] | None = None


class RejectPendingMessageRequest(_Model):
    """Body of `POST /messages/{id}/reject`."""

    reason: str | None = None


class SigningSecretSummary(_Model):
    """A webhook signing secret, without the secret itself."""

    id: str | None = None
    name: str | None = None
    secret_prefix: str | None = None
    created_at: str | None = None
    last_signed_at: str | None = None


class CreateSigningSecretResponse(SigningSecretSummary):
    """A new signing secret: `secret` (64 hex) is shown only in this answer."""

    secret: str | None = None


class ListSigningSecretsResponse(_Model):
    """`GET /users/me/signing-secrets`, newest first."""

    secrets: list[SigningSecretSummary] = []


class ApiKeySummary(_Model):
    """An API key of the caller, without the key itself (its first characters only)."""

    id: str | None = None
    name: str | None = None
    key_prefix: str | None = None
    created_at: str | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None


class ListApiKeysResponse(_Model):
    """`GET /users/me/api-keys`."""

    api_keys: list[ApiKeySummary] = []


# The gateway answers these requests with its full objects, so the published SDK's narrower
# answer types are the same models under their published names.
RegisterAgentResponse = Agent
VerifyDomainResponse = Domain
PendingMessageSummary = PendingMessageDetail
ApprovePendingMessageResponse = PendingMessageDetail
RejectPendingMessageResponse = PendingMessageDetail
