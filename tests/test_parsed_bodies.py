"""parse_body: the readable parts of a message, kept by the SHA-256 of its bytes."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from e2a_gateway.inbound import parse
from e2a_gateway.inbound.parse import Attachment, parse_body


def message(text: str, attachment: bytes | None = None) -> bytes:
    built = EmailMessage()
    built["From"] = "alice@example.org"
    built["To"] = "bot@agents.test"
    built["Subject"] = "hello"
    built.set_content(text)
    built.add_alternative(f"<p>{text}</p>", subtype="html")
    if attachment is not None:
        built.add_attachment(attachment, maintype="application", subtype="pdf", filename="a.pdf")
    return built.as_bytes()


def test_the_parts_agents_read() -> None:
    body = parse_body(message("first line\nsecond line", attachment=b"%PDF-1.4 x"))
    assert body.text == "first line\nsecond line\n"
    assert body.html == "<p>first line\nsecond line</p>\n"
    assert body.attachments == (Attachment("a.pdf", "application/pdf", 10, None),)


def test_the_same_bytes_read_again_are_not_parsed_again() -> None:
    raw = message("read me twice")
    first = parse_body(raw)
    again = parse_body(bytes(bytearray(raw)))  # equal bytes, another object
    assert again is first
    other = parse_body(message("read me once"))
    assert other is not first and other.text == "read me once\n"


def test_a_body_larger_than_the_budget_is_parsed_each_time() -> None:
    big = "x" * (parse.PARSED_BODY_CACHE_BUDGET // 2 + 1)  # text and html: over the budget
    raw = message(big)
    first = parse_body(raw)
    assert first.text is not None and len(first.text) == len(big) + 1
    again = parse_body(raw)
    assert again == first and again is not first
    assert parse._parsed_bodies.currsize <= parse.PARSED_BODY_CACHE_BUDGET


def text_part(content_type: bytes, body: bytes) -> bytes:
    """A one-part message whose Content-Type field is `content_type` (none when empty)."""
    field = b"Content-Type: " + content_type + b"\r\n" if content_type else b""
    return b"From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n" + field + b"\r\n" + body


@pytest.mark.parametrize(
    ("charset", "body", "text"),
    [
        (b'"iso-8859-8-i"', b"\xf9\xec\xe5\xed", "שלום"),  # Hebrew, logical order
        (b"ISO-8859-6-I", b"\xe5\xd1\xcd\xc8\xc7", "مرحبا"),
        (b"windows-874", b"\xca\xc7\xd1\xca\xb4\xd5", "สวัสดี"),  # Thai, as Outlook labels it
        (b"x-mac-roman", b"Caf\x8e", "Café"),
        (b"Windows-31J", b"\x87@\x93\xfa\x96{", "①日本"),
        (b"x-sjis", b"\x87@\x93\xfa\x96{", "①日本"),
        (b"x-gbk", b"\xc4\xe3\xba\xc3", "你好"),
        (b"gb2312", b"\xe6g", "鎔"),  # GBK beyond GB2312, as senders labelled GB2312 write
        (b"ks_c_5601-1987", b"\x8cc", "똠"),  # Windows' Korean beyond EUC-KR
    ],
)
def test_charsets_python_does_not_know_by_their_label_are_read_in_theirs(
    charset: bytes, body: bytes, text: str
) -> None:
    raw = text_part(b"text/plain; charset=" + charset, body + b"\r\n")
    assert parse_body(raw).text == text + "\n"
    html = text_part(b"text/html; charset=" + charset, b"<p>" + body + b"</p>\r\n")
    assert parse_body(html).html == f"<p>{text}</p>\n"


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        (b"", b"h\xc3\xa9llo", "héllo"),  # 8-bit UTF-8, no Content-Type: us-ascii by default
        (b"text/plain; charset=us-ascii", b"h\xc3\xa9llo", "héllo"),
        (b"text/plain; charset=x-unknown", b"h\xc3\xa9llo", "héllo"),
        (b"text/plain; charset=us-ascii", b"na\xefve \x93quoted\x94", "naïve “quoted”"),
        (b"text/plain; charset=x-unknown", b"na\xefve \x93quoted\x94", "naïve “quoted”"),
        (b"text/plain; charset=base64", b"caf\xe9", "café"),  # a codec, but not of text
    ],
)
def test_bytes_an_unknown_or_7bit_charset_labels_read_as_utf8_else_windows_1252(
    content_type: bytes, body: bytes, text: str
) -> None:
    assert parse_body(text_part(content_type, body + b"\r\n")).text == text + "\n"


def test_bytes_invalid_in_a_known_charset_keep_the_rest_of_its_text() -> None:
    # Valid UTF-8 in another charset's label is mislabelled UTF-8; else the declared charset
    # reads what it can, one U+FFFD for each invalid sequence, as before.
    mislabelled = text_part(b"text/plain; charset=iso-8859-6", b"caf\xc3\xa9\r\n")
    assert parse_body(mislabelled).text == "café\n"
    damaged = text_part(b"text/plain; charset=utf-8", b"caf\xc3\xa9 \xff\r\n")
    assert parse_body(damaged).text == "café \ufffd\n"
    shift_jis = text_part(b"text/plain; charset=shift_jis", b"\x93\xfa\x96{ \xff\xff\r\n")
    assert parse_body(shift_jis).text == "日本 \ufffd\ufffd\n"
