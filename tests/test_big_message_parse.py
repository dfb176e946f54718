"""Reading large and oddly shaped mail costs time linear in its size, without the standard
library's line-by-line parser going over a single-part body nor its header parser reading the
same field again for every question asked of a part; and it reads exactly what the standard
library reads.

The guards count operations, not seconds: they cannot flake on a loaded machine."""

from __future__ import annotations

import email
import email.feedparser
import email.headerregistry
from collections.abc import Iterator
from email.message import EmailMessage, Message
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2a_gateway.charsets import READING_PARAMETERS, REMEMBERED_FIELDS, field_text
from e2a_gateway.inbound import parse
from e2a_gateway.inbound.parse import attachments_of, parse_body, summarise_headers
from e2a_gateway.mime_bounds import MAX_NESTING, MAX_PARTS, MORE_PARTS_FILENAME, within_bounds
from e2a_gateway.mime_parse import parse_message
from e2a_gateway.rfc5322 import HeaderFields, header_text
from e2a_gateway.v1 import inbound as sdk_inbound
from e2a_gateway.v1.inbound import parse_raw_email

pytestmark = pytest.mark.backend_independent

HEAD = b"From: Alice <alice@example.com>\r\nTo: bot@agents.test\r\nSubject: hi\r\n"


def _lines_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the lines the standard library's parser reads from now on."""
    count = [0]
    readline = email.feedparser.BufferedSubFile.readline

    def counted(self: Any) -> Any:
        count[0] += 1
        return readline(self)

    monkeypatch.setattr(email.feedparser.BufferedSubFile, "readline", counted)
    return count


