"""summarise_headers: header fields as text — UTF-8 (RFC 6532), RFC 2047 words, then U+FFFD."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2a_gateway.addresses import lowercase_address
from e2a_gateway.inbound.parse import attachments_of, parse_body, summarise_headers
from e2a_gateway.mime_bounds import within_bounds
from e2a_gateway.rfc5322 import HeaderFields
from e2a_gateway.v1.inbound import parse_raw_email

pytestmark = pytest.mark.backend_independent


def headers(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def test_raw_utf8_subject_and_addresses_read_with_their_domains_as_a_labels() -> None:
    summary = summarise_headers(
        headers(
            'From: "José" <josé@exämple.org>',
            "To: Ünal <ünal@exämple.org>, bot@agents.test",
            "Cc: 日本 <山田@例え.jp>",
            "Reply-To: <antwort@exämple.org>",
            "Subject: Grüße 日本",
        )
    )
    assert summary.subject == "Grüße 日本"
    assert summary.from_addr == "josé@xn--exmple-cua.org"
    assert summary.to == ["ünal@xn--exmple-cua.org", "bot@agents.test"]
    assert summary.cc == ["山田@xn--r8jz45g.jp"]
    assert summary.reply_to == "antwort@xn--exmple-cua.org"


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("=?utf-8?q?Caf=C3=A9_order?=", "Café order"),
        ("=?iso-8859-1?q?Gr=FC=DFe?= =?utf-8?b?5pel5pys?=", "Grüße日本"),
        ("Grüße =?utf-8?q?Caf=C3=A9?= 日本", "Grüße Café 日本"),
        ("Grüße\r\n 日本", "Grüße 日本"),
        ("plain ASCII", "plain ASCII"),
    ],
)
def test_encoded_words_are_decoded_beside_raw_utf8(subject: str, text: str) -> None:
    assert summarise_headers(headers(f"Subject: {subject}")).subject == text


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("=?utf-8?q?Invoice=0D=0ADue_today?=", "Invoice Due today"),
        ("=?utf-8?q?one=0Atwo?=", "one two"),
        ("=?utf-8?b?YQ1i?=", "a b"),  # a lone CR
        ("=?utf-8?q?a=0D=0A=0D=0A_b?= c", "a  b c"),
    ],
)
def test_line_breaks_inside_encoded_words_read_as_a_space(subject: str, text: str) -> None:
    """An encoded word may decode to CR or LF, which no header line holds: read as a folded
    line is, one line with a space where each break was, so an agent that quotes the subject
    into a send of its own (which refuses line breaks) or a header of its own is not broken."""
    assert summarise_headers(headers(f"Subject: {subject}")).subject == text


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("=?iso-8859-8-i?B?+ezl7Q==?=", "שלום"),
        ("=?ISO-8859-8-I?Q?=F9=EC=E5=ED?= =?iso-8859-8-i?b?IPLl7O0=?=", "שלום עולם"),
        ("=?windows-874?B?ysfRyrTV?= ok", "สวัสดี ok"),
        ("=?x-mac-roman?Q?Caf=8E?=", "Café"),
        ("=?windows-31j?B?h0CT+pZ7?=", "①日本"),
        ("=?x-gbk?B?xOO6ww==?=", "你好"),
        ("=?x-unknown?Q?h=C3=A9llo?=", "héllo"),  # an unknown charset: UTF-8 when it is
        ("=?x-unknown?Q?na=EFve?=", "naïve"),  # else windows-1252
        ("=?us-ascii?Q?h=C3=A9llo?=", "héllo"),
        ("=?utf-8?q?caf=C3=A9?= =?x-mac-roman?q?_Caf=8E?=", "café Café"),
        ("=?iso-8859-1?q?=93Offer=94_=80_10?=", "“Offer” € 10"),  # Windows' Latin-1
        ("=?ISO-2022-JP?B?GyRCLSFGfEtcGyhC?=", "①日本"),  # Windows' JIS X 0208
        ("=?shift_jis?B?h0CT+pZ7?=", "①日本"),
    ],
)
def test_encoded_words_in_charsets_python_does_not_know_are_read_in_theirs(
    subject: str, text: str
) -> None:
    assert summarise_headers(headers(f"Subject: {subject}")).subject == text


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=", "café"),
        ("=?UTF-8?B?5pel5pys6Kqe44G=?=\r\n =?utf-8?B?ruaXpQ==?= ok", "日本語の日 ok"),
        ("=?utf-8?q?caf=C3?= =?utf-8?b?!!?= =?utf-8?q?=A9?=", "café"),  # a word of no bytes
    ],
)
def test_a_character_split_between_encoded_words_reads_whole_as_the_sdk_reads_it(
    subject: str, text: str
) -> None:
    # RFC 2047 wants each word whole, but senders split a character's bytes between words of
    # one charset; Python's email package (and every SDK with it) joins them, as mail readers do.
    raw = headers(f"Subject: {subject}")
    assert summarise_headers(raw).subject == text
    assert parse_raw_email(raw).subject == text


def test_a_character_split_between_encoded_words_of_any_charset_reads_whole() -> None:
    subject = "=?shift_jis?b?k/qW?= =?shift_jis?b?ew==?= =?utf-8?q?_caf=C3?= =?utf-8?q?=A9?="
    assert summarise_headers(headers(f"Subject: {subject}")).subject == "日本 café"
    broken = "=?utf-8?q?caf=C3?= =?utf-8?b?Y?= =?utf-8?q?=A9?="  # a word that holds no bytes
    assert summarise_headers(headers(f"Subject: {broken}")).subject.startswith("caf\ufffd")


def test_octets_that_are_not_utf8_read_as_replacement_characters_as_the_sdk_reads_them() -> None:
    raw = b"From: x@example.org\r\nSubject: Gr\xfc\xdfe \xe6\x97\xa5\r\n\r\nbody\r\n"
    summary = summarise_headers(raw)
    assert summary.subject == "Gr\ufffd\ufffde 日"  # the valid UTF-8 beside them still reads
    assert summary.from_addr == "x@example.org"
    assert parse_raw_email(raw).subject == summary.subject


def test_addresses_are_lowercased_and_normalised_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "JOSÉ@EXÄMPLE.ORG")
    summary = summarise_headers(headers(f"From: <{decomposed}>"))
    assert summary.from_addr == "josé@xn--exmple-cua.org"


@pytest.mark.parametrize(
    ("address", "reported"),
    [
        ("Alice@Example.ORG", "alice@example.org"),
        ("JOSÉ@EXÄMPLE.ORG", "josé@xn--exmple-cua.org"),  # the domain as A-labels
        ("STRASSE@straße.de", "strasse@xn--strae-oqa.de"),  # lowercase, not case folding: ß stays
        ("STRAẞE@x.org", "straße@x.org"),  # the local part keeps its characters
        ("user@XN--EXMPLE-CUA.ORG", "user@xn--exmple-cua.org"),  # A-labels stay A-labels
        (unicodedata.normalize("NFD", "é@x.org"), "é@x.org"),
        ("user@[IPv6:2001:DB8::1]", "user@[ipv6:2001:db8::1]"),  # no host name: as written
        ("user@ex ämple.org", "user@ex ämple.org"),  # no host name: as written, lowercased
    ],
)
def test_lowercase_address(address: str, reported: str) -> None:
    assert lowercase_address(address) == reported


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"])
def test_unicode_line_separators_do_not_start_a_new_field(separator: str) -> None:
    raw = f"Subject: a{separator}From: <ceo@bank.example>\r\nFrom: <x@evil.example>\r\n\r\n"
    summary = summarise_headers(raw.encode())
    assert summary.from_addr == "x@evil.example"
    assert summary.subject == f"a{separator}From: <ceo@bank.example>"


# HeaderFields reads a header section exactly as the stdlib's compat32 HeaderParser does
# (summarise_headers relied on that parser before; it is several times slower).

FIELD_NAMES = ["From", "from", "To", "Cc", "Subject", "Message-ID", "References", "X-A"]
HEADER_PIECES = st.sampled_from(
    [
        *(f"{name}:" for name in FIELD_NAMES),
        "From ",
        ":",
        " ",
        "\t",
        "\r\n",
        "\r",
        "\n",
        "a@example.org",
        "<id@x>",
        "Ünïcode",
        "=?utf-8?q?caf=C3=A9?=",
        "x",
        ",",
        "\x0b",
        "\u2028",
        "no colon here",
    ]
)


def stdlib_fields(text: str) -> email.message.Message:
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(HEADER_PIECES, max_size=40).map("".join))
def test_header_fields_are_read_as_the_stdlib_reads_them(text: str) -> None:
    fields = HeaderFields(text)
    expected = stdlib_fields(text)
    for name in [*FIELD_NAMES, "Missing"]:
        assert fields.get_all(name) == [str(value) for value in expected.get_all(name) or []]
        first = expected.get(name)
        assert fields.get(name) == (None if first is None else str(first))


@pytest.mark.parametrize(
    "text",
    [
        "From sender@example.org Mon Jan  1 00:00:00 2026\r\nFrom: a@example.org\r\n",
        "From: a@example.org\r\nFrom someone\r\nTo: b@example.org\r\n",
        "From: a@example.org\r\nTo: b@example.org\r\nFrom the body\r\n",
        " continued first\r\nSubject: s\r\n",
        ": nameless\r\nSubject: s\r\n",
        "Subject: one\r\n two\r\n\tthree\r\nTo: b@example.org",
        "Subject: s\r\nnot a field\r\nTo: hidden@example.org\r\n",
        "Subject: s\rTo: b@example.org\nCc: c@example.org\r\n",
    ],
)
def test_header_fields_edge_cases_match_the_stdlib(text: str) -> None:
    fields = HeaderFields(text)
    expected = stdlib_fields(text)
    for name in ("From", "To", "Cc", "Subject"):
        assert fields.get_all(name) == [str(value) for value in expected.get_all(name) or []]


CORPUS = sorted(
    path
    for path in (Path(__file__).parent / "data").rglob("*")
    if path.suffix in (".txt", ".eml") and path.is_file()
)
"""Real mail of every shape (bounce reports, DSNs, signed mail) to hold `attachments_of`'s
shortcut against the full parse."""


def single_parts() -> list[bytes]:
    """Messages of one part: some the shortcut may skip, some it must parse."""
    return [
        b"From: a@example.org\r\n\r\nno Content-Type at all\r\n",
        b"Content-Type: TEXT/HTML; charset=utf-8\r\n\r\n<p>hi</p>\r\n",
        b"Content-Type: text/plain; name=notes.txt\r\n\r\nnamed, still the body\r\n",
        b"Content-Type: text/plain\r\nContent-Disposition: inline\r\n\r\nbody\r\n",
        b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nx\r\n",
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n",
        b"Content-Type: image/png; name=p.png\r\n\r\npng\r\n",
        b"Content-Type: text\r\n\r\nno subtype\r\n",
    ]


@pytest.mark.parametrize(
    "raw",
    [path.read_bytes() for path in CORPUS] + single_parts(),
    ids=[path.name for path in CORPUS] + [f"single-{n}" for n in range(len(single_parts()))],
)
def test_attachments_of_agrees_with_the_full_parse(raw: bytes) -> None:
    summary = summarise_headers(raw)
    assert attachments_of(raw, summary) == parse_body(raw).attachments
    if summary.single_text_part:
        assert parse_body(raw).attachments == ()  # the shortcut skipped nothing


def test_the_shortcut_is_taken_for_text_and_not_for_mime() -> None:
    shapes = single_parts()
    taken = [summarise_headers(raw).single_text_part for raw in shapes]
    assert taken == [True, True, True, True, False, False, False, False]
    multipart = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n'
    assert summarise_headers(multipart).single_text_part is False
    attached, png = shapes[4], shapes[6]
    assert attachments_of(attached, summarise_headers(attached))[0].filename == "a.txt"
    assert attachments_of(png, summarise_headers(png))[0].content_type == "image/png"


@pytest.mark.parametrize(
    "boundary", [b"boundary*=utf-8''%C3%A9", b'boundary="\xff\xfe"', b"boundary*=x''%FF"]
)
def test_a_boundary_no_line_can_hold_is_read_not_raised(boundary: bytes) -> None:
    """A multipart whose boundary decodes to text beyond ASCII (RFC 2231, or bytes read as
    U+FFFD) is read as the stdlib reads it (no line ends its parts) instead of failing the
    nesting pre-scan, which would have refused the message."""
    raw = (
        b"From: a@example.org\r\nSubject: odd\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; " + boundary + b"\r\n\r\n"
        b"--x\r\nContent-Type: text/plain\r\n\r\nHello.\r\n--x--\r\n"
    )
    parse_body(raw)  # raised UnicodeEncodeError
    assert within_bounds(raw) == raw


@pytest.mark.parametrize(
    "flood",
    [
        b"; ".join(b"p%d=a" % number for number in range(25_000)),
        b"; ".join(b"name*%d=a" % number for number in range(25_000)),
    ],
    ids=["distinct parameters", "continuation sections"],
)
def test_a_field_of_thousands_of_parameters_is_read_in_time(flood: bytes) -> None:
    """The `email` package's parameter parser takes time growing with the square of their
    number: the 25,000 a 256 KiB header section holds took 8 s each time a part's
    Content-Type was read (a dozen times a part), in mail from anyone. The first 100 are
    read, which every real part's fit in."""
    raw = (
        b"From: a@example.org\r\nContent-Type: application/pdf; name=report.pdf; "
        + flood
        + b"\r\nContent-Disposition: attachment\r\n\r\nx\r\n"
    )
    started = time.process_time()  # CPU time: other work on the machine does not count
    body = parse_body(raw)
    assert time.process_time() - started < 3
    assert [item.filename for item in body.attachments] == ["report.pdf"]


