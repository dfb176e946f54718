"""Reading a received message: the headers the gateway indexes and the body parts agents want.

Pure functions over the raw bytes with the stdlib `email` package. Header fields are read as
UTF-8 (RFC 6532) with RFC 2047 encoded words decoded (`e2a_gateway.rfc5322.header_text`); text
parts and encoded words in their declared charsets, read as `_decoded_text` reads them. They
never raise on malformed mail: a header that cannot be parsed reads as empty, an undecodable
part is skipped.
"""

from __future__ import annotations

import base64
import codecs
import email
import email.errors
import email.header
import email.utils
import hashlib
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message, MIMEPart
from functools import partial

from cachetools import LRUCache, cached

from e2a_gateway.addresses import lowercase_address
from e2a_gateway.attachments import Attachment
from e2a_gateway.email_policies import READING, HeaderClassesOnce
from e2a_gateway.rfc5322 import HeaderFields, field_addresses, header_text

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


_CHARSET_ALIASES = {
    "iso-8859-6-i": "iso8859_6",
    "iso-8859-6-e": "iso8859_6",
    "iso-8859-8-i": "iso8859_8",
    "iso-8859-8-e": "iso8859_8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-ukrainian": "mac_cyrillic",
    "windows-31j": "cp932",
    "x-sjis": "cp932",
    "x-euc-jp": "euc_jp",
    "x-gbk": "gbk",
    "gb2312": "gbk",
    "ks_c_5601-1987": "cp949",
    "windows-949": "cp949",
}
"""Charset labels mail carries that Python's codecs do not know, or know as a narrower charset
than senders write in (GB2312 for GBK, EUC-KR for Windows' Korean), with the codec to read them
in, as WHATWG's Encoding Standard (browsers, Thunderbird) maps them."""


_READ_AS = {"iso8859-1": "cp1252", "iso8859-9": "cp1254", "iso8859-11": "cp874", "tis-620": "cp874"}
"""Charsets (by Python's codec name) whose text senders write in Windows' superset of them,
with that superset: Outlook labels text with “smart quotes” and € `iso-8859-1`. Latin-1 reads
any byte, so those would show as C1 control characters; WHATWG's Encoding Standard (browsers,
Thunderbird) reads the labels as the superset."""

_ISO_2022_JP_ESCAPE = re.compile(rb"\x1b(\(B|\(J|\(I|\$@|\$B)")


def _iso_2022_jp_as_windows_reads_it(data: bytes) -> str:
    """ISO-2022-JP `data` read with Windows' JIS X 0208 (code page 932: NEC's row 13 of ①, ㈱,
    Ⅲ, and IBM's extensions), which Windows mailers write and WHATWG's decoder reads: each
    two-byte run turned into Shift_JIS, half-width katakana into its byte. ValueError when
    `data` is not ISO-2022-JP."""
    pieces = _ISO_2022_JP_ESCAPE.split(data)
    shift_jis = bytearray(pieces[0])
    for escape, run in zip(pieces[1::2], pieces[2::2], strict=True):
        if escape in (b"$@", b"$B"):
            if len(run) % 2 or not all(0x21 <= byte <= 0x7E for byte in run):
                raise ValueError("not JIS X 0208")
            for first, second in zip(run[::2], run[1::2], strict=True):
                lead = (first + 1) // 2 + (0x70 if first <= 0x5E else 0xB0)
                trail = second + 0x1F + (second >= 0x60) if first % 2 else second + 0x7E
                shift_jis += bytes((lead, trail))
        elif escape == b"(I":
            if not all(0x21 <= byte <= 0x5F for byte in run):
                raise ValueError("not half-width katakana")
            shift_jis += bytes(byte + 0x80 for byte in run)
        elif b"\x1b" in run:
            raise ValueError("an escape sequence of another ISO-2022 charset")
        else:
            shift_jis += run
    if b"\x1b" in pieces[0]:
        raise ValueError("an escape sequence of another ISO-2022 charset")
    return _windows_japanese(bytes(shift_jis))


def _iso_2022_jp_wider(data: bytes) -> str:
    """ISO-2022-JP `data` as Windows reads it (`_iso_2022_jp_as_windows_reads_it`), else as
    ISO-2022-JP-2 (JIS X 0212 and the other charsets RFC 1554 adds); ValueError when neither
    reads it."""
    try:
        return _iso_2022_jp_as_windows_reads_it(data)
    except ValueError:
        return data.decode("iso2022_jp_2")


_CODE_PAGE_932_SINGLE_BYTES = re.compile("[\uf8f0-\uf8f3]")
"""What Python's cp932 reads bytes 0xA0, 0xFD, 0xFE and 0xFF as: private-use characters for
bytes Shift_JIS has no character for."""


