"""Building outbound messages with the stdlib `email` package. Pure: no I/O, no clock.

Text, text + HTML alternative, attachments, every body 7-bit; non-ASCII headers RFC
2047-encoded (display names of Reply-To included), except an address beyond ASCII (RFC 6531),
which no encoded word may carry: a message naming one has its header fields in UTF-8 (RFC 6532,
`UTF8_HEADERS`) and needs SMTPUTF8 to travel; our own Message-ID and Date; threading
headers. A line break of any kind (CR, LF, NEL, U+2028, U+2029) or another control character
in a header value is refused (also one an RFC 2047 encoded word in it decodes to), so a
request can never inject a header nor make a message that cannot be built.
"""

from __future__ import annotations

import base64
import binascii
import email.header
import email.policy
import email.utils
import re
import secrets
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from e2a_gateway.addresses import AddressError, internationalised, parse_mailboxes
from e2a_gateway.email_policies import HeaderClassesOnce
from e2a_gateway.html_text import html_text

CONVERSATION_HEADER = "X-E2A-Conversation-Id"
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
_CONTENT_TYPE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]*/[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]*")
_STRUCTURED = re.compile(r"^(multipart/|message/(?!(rfc822|global)$))", re.IGNORECASE)
"""Media types whose body the `email` package and mail readers take as MIME structure: a
multipart needs a boundary and is never encoded, message/partial and message/external-body
are 7bit only, and message/delivery-status cannot be written from data at all."""
_REPLY_PREFIX = re.compile(r"^\s*re\s*:", re.IGNORECASE)
_BASE64_WHITESPACE = str.maketrans("", "", "\r\n \t")
"""What wrapped base64 holds besides its alphabet: line breaks, spaces and tabs."""
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
"""C0 controls but TAB, DEL, C1 controls (NEL among them) and the Unicode line and paragraph
separators: each either breaks a header line or has no business in one."""
_CONTENT_ID = re.compile(r"[!-;=?-~]+")
"""A Content-ID without its angle brackets: printable ASCII but `<` and `>`, no spaces."""
_FOLD = re.compile(r"\r\n(?=[ \t])")
"""A line break that folds a header field (before the whitespace continuing it)."""


SEVEN_BIT = email.policy.SMTP.clone(
    cte_type="7bit", header_factory=HeaderClassesOnce(), refold_source="none"
)
"""CRLF line ends and bodies 7-bit clean: text beyond ASCII goes quoted-printable or base64
(whichever is shorter), never `8bit`. A relay then has nothing to downgrade on the way, which
would break the DKIM body hash (RFC 6376 section 5.3 asks signers for this), and a relay that
does not offer 8BITMIME is never sent 8-bit data (RFC 6152). Header classes are made once
(`HeaderClassesOnce`). A header set raw (`_set_tokens`) is written as it was set."""
UTF8_HEADERS = SEVEN_BIT.clone(utf8=True)
"""SEVEN_BIT for a message that names an address beyond ASCII (`josé@example.com`): its header
fields are written in UTF-8 (RFC 6532), as such an address must be, its bodies still 7-bit. The
relay must take it with SMTPUTF8 (RFC 6531); one that does not offer it is never given it."""
MAX_LINE_OCTETS = 998
"""RFC 5322 section 2.1.1: the most a line of a message may hold, CRLF aside."""


class InvalidDraft(ValueError):
    """The request cannot become a safe message; the text names the field and the problem."""


@dataclass(frozen=True)
class Attachment:
    """A decoded attachment ready to be added to a message."""

    filename: str
    content_type: str
    """The media type, `type/subtype` in lowercase."""
    data: bytes
    params: dict[str, str] = field(default_factory=dict)
    """The media type's parameters given with it (`charset`, say)."""
    content_id: str | None = None
    """The Content-ID (without angle brackets) by which the HTML body shows it (`cid:` URLs):
    an inline image carried over from received mail; None for a file attached."""


@dataclass(frozen=True)
class Draft:
    """Everything needed to build one outbound message."""

    from_addr: str
    to: list[str]
    subject: str
    text: str
    """The text/plain body; blank beside `html`: the text the HTML shows (`html_text`)."""
    html: str | None = None
    """The HTML alternative; None or empty: the message is text only."""
    cc: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    conversation_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    reply_to: str | None = None
    """The Reply-To mailboxes as `addresses.format_mailbox` writes them, joined with ", "."""
    auto_submitted: str | None = None
    """RFC 3834 `Auto-Submitted` (`auto-generated`, `auto-replied`) for mail e2a writes itself."""
    list_unsubscribe: str | None = None
    """The managed-unsubscribe link (an https URL): written as `List-Unsubscribe` with RFC
    8058's `List-Unsubscribe-Post`, for the DKIM signature to cover."""


