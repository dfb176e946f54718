"""Reading a received message: the headers the gateway indexes and the body parts agents want.

Pure functions over the raw bytes with the stdlib `email` package. Header fields are read as
UTF-8 (RFC 6532) with RFC 2047 encoded words decoded (`e2a_gateway.rfc5322.header_text`). They never
raise on malformed mail: a header that cannot be parsed reads as empty, an undecodable part is
skipped.
"""

from __future__ import annotations

import email
import email.utils
import hashlib
import re
import threading
from dataclasses import dataclass
from email.message import EmailMessage

from cachetools import LRUCache, cached

from e2a_gateway.addresses import lowercase_address
from e2a_gateway.attachments import Attachment
from e2a_gateway.email_policies import READING, HeaderClassesOnce
from e2a_gateway.rfc5322 import HeaderFields, header_text

CONVERSATION_HEADER = "X-E2A-Conversation-Id"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_UNSTRUCTURED = HeaderClassesOnce(use_default_map=False)
"""Reads every field as unstructured text: RFC 2047 words decoded, anything else as it is."""


@dataclass(frozen=True)
class HeaderSummary:
    """The header fields the gateway stores and routes on."""

    from_addr: str
    reply_to: str | None
    to: list[str]
    cc: list[str]
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    conversation_id: str | None
    single_text_part: bool = False
    """The message is one text/plain or text/html part (or has no Content-Type), with no
    Content-Disposition or an inline one: its own text or HTML body, never an attachment."""

    def referenced_ids(self) -> list[str]:
        """Message-IDs this message answers, most relevant first: In-Reply-To, then References
        from newest to oldest."""
        ids = [self.in_reply_to] if self.in_reply_to else []
        ids.extend(reversed(self.references))
        return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class ParsedBody:
    """The readable parts of a message (immutable: one is shared by every reader of the same
    bytes, see `parse_body`)."""

    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...] = ()

    @property
    def size(self) -> int:
        """Roughly what it holds in memory, in characters, for the cache's budget."""
        return len(self.text or "") + len(self.html or "") + 200 * (1 + len(self.attachments))


PARSED_BODY_CACHE_BUDGET = 16 * 1024 * 1024
"""Characters of parsed bodies kept by `parse_body` (a body larger than this is not kept)."""
_parsed_bodies: LRUCache[bytes, ParsedBody] = LRUCache(
    PARSED_BODY_CACHE_BUDGET, getsizeof=lambda body: body.size
)


def _header_text(message: HeaderFields, name: str) -> str:
    """A header unfolded, with RFC 2047 words decoded; '' when absent."""
    value = message.get(name)
    if value is None:
        return ""
    unfolded = _LINE_BREAK.sub("", str(value))
    if "=?" not in unfolded:  # no encoded word: nothing to decode (and parsing costs)
        return unfolded
    try:
        return str(_UNSTRUCTURED(name, unfolded))
    except Exception:
        return unfolded


def _addresses(message: HeaderFields, name: str) -> list[str]:
    """The addresses in every instance of header `name`, lowercased (`lowercase_address`)."""
    found = []
    for _, address in email.utils.getaddresses(message.get_all(name)):
        if "@" in address:
            found.append(lowercase_address(address))
    return found


def _message_ids(text: str) -> list[str]:
    """Message-IDs (`<…>`) in a header value, in order."""
    ids = []
    for chunk in text.replace(">", "> ").split():
        if chunk.startswith("<") and chunk.endswith(">") and len(chunk) > 2:
            ids.append(chunk)
    return ids


_SINGLE_TEXT_TYPES = frozenset({"text/plain", "text/html"})


def _main_value(value: str | None) -> str | None:
    """A MIME field's value before its parameters, lowercased, as the stdlib reads it."""
    return None if value is None else value.split(";", 1)[0].strip().lower()


