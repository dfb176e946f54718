"""Outbound MIME: what is built parses back to what was asked, and injection is refused."""

from __future__ import annotations

import base64
import email
import email.header
import email.policy
import email.utils
import time
from email.message import EmailMessage

import pytest

from e2a_gateway.outbound.mime import (
    Attachment,
    Draft,
    InvalidDraft,
    build_message,
    decode_attachment,
    new_message_id,
    reply_subject,
)

pytestmark = pytest.mark.backend_independent

PDF = b"%PDF-1.4 \x00\xff binary"


def parse(raw: bytes, *, raw_headers: bool = False) -> EmailMessage:
    policy = email.policy.compat32 if raw_headers else email.policy.default
    message = email.message_from_bytes(raw, policy=policy, _class=EmailMessage)
    assert isinstance(message, EmailMessage)
    return message


def test_text_html_and_attachment_round_trip() -> None:
    attachment = decode_attachment(
        0, "report.pdf", "application/PDF", base64.b64encode(PDF).decode()
    )
    draft = Draft(
        from_addr="bot@agents.test",
        to=["alice@example.org", "bob@example.org"],
        cc=["carol@example.org"],
        subject="Grüße aus dem Café",
        text="Hallo Alice,\nsiehe Anhang.",
        html="<p>Hallo <b>Alice</b></p>",
        attachments=[attachment],
        conversation_id="conv-42",
        in_reply_to="<orig@example.org>",
        references=["<root@example.org>", "<orig@example.org>"],
    )
    message_id = new_message_id("agents.test")
    raw = build_message(draft, message_id=message_id, date=1_767_225_600)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(byte < 128 for byte in raw.split(b"\r\n\r\n")[0])
    parsed = parse(raw)
    assert parsed["Subject"] == "Grüße aus dem Café"
    assert parsed["To"] == "alice@example.org, bob@example.org"
    assert parsed["Cc"] == "carol@example.org"
    assert parsed["Message-ID"] == message_id
    assert parsed["Date"] == "Thu, 01 Jan 2026 00:00:00 +0000"
    assert parsed["In-Reply-To"] == "<orig@example.org>"
    assert parsed["References"] == "<root@example.org> <orig@example.org>"
    assert parsed["X-E2A-Conversation-Id"] == "conv-42"
    body = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n").rstrip("\n") == "Hallo Alice,\nsiehe Anhang."
    assert html is not None and html.get_content().strip() == "<p>Hallo <b>Alice</b></p>"
    (part,) = list(parsed.iter_attachments())
    assert part.get_filename() == "report.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == PDF


def test_text_beyond_ascii_is_sent_7_bit_clean() -> None:
    text = "Grüße aus Köln — naïve café\n" + "an ASCII line\n" * 3
    html = "<p>日本語のメール</p>"
    raw = build_message(
        Draft(from_addr="bot@agents.test", to=["a@example.org"], subject="é", text=text, html=html),
        message_id="<x@agents.test>",
        date=0,
    )
    assert all(byte < 128 for byte in raw)  # nothing for a relay to downgrade under DKIM
    parsed = parse(raw)
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"  # mostly ASCII: readable
    assert rich["Content-Transfer-Encoding"] == "base64"  # mostly not: shorter
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n").rstrip("\n") == html


def test_a_message_to_cc_only_has_no_empty_to_field() -> None:
    draft = Draft(
        from_addr="bot@agents.test", to=[], cc=["c@example.org"], subject="FYI", text="fyi"
    )
    parsed = parse(build_message(draft, message_id="<x@agents.test>", date=0))
    assert "To" not in parsed and parsed["Cc"] == "c@example.org"


def test_long_message_ids_are_written_as_they_are() -> None:
    """An Outlook Message-ID is longer than a 78-column line: it goes out whole, never as RFC
    2047 encoded-words (no msg-id may be one), one to a line, so the reply threads."""
    outlook = (
        "<DB9PR08MB6588E1F2A3B4C5D6E7F8091A2B3C4D5E6F7@DB9PR08MB6588.eurprd08.prod.outlook.com>"
    )
    conversation = "conv_" + "0123456789abcdef" * 12
    draft = Draft(
        from_addr="bot@agents.example.com",
        to=["alice@example.org"],
        subject="Re: Quote",
        text="Thanks.",
        in_reply_to=outlook,
        references=["<first@example.org>", outlook],
        conversation_id=conversation,
    )
    raw = build_message(draft, message_id="<m@agents.example.com>", date=0)
    head = raw.split(b"\r\n\r\n")[0]
    assert b"=?" not in head
    assert f"In-Reply-To: {outlook}\r\n".encode() in head
    assert f"References: <first@example.org>\r\n {outlook}\r\n".encode() in head
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    parsed = parse(raw)
    assert parsed["In-Reply-To"] == outlook
    assert str(parsed["References"]).split() == ["<first@example.org>", outlook]
    assert parsed["X-E2A-Conversation-Id"] == conversation


