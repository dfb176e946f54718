"""A received message parsed by the standard library as e2a parses it, for the gateway and
the SDK alike: bounded (`e2a_gateway.mime_bounds`), and a single-part body taken whole rather
than read line by line. Standard library only (the SDK imports it); no I/O here.

The stdlib's parser reads a body line by line in Python (about half a microsecond a line:
25 MB of empty lines took 7 s) to join the lines again, unchanged, as the payload of a part
that is neither multipart nor message/*. So only the header section is given to it; when it
makes the message such a part, the rest of the text is its payload as it would have been.
Multipart and message/* mail is parsed whole.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email.message import EmailMessage, Message, MIMEPart

from e2a_gateway.charsets import READING_PARAMETERS, decoded_text, html_charset, part_filename
from e2a_gateway.email_policies import READING
from e2a_gateway.mime_bounds import within_bounds

_PARSER_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")
"""A line as the stdlib's parser cuts the text: up to CRLF, a CR alone or LF, inclusive."""
_PARSER_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
"""A line the stdlib's parser reads as part of the header section (its `headerRE`)."""
_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")
"""A media type as RFC 2045 writes one (two tokens), lowercase as the stdlib reads it."""
_OPAQUE_TYPE = "application/octet-stream"


def parse_message(raw: bytes) -> EmailMessage:
    """`raw` parsed by the stdlib under `READING_PARAMETERS`, to MAX_NESTING levels and
    MAX_PARTS parts (`within_bounds`): exactly what `email.message_from_bytes` makes of those
    bytes, at the cost of its header section alone when the message is a single part. Raises
    what the stdlib raises reading it: RecursionError (fields nesting comments thousands
    deep), IndexError (a parameter ending in `*` with no value)."""
    text = within_bounds(raw).decode("ascii", "surrogateescape")  # as `message_from_bytes`
    end, body = _header_end(text)
    message = email.message_from_string(text[:end], policy=READING_PARAMETERS)
    assert isinstance(message, EmailMessage)
    if message.get_content_maintype() in ("multipart", "message"):
        message = email.message_from_string(text, policy=READING_PARAMETERS)
        assert isinstance(message, EmailMessage)
    else:
        left = message.get_payload()  # a last header line the parser read as the body's
        assert isinstance(left, str)
        message.set_payload(left + text[body:])
    return message


def _header_end(text: str) -> tuple[int, int]:
    """Where the stdlib's parser ends the header section of `text`, and where it starts the
    body: at the first line that is not a header line, after it when it is empty (the
    separator), at it when it is not (the parser keeps it for the body)."""
    position = 0
    while position < len(text):
        line = _PARSER_LINE.match(text, position)
        assert line is not None  # the pattern matches at any position
        if not _PARSER_HEADER_LINE.match(line.group()):
            empty = line.group() in ("\r\n", "\r", "\n")
            return position, line.end() if empty else position
        position = line.end()
    return position, position


def media_type(part: MIMEPart) -> str:
    """The `type/subtype` of `part` as the stdlib reads it (lowercase; text/plain when its
    Content-Type is missing or names no subtype), or application/octet-stream when that is
    not a media type (RFC 2045): a control character, a space, a quote or a byte beyond ASCII
    in it, which no listing should show and no download can carry in its Content-Type."""
    found = part.get_content_type()
    return found if _MEDIA_TYPE.fullmatch(found) else _OPAQUE_TYPE


BODY_TYPES = frozenset({"text/plain", "text/html"})
"""The types of a part that may be a message's text or HTML body."""
ATTACHED_MESSAGE_FILENAME = "forwarded.eml"
"""The filename of an attached message whose part names none."""

_ATTACHED_MESSAGES = frozenset({"message/rfc822", "message/global"})
_WRITING = READING.clone(refold_source="none", linesep="\r\n")
"""Writes a parsed message back out with its header fields as they came."""


