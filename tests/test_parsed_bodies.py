"""parse_body: the readable parts of a message, kept by the SHA-256 of its bytes."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from e2a_gateway import kept_bodies
from e2a_gateway.inbound import parse
from e2a_gateway.inbound.parse import Attachment, attachment_data, parse_body
from e2a_gateway.inbound.reply_commands import ReplyCommand, parse_command

pytestmark = pytest.mark.backend_independent


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
    big = "x" * (kept_bodies.BUDGET // 2 + 1)  # text and html: over the budget
    raw = message(big)
    first = parse_body(raw)
    assert first.text is not None and len(first.text) == len(big) + 1
    again = parse_body(raw)
    assert again == first and again is not first
    assert kept_bodies.BODIES.currsize <= kept_bodies.BUDGET


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


# ISO-2022-JP as Windows writes it: ① (NEC row 13), then 日本, then ASCII again.
ISO_2022_JP_NEC = b"\x1b$B-!F|K\\\x1b(B ok"


@pytest.mark.parametrize(
    ("charset", "body", "text"),
    [
        (b"iso-8859-1", b"\x93Offer\x94 \x96 10 \x80", "“Offer” \u2013 10 €"),  # Outlook's Latin-1
        (b"latin1", b"caf\xe9 \x85", "café …"),
        (b"iso-8859-9", b"\x93\xddstanbul\x94", "“İstanbul”"),
        (b"tis-620", b"\x95\xca\xc7\xd1", "•สวั"),
        (b"shift_jis", b"\x87@\x93\xfa\x96{", "①日本"),  # NEC special characters
        (b"iso-2022-jp", ISO_2022_JP_NEC, "①日本 ok"),
        (b"iso-2022-jp", b"ok \x1b$(D\x22\x2f\x1b(B fine", "ok \u02d8 fine"),  # JIS X 0212
        (b"euc-kr", b"\x8cc\xb9\xe6", "똠방"),  # Windows' Korean beyond EUC-KR
        (b"big5", b"\x88V\xa4\xa4", "Ā中"),  # HKSCS
        (b"gb2312", b"\xc4\xe3 \x80 10", "你 € 10"),  # code page 936's euro sign
        (b"gbk", b"\xa2\xe3 \x952\x826", "€ 𠀀"),  # GB18030, two and four bytes
        (b"x-gbk", b"\xa2\xe3\x80", "€€"),
    ],
)
def test_charsets_are_read_as_mail_readers_read_them(
    charset: bytes, body: bytes, text: str
) -> None:
    # Senders label Windows' wider charsets with the standard names; mail readers (WHATWG's
    # Encoding Standard) read the labels so, and show no C1 control or escape sequence.
    raw = text_part(b"text/plain; charset=" + charset, body + b"\r\n")
    assert parse_body(raw).text == text + "\n"


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        (b"utf-8", b"\xef\xbb\xbfapprove"),  # PowerShell's Send-MailMessage -Encoding UTF8
        (b"iso-8859-1", b"\xef\xbb\xbfapprove"),  # the byte order mark decides, as WHATWG says
        (b"utf-16", b"\xff\xfea\x00p\x00p\x00r\x00o\x00v\x00e\x00"),
        (b"utf-16", b"\xfe\xff\x00a\x00p\x00p\x00r\x00o\x00v\x00e"),
        (b"utf-32", b"\xff\xfe\x00\x00" + "approve".encode("utf-32-le")),  # no UTF-16 mark
        (b"utf-32", b"\x00\x00\xfe\xff" + "approve".encode("utf-32-be")),
    ],
)
def test_a_byte_order_mark_is_no_part_of_the_text(charset: bytes, body: bytes) -> None:
    raw = text_part(b"text/plain; charset=" + charset, body)
    assert parse_body(raw).text == "approve"
    assert parse_command(parse_body(raw).text) == ReplyCommand(approve=True)


def test_iso_2022_jp_invalid_in_every_reading_never_shows_its_escape_sequences() -> None:
    raw = text_part(b"text/plain; charset=iso-2022-jp", b"\x1b$B\x7f\x7fF|K\\\x1b(B ok\r\n")
    text = parse_body(raw).text
    assert text is not None and "\x1b" not in text and text.endswith("ok\n")


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


def attached(fields: bytes) -> bytes:
    """A message with a text part and one attachment whose MIME fields are `fields`."""
    return (
        b"From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\n" + fields + b"\r\n\r\nAAAA\r\n--b--\r\n"
    )


@pytest.mark.parametrize(
    ("fields", "filename"),
    [
        (
            b'Content-Type: application/pdf; name="=?ISO-2022-JP?B?GyRCLSFGfEtcGyhC?=.pdf"',
            "①日本.pdf",
        ),
        (
            b"Content-Type: application/pdf\r\n"
            b'Content-Disposition: attachment; filename="=?iso-8859-1?q?=93Offer=94_=80.pdf?="',
            "“Offer” €.pdf",
        ),
        (
            b'Content-Type: application/pdf; name="=?x-sjis?b?h0A=?=.pdf"\r\n'
            b"Content-Disposition: attachment;\r\n"
            b' filename="=?utf-8?q?caf=C3?=\r\n =?utf-8?q?=A9?=.pdf"',
            "café.pdf",
        ),
        (b'Content-Type: application/pdf; name="=?x-sjis?b?h0A=?=.pdf"', "①.pdf"),
        (b'Content-Type: application/pdf; name="plain =?.pdf"', "plain =?.pdf"),
    ],
)
def test_encoded_words_in_a_filename_read_as_in_a_subject(fields: bytes, filename: str) -> None:
    # Senders put RFC 2047 words in quoted filenames (RFC 2047 forbids it, every reader reads
    # them): their charsets are read as a subject's are, not as Python's codecs alone read them.
    (attachment,) = parse_body(attached(fields)).attachments
    assert attachment.filename == filename
    found = attachment_data(attached(fields), 0)
    assert found is not None and found[0].filename == filename


FORWARDED = (
    b"From: promo@shop.example\r\n"
    b"Subject: SALE\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<h1>50% off everything</h1>"
)


def mixed(*parts: bytes) -> bytes:
    """A multipart/mixed message of `parts` (each its header fields, a blank line, its body)."""
    body = b"".join(b"--XX\r\n" + part + b"\r\n" for part in parts)
    return (
        b"From: dani@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n' + body + b"--XX--\r\n"
    )


def test_a_forwarded_message_is_an_attachment_and_lends_no_text_to_the_body() -> None:
    raw = mixed(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nFYI, see the attached newsletter.",
        b"Content-Type: message/rfc822\r\n"
        b'Content-Disposition: attachment; filename="news.eml"\r\n\r\n' + FORWARDED,
    )
    body = parse_body(raw)
    assert (body.text, body.html) == ("FYI, see the attached newsletter.", None)
    assert body.attachments == (Attachment("news.eml", "message/rfc822", len(FORWARDED), None),)
    assert attachment_data(raw, 0) == (body.attachments[0], FORWARDED)


def test_a_forwarded_message_after_html_does_not_become_the_text_body() -> None:
    inner = b"From: z@example.net\r\nSubject: inner\r\n\r\nINNER TEXT"
    raw = mixed(
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>see attached</p>",
        b"Content-Type: message/rfc822\r\n\r\n" + inner,
    )
    body = parse_body(raw)
    assert (body.text, body.html) == (None, "<p>see attached</p>")
    assert body.attachments == (Attachment("forwarded.eml", "message/rfc822", len(inner), None),)
    assert attachment_data(raw, 0) == (body.attachments[0], inner)


def test_attachments_listed_before_forwarded_messages_were_keep_their_indexes() -> None:
    # Indexes are stored with each message accepted: the attached message is listed after
    # every attachment listed before, its own parts included, so none moves.
    inner = (
        b"From: z@example.net\r\nSubject: inner\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="YY"\r\n\r\n'
        b"--YY\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
        b"--YY\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=inner.pdf\r\n\r\nINNER\r\n"
        b"--YY--"
    )
    raw = mixed(
        b"Content-Type: text/plain\r\n\r\nsee both",
        b"Content-Type: message/rfc822\r\n\r\n" + inner,
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=b.pdf\r\n"
        b"\r\nOUTER",
    )
    listed = [(item.filename, item.content_type) for item in parse_body(raw).attachments]
    assert listed == [
        ("inner.pdf", "application/pdf"),
        ("b.pdf", "application/pdf"),
        ("forwarded.eml", "message/rfc822"),
    ]
    downloads = [attachment_data(raw, index) for index in range(3)]
    assert [found[1] if found else None for found in downloads[:2]] == [b"INNER", b"OUTER"]
    assert downloads[2] is not None
    assert downloads[2][1].rstrip(b"\r\n") == inner  # written back out: a line end may follow
    assert parse_body(raw).text == "see both"


def test_a_forwarded_message_sent_base64_downloads_as_the_message() -> None:
    # RFC 2046 allows no encoding of a message/rfc822 part; Python's add_attachment (and
    # with it e2a's forward_message) writes one in base64 all the same.
    built = EmailMessage()
    built["From"] = "alice@example.org"
    built.set_content("forwarding")
    built.add_attachment(FORWARDED, maintype="message", subtype="rfc822", filename="f.eml")
    raw = built.as_bytes()
    assert b"Content-Transfer-Encoding: base64" in raw
    assert parse_body(raw).attachments == (
        Attachment("f.eml", "message/rfc822", len(FORWARDED), None),
    )
    assert attachment_data(raw, 0) == (parse_body(raw).attachments[0], FORWARDED)


def test_text_after_an_inline_attachment_is_joined_to_the_body() -> None:
    # Apple Mail: the text, an inline PDF, the text after it.
    raw = mixed(
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHere is the signed contract:",
        b"Content-Disposition: inline; filename=contract.pdf\r\n"
        b'Content-Type: application/pdf; name="contract.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=",
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\nPlease wire the deposit by Friday.\r\n",
    )
    body = parse_body(raw)
    assert body.text == "Here is the signed contract:\n\nPlease wire the deposit by Friday.\n"
    assert body.attachments == (Attachment("contract.pdf", "application/pdf", 5, None),)


def test_html_around_inline_images_is_joined_in_document_order() -> None:
    raw = mixed(
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Before</p>",
        b"Content-Type: image/png; name=a.png\r\nContent-Disposition: inline; filename=a.png\r\n"
        b"Content-ID: <a1>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=",
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>After</p>",
        b"Content-Type: image/png\r\nContent-ID: <b2>\r\n\r\npng",
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Last</p>",
    )
    body = parse_body(raw)
    assert (body.text, body.html) == (None, "<p>Before</p><p>After</p><p>Last</p>")
    assert body.attachments == (
        Attachment("a.png", "image/png", 8, "<a1>"),
        Attachment(None, "image/png", 3, "<b2>"),  # it names no file: listed after the others
    )


def test_later_text_parts_that_are_attachments_stay_out_of_the_body() -> None:
    raw = mixed(
        b"Content-Type: text/plain\r\n\r\nthe body",
        b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nattached",
        b"Content-Type: text/plain; name=log.txt\r\n\r\nnamed",
        b"Content-Type: text/html; name=page.html\r\n\r\n<p>named html</p>",
    )
    body = parse_body(raw)
    assert (body.text, body.html) == ("the body", "<p>named html</p>")  # the first html
    assert [item.filename for item in body.attachments] == [None, "log.txt"]


def test_a_later_inline_text_part_joins_the_body_and_keeps_its_index() -> None:
    # A mailing list's footer marked inline was listed as an attachment before later text
    # joined the body; it stays listed, so the indexes stored with messages hold.
    raw = mixed(
        b"Content-Type: text/plain\r\n\r\nthe body",
        b"Content-Type: text/plain\r\nContent-Disposition: inline\r\n\r\n-- \r\nthe list",
    )
    body = parse_body(raw)
    assert body.text == "the body\n\n-- \nthe list"
    assert body.attachments == (Attachment(None, "text/plain", 13, None),)


@pytest.mark.parametrize(
    "content_type",
    [
        b"multipart/mixed",  # no boundary
        b'multipart/mixed; boundary="never-used"',
        b"multipart/alternative; charset=utf-8",
    ],
)
def test_a_multipart_message_the_parser_cannot_split_reads_as_text(content_type: bytes) -> None:
    raw = text_part(content_type, b"Meet at 10, caf\xc3\xa9 on the corner.\r\n")
    assert parse_body(raw) == parse.ParsedBody(text="Meet at 10, café on the corner.\n", html=None)


def test_an_inner_multipart_without_a_boundary_reads_as_text() -> None:
    raw = mixed(
        b"Content-Type: multipart/alternative\r\n\r\ninner text",
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        b"\r\n%PDF",
    )
    body = parse_body(raw)
    assert (body.text, body.html) == ("inner text\n", None)
    assert [item.filename for item in body.attachments] == ["a.pdf"]
