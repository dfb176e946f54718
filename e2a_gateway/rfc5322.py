"""Raw Internet messages (RFC 5322) as bytes: where the header section ends, its text, and
its fields.

Parsing a whole message to read a few header fields costs time in proportion to its body;
every reader of headers in e2a cuts the header section out first, and decodes it, the same way.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable

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


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")
_FIELD_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
"""A line the stdlib's parser takes as part of the header section (its `headerRE`)."""


class HeaderFields:
    """The fields of a header section as the stdlib's compat32 parser reads them
    (`email.parser.HeaderParser(policy=compat32)`, `Message.get`/`get_all`), found without it.

    Its feed parser handles the message line by line in Python and builds a message object;
    this keeps just the fields, by the same rules: lines end at CRLF, CR or LF; the section
    ends at the first line that is neither a field, a continuation nor a "From " line; a
    continuation before any field, a field without a name and a "From " line are ignored;
    values lose the whitespace after the colon and the final line ending."""

    def __init__(self, text: str) -> None:
        lines = [line for line in _LINE.findall(text) if line]
        section = []
        for line in lines:
            if not _FIELD_LINE.match(line):
                break
            section.append(line)
        self._fields: list[tuple[str, str]] = []
        name, value = "", [""]
        for line in section:
            if line[0] in " \t":
                if name:
                    value.append(line)
                continue
            if name:
                self._add(name, value)
                name = ""
            if line.startswith("From "):
                continue  # a Unix "From " line, or one misplaced: no field
            colon = line.find(":")
            if colon == 0:
                continue  # no field name
            name, value = line[:colon], [line]
        if name:
            self._add(name, value)

    def _add(self, name: str, lines: list[str]) -> None:
        first = lines[0].split(":", 1)[1].lstrip(" \t")
        self._fields.append((name.lower(), (first + "".join(lines[1:])).rstrip("\r\n")))

    def get(self, name: str) -> str | None:
        """The first field called `name` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self._fields if key == wanted), None)

    def get_all(self, name: str) -> list[str]:
        """Every field called `name` (any case), in order."""
        wanted = name.lower()
        return [value for key, value in self._fields if key == wanted]


def field_addresses(values: Iterable[str]) -> list[tuple[str, str]]:
    """`email.utils.getaddresses` of address fields' values, however deeply their comments nest.

    The stdlib reads a comment inside a comment by recursion, so a field of a few thousand
    `(` (8 KB, within every limit) raised RecursionError wherever it was read: mail answered
    451 for ever. Such values are read again without their comments (linear), which changes
    no address.
    """
    values = list(values)
    try:
        return email.utils.getaddresses(values)
    except RecursionError:
        return email.utils.getaddresses([without_comments(value) for value in values])


def address_list(value: str | None) -> list[str]:
    """The addresses of an RFC 5322 address list as e2a keeps one (a message's `reply_to`:
    `desk@example.org, team@example.org`), in order; [] for None or ""."""
    return [address for _, address in field_addresses([value]) if address] if value else []


def without_comments(value: str) -> str:
    """A structured field's `value` with its comments (RFC 5322 section 3.2.2, nested or not)
    removed; quoted strings and quoted pairs are kept as they are."""
    kept: list[str] = []
    depth, quoted, position = 0, False, 0
    while position < len(value):
        character = value[position]
        step = 2 if character == "\\" else 1
        if depth == 0 and not quoted and character == "(":
            depth = 1
        elif depth and character in "()":
            depth += 1 if character == "(" else -1
        elif depth == 0:
            kept.append(value[position : position + step])
            if character == '"':
                quoted = not quoted
        position += step
    return "".join(kept)