def _parameter_fields_parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the Content-Type and Content-Disposition values parsed from now on."""
    count = [0]
    header = email.headerregistry.ParameterizedMIMEHeader
    parse_value = header.parse.__func__  # type: ignore[attr-defined]

    def counted(cls: Any, value: str, kwds: dict[str, Any]) -> None:
        count[0] += 1
        parse_value(cls, value, kwds)

    monkeypatch.setattr(header, "parse", classmethod(counted))
    return count


@pytest.mark.parametrize(
    ("line", "text"),
    [(b"\r\n", "\n"), (b"a\r\n", "a\n"), (b"> a\r\n", "> a\n")],
    ids=["blank", "one-character", "quoted"],
)
def test_a_single_part_body_of_many_lines_is_not_read_line_by_line(
    monkeypatch: pytest.MonkeyPatch, line: bytes, text: str
) -> None:
    lines = 200_000
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + line * lines
    read = _lines_read(monkeypatch)
    body = parse_body.__wrapped__(raw)  # type: ignore[attr-defined]
    assert body.text == text * lines
    assert body.html is None
    assert body.attachments == ()
    assert read[0] < 20  # the header lines, not the body's 200,000


@pytest.mark.parametrize(
    ("line", "text"),
    [(b"\r\n", "\n"), (b"a\r\n", "a\n"), (b"> a\r\n", "> a\n")],
    ids=["blank", "one-character", "quoted"],
)
def test_the_sdk_reads_a_single_part_body_of_many_lines_not_line_by_line(
    monkeypatch: pytest.MonkeyPatch, line: bytes, text: str
) -> None:
    lines = 200_000
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + line * lines
    read = _lines_read(monkeypatch)
    body = parse_raw_email(raw)
    assert (body.subject, body.text_body, body.html_body) == ("hi", text * lines, None)
    assert body.attachments == []
    assert read[0] < 20  # the header lines, not the body's 200,000


def test_a_quoted_printable_body_of_soft_line_breaks_reads_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = (
        HEAD
        + b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + b"ab=\r\n" * 100_000
    )
    read = _lines_read(monkeypatch)
    body = parse_body.__wrapped__(raw)  # type: ignore[attr-defined]
    assert body.html == "ab" * 100_000
    assert read[0] < 20


def _parts(count: int) -> bytes:
    parts = b"".join(
        b'--b\r\nContent-Type: application/octet-stream; name="a%d.bin"\r\n\r\nx\r\n' % index
        for index in range(count)
    )
    return HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"


@pytest.mark.parametrize(
    ("parts", "parses_per_part"),
    [(REMEMBERED_FIELDS // 2, 1), (MAX_PARTS, 4)],
    ids=["fields-kept", "more-fields-than-kept"],
)
def test_each_part_field_of_many_parts_is_parsed_once_per_pass(
    monkeypatch: pytest.MonkeyPatch, parts: int, parses_per_part: int
) -> None:
    # Each part names another file: its Content-Type is parsed once while the fields read
    # recently are kept, else once per pass over the parts (the parse, the bodies, the
    # attachments listed, each attachment's facts), against a dozen times each before.
    raw = _parts(parts)
    parsed = _parameter_fields_parsed(monkeypatch)
    attachments = attachments_of(raw, summarise_headers(raw))
    assert [attachment.filename for attachment in attachments] == [
        f"a{index}.bin" for index in range(parts)
    ]
    assert {attachment.size for attachment in attachments} == {1}
    assert parsed[0] <= parses_per_part * parts + 5


def test_mail_of_more_parts_than_the_bound_is_read_to_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5,000 parts, each naming another file: the first MAX_PARTS are read, the rest is one
    # attachment holding the message as it came from the next part on; the work done is
    # that of MAX_PARTS parts, not of 5,000.
    raw = _parts(5000)
    parsed = _parameter_fields_parsed(monkeypatch)
    read = _lines_read(monkeypatch)
    body = parse_body.__wrapped__(raw)  # type: ignore[attr-defined]
    *files, rest = body.attachments
    assert [attachment.filename for attachment in files] == [
        f"a{index}.bin" for index in range(MAX_PARTS)
    ]
    assert (rest.filename, rest.content_type) == (MORE_PARTS_FILENAME, "application/octet-stream")
    assert parsed[0] <= 4 * (MAX_PARTS + 1) + 5  # the rest is one part more
    assert read[0] <= 7 * MAX_PARTS  # six lines read per part: all 5,000 read 30,000
    start = raw.index(b'Content-Type: application/octet-stream; name="a%d.bin"' % MAX_PARTS)
    found = parse.attachment_data(raw, MAX_PARTS)
    assert found is not None
    assert found == (rest, raw[start:])  # nothing lost: the rest, byte for byte


def test_mail_of_as_many_parts_as_the_bound_reads_whole() -> None:
    raw = _parts(MAX_PARTS)
    assert within_bounds(raw) == raw
    assert [attachment.filename for attachment in parse_body(raw).attachments] == [
        f"a{index}.bin" for index in range(MAX_PARTS)
    ]


def test_the_sdk_reads_mail_of_more_parts_than_the_bound_as_the_gateway_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = _parts(5000)
    parsed = _parameter_fields_parsed(monkeypatch)
    attachments = parse_raw_email(raw).attachments
    assert [(item.filename, item.content_type, item.size) for item in attachments] == [
        (item.filename, item.content_type, item.size) for item in parse_body(raw).attachments
    ]
    assert parsed[0] <= 2 * (4 * (MAX_PARTS + 1)) + 5  # both reads, the rest one part more


def _reusing_the_outer_boundary_deep() -> bytes:
    """Parts of the outermost multipart after a part nested deeper than MAX_NESTING whose
    innermost multipart has the outermost's boundary: the stdlib never opens that one (its
    Content-Type is in the opaque part), and ends it at each of those boundary lines."""
    levels = [
        b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (level, level)
        for level in range(MAX_NESTING + 1)
    ]
    deep = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    return (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        + b"".join(levels)
        + deep
        + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 5000
    )


def _attached_messages(count: int) -> bytes:
    """`count` parts, each an attached message of one text part."""
    part = b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ntext\r\n"
    return HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + part * count


@pytest.mark.parametrize(
    "raw",
    [_parts(5000), _reusing_the_outer_boundary_deep(), _attached_messages(5000)],
    ids=["flat", "outer-boundary-reused-deep", "attached-messages"],
)
def test_the_stdlib_parses_at_most_the_bound_of_parts(raw: bytes) -> None:
    parsed = email.message_from_bytes(within_bounds(raw), policy=READING_PARAMETERS)
    assert len(list(parsed.walk())) <= MAX_PARTS + MAX_NESTING + 3


def _shape(part: Message) -> Iterator[tuple[str, object]]:
    """Everything the parser decided about `part` and the parts in it."""
    for each in part.walk():
        yield "unixfrom", each.get_unixfrom()
        yield "items", [(name, str(value)) for name, value in each.items()]
        yield "type", each.get_content_type()
        yield "preamble", each.preamble
        yield "epilogue", each.epilogue
        yield "payload", None if each.is_multipart() else each.get_payload()


_HEADER_LINES = st.sampled_from(
    [
        "Subject: hi",
        "X-Folded: a",
        " continued",
        "\tcontinued",
        "From alice@example.com Mon Dec  7 00:00:00 2026",
        "Content-Type: text/plain",
        "Content-Type: text/html; charset=utf-8",
        "Content-Type: message/rfc822",
        "Content-Type: message/delivery-status",
        'Content-Type: multipart/mixed; boundary="b"',
        "Content-Type: multipart/mixed",
        "Content-Transfer-Encoding: quoted-printable",
        "not a header line",
        ":",
        "",
    ]
)
_BODY_LINES = st.sampled_from(
    ["", "text", "--b", "--b--", "Subject: inner", "Content-Type: text/plain", " folded", "a=", "."]
)
_ENDS = st.sampled_from(["\r\n", "\n", "\r"])


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    header = [draw(_HEADER_LINES) + draw(_ENDS) for _ in range(draw(st.integers(0, 6)))]
    separator = draw(st.sampled_from(["", "\r\n", "\n", "\r"]))
    body = [draw(_BODY_LINES) + draw(_ENDS) for _ in range(draw(st.integers(0, 8)))]
    tail = draw(st.sampled_from(["", "tail", "\r"]))
    return ("".join(header) + separator + "".join(body) + tail).encode()


@settings(max_examples=400, deadline=None)
@given(_messages())
def test_a_message_reads_exactly_as_the_standard_library_reads_it(raw: bytes) -> None:
    whole = email.message_from_bytes(within_bounds(raw), policy=READING_PARAMETERS)
    assert list(_shape(parse_message(raw))) == list(_shape(whole))


@settings(max_examples=400, deadline=None)
@given(_messages())
def test_the_sdk_reads_a_message_exactly_as_the_standard_library_reads_it(raw: bytes) -> None:
    try:
        whole = email.message_from_bytes(within_bounds(raw), policy=READING_PARAMETERS)
        assert isinstance(whole, EmailMessage)
        expected = sdk_inbound.ParsedBody(
            subject=field_text(HeaderFields(header_text(raw)), "Subject")
        )
        sdk_inbound._read_parts(whole, expected)
    except (RecursionError, IndexError):
        expected = sdk_inbound.ParsedBody()
    assert parse_raw_email(raw) == expected
