"""How the CLI prints: aligned tables and key/value blocks for people, JSON for scripts.

Colour (bold headers) only when stdout is a terminal and `NO_COLOR` is unset. Text that came
from mail or from the gateway is shown through `terminal_text`, so it cannot drive the
terminal; JSON output keeps it exactly as it came.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from e2a_gateway.bidi import BIDI_CONTROLS

if TYPE_CHECKING:
    from e2a_gateway.v1 import AsyncInboundEmail, InboundEmail


_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: cursor moves, erasing, colours, ...
    r"|(?:\x1b[]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # OSC, ...
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
"""Terminal control sequences, 7-bit (ESC …) and 8-bit (C1) alike: each is removed whole."""
_LINE_BREAKS = re.compile(r"\r\n?|\x85|\u2028|\u2029")


def terminal_text(text: str, *, multiline: bool = False) -> str:
    """`text` safe to show on a terminal: escape sequences removed whole, then every other
    control character (C0, DEL, C1) and bidirectional control. Line breaks (CRLF, a lone CR,
    NEL, U+2028/2029) become newlines, and with `multiline` they and tabs stay; otherwise all
    whitespace runs become single spaces, for one line."""
    text = _LINE_BREAKS.sub("\n", text)
    safe = "".join(
        char
        for char in _ESCAPE_SEQUENCE.sub("", text)
        if char in "\n\t" or (unicodedata.category(char) != "Cc" and char not in BIDI_CONTROLS)
    )
    return safe if multiline else " ".join(safe.split())


def use_colour() -> bool:
    """Whether to emit ANSI colour: a TTY, and the user did not set `NO_COLOR`."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if use_colour() else text


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout."""
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_compact_json(value: Any) -> None:
    """Print `value` as one line of compact JSON on stdout (e2a's CLI's shape): its text as
    it is on a UTF-8 stdout, else escaped (`\\u00e9`), so no character is lost to an
    encoding that lacks it."""
    plain = (sys.stdout.encoding or "").lower().replace("-", "") in ("utf8", "utf8sig")
    print(json.dumps(value, ensure_ascii=not plain, separators=(",", ":")))


def replace_what_cannot_be_shown() -> None:
    """Make stdout and stderr write `?` for a character their encoding lacks (a legacy
    locale, a Windows console redirected to a file), rather than fail the command with
    UnicodeEncodeError: text from mail can hold any character."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")


def cell(value: object) -> str:
    """One table cell: empty for None, yes/no for booleans, one line of terminal-safe text
    otherwise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(terminal_text(str(item)) for item in value)
    return terminal_text(str(value))


MAX_CELL_COLUMNS = 80
"""The widest a table cell is shown; longer text (a 500-character subject) ends in `…`, so
one message does not push every row of the table past the screen (`--json` keeps it all)."""


def columns(text: str) -> int:
    """How many terminal columns `text` takes: two for a wide character (CJK, most emoji),
    none for a combining mark, one otherwise."""
    return sum(0 if unicodedata.combining(char) else 2 if _wide(char) else 1 for char in text)


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _fit(text: str, width: int) -> str:
    """`text` cut to at most `width` columns, ending in `…` when cut."""
    if columns(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += columns(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def _pad(text: str, width: int) -> str:
    return text + " " * (width - columns(text))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    """Print rows under headers in aligned columns (by display width, so wide characters
    line up; cells cut at MAX_CELL_COLUMNS), or `empty` to stderr if none."""
    if not rows:
        print(empty, file=sys.stderr)
        return
    texts = [[_fit(cell(value), MAX_CELL_COLUMNS) for value in row] for row in rows]
    widths = [max(columns(h), *(columns(row[i]) for row in texts)) for i, h in enumerate(headers)]
    header = "  ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()
    print(_bold(header))
    for row in texts:
        print("  ".join(_pad(v, w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_fields(fields: Sequence[tuple[str, object]]) -> None:
    """Print `label: value` lines with the labels aligned."""
    width = max((len(label) for label, _ in fields), default=0)
    for label, value in fields:
        print(f"{_bold((label + ':').ljust(width + 1))} {cell(value)}")


def email_json(email: InboundEmail | AsyncInboundEmail) -> dict[str, Any]:
    """A fetched inbound message as JSON: headers, bodies and attachment metadata."""
    return {
        "message_id": email.message_id,
        "conversation_id": email.conversation_id,
        "from": email.sender,
        "recipient": email.recipient,
        "to": email.to,
        "cc": email.cc,
        "subject": email.subject,
        "received_at": email.received_at,
        "text_body": email.text_body,
        "html_body": email.html_body,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in email.attachments
        ],
    }
