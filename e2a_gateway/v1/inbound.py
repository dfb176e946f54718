"""Inbound email as the SDK hands it out: parsed bodies and attachments, gated on a signature.

A webhook body is untrusted until `verify_signature` succeeds; until then every claim field
raises `UnverifiedEmailError`. Messages fetched over the authenticated REST API start
verified. MIME parsing uses the standard library only, its charsets read as the gateway
reads them (`e2a_gateway.charsets`); no I/O here.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import email.utils
import os
import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import HeaderParser
from typing import Any

from e2a_gateway.charsets import field_text
from e2a_gateway.mime_parse import (
    attachment_bytes,
    attachment_filename,
    attachment_parts,
    media_type,
    message_bodies,
    parse_message,
)
from e2a_gateway.rfc5322 import HeaderFields, header_text
from e2a_gateway.v1.errors import UnverifiedEmailError
from e2a_gateway.v1.models import Trust
from e2a_gateway.v1.signature import MAX_AGE_SECONDS, AuthHeaders, verify_auth_headers


@dataclass
class Attachment:
    """A file attached to a message (inbound: decoded bytes; outbound: what to send)."""

    filename: str
    content_type: str
    data: bytes
    size: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.data)

    def to_wire(self) -> dict[str, str]:
        """The JSON form the send and reply endpoints take (data as standard base64)."""
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "data": base64.b64encode(self.data).decode("ascii"),
        }


@dataclass
class SendResult:
    """The gateway's answer to a send or reply: `sent` (accepted for delivery) or
    `pending_approval`."""

    status: str
    message_id: str
    method: str
    approval_expires_at: str | None = None


@dataclass
class MessageSummary:
    """One row of an agent's inbox (no body)."""

    message_id: str
    conversation_id: str | None
    sender: str
    recipient: str
    to: list[str]
    cc: list[str]
    subject: str
    status: str
    created_at: str


@dataclass
class MessageList:
    """A page of an inbox; pass `next_token` back for the next page (None at the end)."""

    messages: list[MessageSummary]
    next_token: str | None


def summary_from_json(data: dict[str, Any]) -> MessageSummary:
    """A `MessageSummary` from one item of `GET /agents/{email}/messages`."""
    return MessageSummary(
        message_id=str(data.get("message_id") or ""),
        conversation_id=data.get("conversation_id"),
        sender=str(data.get("from") or ""),
        recipient=str(data.get("recipient") or ""),
        to=list(data.get("to") or []),
        cc=list(data.get("cc") or []),
        subject=str(data.get("subject") or ""),
        status=str(data.get("status") or ""),
        created_at=str(data.get("created_at") or ""),
    )


@dataclass
class ParsedBody:
    """What the MIME structure of a raw message holds."""

    subject: str = ""
    text_body: str = ""
    html_body: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


def parse_raw_email(raw: bytes) -> ParsedBody:
    """The subject, text and HTML bodies (`message_bodies`, as the REST API shows them), and
    attachments of `raw`, their
    charsets read as the gateway reads them (`e2a_gateway.charsets`: Windows' supersets, as
    mail readers read the labels), so the SDK and the REST API agree on the same message. A
    message the stdlib's MIME parser gives up on reads as empty, as the gateway reads no body
    of it either: fields nesting comments a few thousand deep (it reads them by recursion), or
    a parameter ending in `*` with no value (`charset*`, an IndexError). Parts nested deeper
    than the gateway reads (`e2a_gateway.mime_bounds`) are one attachment, as there, and so
    are the parts after the first MAX_PARTS. A single-part body is taken whole, not read line
    by line (`e2a_gateway.mime_parse`)."""
    try:
        message = parse_message(raw)
        parsed = ParsedBody(subject=field_text(HeaderFields(header_text(raw)), "Subject"))
        _read_parts(message, parsed)
    except (RecursionError, IndexError):
        return ParsedBody()
    return parsed


def _read_parts(message: EmailMessage, parsed: ParsedBody) -> None:
    """Fill `parsed` with the text and HTML bodies of `message`, as the gateway shows them
    (`message_bodies`: an attached message's text is not this message's), and its
    attachments as the gateway lists them (`attachment_parts`: the same files, in the same
    order, so an attachment's index is the one the REST API serves it under)."""
    text, parsed.html_body = message_bodies(message)
    parsed.text_body = text or ""
    parsed.attachments = [
        Attachment(attachment_filename(part) or "unnamed", media_type(part), attachment_bytes(part))
        for part in attachment_parts(message)
    ]


_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _comparable(address: str) -> str:
    """An address as the gateway reports one read from a header: controls but tab removed,
    stripped, lowercased, NFC."""
    return unicodedata.normalize("NFC", _CONTROLS.sub("", address).strip().lower())