def as_header_reads(value: str) -> str:
    """`value` as the `email` package holds it once set as a header: its RFC 2047 encoded words
    (`=?utf-8?q?…?=`) decoded, also where RFC 2047 allows none (inside a word, in a quoted
    parameter such as a filename). What it decodes to is what the package writes."""
    if "=?" not in value:
        return value
    return str(SEVEN_BIT.header_factory("subject", value))


def address_as_written(address: str) -> str:
    """`address` as the `email` package writes it alone in an address field (To, Cc), unfolded.
    It differs from `address` when the package reads something in it as RFC 2047 encoded words
    (`=?utf-8?q?bob?=@example.com` is written `bob@example.com`): the message would then name
    another mailbox than the one its envelope goes to."""
    policy = SEVEN_BIT if address.isascii() else UTF8_HEADERS
    folded = policy.header_factory("to", address).fold(policy=policy)
    return _FOLD.sub("", folded).removeprefix("to: ").removesuffix("\r\n")


def check_header_value(name: str, value: str) -> str:
    """Return `value` if it holds no line break nor control character (header injection), also
    once its RFC 2047 encoded words are decoded (`as_header_reads`: the `email` package writes
    a decoded line break as it is), else raise InvalidDraft naming the field and the
    character."""
    found = _UNSAFE_IN_HEADER.search(value)
    encoded = ""
    if found is None:
        found = _UNSAFE_IN_HEADER.search(as_header_reads(value))
        encoded = " in an RFC 2047 encoded word"
    if found is not None:
        raise InvalidDraft(
            f"{name} must not contain line breaks or control characters "
            f"(found U+{ord(found.group()):04X}{encoded})"
        )
    return value


def reply_to_header(value: str) -> list[Address]:
    """The mailboxes of a Reply-To value (`Draft.reply_to`), for the `email` package to write:
    each display name quoted or RFC 2047-encoded as it needs. InvalidDraft when the value is
    not mailboxes."""
    check_header_value("reply_to", value)
    try:
        mailboxes = parse_mailboxes(value)
    except AddressError as exc:
        raise InvalidDraft(f"reply_to: {exc}") from None
    return [Address(display_name=name, addr_spec=address) for name, address in mailboxes]


def header_text(value: str) -> str:
    """`value` with each line break or control character replaced by a space: text from a
    received message made fit for a header of ours. Encoded words that decode to one (a
    received subject may hold them as text, encoded once more) are decoded first, until none
    is left that would (each decoding shortens the text)."""
    text = _UNSAFE_IN_HEADER.sub(" ", value)
    while _UNSAFE_IN_HEADER.search(decoded := as_header_reads(text)):
        text = _UNSAFE_IN_HEADER.sub(" ", decoded)
    return text


def without_whitespace(data: str) -> str:
    """Base64 `data` without the line breaks, spaces and tabs that wrap it (at 76 columns, as
    MIME bodies are)."""
    return data.translate(_BASE64_WHITESPACE)


def bare_content_id(value: str) -> str | None:
    """The Content-ID `value` (`<…>` or bare) without its angle brackets; None when a message
    cannot carry it: not printable ASCII, or holding spaces."""
    bare = value.strip().removeprefix("<").removesuffix(">")
    return bare if _CONTENT_ID.fullmatch(bare) else None


