"""How deeply a received message's MIME parts nest and how many there are, found in one pass
over its bytes, and the message as e2a parses it: to MAX_NESTING levels and MAX_PARTS parts,
what lies deeper or after left unparsed.

The stdlib's parser checks every line of a part against the boundary of each multipart part
around it: parsing costs the message's lines times its nesting (300 levels around 300 KB of
text took 6 s, and 900 around 25 MB half an hour), and past about a thousand levels it
reaches its recursion limit and reads nothing. Real mail nests a few levels, a chain of
forwards a few more; mail nested deeper than MAX_NESTING is a loop of notices or an attack.
Each part costs e2a about 0.6 ms to read (its Content-Type parsed on each pass over the
parts): 100,000 tiny parts, 7 MB, held a worker thread for a minute. Real mail has a few
parts, a few hundred at most; mail of more than MAX_PARTS is an attack.

`bound_cuts` reads the structure as the stdlib would, from the lines that can change it:
`Content-Type` fields and lines starting `--`. It finds them with searches the `re` module
runs in C (a message of 10 MB of normal mail takes milliseconds, its parse seconds), and
reads a field through the stdlib only when it names a multipart or message type. It may see
more levels and parts than the stdlib does (a `Content-Type` quoted in a text part counts, a
boundary closes only its own level), never fewer: what it lets through costs the stdlib at
most MAX_NESTING boundary checks per line, and about MAX_PARTS parts. It stops at the part
after the MAX_PARTS-th: a message of more parts costs what one of that many does.
"""

from __future__ import annotations

import base64
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

from e2a_gateway.charsets import READING_PARAMETERS

MAX_NESTING = 32
"""The most multipart and message parts one inside another that e2a parses: at 32, parsing
costs about eight times what the same text does unnested (Postfix refuses mail nested past
its `mime_nesting_limit`, 100 by default; e2a accepts it and parses it this deep)."""

MAX_PARTS = 1000
"""The most parts (those after a boundary line, and the message of each message/* part) e2a
parses of a message: at 0.6 ms each, 0.6 s of a worker thread on arrival, where real mail has
a few parts and rarely more than a few hundred."""

MORE_PARTS_FILENAME = "more-parts.eml"
"""The filename under which what follows the MAX_PARTS-th part is listed, whole."""

NESTED_PART_FILENAME = "nested-part.eml"
"""The filename under which a part nested deeper than MAX_NESTING is listed, whole."""

_OPAQUE = b'Content-Type: application/octet-stream; name="' + NESTED_PART_FILENAME.encode()
_OPAQUE += b'"\r\n\r\n'
"""What goes before the `Content-Type` field of a part nested too deep: the header block of a
part of opaque bytes, whose body is the nested part as it came, from that field on."""
_MORE_PARTS = b'Content-Type: application/octet-stream; name="' + MORE_PARTS_FILENAME.encode()
_MORE_PARTS += b'"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
"""The header block of the part that follows the boundary line of the part after the
MAX_PARTS-th: its body, base64 (no boundary line can be in it), is the message as it came
from that part on, to its end."""

_MARKS = re.compile(rb"\n(?:(--)|(?i:content-type):)")
"""A line after LF starting a boundary line or a Content-Type field (the literal LF first
lets `re` search for it in C: one match per line, a few ns)."""
_MARKS_AFTER_CR = re.compile(rb"\r(?:(--)|(?i:content-type):)")
"""The same after a CR that ends a line alone, as the stdlib reads a bare CR."""
_MARK_AT_START = re.compile(rb"(?:(--)|(?i:content-type):)")
_LINE_END = re.compile(rb"[\r\n]")
_FOLDED = re.compile(rb"(?:\r\n|\r|\n)[ \t][^\r\n]*")
_CONTAINER = re.compile(rb"(?i)(?:multipart|message)[ \t\r\n]*/")
"""A field value that may name a multipart or message type (or only seem to: more levels is
the safe side, see the module's docstring)."""


def within_bounds(raw: bytes) -> bytes:
    """`raw` as e2a parses it: itself when its parts nest MAX_NESTING levels or fewer and are
    MAX_PARTS or fewer (nearly all mail: nothing changes for it), else each part deeper is
    made a part of opaque bytes named NESTED_PART_FILENAME, its bytes the part as it came from
    its `Content-Type` field on, and the part after the MAX_PARTS-th one of opaque bytes named
    MORE_PARTS_FILENAME, its bytes the message as it came from that part on, where the
    message ends (`bound_cuts`). The stored message is never changed."""
    cuts = bound_cuts(raw)
    if not cuts.nested and cuts.more_parts is None:
        return raw
    end = len(raw) if cuts.more_parts is None else cuts.more_parts
    pieces: list[bytes] = []
    last = 0
    for cut in cuts.nested:
        pieces += (raw[last:cut], _OPAQUE)
        last = cut
    pieces.append(raw[last:end])
    if cuts.more_parts is not None:
        pieces += (_MORE_PARTS, base64.b64encode(raw[end:]), b"\r\n")
    return b"".join(pieces)