def test_a_forwarded_message_is_encapsulated_not_base64() -> None:
    """RFC 2046 section 5.2.1: a message/rfc822 part is 7bit, 8bit or binary, never base64;
    the forwarded message goes out as it is, readable by any client."""
    inner = (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: News\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<h1>50% off</h1>\r\n"
    )
    draft = Draft(
        from_addr="bot@agents.test",
        to=["c@example.org"],
        subject="Fwd: News",
        text="See below.",
        attachments=[Attachment("news.eml", "message/rfc822", inner)],
    )
    raw = build_message(draft, message_id="<f@agents.test>", date=0)
    (part,) = parse(raw).iter_attachments()
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "7bit"
    assert part.get_filename() == "news.eml"
    forwarded = part.get_payload(0)
    assert forwarded["Subject"] == "News" and "<h1>50% off</h1>" in forwarded.get_content()
    assert b"\r\nSubject: News\r\n" in raw


@pytest.mark.parametrize(
    "inner",
    [
        b"From: a@example.org\r\nSubject: Long\r\n\r\n" + b"x" * 2000 + b"\r\n",
        "From: a@example.org\r\nSubject: Grüße\r\n\r\nGrüße\r\n".encode() * 20,
        b"From: a@example.org\r\nSubject: Nul\r\n\r\nbefore\x00after\r\n",
    ],
    ids=["line-over-998-octets", "beyond-ascii", "nul"],
)
def test_a_forwarded_message_that_cannot_go_as_it_is_goes_base64(inner: bytes) -> None:
    """A line of more than 998 octets makes a message invalid (RFC 5322 section 2.1.1): a relay
    refuses it or breaks the line (and the DKIM signature with it). Such a message is attached
    base64-encoded, as one beyond ASCII is, in lines ending CRLF like the rest, and arrives
    whole. So is one holding a NUL, which no 7-bit (or 8-bit) data may (RFC 2045 section
    2.7, RFC 5322 section 2.3)."""
    draft = Draft(
        from_addr="bot@agents.test",
        to=["c@example.org"],
        subject="Fwd: Long",
        text="See below.",
        attachments=[Attachment("long.eml", "message/rfc822", inner)],
    )
    raw = build_message(draft, message_id="<f@agents.test>", date=0)
    lines = raw.split(b"\r\n")
    assert not [line for line in lines if b"\n" in line or b"\r" in line or len(line) > 998]
    assert b"\x00" not in raw
    (part,) = parse(raw).iter_attachments()
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "base64"
    encoded = raw.split(b'filename="long.eml"\r\nMIME-Version: 1.0\r\n\r\n')[1]
    assert base64.b64decode(encoded.split(b"\r\n\r\n--")[0]) == inner


def test_plain_text_only() -> None:
    raw = build_message(
        Draft(from_addr="bot@agents.test", to=["a@example.org"], subject="hi", text="just text"),
        message_id="<x@agents.test>",
        date=0,
    )
    parsed = parse(raw)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().strip() == "just text"
    assert "X-E2A-Conversation-Id" not in parsed


@pytest.mark.parametrize(
    "draft",
    [
        Draft(
            from_addr="bot@agents.test",
            to=["a@example.org"],
            subject="hi\r\nBcc: x@evil.example",
            text="",
        ),
        Draft(
            from_addr="bot@agents.test",
            to=["a@example.org\nBcc: x@evil.example"],
            subject="s",
            text="",
        ),
        Draft(
            from_addr="bot@agents.test", to=["a@example.org"], cc=["c@x\r"], subject="s", text=""
        ),
        Draft(
            from_addr="bot@agents.test",
            to=["a@example.org"],
            subject="s",
            text="",
            conversation_id="c\nX: y",
        ),
    ],
)
def test_header_injection_is_refused(draft: Draft) -> None:
    with pytest.raises(InvalidDraft, match="line breaks"):
        build_message(draft, message_id="<x@agents.test>", date=0)


