"""Raw Internet messages (RFC 5322) as bytes: where the header section ends.

Parsing a whole message to read a few header fields costs time in proportion to its body;
every reader of headers in e2a cuts the header section out first, the same way.
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