def attachment_parts(message: EmailMessage) -> list[EmailMessage]:
    """The parts listed as attachments, in the order of their indexes: every leaf part with a
    filename or a Content-Disposition that is not the first text/plain or text/html part,
    in document order, attached messages' parts included; then each attached message
    (message/rfc822, message/global) itself; then every other leaf part that is not text/plain
    or text/html (body text) nor a multipart part the parser could not split (read as text):
    an image the HTML shows by `cid:` naming no file, a calendar invitation, the encrypted
    part of PGP/MIME.

    Attached messages and then parts naming no file come last, and attached messages' parts
    stay listed, because a message keeps the indexes it was given when accepted
    (`e2a_gateway.attachments`), and those accepted before they were listed must find their
    attachments at the same indexes."""
    listed: list[EmailMessage] = []
    attached: list[EmailMessage] = []
    unnamed: list[EmailMessage] = []
    seen: set[str] = set()
    for part in message.walk():
        content_type = part.get_content_type()
        if part.is_multipart():
            if content_type in _ATTACHED_MESSAGES:
                attached.append(part)
            continue
        disposition = part.get_content_disposition()
        role = "other"
        if disposition != "attachment" and content_type == "text/plain" and "text" not in seen:
            role = "text"
        elif disposition != "attachment" and content_type == "text/html" and "html" not in seen:
            role = "html"
        elif disposition in ("attachment", "inline") or part.get_filename():
            role = "attachment"
            listed.append(part)
        elif content_type not in BODY_TYPES and part.get_content_maintype() != "multipart":
            unnamed.append(part)
        seen.add(role)
    return listed + attached + unnamed


def attachment_bytes(part: EmailMessage) -> bytes:
    """The decoded bytes of a part `attachment_parts` lists: of an attached message (the
    only multipart parts it lists), the message written back out as parsed, not always byte
    for byte as it came."""
    if not part.is_multipart():
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""
    try:
        inner = part.get_payload(0)
        written = inner.as_bytes(policy=_WRITING) if isinstance(inner, Message) else b""
    except Exception:  # a message too broken to write back out
        return b""
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding in ("", "7bit", "8bit", "binary"):
        return written
    # RFC 2046 lets no message/* part be encoded, but senders base64 them (Python's
    # add_attachment does): the parser read the encoded text as the message's body.
    encoded = Message()
    encoded["Content-Transfer-Encoding"] = encoding
    encoded.set_payload(written.decode("ascii", "surrogateescape"))
    decoded = encoded.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else b""


def attachment_filename(part: MIMEPart) -> str | None:
    """The file name an attachment `attachment_parts` lists goes by: the one it names
    (`part_filename`), else ATTACHED_MESSAGE_FILENAME for an attached message; None."""
    filename = part_filename(part)
    if filename is None and part.is_multipart():
        return ATTACHED_MESSAGE_FILENAME
    return filename


def _part_text(part: MIMEPart) -> str | None:
    """A text part's content in its charset (`decoded_text`), with LF line endings; HTML
    that names none in its Content-Type in the one its <meta> names (`html_charset`)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset()
    if charset is None and part.get_content_type() == "text/html":
        charset = html_charset(payload)
    return decoded_text(payload, charset).replace("\r\n", "\n")


def _own_parts(part: MIMEPart) -> Iterator[MIMEPart]:
    """The leaf parts of `part` in document order, without those of attached messages
    (message/*): their text is theirs, not this message's."""
    if part.get_content_maintype() == "message":
        return
    if not part.is_multipart():
        yield part
        return
    for child in part.iter_parts():
        yield from _own_parts(child)


def message_bodies(message: EmailMessage) -> tuple[str | None, str | None]:
    """The text and HTML bodies of `message` (LF line endings): its first text/plain and
    text/html parts that are not attachments, each followed, in document order, by the later
    ones that name no file either, as a client sends the text after an inline PDF or image.
    Texts are joined by a blank line, HTML as it is. A multipart part the parser could not
    split (no boundary, or none found in it) reads as text/plain. The gateway's views and the
    SDK (a webhook's or WebSocket frame's raw message) read a message's bodies with this."""
    bodies: dict[str, list[str]] = {"text/plain": [], "text/html": []}
    for part in _own_parts(message):
        unsplit = part.get_content_maintype() == "multipart"  # a leaf: no parts found in it
        found = bodies.get("text/plain" if unsplit else part.get_content_type())
        if found is None or part.get_content_disposition() == "attachment":
            continue
        if found and part.get_filename() is not None:
            continue  # a later part that names a file is an attachment, not more of the body
        content = _part_text(part)
        if content is not None:
            found.append(content)
    texts, htmls = bodies["text/plain"], bodies["text/html"]
    text = "\n\n".join([*(item.rstrip("\n") for item in texts[:-1]), *texts[-1:]])
    return (text if texts else None), ("".join(htmls) if htmls else None)


def text_flow(message: EmailMessage) -> tuple[bool, bool]:
    """Whether the first text/plain body part of `message` (the one `message_bodies` starts its
    text with) is format=flowed (RFC 3676), and whether with DelSp=yes."""
    for part in _own_parts(message):
        if part.get_content_type() != "text/plain":
            continue
        if part.get_content_disposition() == "attachment":
            continue
        flowed = str(part.get_param("format", "") or "").lower() == "flowed"
        delsp = str(part.get_param("delsp", "") or "").lower() == "yes"
        return flowed, flowed and delsp
    return False, False