def _windows_japanese(data: bytes) -> str:
    """`data` in code page 932, Windows' Shift_JIS; ValueError where it has no character."""
    text = data.decode("cp932")
    if _CODE_PAGE_932_SINGLE_BYTES.search(text):
        raise ValueError("not Shift_JIS")
    return text


_WIDER: dict[str, Callable[[bytes], str]] = {
    "shift_jis": _windows_japanese,
    "iso2022_jp": _iso_2022_jp_wider,
    "euc_kr": lambda data: data.decode("cp949"),
    "big5": lambda data: data.decode("big5hkscs"),
}
"""Charsets (by Python's codec name) narrower than what senders labelling text with them write,
with a reading in the wider charset (Windows' Japanese and Korean, Hong Kong's Big5), tried when
the text is invalid in the narrow one, as WHATWG's decoders read those labels."""


_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
"""Byte order marks and the charset each says the text is in."""


def _codec(label: str) -> str | None:
    """Python's codec for MIME charset `label` (`_CHARSET_ALIASES` followed, `_READ_AS`
    applied); None when Python knows none."""
    label = _CHARSET_ALIASES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):
        return None
    return _READ_AS.get(name, name)


def _decoded_text(data: bytes, charset: str | None) -> str:
    """`data` as text in MIME charset `charset` (us-ascii when None), read as `_codec` names,
    or in the wider charset `_WIDER` names when invalid in that. Bytes that a charset Python
    does not know labels, or 8-bit bytes invalid in theirs, read as UTF-8 when they are (7-bit
    bytes invalid in a known charset are in a 7-bit one such as ISO-2022-JP, never UTF-8);
    else in the declared charset with U+FFFD for what is invalid, or, for an unknown or 7-bit
    charset, as windows-1252. A byte order mark decides the charset and is no part of the
    text (as WHATWG's `decode` reads it). Never raises."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            data, charset = data[len(mark) :], encoding
            break
    codec = _codec((charset or "us-ascii").strip().lower())
    readings: list[Callable[[bytes], str]] = []
    if codec is not None:
        readings.append(partial(bytes.decode, encoding=codec))
        if codec in _WIDER:
            readings.append(_WIDER[codec])
    if codec is None or not data.isascii():
        readings.append(partial(bytes.decode, encoding="utf-8"))
    for reading in readings:
        try:
            return reading(data)
        except (LookupError, ValueError):
            continue
    if codec is not None and codec != "ascii":
        try:
            return data.decode(codec, "replace")
        except LookupError:
            pass
    return data.decode("cp1252", "replace")


_ENCODED_WORD = re.compile(r"=\?([^?*\s]*)(?:\*[^?\s]*)?\?[bBqQ]\?[^?\s]*\?=")


_ENCODED_WORDS = re.compile(rf"{_ENCODED_WORD.pattern}(?:[ \t]+{_ENCODED_WORD.pattern})*")
"""Encoded words with only whitespace between them, which RFC 2047 drops."""


def _word_bytes(word: str) -> bytes | None:
    """The bytes RFC 2047 encoded word `word` holds; None when it holds none (bad base64)."""
    try:
        ((data, _),) = email.header.decode_header(word)
    except (email.errors.HeaderParseError, ValueError):
        return None
    return data if isinstance(data, bytes) else None


def _readable_text(charset: str, words: list[str], data: bytes) -> str:
    """Encoded `words` in `charset`, which hold `data`, as they stand when Python reads them
    in their charset, else `data` as `_decoded_text` reads it, encoded again as UTF-8."""
    text = _decoded_text(data, charset)
    try:
        if len(words) == 1 and data.decode(charset) == text:
            return words[0]
    except (LookupError, ValueError):
        pass
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8", "replace")).decode() + "?="


def _readable_encoded_words(run: re.Match[str]) -> str:
    """A run of RFC 2047 encoded words made readable (`_readable_text`), the bytes of adjacent
    words in one charset read together: senders split a character's bytes between two words,
    and Python's `email` package (every SDK with it) and mail readers join them. A word that
    holds no bytes stays as it is."""
    readable: list[str] = []
    words: list[str] = []
    charset, data = "", b""
    for word in _ENCODED_WORD.finditer(run.group(0)):
        held = _word_bytes(word.group(0))
        if words and (held is None or word.group(1).lower() != charset.lower()):
            readable.append(_readable_text(charset, words, data))
            words, data = [], b""
        if held is None:
            readable.append(word.group(0))
            continue
        charset = word.group(1)
        words.append(word.group(0))
        data += held
    if words:
        readable.append(_readable_text(charset, words, data))
    return " ".join(readable)


def _header_text(message: HeaderFields, name: str) -> str:
    """A header unfolded, with RFC 2047 words decoded (`_readable_encoded_words`) and NUL read
    as U+FFFD (`_without_nul`); '' when absent."""
    value = message.get(name)
    if value is None:
        return ""
    unfolded = _LINE_BREAK.sub("", str(value))
    if "=?" not in unfolded:  # no encoded word: nothing to decode (and parsing costs)
        return _without_nul(unfolded)
    try:
        decoded = str(_UNSTRUCTURED(name, _ENCODED_WORDS.sub(_readable_encoded_words, unfolded)))
    except Exception:
        decoded = unfolded
    return _without_nul(decoded)


def _without_nul(text: str) -> str:
    """`text` with each NUL as U+FFFD: no mail means one, and PostgreSQL's text cannot hold it,
    so a subject or message id that carries one is kept, and read back, alike on every
    backend."""
    return text.replace("\x00", "\ufffd")


def _addresses(message: HeaderFields, name: str) -> list[str]:
    """The addresses in every instance of header `name`, lowercased (`lowercase_address`)."""
    found = []
    for _, address in field_addresses(message.get_all(name)):
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


def _part_text(part: MIMEPart) -> str | None:
    """A text part's content in its charset (`_decoded_text`), with LF line endings."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    return _decoded_text(payload, part.get_content_charset()).replace("\r\n", "\n")