def test_a_subject_of_thousands_of_broken_encoded_words_is_read_in_time() -> None:
    """The `email` package's unstructured parser reads the rest of a field again at each `=?`
    that starts no encoded word: a subject of 20,000 took 2.7 s of CPU, within the 256 KiB a
    header section may hold, in mail from anyone. A long field is now given to it in pieces
    that read as the whole does: here the words stay as they were written."""
    words = ["=?utf-8?q?a?"] * 20_000
    subject = " ".join(words)
    folded = "\r\n ".join(" ".join(words[at : at + 60]) for at in range(0, len(words), 60))
    raw = f"From: a@example.org\r\nSubject: {folded}\r\n\r\nx\r\n".encode()
    started = time.process_time()  # CPU time: other work on the machine does not count
    summary = summarise_headers(raw)
    assert time.process_time() - started < 1
    assert summary.subject.split() == subject.split()


def test_a_long_subject_reads_in_pieces_as_it_reads_whole() -> None:
    """Words of every kind, encoded or not, broken or whole, between blanks of every kind: the
    pieces a long subject is read in give the text the `email` package gives for all of it
    (whitespace between two encoded words dropped, any other kept)."""
    words = [
        "=?utf-8?q?a?=",
        "=?utf-8?b?w6k=?=",
        "=?iso-8859-1?q?=E9t=E9?=",
        "=?utf-8?q?a?",
        "plain",
        "=?",
        "?=",
        "x=?utf-8?q?b?=",
        "=?utf-8?q?c?=y",
        "été",
    ]
    blanks = [" ", "  ", "\t", " \t "]
    subject = "".join(
        words[(number * 7) % len(words)] + blanks[(number * 3) % len(blanks)]
        for number in range(3_000)
    ).rstrip()
    raw = f"From: a@example.org\r\nSubject: {subject}\r\n\r\nx\r\n".encode()
    whole = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)["Subject"]
    assert summarise_headers(raw).subject == str(whole)


def test_parameter_with_a_long_run_of_spaces_is_read_in_linear_time() -> None:
    """An RFC 2231 parameter's value was cut from its trailing spaces by a lazy pattern that
    tried the rest of the value at every space: a Content-Type with 10,000 spaces inside a
    `name*=` value took 5 s of CPU to read, the 256 KiB a header section may hold minutes, in
    mail from anyone. Read now in a moment."""
    raw = (
        b"From: a@example.org\r\nContent-Type: application/pdf; name*=utf-8''a"
        + b" " * 100_000
        + b"b.pdf  \r\nContent-Disposition: attachment\r\n\r\nx\r\n"
    )
    started = time.process_time()  # CPU time: other work on the machine does not count
    body = parse_body(raw)
    assert time.process_time() - started < 5
    assert [item.filename for item in body.attachments] == ["a.pdf"]  # shortened, as any long name