def _signed_sender(claimed: str, signed_sender: str, raw: bytes) -> bool:
    """True when `claimed` (a webhook body's `from`) is the signed sender (the From address)
    or an address of a Reply-To field of the signed bytes `raw`, read as the gateway reads
    them (UTF-8, compat32 fields)."""
    wanted = _comparable(claimed)
    if wanted == _comparable(signed_sender):
        return True
    fields = HeaderParser(policy=email.policy.compat32).parsestr(raw.decode("utf-8", "replace"))
    try:
        addresses = email.utils.getaddresses([str(v) for v in fields.get_all("Reply-To", [])])
    except RecursionError:  # comments nested thousands deep: no address is read
        return False
    return any(_comparable(address) == wanted for _name, address in addresses if address)


def decode_raw_message(value: object) -> bytes:
    """The bytes of a `raw_message` field (standard base64); empty when absent or malformed."""
    if not isinstance(value, str) or not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def webhook_secret_from_env() -> str:
    """`E2A_WEBHOOK_SECRET`, or the 2.0 name `E2A_HMAC_SECRET`."""
    return os.environ.get("E2A_WEBHOOK_SECRET") or os.environ.get("E2A_HMAC_SECRET") or ""


class _GatedEmail:
    """The fields of an inbound message, readable once the signature has been verified."""

    def __init__(self, payload: dict[str, Any], *, trusted: bool = False) -> None:
        self._payload = payload
        self._raw_message = decode_raw_message(payload.get("raw_message"))
        self._body = parse_raw_email(self._raw_message) if self._raw_message else ParsedBody()
        headers = payload.get("auth_headers")
        self._auth = AuthHeaders.from_headers(headers if isinstance(headers, dict) else {})
        self._trusted = trusted
        self._verified = trusted

    # Always readable: the inputs of verification and its state.

    @property
    def auth(self) -> AuthHeaders:
        """The X-E2A-Auth-* claim (input to `verify_signature`)."""
        return self._auth

    @property
    def raw_message(self) -> bytes:
        """The exact delivered bytes the body hash covers."""
        return self._raw_message

    @property
    def verified(self) -> bool:
        """True once `verify_signature` succeeded (or the message came over REST)."""
        return self._verified

    @property
    def is_verified(self) -> bool:
        """The gateway's claim that SPF or DKIM passed for the From: domain.

        Only meaningful when `verified` is True: anyone can POST a body claiming it.
        """
        return self._auth.verified

    @property
    def unverified_payload(self) -> dict[str, Any]:
        """The parsed fields *without* verification: treat every value as attacker-chosen."""
        return {
            "message_id": self._payload.get("message_id", ""),
            "conversation_id": self._payload.get("conversation_id"),
            "sender": self._payload.get("from", ""),
            "recipient": self._payload.get("recipient", ""),
            "to": list(self._payload.get("to") or []),
            "cc": list(self._payload.get("cc") or []),
            "subject": self._body.subject or self._payload.get("subject", ""),
            "text_body": self._body.text_body,
            "html_body": self._body.html_body,
            "attachments": list(self._body.attachments),
            "received_at": self._payload.get("received_at") or self._payload.get("created_at"),
            "reply_text": self._payload.get("reply_text"),
            "trust": self._payload.get("trust"),
        }

    def verify_signature(
        self, secret: str | None = None, *, max_age: float | None = MAX_AGE_SECONDS
    ) -> bool:
        """Check body hash, HMAC and timestamp under `secret` (default `E2A_WEBHOOK_SECRET`):
        signed at most `max_age` seconds ago (5 minutes, a webhook's window; None for a claim
        signed when the message was accepted, such as `e2a listen --forward` passes on).

        On success the claim fields become readable; on failure they keep raising. Raises
        ValueError when there is no secret at all, rather than failing every check silently.
        """
        key = secret if secret is not None else webhook_secret_from_env()
        if not key:
            raise ValueError(
                "verify_signature needs a secret: pass it or set E2A_WEBHOOK_SECRET "
                "(the signing secret from POST /api/v1/users/me/signing-secrets)"
            )
        # The claim signs the message id; the body's own `message_id`, which `reply` and
        # the caller use, must be that one (another delivery's claim cannot vouch for it).
        claimed = self._payload.get("message_id") == self._auth.message_id
        if claimed and verify_auth_headers(self._auth, self._raw_message, key, max_age=max_age):
            self._verified = True
        return self._verified

    def _field(self, name: str) -> Any:
        if not self._verified:
            raise UnverifiedEmailError(
                f"{name}: call verify_signature(secret) first, or use client.parse_webhook; "
                "for inspection without verification read .unverified_payload"
            )
        return self.unverified_payload[name]

    @property
    def message_id(self) -> str:
        """The gateway's message id (`msg_…`)."""
        return str(self._field("message_id"))

    @property
    def conversation_id(self) -> str | None:
        """The thread this message belongs to, None for a first contact."""
        value = self._field("conversation_id")
        return None if value is None else str(value)

    @property
    def sender(self) -> str:
        """The Reply-To address when present, else the From address.

        A webhook body's `from` is outside the signature: the SDK refuses
        (UnverifiedEmailError) one that is neither the signed sender nor a Reply-To address of
        the signed bytes, rather than hand out a changed sender next to `is_verified`."""
        value = str(self._field("sender"))
        if not self._trusted and not _signed_sender(value, self._auth.sender, self._raw_message):
            raise UnverifiedEmailError(
                "sender: the webhook body's `from` is neither the signed sender nor a Reply-To "
                "of the signed message; fetch the message with get_message"
            )
        return value

    @property
    def recipient(self) -> str:
        """The agent this copy was delivered to."""
        return str(self._field("recipient"))

    @property
    def to(self) -> list[str]:
        """The To: addresses."""
        return list(self._field("to"))

    @property
    def cc(self) -> list[str]:
        """The Cc: addresses."""
        return list(self._field("cc"))

    @property
    def subject(self) -> str:
        """The decoded Subject."""
        return str(self._field("subject"))

    @property
    def text_body(self) -> str:
        """The text body, as the gateway's REST API shows it ("" when none)."""
        return str(self._field("text_body"))

    @property
    def html_body(self) -> str | None:
        """The HTML body, as the gateway's REST API shows it (None when none)."""
        value = self._field("html_body")
        return None if value is None else str(value)

    @property
    def attachments(self) -> list[Attachment]:
        """The attached files, decoded."""
        return list(self._field("attachments"))

    @property
    def received_at(self) -> str | None:
        """When the gateway received the message."""
        value = self._field("received_at")
        return None if value is None else str(value)

    @property
    def reply_text(self) -> str | None:
        """What the sender wrote in this message, without quoted history and signature (None
        from a gateway that does not say)."""
        value = self._field("reply_text")
        return None if value is None else str(value)

    @property
    def trust(self) -> Trust | None:
        """Whose words each part of the body is (docs/replies.md); None from a gateway that
        does not say. Like `to` and `subject`, it is outside the webhook signature, so the
        SDK refuses one whose sender disagrees with the signed claim."""
        value = self._field("trust")
        if value is None:
            return None
        trust = Trust.model_validate(value)
        sender = trust.sender
        if (
            sender is None
            or sender.verified != self._auth.verified
            or (self._auth.sender and (sender.address or "").lower() != self._auth.sender.lower())
        ):
            raise UnverifiedEmailError(
                "trust: its sender disagrees with the signed claim; fetch the message with "
                "get_message for the gateway's own trust map"
            )
        return trust

    def __repr__(self) -> str:
        state = "verified" if self._verified else "UNVERIFIED"
        return (
            f"{type(self).__name__}<{state}>(message_id={self._payload.get('message_id')!r}, "
            f"subject={self.unverified_payload['subject']!r})"
        )


