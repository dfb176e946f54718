"""Limits on a message's header section, checked as the content streams in (sans-IO).

The parsers that read headers after DATA take time that grows faster than the header (dkimpy
with the square of a field's folded lines); these limits are what bound them. The check must
stay linear and cheap itself: it is fed the content in pieces of any size and keeps none of it.
"""

from __future__ import annotations

import enum
import re

__all__ = ["HeaderProblem", "HeaderSectionCheck"]


class HeaderProblem(enum.Enum):
    """Why a header section is refused; declaration order decides between several."""

    TOO_MANY_FIELDS = "too many header fields"
    FOLDED_TOO_OFTEN = "a header field folded over too many lines"
    TOO_LARGE = "a header section too large"


class _Line(enum.Enum):
    """What a line that does not start with whitespace is, judged by its first octets."""

    FIELD = "field"
    MBOX_FROM = "mbox From line"
    NOT_HEADER = "not a header line"


_WHITESPACE = frozenset(b" \t")
_END_OF_LINE = frozenset(b"\r\n")
_COLON, _SPACE = ord(":"), ord(" ")
# A line start that is neither folding whitespace nor an mbox "From " line: a field, the end of
# the section, or a line whose first octets did not arrive yet (then judged by `_read_head`).
_UNFOLDED_LINE = re.compile(rb"\n(?![ \t]|From )")
_NOT_NAME = re.compile(rb"[^!-9;-~]")


class HeaderSectionCheck:
    """Follows a message's header section as its content arrives and finds what is over a limit.

    The section is read as the parsers that come later read it (dkimpy, the email package):
    lines end at LF; a line starting with SP or HTAB continues the field before it; one
    starting with printable non-space characters of which one after the first is a colon
    starts a field; an mbox `From ` line, which dkimpy skips without ending the field before
    it, counts as one of that field's continuation lines. The section ends with the empty line,
    or with the first line that is none of these, which the parsers take for body (or fail on).
    `max_bytes` counts the section's octets, line endings included.

    The verdict does not depend on how the content was split into pieces. Each piece is
    examined by bytes methods in C plus one Python step per field, and once the fields are
    over their limit (the problem that decides first) nothing more is examined.
    """

    def __init__(self, *, max_fields: int, max_bytes: int, max_continuation_lines: int) -> None:
        self._max_fields = max_fields
        self._max_bytes = max_bytes
        self._max_continuation_lines = max_continuation_lines
        self._fields = 0
        self._bytes = 0
        self._continuation_lines = 0
        """Of the field being read (or of the lines before the first field)."""
        self._at_line_start = True
        self._head_length = 0
        """Octets so far of a line that a piece ended in before it could be judged."""
        self._head_start = b""
        """Its first four octets, to tell an mbox `From ` line."""
        self._finished = False
        self._problems: set[HeaderProblem] = set()

    @property
    def problem(self) -> HeaderProblem | None:
        """The problem that decides the reply, None while the section is within the limits."""
        if not self._problems:
            return None
        return next((problem for problem in HeaderProblem if problem in self._problems), None)

    def feed(self, content: bytes | bytearray) -> None:
        """Follow the next piece of the message content."""
        if self._finished or not content:
            return
        if self._head_length:
            if not self._resume_line(content):
                return
        elif self._at_line_start:
            if content[0] in _WHITESPACE:
                self._count_continuation_lines(1)
            elif not self._start_line(content, 0):
                return
        counted = 0  # the line starts up to here are counted
        for match in _UNFOLDED_LINE.finditer(content):
            line = match.start() + 1
            if line == len(content):
                break
            self._count_continuation_lines(content.count(b"\n", counted, line - 1))
            if not self._start_line(content, line):
                return
            counted = line
        self._count_continuation_lines(content.count(b"\n", counted, len(content) - 1))
        self._count_bytes(len(content))
        self._at_line_start = content.endswith(b"\n")

    def _start_line(self, content: bytes | bytearray, start: int) -> bool:
        """Judge the unfolded line at `start`; False when the rest of `content` needs no look:
        the section ended, the limits decided, or the piece ended before the line was judged."""
        if content[start] in _END_OF_LINE:
            return self._end_section(start)
        line = self._read_head(content, start)
        if line is None:
            self._count_bytes(start)
            return False
        return self._take_line(line, content, start)

    def _resume_line(self, content: bytes | bytearray) -> bool:
        """Go on judging the line the last piece ended in; False as for `_start_line`."""
        earlier = self._head_length
        line = self._read_head(content, 0)
        if line is None:
            return False
        if line is not _Line.NOT_HEADER:
            self._count_bytes(earlier)
        return self._take_line(line, content, 0)

    def _read_head(self, content: bytes | bytearray, position: int) -> _Line | None:
        """Read on in the head of a line from `position`; what the line is, None if `content`
        ended first (`_head_length` and `_head_start` then say how far it got)."""
        start = position
        if not self._head_length:
            if not 0x21 <= content[position] <= 0x7E:
                return _Line.NOT_HEADER
            position += 1  # the first character may be a colon: it is not the separator
        found = _NOT_NAME.search(content, position)
        stop = len(content) if found is None else found.start()
        self._head_start += content[start : min(stop, start + 4 - len(self._head_start))]
        self._head_length += stop - start
        if found is None:
            return None
        if content[stop] == _COLON:
            return _Line.FIELD
        if content[stop] == _SPACE and self._head_length == 4 and self._head_start == b"From":
            return _Line.MBOX_FROM
        return _Line.NOT_HEADER

    def _take_line(self, line: _Line, content: bytes | bytearray, start: int) -> bool:
        self._head_length = 0
        self._head_start = b""
        match line:
            case _Line.FIELD:
                self._count_field()
            case _Line.MBOX_FROM:
                self._count_continuation_lines(1)
            case _Line.NOT_HEADER:
                return self._end_section(start)
        return not self._finished

    def _end_section(self, start: int) -> bool:
        self._count_bytes(start)
        self._finished = True
        return False

    def _count_bytes(self, count: int) -> None:
        self._bytes += count
        if self._bytes > self._max_bytes:
            self._problems.add(HeaderProblem.TOO_LARGE)

    def _count_field(self) -> None:
        self._fields += 1
        self._continuation_lines = 0
        if self._fields > self._max_fields:
            self._problems.add(HeaderProblem.TOO_MANY_FIELDS)
            self._finished = True  # the problem that decides first: nothing can change it

    def _count_continuation_lines(self, count: int) -> None:
        self._continuation_lines += count
        if self._continuation_lines > self._max_continuation_lines:
            self._problems.add(HeaderProblem.FOLDED_TOO_OFTEN)
