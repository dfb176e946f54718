"""What outgoing mail must satisfy before it is stored: recipient addresses, text that goes into
a header, attachments, and on `/v1` e2a's bounds on recipients and sizes. Shared by sending and
by a reviewer's edits; each check refuses with Invalid naming the field."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from e2a_gateway.addresses import (
    AddressError,
    Mailbox,
    lowercase_address,
    normalise_recipient,
    parse_mailbox,
    unsendable,
)
from e2a_gateway.attachments import Attachment
from e2a_gateway.operations.errors import Invalid, Unprocessable
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.outbound.mime import (
    MAX_LINE_OCTETS,
    InvalidDraft,
    address_as_written,
    check_header_value,
    decode_attachment,
    without_whitespace,
)
from e2a_gateway.storage.base import OutboundMessage

MAX_RECIPIENTS = 100
"""The most addresses one field of an `/api/v1` message takes (the 2.x contract's bound)."""
V1_MAX_RECIPIENTS = 50
"""e2a's bound on one message's recipients, to, cc and bcc together (`/v1`)."""
V1_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
"""e2a's bound on one attachment, decoded (`/v1`)."""
V1_MAX_ATTACHMENTS_BYTES = 25 * 1024 * 1024
"""e2a's bound on all the attachments of one message, decoded (`/v1`)."""
V1_MAX_ATTACHMENTS = 10
"""e2a's bound on the attachments of one message (`/v1`)."""
V1_BAD_RECIPIENT = "invalid_recipient"
"""e2a's code for a recipient that is no address (`/v1`)."""
V1_MAX_COMPOSED_BYTES = 10 * 1024 * 1024
"""e2a's bound on a composed message: subject, text, HTML and decoded attachments (`/v1`)."""
MAX_MAILBOX_CHARS = 320
"""The longest mailbox a Reply-To takes, display name and address together (e2a's bound)."""


class AttachmentIn(BaseModel):
    """An attachment in a request: base64 data."""

    model_config = RequestBody.model_config
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    data: str


def checked_addresses(field: str, values: list[str], *, code: str | None = None) -> list[str]:
    """Validated, normalised (`normalise_recipient`: lowercased, but for a local part beyond
    ASCII, RFC 6531), de-duplicated addresses; Invalid naming the field otherwise, with
    `code` when given (`/v1`: `invalid_recipient`), else `invalid_header` for a control
    character and `invalid_email` for what is no address."""
    found: list[str] = []
    for value in values:
        try:
            check_header_value(field, value)
            address = _written_as_given(normalise_recipient(value))
        except InvalidDraft as exc:
            raise Invalid(code or "invalid_header", str(exc)) from None
        except AddressError as exc:
            raise Invalid(code or "invalid_email", f"{field}: {exc}") from None
        if address not in found:
            found.append(address)
    return found


def mailbox_addresses(field: str, values: list[str], *, code: str) -> list[str]:
    """Recipients as e2a's `/v1` takes them, each one RFC 5322 mailbox that may carry a display
    name (`Carol <carol@example.org>`, at most MAX_MAILBOX_CHARS in all): their addresses, as
    `checked_addresses` gives them (the mail goes to the address; the name is not kept).
    Invalid with `code`, naming the field, otherwise."""
    addresses: list[str] = []
    for value in values:
        if "<" in value:
            if len(value) > MAX_MAILBOX_CHARS:
                raise Invalid(
                    code,
                    f"{field}: a recipient is at most {MAX_MAILBOX_CHARS} characters (display "
                    "name and address together)",
                )
            try:
                value = parse_mailbox(value).address
            except AddressError as exc:
                raise Invalid(code, f"{field}: {value[:80]!r}: {exc}") from None
        addresses.append(value)
    return checked_addresses(field, addresses, code=code)


def carried_addresses(field: str, values: list[str], *, code: str | None = None) -> list[str]:
    """The addresses a reply-all copies from the message it answers, as `checked_addresses`
    takes them, except that an address e2a cannot send to (`unsendable`: a quoted local part,
    a dotless domain, an address literal) is kept as the message named it
    (lowercased) rather than refusing the whole reply: the hand-off refuses that recipient
    alone, saying why, and the reply goes to the others."""
    found: list[str] = []
    for value in values:
        if unsendable(value) is None:
            address = checked_addresses(field, [value], code=code)[0]
        else:
            try:
                address = lowercase_address(check_header_value(field, value))
            except InvalidDraft as exc:
                raise Invalid(code or "invalid_header", str(exc)) from None
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
        mailbox = parse_mailbox(value)
        _written_as_given(mailbox.address)
    except AddressError as exc:
        raise Invalid("invalid_email", f"{field}: {exc}") from None
    return mailbox


def _written_as_given(address: str) -> str:
    """`address`, if a message writes it as it is; AddressError otherwise: the `email` package
    decodes an RFC 2047 encoded word in it (`address_as_written`), so the header would name
    another mailbox than the one the envelope goes to, and replies would go there."""
    written = address_as_written(address)
    if written != address:
        raise AddressError(
            f"{address!r} would be written into the message as {written!r} (an RFC 2047 "
            "encoded word in an address is decoded), another mailbox than the one it is sent "
            "to: give the address itself"
        )
    return address


def checked_attachments(items: list[AttachmentIn]) -> list[dict[str, str]]:
    """Checked attachments, kept base64 as sent but for line breaks and blanks (base64 wrapped
    at 76 columns is taken, as mail decoders take it)."""
    try:
        for index, item in enumerate(items):
            decode_attachment(index, item.filename, item.content_type, item.data)
    except InvalidDraft as exc:
        raise Invalid("invalid_attachment", str(exc)) from None
    return [item.model_dump() | {"data": without_whitespace(item.data)} for item in items]


def named_besides(values: list[str], left_out: Iterable[str]) -> list[str]:
    """The addresses `values` name, each once (case and surrounding space aside), other than
    `left_out`: what a reply-all would copy, counted before each is checked and written out
    (about 0.1 ms an address), so that mail naming thousands is refused for their number
    without holding up the event loop for seconds. Two spellings of one address count twice
    here, so the count errs towards refusing."""
    skipped = {address.strip().lower() for address in left_out}
    named = dict.fromkeys(value.strip().lower() for value in values)
    return [address for address in named if address not in skipped]


def within_recipient_bound(*groups: list[str]) -> None:
    """Invalid (`too_many_recipients`, with `max_recipients` and `provided`) when `groups`
    (to, cc, bcc) hold more than V1_MAX_RECIPIENTS addresses together, as given (`/v1`)."""
    provided = sum(len(group) for group in groups)
    if provided > V1_MAX_RECIPIENTS:
        raise Invalid(
            "too_many_recipients",
            f"too many recipients — at most {V1_MAX_RECIPIENTS} across to, cc and bcc combined "
            f"(got {provided})",
            {"max_recipients": V1_MAX_RECIPIENTS, "provided": provided},
        )


def within_size_bounds(
    subject: str, text: str, html: str | None, attachments: list[dict[str, str]]
) -> None:
    """e2a's size bounds on a message about to be stored (`/v1`), checked attachments given:
    each attachment at most V1_MAX_ATTACHMENT_BYTES and all at most V1_MAX_ATTACHMENTS_BYTES,
    decoded, and the whole (subject, text, HTML and decoded attachments, in bytes) at most
    V1_MAX_COMPOSED_BYTES. Invalid `payload_too_large` with e2a's details otherwise."""
    total = 0
    for index, item in enumerate(attachments):
        size = attachment_size(item["data"])
        if size > V1_MAX_ATTACHMENT_BYTES:
            name = json.dumps(item["filename"] or f"#{index}", ensure_ascii=False)
            raise _too_large(
                f"attachment {name} is too large — {size} bytes decoded",
                "attachment",
                size,
                V1_MAX_ATTACHMENT_BYTES,
                item["filename"],
            )
        total += size
    if total > V1_MAX_ATTACHMENTS_BYTES:
        raise _too_large(
            f"attachments too large — {total} bytes decoded in total",
            "attachments_total",
            total,
            V1_MAX_ATTACHMENTS_BYTES,
        )
    texts = (subject, text, html or "")
    composed = total + sum(len(part.encode("utf-8", "surrogatepass")) for part in texts)
    if composed > V1_MAX_COMPOSED_BYTES:
        raise _too_large(
            f"composed message too large — {composed} bytes (subject + text + html + decoded "
            "attachments)",
            "composed_message",
            composed,
            V1_MAX_COMPOSED_BYTES,
        )


def edits_within_bounds(
    draft: OutboundMessage,
    *,
    to: list[str] | None,
    cc: list[str] | None,
    bcc: list[str] | None,
    subject: str | None,
    text: str | None,
    html: str | None,
    attachments: list[AttachmentIn] | None,
) -> None:
    """e2a's `/v1` bounds on a held draft as a reviewer's edits (None: kept) would leave it,
    as a send is held to them: its recipients together, a body (text, HTML or both), then its
    attachments (at most V1_MAX_ATTACHMENTS) and its composed size."""
    within_recipient_bound(
        draft.to if to is None else to,
        draft.cc if cc is None else cc,
        draft.bcc if bcc is None else bcc,
    )
    if attachments is not None and len(attachments) > V1_MAX_ATTACHMENTS:
        raise Invalid(
            "invalid_request", f"a message carries at most {V1_MAX_ATTACHMENTS} attachments"
        )
    text_left = draft.body_text or "" if text is None else text
    html_left = draft.body_html if html is None else html
    if not text_left and not html_left:
        raise Invalid(
            "invalid_request",
            "the edits would leave the message without a body: keep 'text' or 'html' (or both)",
        )
    within_size_bounds(
        draft.subject if subject is None else subject,
        text_left,
        html_left,
        draft.attachments or [] if attachments is None else checked_attachments(attachments),
    )


def draft_attachments(draft: OutboundMessage) -> list[Attachment]:
    """The attachments of a message being sent, while its body is kept (none after)."""
    return [_attachment_meta(item) for item in draft.attachments or []]


def draft_attachment(draft: OutboundMessage, index: int) -> tuple[Attachment, bytes] | None:
    """Attachment `index` of a message being sent (`draft_attachments`' order) with its bytes;
    None when it has no such attachment (or no longer keeps them)."""
    items = draft.attachments or []
    if not 0 <= index < len(items):
        return None
    return _attachment_meta(items[index]), base64.b64decode(items[index].get("data", ""))


def _attachment_meta(item: dict[str, Any]) -> Attachment:
    """What a draft's stored attachment `item` (its request's fields) is listed as."""
    return Attachment(
        item.get("filename"),
        item.get("content_type", "application/octet-stream"),
        attachment_size(item.get("data", "")),
        None,
    )


def attachment_size(data: str) -> int:
    """The decoded size of checked base64 `data`, without decoding it."""
    clean = without_whitespace(data)
    return len(clean) // 4 * 3 - clean[-2:].count("=")


def _too_large(
    what: str, scope: str, actual: int, limit: int, filename: str | None = None
) -> Invalid:
    details: dict[str, object] = {"scope": scope, "actual_bytes": actual, "max_bytes": limit}
    if filename:
        details["filename"] = filename
    return Invalid(
        "payload_too_large",
        f"{what}, limit is {limit} ({limit // (1024 * 1024)} MB)",
        details,
    )


def checked_text(field: str, value: str | None) -> str | None:
    """`value` when it can be written into a header (None stays None); Invalid otherwise."""
    if value is None:
        return None
    try:
        return check_header_value(field, value)
    except InvalidDraft as exc:
        raise Invalid("invalid_header", str(exc)) from None


MAX_THREADING_ID_CHARS = MAX_LINE_OCTETS - len("In-Reply-To: ")
"""The longest Message-ID a threading header of ours can write on a line of its own."""


def fits_header(message_id: str | None) -> bool:
    """Whether a Message-ID taken from received mail can be written into our threading
    headers as it is: no control character, ASCII (the message is 7-bit; RFC 6532 allows UTF-8
    in one) and short enough for a line. The `email` package would write any other as RFC 2047
    encoded words, which no msg-id may be and no client matches."""
    if not message_id or not message_id.isascii() or len(message_id) > MAX_THREADING_ID_CHARS:
        return False
    try:
        check_header_value("message_id", message_id)
    except InvalidDraft:
        return False
    return True


def suppressed_text(addresses: list[str], agent_email: str) -> str:
    """Why mail from the agent `agent_email` does not go to `addresses`, suppressed for its
    account or for the agent alone, and how each of the two blocks is lifted."""
    first = addresses[0]
    return (
        f"{', '.join(addresses)} is on the suppression list (a hard bounce, a complaint, an "
        "unsubscribe, or added by hand); remove it from the recipients, or lift each block "
        f"that applies: the account's with DELETE /v1/account/suppressions/{first}"
        "?confirm=DELETE, the agent's own (where its unsubscribe link puts it) with "
        f"DELETE /v1/agents/{agent_email}/suppressions/{first}?confirm=DELETE"
    )


def suppressed_refusal(
    addresses: list[str], agent_email: str, refused: str, then: str = ""
) -> Unprocessable:
    """Unprocessable (`recipient_suppressed`) for mail from `agent_email` that would go to
    `addresses`, which are on the suppression list (`suppressed_text`): `refused` says what
    did not happen ("not sent"), `then` what to do after lifting the suppression."""
    return Unprocessable(
        "recipient_suppressed", f"{refused}: {suppressed_text(addresses, agent_email)}{then}"
    )
