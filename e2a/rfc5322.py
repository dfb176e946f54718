"""Raw Internet messages (RFC 5322) as bytes: where the header section ends, and its text.

Parsing a whole message to read a few header fields costs time in proportion to its body;
every reader of headers in e2a cuts the header section out first, and decodes it, the same way.
"""

from __future__ import annotations

import re

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def header_section(message: bytes) -> bytes:
    """The header lines of `message`, each with its line ending, without the empty line that
    ends them; the whole message when there is no empty line (no body)."""
    blank = _BLANK_LINE.search(message)
    if blank is None:
        return message
    end = blank.start() + (2 if message.startswith(b"\r\n", blank.start()) else 1)
    return message[:end]


def header_text(message: bytes) -> str:
    """The header section of `message` as text: UTF-8, as RFC 6532 allows header fields to be.

    Octets that are not UTF-8 (legacy 8-bit headers) read as U+FFFD, one per invalid sequence,
    the way Python's `email` package shows them (and with it every e2a SDK): e2a does not guess
    a charset the message never declared. The stored bytes keep the original octets.
    """
    return header_section(message).decode("utf-8", "replace")