def reply_to_of(raw: bytes) -> list[tuple[str, str]]:
    """The Reply-To mailboxes of a built message as an RFC 2047 reader sees them: the header
    (ASCII only) unfolded and split into mailboxes, then each display name decoded."""
    headers = raw.split(b"\r\n\r\n")[0]
    assert all(byte < 128 for byte in headers)
    lines = headers.decode().replace("\r\n ", " ").split("\r\n")
    value = next(line.removeprefix("Reply-To: ") for line in lines if line.startswith("Reply-To: "))
    return [
        (str(email.header.make_header(email.header.decode_header(name))), address)
        for name, address in email.utils.getaddresses([value])
    ]


def test_reply_to_display_names_are_quoted_or_encoded() -> None:
    long_name = "Kundestøtte for ordrer, fakturaer og returer i Ålesund og omegn"
    draft = Draft(
        from_addr="bot@agents.test",
        to=["a@example.org"],
        subject="s",
        text="",
        reply_to=", ".join(
            [
                "Support Desk <help@example.com>",
                '"Doe, Jane" <jane@example.com>',
                r'"The \"Desk\" \\ 1" <d@example.com>',
                f'"{long_name}" <kundestotte@example.no>',
                "plain@example.com",
            ]
        ),
    )
    raw = build_message(draft, message_id="<x@agents.test>", date=0)
    assert b"Reply-To: Support Desk <help@example.com>," in raw
    assert b'"Doe, Jane" <jane@example.com>' in raw
    assert reply_to_of(raw) == [
        ("Support Desk", "help@example.com"),
        ("Doe, Jane", "jane@example.com"),
        ('The "Desk" \\ 1', "d@example.com"),
        (long_name, "kundestotte@example.no"),
        ("", "plain@example.com"),
    ]
    assert [line for line in raw.split(b"\r\n") if len(line) > 78] == []


def rfc2047_text(value: str) -> str:
    """`value` of a header as RFC 2047 reads it: whitespace between two encoded words is no
    part of the text (section 6.2), as mail readers read it."""
    return str(email.header.make_header(email.header.decode_header(value)))


def written_names(raw: bytes, field: str) -> list[tuple[str, str]]:
    """The mailboxes of address `field` in `raw`, their display names read as RFC 2047 says."""
    values = parse(raw).get_all(field) or []
    unfolded = [value.replace("\r\n", "") for value in parse(raw, raw_headers=True).get_all(field)]
    assert len(unfolded) == len(values)
    return [(rfc2047_text(name), address) for name, address in email.utils.getaddresses(unfolded)]


WORDS = "Grüße 日本 Angebot für Ihre 会議 の 予定 München über Straße 2024 café naïve Привет мир"


@pytest.mark.parametrize("seed", range(40))
def test_spaces_in_long_subjects_and_display_names_beyond_ascii_are_kept(seed: int) -> None:
    # The email package folds such text into encoded words with a space between two words
    # as folding whitespace, which RFC 2047 readers drop: "München über" read "Münchenüber".
    words = WORDS.split()
    text = " ".join(words[(seed * 7 + index * (seed % 5 + 1)) % len(words)] for index in range(24))
    mailbox = f'"{text}" <r@example.org>'
    draft = Draft(
        from_addr="bot@agents.test",
        to=[mailbox, "plain@example.org"],
        cc=[mailbox],
        subject=text,
        text="",
        reply_to=f"{mailbox}, Desk <d@example.org>",
    )
    raw = build_message(draft, message_id="<x@agents.test>", date=0)
    head = raw.split(b"\r\n\r\n")[0]
    assert head.isascii() and max(len(line) for line in head.split(b"\r\n")) <= 78
    subject = parse(raw, raw_headers=True)["Subject"].replace("\r\n", "")
    assert rfc2047_text(subject) == text
    assert written_names(raw, "To") == [(text, "r@example.org"), ("", "plain@example.org")]
    assert written_names(raw, "Cc") == [(text, "r@example.org")]
    assert written_names(raw, "Reply-To") == [(text, "r@example.org"), ("Desk", "d@example.org")]
    read = parse(raw)
    assert read["Subject"] == text  # and the email package reads them back too
    assert [a.addr_spec for a in read["To"].addresses] == ["r@example.org", "plain@example.org"]


