"""What outgoing mail must satisfy before it is stored: recipient addresses, text that goes into
a header, attachments. Shared by sending and by a reviewer's edits; each check refuses with
Invalid naming the field."""

from __future__ import annotations

from pydantic import BaseModel, Field

from e2a_gateway.addresses import AddressError, Mailbox, normalise_address, parse_mailbox
from e2a_gateway.operations.errors import Invalid
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.outbound.mime import InvalidDraft, check_header_value, decode_attachment

MAX_RECIPIENTS = 100
MAX_MAILBOX_CHARS = 320
"""The longest mailbox a Reply-To takes, display name and address together (e2a's bound)."""


class AttachmentIn(BaseModel):
    """An attachment in a request: base64 data."""

    model_config = RequestBody.model_config
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    data: str


def checked_addresses(field: str, values: list[str]) -> list[str]:
    """Validated, lowercased, de-duplicated addresses; Invalid naming the field otherwise."""
    found: list[str] = []
    for value in values:
        try:
            check_header_value(field, value)
            address = normalise_address(value)
        except InvalidDraft as exc:
            raise Invalid("invalid_header", str(exc)) from None
        except AddressError as exc:
            raise Invalid("invalid_email", f"{field}: {exc}") from None
        if address not in found:
            found.append(address)
    return found


def checked_mailbox(field: str, value: str) -> Mailbox:
    """One mailbox, e.g. `Support Desk <help@example.com>`, strictly parsed: Invalid naming the
    field when it holds a line break or control character (`invalid_header`), is longer than
    MAX_MAILBOX_CHARS (`invalid_request`) or is not one mailbox (`invalid_email`)."""
    try:
        check_header_value(field, value)
    except InvalidDraft as exc:
        raise Invalid("invalid_header", str(exc)) from None
    if len(value) > MAX_MAILBOX_CHARS:
        raise Invalid(
            "invalid_request",
            f"{field} is {len(value)} characters, at most {MAX_MAILBOX_CHARS} (display name and "
            "address together)",
        )
    try:
        return parse_mailbox(value)
    except AddressError as exc:
        raise Invalid("invalid_email", f"{field}: {exc}") from None


def checked_attachments(items: list[AttachmentIn]) -> list[dict[str, str]]:
    """Checked attachments, kept base64 as sent."""
    try:
        for index, item in enumerate(items):
            decode_attachment(index, item.filename, item.content_type, item.data)
    except InvalidDraft as exc:
        raise Invalid("invalid_attachment", str(exc)) from None
    return [item.model_dump() for item in items]


def checked_text(field: str, value: str | None) -> str | None:
    """`value` when it can be written into a header (None stays None); Invalid otherwise."""
    if value is None:
        return None
    try:
        return check_header_value(field, value)
    except InvalidDraft as exc:
        raise Invalid("invalid_header", str(exc)) from None


def fits_header(message_id: str | None) -> bool:
    """Whether a Message-ID taken from received mail can be written into our headers."""
    try:
        check_header_value("message_id", message_id or "")
    except InvalidDraft:
        return False
    return bool(message_id)