ReplyFunction = Callable[..., SendResult]
AsyncReplyFunction = Callable[..., Awaitable[SendResult]]


class InboundEmail(_GatedEmail):
    """An inbound message for the sync client; `reply()` answers it through that client."""

    def __init__(
        self, payload: dict[str, Any], reply: ReplyFunction, *, trusted: bool = False
    ) -> None:
        super().__init__(payload, trusted=trusted)
        self._reply = reply

    def reply(
        self,
        body: str,
        html_body: str | None = None,
        reply_all: bool | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        conversation_id: str | None = None,
        attachments: list[Attachment] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Reply from the agent this message was delivered to; a repeat with the same
        `idempotency_key` answers the first reply instead of replying again."""
        return self._reply(
            self.message_id,
            body,
            html_body=html_body,
            reply_all=reply_all,
            cc=cc,
            bcc=bcc,
            conversation_id=conversation_id,
            attachments=attachments,
            agent_email=self.recipient,
            idempotency_key=idempotency_key,
        )


class AsyncInboundEmail(_GatedEmail):
    """An inbound message for the async client; `await reply()` answers it."""

    def __init__(
        self, payload: dict[str, Any], reply: AsyncReplyFunction, *, trusted: bool = False
    ) -> None:
        super().__init__(payload, trusted=trusted)
        self._reply = reply

    async def reply(
        self,
        body: str,
        html_body: str | None = None,
        reply_all: bool | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        conversation_id: str | None = None,
        attachments: list[Attachment] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Reply from the agent this message was delivered to; a repeat with the same
        `idempotency_key` answers the first reply instead of replying again."""
        return await self._reply(
            self.message_id,
            body,
            html_body=html_body,
            reply_all=reply_all,
            cc=cc,
            bcc=bcc,
            conversation_id=conversation_id,
            attachments=attachments,
            agent_email=self.recipient,
            idempotency_key=idempotency_key,
        )
