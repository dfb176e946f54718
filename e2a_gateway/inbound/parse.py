"""Reading a received message: the headers the gateway indexes and the body parts agents want.

Pure functions over the raw bytes with the stdlib `email` package. Header fields are read as
UTF-8 (RFC 6532) with RFC 2047 encoded words decoded (`e2a_gateway.rfc5322.header_text`); text
parts and encoded words in their declared charsets, read as `e2a_gateway.charsets` reads them. They
never raise on malformed mail: a header that cannot be parsed reads as empty, an undecodable
part is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage

from cachetools import cached

from e2a_gateway import kept_bodies
from e2a_gateway.addresses import lowercase_address
from e2a_gateway.attachments import Attachment
from e2a_gateway.charsets import field_text
from e2a_gateway.mime_parse import (
    BODY_TYPES,
    attachment_bytes,
    attachment_filename,
    attachment_parts,
    media_type,
    message_bodies,
    parse_message,
)
from e2a_gateway.rfc5322 import HeaderFields, field_addresses, header_text

CONVERSATION_HEADER = "X-E2A-Conversation-Id"


@dataclass(frozen=True)
class HeaderSummary:
    """The header fields the gateway stores and routes on."""

    from_addr: str
    reply_to: str | None
    """Every mailbox of Reply-To, as an RFC 5322 address list (`address_list` reads it)."""
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


def _addresses(message: HeaderFields, name: str) -> list[str]:
    """The addresses in every instance of header `name`, lowercased (`lowercase_address`)."""
    found = []
    for _, address in field_addresses(message.get_all(name)):
        if "@" in address:
            found.append(lowercase_address(address))
    return found


def reply_recipients(raw: bytes) -> list[str]:
    """Where a reply to the message `raw` goes (RFC 5322 section 3.6.2): every mailbox its
    Reply-To names, else every mailbox of its From, lowercased (`lowercase_address`), in order;
    [] when it names none."""
    headers = HeaderFields(header_text(raw))
    return _addresses(headers, "Reply-To") or _addresses(headers, "From")


_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def _message_ids(text: str) -> list[str]:
    """Message-IDs (`<…>`) in a header value, in order, whatever separates them: whitespace
    (RFC 5322), nothing (the whitespace is optional), or commas (as Outlook on the web and
    other mailers write References)."""
    return _MESSAGE_ID.findall(text)


def _main_value(value: str | None) -> str | None:
    """A MIME field's value before its parameters, lowercased, as the stdlib reads it."""
    return None if value is None else value.split(";", 1)[0].strip().lower()


def summarise_headers(raw: bytes) -> HeaderSummary:
    """Parse just the header block of `raw` into a HeaderSummary."""
    headers = HeaderFields(header_text(raw))
    from_list = _addresses(headers, "From")
    reply_to_list = _addresses(headers, "Reply-To")
    message_ids = _message_ids(field_text(headers, "Message-ID"))
    in_reply_to = _message_ids(field_text(headers, "In-Reply-To"))
    return HeaderSummary(
        from_addr=from_list[0] if from_list else "",
        reply_to=", ".join(reply_to_list) or None,
        to=_addresses(headers, "To"),
        cc=_addresses(headers, "Cc"),
        subject=field_text(headers, "Subject"),
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_message_ids(field_text(headers, "References")),
        conversation_id=field_text(headers, CONVERSATION_HEADER).strip() or None,
        single_text_part=(
            (_main_value(headers.get("Content-Type")) or "text/plain") in BODY_TYPES
            and _main_value(headers.get("Content-Disposition")) in (None, "inline")
        ),
    )


def _attachment(part: EmailMessage, data: bytes) -> Attachment:
    """The metadata of attachment `part`, whose decoded bytes are `data`."""
    content_id = part.get("Content-ID")
    return Attachment(
        filename=attachment_filename(part),
        content_type=media_type(part),
        size=len(data),
        content_id=str(content_id).strip() if content_id else None,
    )


_UNREADABLE = (RecursionError, IndexError)
"""What the stdlib's MIME parser raises on mail any sender can write: RecursionError for
fields nesting comments a few thousand deep (it reads a comment in a comment by recursion),
IndexError for a parameter ending in `*` with no value (`charset*`)."""


def kept_body(raw: bytes) -> ParsedBody | None:
    """What `parse_body(raw)` answers when it has kept `raw`'s parsed body (a hash, no
    parsing: fit for the event loop), else None."""
    with kept_bodies.LOCK:
        body: ParsedBody | None = kept_bodies.BODIES.get(kept_bodies.key_of(raw))
        return body


@cached(kept_bodies.BODIES, key=kept_bodies.key_of, lock=kept_bodies.LOCK)
def parse_body(raw: bytes) -> ParsedBody:
    """The text and HTML bodies (`message_bodies`) and every attachment (`attachment_parts`).

    Parsing costs about a millisecond per kilobyte of mail and the same bytes always read the
    same, so the most recently read bodies are kept, by the SHA-256 of their bytes, within
    kept_bodies.BUDGET: reading a message again, as agents and the dashboard do, costs
    a hash (`kept_bodies`). Those of erased mail are forgotten when the erasure commits.

    A message the stdlib cannot parse has nothing readable (`_UNREADABLE`)."""
    try:
        message = parse_message(raw)
        text, html = message_bodies(message)
        attachments = tuple(
            _attachment(part, attachment_bytes(part)) for part in attachment_parts(message)
        )
    except _UNREADABLE:
        return ParsedBody(text=None, html=None)
    return ParsedBody(text=text, html=html, attachments=attachments)


def attachments_of(raw: bytes, headers: HeaderSummary) -> tuple[Attachment, ...]:
    """`parse_body(raw).attachments`, without parsing a message that cannot have any (a
    `single_text_part`); `headers` are `raw`'s."""
    return () if headers.single_text_part else parse_body(raw).attachments


def attachment_data(raw: bytes, index: int) -> tuple[Attachment, bytes] | None:
    """The attachment at `index` (parse_body's order) with its decoded bytes; None when the
    message has no such attachment (nor one the stdlib cannot parse, see `parse_body`)."""
    try:
        found = attachment_parts(parse_message(raw))
        if not 0 <= index < len(found):
            return None
        data = attachment_bytes(found[index])
        return _attachment(found[index], data), data
    except _UNREADABLE:
        return None