def decode_attachment(
    index: int, filename: str, content_type: str, data: str, content_id: str | None = None
) -> Attachment:
    """Validate one attachment of a request: name, media type and standard base64 data (CR, LF,
    space and tab between its characters are dropped first, as mail decoders drop them), and
    the Content-ID of an inline image carried over (`<…>` or bare; None for a file)."""
    label = f"attachments[{index}]"
    if content_id is not None:
        content_id = bare_content_id(content_id)
        if content_id is None:
            raise InvalidDraft(f"{label}.content_id must be printable ASCII without spaces")
    check_header_value(f"{label}.filename", filename)
    if not filename.strip():
        raise InvalidDraft(f"{label}.filename must not be empty")
    media_type, params = _media_type(label, content_type)
    if _STRUCTURED.match(media_type):
        raise InvalidDraft(
            f"{label}.content_type {media_type} is a MIME structure, not a file a message can "
            "carry encoded (RFC 2046): attach it as application/octet-stream, or a message "
            "as message/rfc822"
        )
    try:
        raw = base64.b64decode(without_whitespace(data), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDraft(f"{label}.data must be standard base64") from None
    if len(raw) > MAX_ATTACHMENT_BYTES:
        raise InvalidDraft(f"{label} is larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB")
    return Attachment(filename, media_type, raw, params, content_id)


def _media_type(label: str, content_type: str) -> tuple[str, dict[str, str]]:
    """The `type/subtype` (lowercase) and the parameters of an attachment's `content_type`, as
    a Content-Type field writes them (`text/csv; charset=utf-8`); InvalidDraft naming `label`
    when it is not that, or a parameter holds a line break or control character."""
    check_header_value(f"{label}.content_type", content_type)
    main, _, rest = content_type.partition(";")
    main = main.strip().lower()
    if not _CONTENT_TYPE.fullmatch(main):
        raise InvalidDraft(f"{label}.content_type must look like type/subtype")
    if not rest.strip():
        return main, {}
    header = SEVEN_BIT.header_factory("content-type", f"{main};{rest}")
    params = dict(getattr(header, "params", {}))
    if header.defects or not params:
        raise InvalidDraft(
            f"{label}.content_type parameters must be name=value pairs after ';' "
            "(text/csv; charset=utf-8)"
        )
    for name, value in params.items():
        check_header_value(f"{label}.content_type parameter {name}", value)
    return main, params


def carriable_type(content_type: str) -> str:
    """`content_type` of an attachment carried over from received mail, or
    `application/octet-stream` when it is a MIME structure that cannot go as data (which
    `decode_attachment` refuses)."""
    return "application/octet-stream" if _STRUCTURED.match(content_type) else content_type


def reply_subject(subject: str) -> str:
    """`Re: <subject>`, without stacking prefixes."""
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"


def new_message_id(domain: str) -> str:
    """A fresh RFC 5322 Message-ID on `domain`."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def _set_tokens(message: EmailMessage, name: str, tokens: list[str]) -> None:
    """Set header `name` to `tokens` (Message-IDs, a conversation id) as they are, one to a
    line: the `email` package would write one too long for a line of 78 (an Outlook Message-ID,
    say) as RFC 2047 encoded-words, which no msg-id may be (RFC 5322 section 3.6.4) and no
    client then matches. A token beyond ASCII or too long for any line is left to the package."""
    if all(token.isascii() and len(name) + 2 + len(token) <= MAX_LINE_OCTETS for token in tokens):
        message.set_raw(name, "\r\n ".join(tokens))
    else:
        message[name] = " ".join(tokens)


MAX_HEADER_LINE = 78
"""RFC 5322 section 2.1.1: the length a header line should keep within, CRLF aside."""
_FOLDING = "\r\n "


def _encoded_words(text: str, field: str | None) -> str:
    """`text` as RFC 2047 encoded words of UTF-8, whole, its spaces inside the words, folded
    into lines within MAX_HEADER_LINE: the first after `field: ` (after a folding space when
    `field` is None), the others after a folding space.

    The `email` package folds such text with the space between two of its words as folding
    whitespace, which RFC 2047 readers drop (section 6.2): in one long subject or display name
    beyond ASCII in five, "München über" read "Münchenüber"."""
    if field is None:
        header = email.header.Header(text, "utf-8", maxlinelen=MAX_HEADER_LINE - 1)
    else:
        header = email.header.Header(text, "utf-8", MAX_HEADER_LINE, field)
    return header.encode(splitchars="", linesep=_FOLDING[:2])


def _set_subject(message: EmailMessage, subject: str) -> None:
    """Subject: beyond ASCII as `_encoded_words`, else as the `email` package writes it."""
    if subject.isascii():
        message["Subject"] = subject
    else:
        message.set_raw("Subject", _encoded_words(subject, "Subject"))


def _set_mailboxes(message: EmailMessage, name: str, value: str | list[Address]) -> None:
    """Address field `name` holding the mailboxes of `value` (written as `address_as_written`
    reads them), one to a line, each display name beyond ASCII as `_encoded_words`; without
    one, or with a group, as the `email` package writes it."""
    header = SEVEN_BIT.header_factory(name, value)
    groups = getattr(header, "groups", ())
    mailboxes = [mailbox for group in groups for mailbox in group.addresses]
    if any(group.display_name is not None for group in groups) or all(
        mailbox.display_name.isascii() for mailbox in mailboxes
    ):
        message[name] = value
        return
    written = []
    for index, mailbox in enumerate(mailboxes):
        field = name if index == 0 else None
        if mailbox.display_name.isascii():
            folded = SEVEN_BIT.header_factory(name, [mailbox]).fold(policy=message.policy)
            written.append(folded.removeprefix(f"{name}: ").removesuffix("\r\n"))
            continue
        words = _encoded_words(mailbox.display_name, field)
        first = f"{field}: " if field else " "
        last = first + words if _FOLDING not in words else " " + words.rpartition(_FOLDING)[2]
        address = f"<{mailbox.addr_spec}>"
        fits = len(last) + 1 + len(address) <= MAX_HEADER_LINE
        written.append(words + (" " if fits else _FOLDING) + address)
    message.set_raw(name, f",{_FOLDING}".join(written))


def _fits_7bit(data: bytes) -> bool:
    """Whether `data` can go into the message as it is, 7-bit: ASCII without NUL (which no
    7-bit data may hold, RFC 2045 section 2.7), no line longer than MAX_LINE_OCTETS. A longer
    line would make the whole message invalid (RFC 5322 section 2.1.1): a relay refuses it or
    breaks the line, which breaks the DKIM signature too."""
    return (
        data.isascii()
        and b"\x00" not in data
        and all(len(line) <= MAX_LINE_OCTETS for line in data.splitlines())
    )


def _add_inline(message: EmailMessage, images: list[Attachment]) -> None:
    """`images` (each with its Content-ID) beside the HTML body in a multipart/related part
    (RFC 2387), inline, where its `cid:` URLs find them."""
    html = message.get_body(("html",))
    for image in images:
        assert html is not None and image.content_id is not None
        maintype, _, subtype = image.content_type.partition("/")
        html.add_related(
            image.data,
            maintype=maintype,
            subtype=subtype,
            cid=f"<{image.content_id}>",
            disposition="inline",
            filename=image.filename,
            params=image.params,
        )


def build_message(draft: Draft, *, message_id: str, date: float) -> bytes:
    """The message as bytes with CRLF line endings, ready for SMTP DATA or local delivery.

    Bcc recipients are never written into the message."""
    for name, value in (("from", draft.from_addr), ("subject", draft.subject)):
        check_header_value(name, value)
    for name, values in (("to", draft.to), ("cc", draft.cc), ("references", draft.references)):
        for value in values:
            check_header_value(name, value)
    plain = not any(internationalised(address) for address in [*draft.to, *draft.cc])
    message = EmailMessage(policy=SEVEN_BIT if plain else UTF8_HEADERS)
    _set_mailboxes(message, "From", draft.from_addr)
    if draft.to:  # a forward may go to Cc only: no empty To field (RFC 5322 needs an address)
        _set_mailboxes(message, "To", ", ".join(draft.to))
    if draft.cc:
        _set_mailboxes(message, "Cc", ", ".join(draft.cc))
    if draft.reply_to:
        _set_mailboxes(message, "Reply-To", reply_to_header(draft.reply_to))
    _set_subject(message, draft.subject)
    message["Date"] = email.utils.formatdate(date, usegmt=True)
    message["Message-ID"] = message_id
    if draft.auto_submitted:
        message["Auto-Submitted"] = check_header_value("auto_submitted", draft.auto_submitted)
    if draft.in_reply_to:
        _set_tokens(message, "In-Reply-To", [check_header_value("in_reply_to", draft.in_reply_to)])
    if draft.references:
        _set_tokens(message, "References", draft.references)
    if draft.conversation_id:
        conversation = check_header_value("conversation_id", draft.conversation_id)
        _set_tokens(message, CONVERSATION_HEADER, [conversation])
    if draft.list_unsubscribe:
        link = check_header_value("list_unsubscribe", draft.list_unsubscribe)
        _set_tokens(message, "List-Unsubscribe", [f"<{link}>"])
        _set_tokens(message, "List-Unsubscribe-Post", ["List-Unsubscribe=One-Click"])
    # HTML alone: an empty plain alternative is what text-only readers and previews would show
    blank = not draft.text.strip()
    message.set_content(html_text(draft.html) if draft.html and blank else draft.text)
    files = draft.attachments
    if draft.html:  # an empty HTML part is what clients would show: a blank message
        message.add_alternative(draft.html, subtype="html")
        files = [item for item in draft.attachments if item.content_id is None]
        _add_inline(message, [item for item in draft.attachments if item.content_id])
    for attachment in files:
        if attachment.content_type == "message/rfc822" and _fits_7bit(attachment.data):
            # a message encapsulated as it is (RFC 2046 section 5.2.1 allows no base64 there)
            forwarded = email.message_from_bytes(attachment.data, policy=SEVEN_BIT)
            message.add_attachment(forwarded, cte="7bit", filename=attachment.filename)
            continue
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
            params=attachment.params,
        )
    # The package writes the base64 of a message/* part it cannot encapsulate with LF line
    # ends, whatever the policy says: end every line with CRLF, as the relay gets it.
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