@pytest.mark.parametrize(
    ("reply_to", "problem"),
    [
        ("Desk <help@example.com>\r\nBcc: victim@example.org", "line breaks"),
        ("Desk\u2028 <help@example.com>", "line breaks"),
        ("Desk <help@example.com", "reply_to: "),
        ("=?utf-8?q?Bank?= <help@example.com>", "encoded word"),
    ],
)
def test_a_reply_to_that_is_not_mailboxes_is_refused(reply_to: str, problem: str) -> None:
    draft = Draft(
        from_addr="bot@agents.test", to=["a@example.org"], subject="s", text="", reply_to=reply_to
    )
    with pytest.raises(InvalidDraft, match=problem):
        build_message(draft, message_id="<x@agents.test>", date=0)


@pytest.mark.parametrize(
    ("filename", "content_type", "data", "problem"),
    [
        ("a.txt", "text/plain", "not base64!", "base64"),
        ("a.txt", "textplain", "aGk=", "type/subtype"),
        ("", "text/plain", "aGk=", "empty"),
        ("a\r\n.txt", "text/plain", "aGk=", "line breaks"),
    ],
)
def test_bad_attachments(filename: str, content_type: str, data: str, problem: str) -> None:
    with pytest.raises(InvalidDraft, match=problem):
        decode_attachment(3, filename, content_type, data)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [("Hello", "Re: Hello"), ("Re: Hello", "Re: Hello"), ("RE:Hello", "RE:Hello"), ("", "Re: ")],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


def test_an_inline_image_goes_beside_the_html_that_shows_it() -> None:
    """An attachment with a Content-ID (an inline image a forward carries over) goes with the
    HTML in a multipart/related part (RFC 2387), inline, named by that id; without an HTML
    body, or without an id, it is a file attached as any other."""
    logo = Attachment("logo.png", "image/png", b"\x89PNG", content_id="logo@example.org")
    report = Attachment("report.pdf", "application/pdf", b"%PDF")
    draft = Draft(
        from_addr="bot@agents.test",
        to=["c@example.org"],
        subject="Fwd: Numbers",
        text="FYI",
        html='<p>FYI</p><img src="cid:logo@example.org">',
        attachments=[logo, report],
    )
    message = parse(build_message(draft, message_id="<i@agents.test>", date=0))
    assert message.get_content_type() == "multipart/mixed"
    body, attached = message.iter_parts()
    text, related = body.iter_parts()
    assert text.get_content_type() == "text/plain"
    html, image = related.iter_parts()
    assert (related.get_content_type(), html.get_content_type()) == (
        "multipart/related",
        "text/html",
    )
    assert image["Content-ID"] == "<logo@example.org>" and image.get_content() == b"\x89PNG"
    assert image.get_content_disposition() == "inline"
    assert attached.get_filename() == "report.pdf"

    text_only = parse(
        build_message(Draft(**{**draft.__dict__, "html": None}), message_id="<t@a>", date=0)
    )
    assert [part.get_filename() for part in text_only.iter_attachments()] == [
        "logo.png",
        "report.pdf",
    ]


@pytest.mark.parametrize(
    "content_id", ["<logo id@example.org>", "<logo@example.org\n>", "<logo@example.org\r\n>"]
)
def test_a_content_id_that_cannot_be_written_is_refused(content_id: str) -> None:
    with pytest.raises(InvalidDraft, match=r"attachments\[0\]\.content_id"):
        decode_attachment(0, "logo.png", "image/png", "iVBO", content_id)
    assert decode_attachment(0, "logo.png", "image/png", "iVBO", "<a@b>").content_id == "a@b"


@pytest.mark.parametrize("markup", ["<a ", "<!--", '<p title="', "<script>"])
def test_html_alone_is_given_its_text_in_time_whatever_its_markup(markup: str) -> None:
    """A send of HTML alone gets the text the HTML shows as its plain part. Read with
    `html.parser`, 1 MiB of tags left open (`<a <a <a …`) took hours of the send worker's
    CPU; each character is now read once."""
    html = "<p>Hello &amp; welcome</p>" + markup * (1024 * 1024 // len(markup))
    started = time.monotonic()
    raw = build_message(
        Draft(from_addr="bot@agents.test", to=["a@example.org"], subject="s", text="", html=html),
        message_id="<x@agents.test>",
        date=0,
    )
    assert time.monotonic() - started < 10
    plain = parse(raw).get_body(("plain",))
    assert plain is not None and plain.get_content().startswith("Hello & welcome\r\n")
