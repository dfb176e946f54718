"""header_section: where every reader of header fields in e2a cuts a message."""

from __future__ import annotations

import pytest

from e2a_gateway.rfc5322 import header_section

pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    ("message", "headers"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n", b"A: 1\r\nB: 2\r\n"),
        (b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2\n"),
        (b"A: 1\r\n\nbody\r\n", b"A: 1\r\n"),
        (b"A: 1\n\r\nbody\r\n", b"A: 1\n"),
        (b"A: 1\r\n folded\r\n\r\nbody", b"A: 1\r\n folded\r\n"),
        (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n"),  # no body at all
        (b"", b""),
    ],
)
def test_header_section_ends_at_the_first_empty_line(message: bytes, headers: bytes) -> None:
    assert header_section(message) == headers


def test_a_large_body_is_not_copied_into_the_header_section() -> None:
    message = b"Subject: big\r\n\r\n" + b"x" * 1_000_000
    assert header_section(message) == b"Subject: big\r\n"