def summarise_headers(raw: bytes) -> HeaderSummary:
    """Parse just the header block of `raw` into a HeaderSummary."""
    headers = HeaderFields(header_text(raw))
    from_list = _addresses(headers, "From")
    reply_to_list = _addresses(headers, "Reply-To")
    message_ids = _message_ids(_header_text(headers, "Message-ID"))
    in_reply_to = _message_ids(_header_text(headers, "In-Reply-To"))
    return HeaderSummary(
        from_addr=from_list[0] if from_list else "",
        reply_to=reply_to_list[0] if reply_to_list else None,
        to=_addresses(headers, "To"),
        cc=_addresses(headers, "Cc"),
        subject=_header_text(headers, "Subject"),
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_message_ids(_header_text(headers, "References")),
        conversation_id=_header_text(headers, CONVERSATION_HEADER).strip() or None,
        single_text_part=(
            (_main_value(headers.get("Content-Type")) or "text/plain") in _SINGLE_TEXT_TYPES
            and _main_value(headers.get("Content-Disposition")) in (None, "inline")
        ),
    )


def _part_text(part: EmailMessage) -> str | None:
    try:
        content = part.get_content()
    except Exception:
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        content = payload.decode("utf-8", "replace")
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _attachment(part: EmailMessage) -> Attachment:
    payload = part.get_payload(decode=True)
    content_id = part.get("Content-ID")
    return Attachment(
        filename=part.get_filename(),
        content_type=part.get_content_type(),
        size=len(payload) if isinstance(payload, bytes) else 0,
        content_id=str(content_id).strip() if content_id else None,
    )


def _parts(raw: bytes) -> list[tuple[str, EmailMessage]]:
    """Each leaf part of `raw` with its role: `text` and `html` for the first text/plain and
    text/html bodies, `attachment` for every attachment (in document order), `other` else."""
    message = email.message_from_bytes(raw, policy=READING)
    assert isinstance(message, EmailMessage)
    parts: list[tuple[str, EmailMessage]] = []
    seen: set[str] = set()
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        content_type = part.get_content_type()
        role = "other"
        if disposition != "attachment" and content_type == "text/plain" and "text" not in seen:
            role = "text"
        elif disposition != "attachment" and content_type == "text/html" and "html" not in seen:
            role = "html"
        elif disposition in ("attachment", "inline") or part.get_filename():
            role = "attachment"
        seen.add(role)
        parts.append((role, part))
    return parts


@cached(_parsed_bodies, key=lambda raw: hashlib.sha256(raw).digest(), lock=threading.Lock())
def parse_body(raw: bytes) -> ParsedBody:
    """The first text/plain and text/html parts (LF line endings) and every attachment.

    Parsing costs about a millisecond per kilobyte of mail and the same bytes always read the
    same, so the most recently read bodies are kept, by the SHA-256 of their bytes, within
    PARSED_BODY_CACHE_BUDGET: reading a message again, as agents and the dashboard do, costs
    a hash."""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for role, part in _parts(raw):
        if role == "text":
            text = _part_text(part)
        elif role == "html":
            html = _part_text(part)
        elif role == "attachment":
            attachments.append(_attachment(part))
    return ParsedBody(text=text, html=html, attachments=tuple(attachments))


def attachments_of(raw: bytes, headers: HeaderSummary) -> tuple[Attachment, ...]:
    """`parse_body(raw).attachments`, without parsing a message that cannot have any (a
    `single_text_part`); `headers` are `raw`'s."""
    return () if headers.single_text_part else parse_body(raw).attachments


def attachment_data(raw: bytes, index: int) -> tuple[Attachment, bytes] | None:
    """The attachment at `index` (parse_body's order) with its decoded bytes; None when the
    message has no such attachment."""
    found = [part for role, part in _parts(raw) if role == "attachment"]
    if not 0 <= index < len(found):
        return None
    payload = found[index].get_payload(decode=True)
    return _attachment(found[index]), payload if isinstance(payload, bytes) else b""
