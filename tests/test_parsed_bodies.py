"""parse_body: the readable parts of a message, kept by the SHA-256 of its bytes."""

from __future__ import annotations

from email.message import EmailMessage

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