_PARAMETER_SEGMENT = re.compile(r'(?:"(?:[^"\\]|\\.)*"?|[^;"])+')
"""One `;`-separated segment of a MIME field (its value, or one parameter), quotes kept whole."""
_EXTENDED_PARAMETER = re.compile(r"\s*([^\s=*]+)\*(\d+)?(\*)?\s*=\s*(.*?)\s*", re.DOTALL)
"""An RFC 2231 parameter section: `name*=v`, `name*0*=v` (extended) or `name*1=v`."""
_PARAMETER_FIELDS = frozenset({"content-type", "content-disposition"})
_QUOTED_PAIR = re.compile(r"\\(.)")


def _unquoted(value: str) -> str:
    """A parameter value without the quotes of a quoted string and their escapes."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _parameter_text(sections: list[tuple[int, bool, str]]) -> str:
    """The text of an RFC 2231 parameter from its (number, extended, value) sections: their
    bytes joined in order, so a character split between two sections reads whole, and read in
    the charset the first names as `_decoded_text` reads text parts."""
    charset: str | None = None
    data = b""
    for number, extended, value in sorted(sections, key=lambda section: section[0]):
        value = _unquoted(value)
        if not extended:
            data += value.encode("utf-8", "surrogateescape")
            continue
        if number == 0 and value.count("'") >= 2:
            charset, _, value = value.split("'", 2)
        data += urllib.parse.unquote_to_bytes(value)
    return _decoded_text(data, charset or None)


def _readable_parameters(value: str) -> str:
    """A MIME field's `value` with each RFC 2231 parameter (`filename*=iso-8859-1''%93…`)
    written again in UTF-8, its text read as `_parameter_text` reads it: the `email` package
    reads the charset with Python's codec alone (Latin-1 as C1 controls, Shift_JIS without
    NEC's ①), and a multibyte charset that cannot read the bytes made it raise for the whole
    message."""
    segments = _PARAMETER_SEGMENT.findall(value)
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    first: dict[str, int] = {}
    for index, segment in enumerate(segments[1:], start=1):
        found = _EXTENDED_PARAMETER.fullmatch(segment)
        if found is None:
            continue
        name, number, star, text = found.groups()
        extended = number is None or star is not None
        sections.setdefault(name.lower(), []).append((int(number or 0), extended, text))
        first.setdefault(name.lower(), index)
    if not any(extended for named in sections.values() for _, extended, _ in named):
        return value
    kept = [segments[0]]
    for index, segment in enumerate(segments[1:], start=1):
        found = _EXTENDED_PARAMETER.fullmatch(segment)
        if found is None:
            kept.append(segment)
        elif first[found.group(1).lower()] == index:
            text = _parameter_text(sections[found.group(1).lower()])
            encoded = urllib.parse.quote(text.encode("utf-8", "replace"), safe="")
            kept.append(f" {found.group(1)}*=utf-8''{encoded}")
    return ";".join(kept)


class _ParametersAsReadersRead(HeaderClassesOnce):
    """The header classes e2a reads mail with, Content-Type and Content-Disposition read with
    their RFC 2231 parameters made readable first (`_readable_parameters`)."""

    def __call__(self, name: str, value: str) -> BaseHeader:
        if name.lower() in _PARAMETER_FIELDS and "*" in value:
            value = _readable_parameters(value)
        return super().__call__(name, value)


_READING_PARAMETERS = READING.clone(header_factory=_ParametersAsReadersRead())
"""`READING`, RFC 2231 parameters read as mail readers read them."""


_ATTACHED_MESSAGE_FILENAME = "forwarded.eml"
"""The filename of an attached message whose part names none."""

_ATTACHED_MESSAGES = frozenset({"message/rfc822", "message/global"})
_WRITING = READING.clone(refold_source="none", linesep="\r\n")
"""Writes a parsed message back out with its header fields as they came."""


def _message(raw: bytes) -> EmailMessage:
    """`raw` parsed by the stdlib."""
    message = email.message_from_bytes(raw, policy=_READING_PARAMETERS)
    assert isinstance(message, EmailMessage)
    return message


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


def _body(message: EmailMessage) -> tuple[str | None, str | None]:
    """The text and HTML bodies of `message` (LF line endings): its first text/plain and
    text/html parts that are not attachments, each followed, in document order, by the later
    ones that name no file either, as a client sends the text after an inline PDF or image.
    Texts are joined by a blank line, HTML as it is. A multipart part the parser could not
    split (no boundary, or none found in it) reads as text/plain."""
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


def _attachment_parts(message: EmailMessage) -> list[EmailMessage]:
    """The parts listed as attachments, in the order of their indexes: every leaf part with a
    filename or a Content-Disposition that is not the first text/plain or text/html part,
    in document order, attached messages' parts included; then each attached message
    (message/rfc822, message/global) itself.

    Attached messages come last, and their parts stay listed, because a message keeps the
    indexes it was given when accepted (`encode_attachments`), and those accepted before
    attached messages were listed must find their attachments at the same indexes."""
    listed: list[EmailMessage] = []
    attached: list[EmailMessage] = []
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
        seen.add(role)
    return listed + attached


def _attachment_bytes(part: EmailMessage) -> bytes:
    """The decoded bytes of a part `_attachment_parts` lists: of an attached message (the
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


_FILENAME_PARAMETERS = (("content-disposition", "filename"), ("content-type", "name"))
"""Where a part names its file, in the order `Message.get_filename` looks."""


def _filename(part: MIMEPart) -> str | None:
    """The filename `part` names (`Message.get_filename`), its RFC 2047 encoded words, which
    senders put in quoted filenames though RFC 2047 forbids it and every reader reads them,
    read as a subject's are (`_readable_encoded_words`): the `email` package reads ISO-2022-JP
    with ① or labels it has no codec for as they stand, and Latin-1 as C1 controls."""
    filename = part.get_filename()
    if filename is None:
        return None
    fields = {
        name.lower(): _LINE_BREAK.sub("", value) for name, value in reversed(list(part.raw_items()))
    }  # the first of each, as `get_filename` reads it
    if not any("=?" in fields.get(field, "") for field, _ in _FILENAME_PARAMETERS):
        return filename
    for field, parameter in _FILENAME_PARAMETERS:
        value = fields.get(field)
        if value is None:
            continue
        readable = _ENCODED_WORDS.sub(_readable_encoded_words, value)
        header = _READING_PARAMETERS.header_factory(field, readable)
        named = getattr(header, "params", {}).get(parameter)
        if named is not None:
            return str(named).strip()
    return filename


def _attachment(part: EmailMessage, data: bytes) -> Attachment:
    """The metadata of attachment `part`, whose decoded bytes are `data`."""
    filename = _filename(part)
    if filename is None and part.is_multipart():
        filename = _ATTACHED_MESSAGE_FILENAME
    content_id = part.get("Content-ID")
    return Attachment(
        filename=filename,
        content_type=part.get_content_type(),
        size=len(data),
        content_id=str(content_id).strip() if content_id else None,
    )


_UNREADABLE = (RecursionError, IndexError)
"""What the stdlib's MIME parser raises on mail any sender can write: RecursionError for
fields nesting comments a few thousand deep (it reads a comment in a comment by recursion),
IndexError for a parameter ending in `*` with no value (`charset*`)."""


@cached(_parsed_bodies, key=lambda raw: hashlib.sha256(raw).digest(), lock=threading.Lock())
def parse_body(raw: bytes) -> ParsedBody:
    """The text and HTML bodies (`_body`) and every attachment (`_attachment_parts`).

    Parsing costs about a millisecond per kilobyte of mail and the same bytes always read the
    same, so the most recently read bodies are kept, by the SHA-256 of their bytes, within
    PARSED_BODY_CACHE_BUDGET: reading a message again, as agents and the dashboard do, costs
    a hash.

    A message the stdlib cannot parse has nothing readable (`_UNREADABLE`)."""
    try:
        message = _message(raw)
        text, html = _body(message)
        attachments = tuple(
            _attachment(part, _attachment_bytes(part)) for part in _attachment_parts(message)
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
        found = _attachment_parts(_message(raw))
        if not 0 <= index < len(found):
            return None
        data = _attachment_bytes(found[index])
        return _attachment(found[index], data), data
    except _UNREADABLE:
        return None
