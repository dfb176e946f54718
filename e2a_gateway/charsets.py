"""How mail's text is read in the charsets it declares, as mail readers read it.

Text parts, RFC 2047 encoded words and RFC 2231 parameters name their charsets; those are read
as WHATWG's Encoding Standard (browsers, Thunderbird) reads their labels, never by Python's
codecs alone. Standard library only: the gateway and the SDK read mail alike with it. No I/O.
"""

from __future__ import annotations

import base64
import codecs
import email.errors
import email.header
import functools
import re
import unicodedata
import urllib.parse
from collections.abc import Callable
from email.headerregistry import BaseHeader
from email.message import MIMEPart
from functools import partial

from e2a_gateway.bidi import BIDI_CONTROLS
from e2a_gateway.email_policies import READING, HeaderClassesOnce
from e2a_gateway.rfc5322 import HeaderFields
from e2a_gateway.utf8_cuts import utf8_prefix, utf8_size

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_UNSTRUCTURED = HeaderClassesOnce(use_default_map=False)
"""Reads every field as unstructured text: RFC 2047 words decoded, anything else as it is."""


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


def _euro_for_lone_0x80(error: UnicodeError) -> tuple[str, int]:
    """A codec error handler: byte 0x80 where a character starts reads as the euro sign (code
    page 936's single byte for it, which WHATWG's gb18030 decoder reads so); any other error
    is raised as it is."""
    if isinstance(error, UnicodeDecodeError) and error.object[error.start] == 0x80:
        return "\u20ac", error.start + 1
    raise error


codecs.register_error("e2a-euro-for-0x80", _euro_for_lone_0x80)


def _windows_chinese(data: bytes) -> str:
    """`data` as WHATWG's gb18030 decoder reads text labelled GB2312, GBK or GB18030: GB18030
    (its two- and four-byte characters beyond GBK), 0x80 the euro sign as code page 936 writes
    it; ValueError where it has no character."""
    return data.decode("gb18030", "e2a-euro-for-0x80")


_WIDER: dict[str, Callable[[bytes], str]] = {
    "shift_jis": _windows_japanese,
    "gbk": _windows_chinese,
    "gb18030": _windows_chinese,
    "iso2022_jp": _iso_2022_jp_wider,
    "euc_kr": lambda data: data.decode("cp949"),
    "big5": lambda data: data.decode("big5hkscs"),
}
"""Charsets (by Python's codec name) narrower than what senders labelling text with them write,
with a reading in the wider charset (Windows' Japanese, Korean and Chinese, Hong Kong's Big5),
tried when the text is invalid in the narrow one, as WHATWG's decoders read those labels."""


_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16's, the first two bytes of it
    (codecs.BOM_UTF32_BE, "utf-32-be"),
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


_MISLABELLED_UTF8 = frozenset({"cp1252"})
"""Charsets (by the codec `_codec` names) that scripts and old mailers label any text with
(`iso-8859-1`, `latin1`, `windows-1252`), UTF-8 included: 8-bit bytes that are UTF-8, every
multibyte sequence whole, are read as UTF-8 (Latin-1 text almost never is: `é` then an ASCII
letter is not), so `Café` does not show as `CafÃ©`."""