@dataclass(frozen=True)
class Cuts:
    """Where e2a's parse of a message leaves the message's structure (`bound_cuts`)."""

    nested: list[int]
    """Where a multipart or message part starts (its `Content-Type` field) more than
    MAX_NESTING levels deep, in order, before `more_parts`: none for nearly all mail."""
    more_parts: int | None
    """Where the part after the MAX_PARTS-th starts (after its boundary line): None for nearly
    all mail."""


def bound_cuts(raw: bytes) -> Cuts:
    """Where `raw`'s parts nest more than MAX_NESTING levels deep, and where the part after
    its MAX_PARTS-th starts.

    A stack holds the levels open: a field naming a multipart or message type opens one, the
    boundary line of an open multipart closes every level opened after it (and, `--b--`, its
    own), as the stdlib's parser ends a part at any boundary line around it. Parts are counted
    as they start: after a boundary line of a multipart no deeper than MAX_NESTING levels (of
    any such, for the stdlib ends a part at any boundary around it), and the message of each
    message part (or of a multipart of no boundary: more is the safe side)."""
    cuts: list[int] = []
    levels: list[bytes | None] = []
    opened: dict[bytes, list[int]] = {}
    """The levels (indexes in `levels`) each boundary opened, innermost last."""
    parts = 0
    for start, boundary_line in _marks(raw):
        end = _line_end(raw, start)
        if boundary_line:
            text = raw[start + 2 : end].rstrip(b" \t")
            if text in opened and opened[text][0] < MAX_NESTING:
                parts += 1
                if parts > MAX_PARTS:
                    return Cuts(cuts, _next_line(raw, end))
            closed = _closed_level(text, opened)
            if closed is not None:
                while len(levels) > closed:
                    _close(levels, opened)
            continue
        field = raw[start:end] + b"".join(folded.group() for folded in _folded_lines(raw, end))
        if not _CONTAINER.search(field):
            continue
        is_container, boundary = _container(field)
        if not is_container:
            continue
        if len(levels) >= MAX_NESTING:
            cuts.append(start)
        elif boundary is None:
            parts += 1
        if boundary is not None:
            opened.setdefault(boundary, []).append(len(levels))
        levels.append(boundary)
    return Cuts(cuts, None)


def _marks(raw: bytes) -> Iterator[tuple[int, bool]]:
    """The start of each line that starts a boundary line (True) or a Content-Type field
    (False), in order; lines end at CRLF, LF or a CR alone, as the stdlib reads them."""
    first = _MARK_AT_START.match(raw)
    if first is not None:
        yield 0, first.group(1) is not None
    found = [_MARKS.finditer(raw)]
    if raw.count(b"\r") != raw.count(b"\r\n"):
        found.append(_MARKS_AFTER_CR.finditer(raw))
    for mark in heapq.merge(*found, key=lambda mark: mark.start()):
        yield mark.start() + 1, mark.group(1) is not None


def _line_end(raw: bytes, start: int) -> int:
    """Where the line starting at `start` ends (before its CR or LF)."""
    found = _LINE_END.search(raw, start)
    return len(raw) if found is None else found.start()


def _next_line(raw: bytes, end: int) -> int:
    """Where the line after the one ending at `end` (before its CRLF, CR or LF) starts."""
    return end + 2 if raw.startswith(b"\r\n", end) else min(end + 1, len(raw))


def _folded_lines(raw: bytes, end: int) -> Iterator[re.Match[bytes]]:
    """The continuation lines of the field whose first line ends at `end`, with their line
    breaks."""
    while (folded := _FOLDED.match(raw, end)) is not None:
        yield folded
        end = folded.end()


def _container(field: bytes) -> tuple[bool, bytes | None]:
    """Whether the Content-Type `field` (`Content-Type:` and its value, unfolded lines and
    all) makes a multipart or message part as the stdlib reads it, and its boundary. A field
    the stdlib cannot read (it raises reading it, and so gives up on the message there) counts
    as one of no boundary, and so does one whose boundary, decoded (RFC 2231, or a byte read
    as U+FFFD), no line of the message can hold, as the stdlib never finds it either."""
    part = EmailMessage(policy=READING_PARAMETERS)
    part.set_raw(
        *READING_PARAMETERS.header_source_parse([field.decode("ascii", "surrogateescape")])
    )
    try:
        if part.get_content_maintype() not in ("multipart", "message"):
            return False, None
        boundary = part.get_boundary()
    except (RecursionError, IndexError):
        return True, None
    if boundary is None:
        return True, None
    try:
        return True, boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # decoded to text no line of the message can hold: none ends it
        return True, None


def _closed_level(text: bytes, opened: dict[bytes, list[int]]) -> int | None:
    """The level a boundary line closes, `text` being the line after its `--` without the
    spaces and tabs ending it: that of the innermost open boundary it is (every level opened
    after it closes), or the one it ends (`boundary--`, its own level too); None for a line
    of no open boundary."""
    candidates = []
    if text in opened:
        candidates.append(opened[text][-1] + 1)
    if text.endswith(b"--") and text[:-2] in opened:
        candidates.append(opened[text[:-2]][-1])
    return max(candidates, default=None)


def _close(levels: list[bytes | None], opened: dict[bytes, list[int]]) -> None:
    """Close the innermost open level."""
    boundary = levels.pop()
    if boundary is not None:
        indexes = opened[boundary]
        indexes.pop()
        if not indexes:
            del opened[boundary]
