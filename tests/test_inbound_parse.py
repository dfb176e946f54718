"""summarise_headers: header fields as text — UTF-8 (RFC 6532), RFC 2047 words, then U+FFFD."""

from __future__ import annotations

import unicodedata

import pytest

from e2a.addresses import lowercase_address
from e2a.inbound.parse import summarise_headers
from e2a.v1.inbound import parse_raw_email


def headers(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def test_raw_utf8_subject_and_addresses_read_as_written() -> None:
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
    assert summary.from_addr == "josé@exämple.org"
    assert summary.to == ["ünal@exämple.org", "bot@agents.test"]
    assert summary.cc == ["山田@例え.jp"]
    assert summary.reply_to == "antwort@exämple.org"


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


def test_octets_that_are_not_utf8_read_as_replacement_characters_as_the_sdk_reads_them() -> None:
    raw = b"From: x@example.org\r\nSubject: Gr\xfc\xdfe \xe6\x97\xa5\r\n\r\nbody\r\n"
    summary = summarise_headers(raw)
    assert summary.subject == "Gr\ufffd\ufffde 日"  # the valid UTF-8 beside them still reads
    assert summary.from_addr == "x@example.org"
    assert parse_raw_email(raw).subject == summary.subject


def test_addresses_are_lowercased_and_normalised_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "JOSÉ@EXÄMPLE.ORG")
    summary = summarise_headers(headers(f"From: <{decomposed}>"))
    assert summary.from_addr == "josé@exämple.org"


@pytest.mark.parametrize(
    ("address", "reported"),
    [
        ("Alice@Example.ORG", "alice@example.org"),
        ("JOSÉ@EXÄMPLE.ORG", "josé@exämple.org"),
        ("STRASSE@straße.de", "strasse@straße.de"),  # lowercase, not case folding: ß stays
        ("user@XN--EXMPLE-CUA.ORG", "user@xn--exmple-cua.org"),  # A-labels stay A-labels
        (unicodedata.normalize("NFD", "é@x.org"), "é@x.org"),
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