_META_CHARSET = re.compile(rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
"""A `<meta charset=…>` element, or an `http-equiv` one whose content names a charset."""
_META_PRESCAN_BYTES = 1024
"""How far into an HTML document its <meta> is looked for (WHATWG's prescan)."""


def html_charset(data: bytes) -> str | None:
    """The charset HTML `data` names in a <meta> element within its first 1024 bytes, as
    browsers (and mail readers) read an HTML part whose Content-Type names none; UTF-16
    labels read as UTF-8, as WHATWG's prescan reads them (the bytes are ASCII-compatible
    if the meta was found); None when it names none Python knows."""
    found = _META_CHARSET.search(data[:_META_PRESCAN_BYTES])
    if found is None:
        return None
    label = found.group(1).decode("ascii").lower()
    codec = _codec(label)
    if codec is None:
        return None
    return "utf-8" if codec.startswith("utf_16") else label


def decoded_text(data: bytes, charset: str | None) -> str:
    """`data` as text in MIME charset `charset` (us-ascii when None), read as `_codec` names,
    or in the wider charset `_WIDER` names when invalid in that (as UTF-8 first when 8-bit
    bytes labelled one of `_MISLABELLED_UTF8` are UTF-8). Bytes that a charset Python
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
    if codec in _MISLABELLED_UTF8 and not data.isascii():
        readings.append(partial(bytes.decode, encoding="utf-8"))
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
    in their charset, else `data` as `decoded_text` reads it, encoded again as UTF-8."""
    text = decoded_text(data, charset)
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


def field_text(message: HeaderFields, name: str) -> str:
    """A header unfolded, with RFC 2047 words decoded (`_readable_encoded_words`) and NUL read
    as U+FFFD (`without_nul`); '' when absent. Line breaks a decoded word holds read as one
    space each run, as a folded line does: the text stays one line."""
    value = message.get(name)
    if value is None:
        return ""
    unfolded = _LINE_BREAK.sub("", str(value))
    if "=?" not in unfolded:  # no encoded word: nothing to decode (and parsing costs)
        return without_nul(unfolded)
    try:
        decoded = _unstructured_text(name, _ENCODED_WORDS.sub(_readable_encoded_words, unfolded))
    except Exception:
        decoded = unfolded
    return without_nul(_LINE_BREAKS.sub(" ", decoded))


_PIECE_CHARS = 4096
"""How much of a long field the `email` package's unstructured parser is given at once."""
_BLANKS = re.compile(r"[ \t]+")


def _unstructured_text(name: str, value: str) -> str:
    """`value` as `_UNSTRUCTURED` reads it. A long one is read in pieces of about _PIECE_CHARS,
    each cut after whitespace that follows a word in which no encoded word ends (no `?=`):
    the parser keeps such whitespace as it is, unlike that between two encoded words, so the
    pieces read as the whole does. The parser reads the rest of the value again at each `=?`
    that starts no encoded word, which took 2.7 s for a subject of 20,000 of them, in mail
    from anyone."""
    pieces: list[str] = []
    start = 0
    while len(value) - start > _PIECE_CHARS:
        cut = None
        word_start = start
        for blank in _BLANKS.finditer(value, start):
            past = blank.start() >= start + _PIECE_CHARS
            if past and value.find("?=", word_start, blank.start()) < 0:
                cut = blank.end()
                break
            word_start = blank.end()
        if cut is None:
            break
        pieces.append(str(_UNSTRUCTURED(name, value[start:cut])))
        start = cut
    pieces.append(str(_UNSTRUCTURED(name, value[start:])))
    return "".join(pieces)


def without_nul(text: str) -> str:
    """`text` with each NUL as U+FFFD: no mail means one, and PostgreSQL's text cannot hold it,
    so a subject or message id that carries one is kept, and read back, alike on every
    backend, and received text quoted into mail of ours puts none into a 7bit part (RFC 2045
    section 2.7)."""
    return text.replace("\x00", "\ufffd")


_PARAMETER_SEGMENT = re.compile(r'(?:"(?:[^"\\]|\\.)*"?|[^;"])+')
"""One `;`-separated segment of a MIME field (its value, or one parameter), quotes kept whole."""
_EXTENDED_PARAMETER = re.compile(r"\s*([^\s=*]+)\*(\d+)?(\*)?\s*=\s*((?:.*\S)?)\s*", re.DOTALL)
"""An RFC 2231 parameter section: `name*=v`, `name*0*=v` (extended) or `name*1=v`."""
_PARAMETER_FIELDS = frozenset({"content-type", "content-disposition"})
MAX_PARAMETERS = 100
"""How many parameters of a Content-Type or Content-Disposition are read, the first ones (a
part has a handful; RFC 2231 continuations count as one): the `email` package's parameter
parser takes time growing with their square, 8 s for the 28,000 a 256 KiB header section
holds, and a part's field is parsed a dozen times."""
_TRANSFER_ENCODING = "content-transfer-encoding"
_QUOTED_PAIR = re.compile(r"\\(.)")


def _unquoted(value: str) -> str:
    """A parameter value without the quotes of a quoted string and their escapes."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _parameter_text(sections: list[tuple[int, bool, str]]) -> str:
    """The text of an RFC 2231 parameter from its (number, extended, value) sections: their
    bytes joined in order (%-encoded, or 8-bit as some mailers write them), so a character
    split between two sections reads whole, and read in the charset the first names as
    `decoded_text` reads text parts."""
    charset: str | None = None
    data = b""
    for number, extended, value in sorted(sections, key=lambda section: section[0]):
        value = _unquoted(value)
        if not extended:
            data += value.encode("utf-8", "surrogateescape")
            continue
        if number == 0 and value.count("'") >= 2:
            charset, _, value = value.split("'", 2)
        # the bytes of a value written 8-bit (not %-encoded) as they came (`surrogateescape`)
        data += urllib.parse.unquote_to_bytes(value.encode("utf-8", "surrogateescape"))
    return decoded_text(data, charset or None)


def _readable_parameters(value: str) -> str:
    """A MIME field's `value` with each RFC 2231 parameter (`filename*=iso-8859-1''%93…`)
    written again in UTF-8, its text read as `_parameter_text` reads it: the `email` package
    reads the charset with Python's codec alone (Latin-1 as C1 controls, Shift_JIS without
    NEC's ①), and a multibyte charset that cannot read the bytes made it raise for the whole
    message. Parameters past the first MAX_PARAMETERS are left out."""
    segments = _PARAMETER_SEGMENT.findall(value)
    cut = len(segments) > MAX_PARAMETERS + 1
    del segments[MAX_PARAMETERS + 1 :]
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
    if not cut and not any(extended for named in sections.values() for _, extended, _ in named):
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


REMEMBERED_FIELDS = 256
"""How many fields read with READING_PARAMETERS are kept parsed, the most recently read."""
REMEMBERED_VALUE_CHARS = 256
"""The longest value of a field kept parsed (one takes 10 to 30 KB: a few MB in all)."""


class _ParametersAsReadersRead(HeaderClassesOnce):
    """The header classes e2a reads mail with, Content-Type and Content-Disposition read with
    their RFC 2231 parameters made readable first (`_readable_parameters`).

    The `email` package parses a field again each time it is asked for it: a part's
    Content-Type a dozen times as the message is parsed and its parts are sorted into bodies
    and attachments (`get_content_type`, `get_filename`, ...), at 50 to 150 us each, which
    made a message of 10,000 tiny parts take 7 s. So the most recently read fields are kept
    (REMEMBERED_FIELDS, of at most REMEMBERED_VALUE_CHARS) and handed out again: a parsed
    header is immutable, and the same name and value always parse the same."""

    def __init__(self) -> None:
        super().__init__()
        self._remembered = functools.lru_cache(maxsize=REMEMBERED_FIELDS)(self._parsed)

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > REMEMBERED_VALUE_CHARS:
            return self._parsed(name, value)
        return self._remembered(name, value)

    def map_to_type(self, name: str, cls: type) -> None:
        """As `HeaderRegistry.map_to_type`; the fields kept are forgotten."""
        super().map_to_type(name, cls)
        self._remembered.cache_clear()

    def _parsed(self, name: str, value: str) -> BaseHeader:
        if name.lower() in _PARAMETER_FIELDS and (
            "*" in value or value.count(";") > MAX_PARAMETERS
        ):
            value = _readable_parameters(value)
        header = super().__call__(name, value)
        if name.lower() == _TRANSFER_ENCODING:
            # `get_payload(decode=True)` compares the field's text, lowercased, with `base64`
            # and `quoted-printable`; RFC 2045 lets a comment or whitespace surround the
            # mechanism (`base64 `, `Quoted-Printable (Outlook)`), which the header class
            # parses away (`cte`) but its text keeps: the body stayed encoded.
            mechanism = getattr(header, "cte", None)
            if isinstance(mechanism, str) and mechanism and str(header).lower() != mechanism:
                header = super().__call__(name, mechanism)
        return header


READING_PARAMETERS = READING.clone(header_factory=_ParametersAsReadersRead())
"""`READING`, RFC 2231 parameters read as mail readers read them."""


_FILENAME_PARAMETERS = (("content-disposition", "filename"), ("content-type", "name"))
"""Where a part names its file, in the order `Message.get_filename` looks."""


_PATH_SEPARATORS = re.compile(r"[/\\]")


def _file_name(named: str) -> str | None:
    """A filename a part gives, as a file's name: its last path segment (`../../etc/passwd`
    is `passwd`, `C:\\x\\report.pdf` is `report.pdf`), without control characters (line
    breaks, NUL, C1) nor bidirectional controls, trimmed, at most MAX_FILE_NAME_BYTES
    (`_within_file_name_bytes`); None when nothing else is left (`..`)."""
    name = _PATH_SEPARATORS.split(named)[-1]
    name = "".join(
        ch for ch in name if unicodedata.category(ch) != "Cc" and ch not in BIDI_CONTROLS
    ).strip()
    return None if name in ("", ".", "..") else _within_file_name_bytes(name)


MAX_FILE_NAME_BYTES = 255
"""The longest file name, in UTF-8 bytes, file systems take (NAME_MAX of Linux and macOS)."""
_EXTENSION = re.compile(r"(?:\.[^.\s]{1,16}){1,2}$")
"""The end of a name that says its type: `.pdf`, `.tar.gz`."""


def _within_file_name_bytes(name: str) -> str:
    """`name` cut to MAX_FILE_NAME_BYTES of UTF-8, before its extension (`_EXTENSION`),
    which is kept, and between characters: saving a file of a longer name fails."""
    if utf8_size(name) <= MAX_FILE_NAME_BYTES:
        return name
    found = _EXTENSION.search(name)
    extension = found.group() if found and found.start() > 0 else ""
    room = MAX_FILE_NAME_BYTES - utf8_size(extension)
    return utf8_prefix(name[: len(name) - len(extension)], room).rstrip() + extension


def part_filename(part: MIMEPart) -> str | None:
    """The name of the file `part` names (`_named_filename`), as a file's name (`_file_name`:
    no path, no control character); None when it names none."""
    named = _named_filename(part)
    return None if named is None else _file_name(named)


def _named_filename(part: MIMEPart) -> str | None:
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
        header = READING_PARAMETERS.header_factory(field, readable)
        named = getattr(header, "params", {}).get(parameter)
        if named is not None:
            return str(named).strip()
    return filename
